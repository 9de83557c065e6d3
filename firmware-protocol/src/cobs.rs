//! Consistent Overhead Byte Stuffing: removes every 0x00 from a frame so 0x00 can delimit
//! frames and a receiver can resynchronise after any corruption.

/// Worst-case COBS output length for `len` input bytes (without the delimiter).
pub const fn cobs_max_encoded_len(len: usize) -> usize {
    len + len / 254 + 1
}

/// COBS-encodes `input` into `out`, returning the encoded length (no delimiter written).
/// Returns `None` if `out` is too small.
pub fn cobs_encode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut code_pos = 0usize;
    let mut write = 1usize;
    let mut code: u8 = 1;
    if out.is_empty() {
        return None;
    }
    for &byte in input {
        if byte == 0 {
            *out.get_mut(code_pos)? = code;
            code_pos = write;
            write += 1;
            code = 1;
        } else {
            *out.get_mut(write)? = byte;
            write += 1;
            code += 1;
            if code == 0xFF {
                *out.get_mut(code_pos)? = code;
                code_pos = write;
                write += 1;
                code = 1;
            }
        }
    }
    *out.get_mut(code_pos)? = code;
    Some(write)
}

/// Decodes one COBS block (without its delimiter) into `out`, returning the decoded length.
/// Returns `None` on malformed input (a 0x00 inside, a code running past the end) or if `out`
/// is too small.
pub fn cobs_decode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut read = 0usize;
    let mut write = 0usize;
    while read < input.len() {
        let code = input[read];
        if code == 0 {
            return None;
        }
        read += 1;
        let run = code as usize - 1;
        let end = read.checked_add(run)?;
        if end > input.len() {
            return None;
        }
        for &b in &input[read..end] {
            if b == 0 {
                return None;
            }
            *out.get_mut(write)? = b;
            write += 1;
        }
        read = end;
        if code != 0xFF && read < input.len() {
            *out.get_mut(write)? = 0;
            write += 1;
        }
    }
    Some(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(data: &[u8]) {
        let mut enc = [0u8; 1024];
        let n = cobs_encode(data, &mut enc).unwrap();
        assert!(n <= cobs_max_encoded_len(data.len()));
        assert!(!enc[..n].contains(&0));
        let mut dec = [0u8; 1024];
        let m = cobs_decode(&enc[..n], &mut dec).unwrap();
        assert_eq!(&dec[..m], data);
    }

    #[test]
    fn known_vectors() {
        let mut enc = [0u8; 16];
        let n = cobs_encode(&[0x11, 0x22, 0x00, 0x33], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x03, 0x11, 0x22, 0x02, 0x33]);
        let n = cobs_encode(&[0x00], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x01, 0x01]);
        let n = cobs_encode(&[], &mut enc).unwrap();
        assert_eq!(&enc[..n], &[0x01]);
    }

    #[test]
    fn roundtrips_including_long_runs() {
        roundtrip(&[]);
        roundtrip(&[0, 0, 0]);
        let long: [u8; 600] = core::array::from_fn(|i| (i % 255 + 1) as u8);
        roundtrip(&long);
        let mixed: [u8; 600] = core::array::from_fn(|i| (i % 7) as u8);
        roundtrip(&mixed);
        let exact: [u8; 254] = [1; 254];
        roundtrip(&exact);
    }

    #[test]
    fn rejects_malformed() {
        let mut out = [0u8; 16];
        assert_eq!(cobs_decode(&[0x05, 1, 2], &mut out), None);
        assert_eq!(cobs_decode(&[0x02, 0x00], &mut out), None);
        assert_eq!(cobs_decode(&[0x00], &mut out), None);
    }
}
