//! gaittune's wire protocol between a tuning host and a robot's firmware.
//!
//! `#![no_std]`, no allocator, and no panic on any input: the same code runs inside
//! microcontroller firmware and inside the gaittune daemon. `SPEC.md` beside this crate is
//! the language-neutral authority; this crate is one implementation of it, proven against
//! the golden vectors in `vectors/` by `tests/vectors.rs`.
//!
//! A frame on the wire is `COBS(type ‖ seq ‖ payload ‖ crc32) ‖ 0x00`. Messages are plain
//! owned values ([`HostMsg`], [`RobotMsg`]) so a decoded frame never borrows the receive
//! buffer.
//!
//! ```
//! use firmware_protocol::{encode, decode, FrameAccumulator, HostMsg, MAX_FRAME};
//! let mut wire = [0u8; MAX_FRAME];
//! let n = encode(7, &HostMsg::Heartbeat { host_time_ms: 1500 }, &mut wire).unwrap();
//! let mut acc = FrameAccumulator::new();
//! let mut got = None;
//! for &b in &wire[..n] {
//!     if let Some(Ok(frame)) = acc.push(b) {
//!         got = Some(decode::<HostMsg>(frame).unwrap());
//!     }
//! }
//! let frame = got.unwrap();
//! assert_eq!(frame.seq, 7);
//! assert_eq!(frame.msg, HostMsg::Heartbeat { host_time_ms: 1500 });
//! ```
#![no_std]
#![forbid(unsafe_code)]

mod cobs;
mod crc;
mod message;
mod wire;

pub use cobs::{cobs_decode, cobs_encode, cobs_max_encoded_len};
pub use crc::crc32;
pub use message::*;
pub use wire::{decode, encode, DecodeError, EncodeError, Frame, FrameAccumulator, Message};

/// The newest protocol version this crate speaks, offered first in the handshake.
/// Version 2 is version 1 plus GetStatus/Status (SPEC.md §11); every v1 frame is unchanged.
pub const PROTOCOL_VERSION: u16 = 2;
/// The oldest protocol version this crate still speaks: a host falls back to it when the
/// firmware refuses [`PROTOCOL_VERSION`] with Nack UnsupportedVersion.
pub const MIN_PROTOCOL_VERSION: u16 = 1;
/// Most tunable parameters a firmware may declare.
pub const MAX_PARAMS: usize = 64;
/// Longest parameter or robot name, in UTF-8 bytes.
pub const MAX_NAME_LEN: usize = 24;
/// Largest message payload in bytes (after type and sequence number, before the CRC).
pub const MAX_PAYLOAD: usize = 288;
/// Largest unencoded frame: type (1) + seq (2) + payload + CRC-32 (4).
pub const MAX_RAW_FRAME: usize = 1 + 2 + MAX_PAYLOAD + 4;
/// Largest frame on the wire, COBS-encoded, including the trailing 0x00 delimiter.
pub const MAX_FRAME: usize = cobs_max_encoded_len(MAX_RAW_FRAME) + 1;

/// Computes the parameter-schema hash announced in [`RobotMsg::Info`].
///
/// FNV-1a (32-bit) over, for each parameter in index order: its name's UTF-8 bytes, one 0x00
/// byte, then min, max and default as little-endian IEEE-754 `f32`.
#[derive(Debug, Clone, Copy)]
pub struct SchemaHasher {
    state: u32,
}

impl Default for SchemaHasher {
    fn default() -> Self {
        Self::new()
    }
}

impl SchemaHasher {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;

    /// Starts an empty hash.
    pub const fn new() -> Self {
        Self {
            state: Self::OFFSET,
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.state ^= b as u32;
            self.state = self.state.wrapping_mul(Self::PRIME);
        }
    }

    /// Adds the next parameter (in index order).
    pub fn add(&mut self, name: &str, min: f32, max: f32, default: f32) {
        self.bytes(name.as_bytes());
        self.bytes(&[0]);
        self.bytes(&min.to_le_bytes());
        self.bytes(&max.to_le_bytes());
        self.bytes(&default.to_le_bytes());
    }

    /// The hash of every parameter added so far.
    pub const fn finish(&self) -> u32 {
        self.state
    }
}
