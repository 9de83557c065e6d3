//! Framing: byte readers/writers, the [`Message`] trait, [`encode`], [`decode`] and the
//! streaming [`FrameAccumulator`].

use crate::{cobs_decode, cobs_encode, crc32, MAX_FRAME, MAX_PAYLOAD, MAX_RAW_FRAME};

/// A decoded frame: the sender's sequence number and the message it carried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Frame<M> {
    /// Sender's sequence number (wraps at 65536).
    pub seq: u16,
    /// The message.
    pub msg: M,
}

/// Why a frame could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is smaller than the encoded frame; [`crate::MAX_FRAME`] always fits.
    BufferTooSmall,
    /// The message does not fit its own limits (more than [`crate::MAX_PARAMS`] values,
    /// a name longer than [`crate::MAX_NAME_LEN`]).
    MessageTooLarge,
}

/// Why bytes could not be decoded into a message. Decoding never panics and never returns a
/// message for bytes that fail any check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// Zero-length frame (two delimiters in a row).
    Empty,
    /// The COBS stuffing is malformed or the frame is longer than [`crate::MAX_FRAME`].
    Framing,
    /// Fewer bytes than type + seq + CRC.
    TooShort,
    /// The CRC-32 does not match the frame's contents.
    Crc {
        /// CRC carried by the frame.
        received: u32,
        /// CRC computed over the frame.
        computed: u32,
    },
    /// The type byte names no message for this direction.
    UnknownType(u8),
    /// The payload ended before the message's fields did.
    Truncated,
    /// The payload has bytes after the message's last field.
    TrailingBytes,
    /// A field holds a value outside its domain (an enum code, a count, a non-UTF-8 name).
    InvalidField,
}

/// Bounds-checked little-endian writer into a fixed buffer.
pub struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer that fills `buf` from the start.
    pub fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.pos
    }
    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.pos == 0
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, data: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + data.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::MessageTooLarge)?;
        dst.copy_from_slice(data);
        self.pos = end;
        Ok(())
    }
    /// Appends a byte.
    pub fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.bytes(&[v])
    }
    /// Appends a little-endian u16.
    pub fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }
    /// Appends a little-endian u32.
    pub fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }
    /// Appends a little-endian u64.
    pub fn u64(&mut self, v: u64) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }
    /// Appends a little-endian IEEE-754 binary32.
    pub fn f32(&mut self, v: f32) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }
}

/// Bounds-checked little-endian reader over a payload.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Takes the next `n` bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(N)?);
        Ok(a)
    }
    /// Reads a byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a little-endian u16.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian u32.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian u64.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads a little-endian IEEE-754 binary32.
    pub fn f32(&mut self) -> Result<f32, DecodeError> {
        Ok(f32::from_le_bytes(self.array()?))
    }
    /// Fails with [`DecodeError::TrailingBytes`] unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// A message set of one direction: [`crate::HostMsg`] or [`crate::RobotMsg`].
pub trait Message: Sized {
    /// The type byte that identifies this message on the wire.
    fn type_byte(&self) -> u8;
    /// Writes the payload (the fields after type and seq).
    fn write_payload(&self, w: &mut Writer<'_>) -> Result<(), EncodeError>;
    /// Parses the payload of a message whose type byte is `ty`.
    fn read_payload(ty: u8, r: &mut Reader<'_>) -> Result<Self, DecodeError>;
}

/// Encodes `msg` with sequence number `seq` into `out` as a complete wire frame, COBS-stuffed
/// and terminated by 0x00. Returns the number of bytes to send.
pub fn encode<M: Message>(seq: u16, msg: &M, out: &mut [u8]) -> Result<usize, EncodeError> {
    let mut raw = [0u8; MAX_RAW_FRAME];
    let mut w = Writer::new(&mut raw[..3 + MAX_PAYLOAD]);
    w.u8(msg.type_byte())?;
    w.u16(seq)?;
    msg.write_payload(&mut w)?;
    let n = w.len();
    let crc = crc32(&raw[..n]);
    raw[n..n + 4].copy_from_slice(&crc.to_le_bytes());
    let raw_len = n + 4;
    let stuffed = cobs_encode(&raw[..raw_len], out).ok_or(EncodeError::BufferTooSmall)?;
    *out.get_mut(stuffed).ok_or(EncodeError::BufferTooSmall)? = 0;
    Ok(stuffed + 1)
}

/// Decodes one frame's COBS bytes (as returned by [`FrameAccumulator::push`], without the
/// 0x00 delimiter; a trailing delimiter is tolerated) into a message of direction `M`.
pub fn decode<M: Message>(stuffed: &[u8]) -> Result<Frame<M>, DecodeError> {
    let stuffed = match stuffed.split_last() {
        Some((0, rest)) => rest,
        _ => stuffed,
    };
    if stuffed.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut raw = [0u8; MAX_RAW_FRAME];
    let n = cobs_decode(stuffed, &mut raw).ok_or(DecodeError::Framing)?;
    if n < 7 {
        return Err(DecodeError::TooShort);
    }
    let (body, crc_bytes) = raw[..n].split_at(n - 4);
    let mut received = [0u8; 4];
    received.copy_from_slice(crc_bytes);
    let received = u32::from_le_bytes(received);
    let computed = crc32(body);
    if received != computed {
        return Err(DecodeError::Crc { received, computed });
    }
    let mut r = Reader::new(body);
    let ty = r.u8()?;
    let seq = r.u16()?;
    let msg = M::read_payload(ty, &mut r)?;
    r.finish()?;
    Ok(Frame { seq, msg })
}

/// Collects bytes from a stream into frames at each 0x00 delimiter.
///
/// Bytes of an over-long frame are dropped until the next delimiter, so a receiver
/// resynchronises after any corruption with at most one frame lost.
#[derive(Clone)]
pub struct FrameAccumulator {
    buf: [u8; MAX_FRAME],
    len: usize,
    overflowed: bool,
}

impl Default for FrameAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameAccumulator {
    /// An empty accumulator.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME],
            len: 0,
            overflowed: false,
        }
    }

    /// Feeds one received byte. At a delimiter, returns the completed frame's COBS bytes
    /// (pass them to [`decode`]) or [`DecodeError::Framing`] if the frame was too long.
    /// Empty frames (repeated delimiters) are skipped silently.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], DecodeError>> {
        if byte != 0 {
            if self.len < self.buf.len() {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
            return None;
        }
        let len = core::mem::replace(&mut self.len, 0);
        if core::mem::replace(&mut self.overflowed, false) {
            return Some(Err(DecodeError::Framing));
        }
        if len == 0 {
            return None;
        }
        Some(Ok(&self.buf[..len]))
    }
}
