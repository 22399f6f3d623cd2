//! Serial framing: a heartbeat frame plus its CRC-32, COBS-encoded, ended by a zero byte.
//!
//! A serial cable has no packet boundaries and picks up noise when a connector is loose or a
//! host reboots with the line floating. COBS removes every zero byte from the payload, so a
//! zero always means "end of frame" and a receiver that joins mid-frame, or that saw garbage,
//! resynchronises at the next zero without any timing assumptions. The CRC-32 then separates
//! line noise (counted as a CRC error) from forged or foreign frames (which pass the CRC and fail
//! the MAC, counted as authentication failures).

use crc::{Crc, CRC_32_ISO_HDLC};

use crate::frame::FRAME_LEN;

/// Frame delimiter on the wire.
pub const DELIMITER: u8 = 0x00;
/// Bytes of CRC appended to each frame before encoding.
pub const CRC_LEN: usize = 4;
/// Payload that is COBS-encoded: the frame and its CRC.
pub const PAYLOAD_LEN: usize = FRAME_LEN + CRC_LEN;
/// Longest encoding of a payload, delimiter included: one overhead byte per 254 payload
/// bytes (at least one), plus the delimiter.
pub const MAX_ENCODED_LEN: usize = PAYLOAD_LEN + PAYLOAD_LEN.div_ceil(254) + 1;

const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);

/// Why bytes received on a serial line did not form a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// More bytes than any frame arrived without a delimiter; they were discarded up to the
    /// next delimiter (noise, or a sender speaking something else).
    Overrun,
    /// The bytes between two delimiters are not valid COBS.
    Cobs,
    /// Valid COBS, but not the length of a framed heartbeat.
    Length {
        /// Decoded payload length.
        got: usize,
    },
    /// The CRC does not match: line noise or a truncated frame.
    Crc,
}

impl core::fmt::Display for FramingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Overrun => write!(f, "more than {MAX_ENCODED_LEN} bytes without a delimiter"),
            Self::Cobs => f.write_str("invalid COBS encoding"),
            Self::Length { got } => write!(f, "decoded {got} bytes, expected {PAYLOAD_LEN}"),
            Self::Crc => f.write_str("CRC mismatch"),
        }
    }
}

/// Encodes `frame` for the wire: COBS(frame ‖ CRC-32 LE) followed by the delimiter.
/// Returns the number of bytes written to `out`.
pub fn encode(frame: &[u8; FRAME_LEN], out: &mut [u8; MAX_ENCODED_LEN]) -> usize {
    let mut payload = [0u8; PAYLOAD_LEN];
    payload[..FRAME_LEN].copy_from_slice(frame);
    payload[FRAME_LEN..].copy_from_slice(&CRC32.checksum(frame).to_le_bytes());

    // Standard COBS: each block starts with a code byte giving the distance to the next zero
    // (or 0xFF for a full 254-byte run without one).
    let mut code_at = 0;
    let mut w = 1;
    let mut code: u8 = 1;
    for &b in &payload {
        if b == 0 {
            out[code_at] = code;
            code_at = w;
            w += 1;
            code = 1;
        } else {
            out[w] = b;
            w += 1;
            code += 1;
            if code == 0xFF {
                out[code_at] = code;
                code_at = w;
                w += 1;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    out[w] = DELIMITER;
    w + 1
}

/// Reassembles frames from a byte stream, one byte at a time.
///
/// Holds at most [`MAX_ENCODED_LEN`] bytes. After an overrun it discards everything up to the
/// next delimiter, so a frame that starts in the middle of garbage is never spliced onto it.
#[derive(Debug, Clone)]
pub struct Deframer {
    buf: [u8; MAX_ENCODED_LEN],
    len: usize,
    discarding: bool,
}

impl Default for Deframer {
    fn default() -> Self {
        Self::new()
    }
}

impl Deframer {
    /// An empty deframer.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_ENCODED_LEN],
            len: 0,
            discarding: false,
        }
    }

    /// Bytes of an unfinished frame currently held.
    pub const fn pending(&self) -> usize {
        self.len
    }

    /// Forgets any partial frame, e.g. after the port was reopened.
    pub fn reset(&mut self) {
        self.len = 0;
        self.discarding = false;
    }

    /// Feeds one byte. Returns `Some` when a delimiter ends a non-empty run of bytes: the
    /// CRC-checked frame, or why that run was not one. An overrun is reported once, when it
    /// starts.
    pub fn push(&mut self, byte: u8) -> Option<Result<[u8; FRAME_LEN], FramingError>> {
        if byte == DELIMITER {
            let was_discarding = core::mem::replace(&mut self.discarding, false);
            let len = core::mem::replace(&mut self.len, 0);
            if was_discarding || len == 0 {
                return None;
            }
            return Some(decode_block(&self.buf[..len]));
        }
        if self.discarding {
            return None;
        }
        // The delimiter is not stored, so a full encoding occupies MAX_ENCODED_LEN - 1 bytes.
        if self.len == MAX_ENCODED_LEN - 1 {
            self.len = 0;
            self.discarding = true;
            return Some(Err(FramingError::Overrun));
        }
        self.buf[self.len] = byte;
        self.len += 1;
        None
    }
}

/// Decodes one COBS block (without its delimiter) and checks length and CRC.
pub fn decode_block(block: &[u8]) -> Result<[u8; FRAME_LEN], FramingError> {
    let mut payload = [0u8; PAYLOAD_LEN];
    let mut n = 0;
    let mut i = 0;
    while i < block.len() {
        let code = block[i];
        if code == 0 {
            return Err(FramingError::Cobs);
        }
        let run = usize::from(code) - 1;
        let end = i + 1 + run;
        if end > block.len() {
            return Err(FramingError::Cobs);
        }
        for &b in &block[i + 1..end] {
            if b == 0 {
                return Err(FramingError::Cobs);
            }
            if n == PAYLOAD_LEN {
                return Err(FramingError::Length { got: n + 1 });
            }
            payload[n] = b;
            n += 1;
        }
        i = end;
        // A code below 0xFF stands for a zero after its run, except at the very end.
        if code != 0xFF && i < block.len() {
            if n == PAYLOAD_LEN {
                return Err(FramingError::Length { got: n + 1 });
            }
            payload[n] = 0;
            n += 1;
        }
    }
    if n != PAYLOAD_LEN {
        return Err(FramingError::Length { got: n });
    }
    let mut frame = [0u8; FRAME_LEN];
    frame.copy_from_slice(&payload[..FRAME_LEN]);
    let mut crc = [0u8; CRC_LEN];
    crc.copy_from_slice(&payload[FRAME_LEN..]);
    if CRC32.checksum(&frame) != u32::from_le_bytes(crc) {
        return Err(FramingError::Crc);
    }
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn frame(seed: u8) -> [u8; FRAME_LEN] {
        let mut f = [0u8; FRAME_LEN];
        for (i, b) in (0u8..).zip(f.iter_mut()) {
            // Plenty of zeros, so COBS has work to do.
            *b = if i % 3 == 0 { 0 } else { seed.wrapping_add(i) };
        }
        f
    }

    fn wire(f: &[u8; FRAME_LEN]) -> Vec<u8> {
        let mut out = [0u8; MAX_ENCODED_LEN];
        let n = encode(f, &mut out);
        out[..n].to_vec()
    }

    fn feed(d: &mut Deframer, bytes: &[u8]) -> Vec<Result<[u8; FRAME_LEN], FramingError>> {
        bytes.iter().filter_map(|&b| d.push(b)).collect()
    }

    #[test]
    fn encoding_has_single_trailing_zero() {
        let w = wire(&frame(7));
        assert_eq!(w.last(), Some(&0));
        assert!(!w[..w.len() - 1].contains(&0));
        assert!(w.len() <= MAX_ENCODED_LEN);
    }

    #[test]
    fn roundtrip_all_zero_and_all_ones() {
        for f in [[0u8; FRAME_LEN], [0xFFu8; FRAME_LEN], frame(1)] {
            let mut d = Deframer::new();
            assert_eq!(feed(&mut d, &wire(&f)), [Ok(f)]);
        }
    }

    #[test]
    fn noise_before_and_between_frames_is_dropped_and_next_decodes() {
        let mut d = Deframer::new();
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&[0x13, 0x37, 0x42]); // noise, then the frame's own bytes
        bytes.push(0);
        bytes.extend_from_slice(&wire(&frame(2)));
        bytes.extend_from_slice(&[0xAA; 200]); // long noise: overrun
        bytes.push(0);
        bytes.extend_from_slice(&wire(&frame(3)));
        let out = feed(&mut d, &bytes);
        assert_eq!(out.len(), 4, "{out:?}");
        assert!(out[0].is_err());
        assert_eq!(out[1], Ok(frame(2)));
        assert_eq!(out[2], Err(FramingError::Overrun));
        assert_eq!(out[3], Ok(frame(3)));
    }

    #[test]
    fn truncated_frame_then_full_frame() {
        let mut d = Deframer::new();
        let w = wire(&frame(4));
        let mut bytes = w[..20].to_vec();
        bytes.push(0); // the line dropped the rest
        bytes.extend_from_slice(&w);
        let out = feed(&mut d, &bytes);
        assert_eq!(out.len(), 2);
        assert!(matches!(
            out[0],
            Err(FramingError::Length { .. }) | Err(FramingError::Cobs)
        ));
        assert_eq!(out[1], Ok(frame(4)));
    }

    #[test]
    fn corrupted_byte_fails_crc_or_cobs() {
        let w = wire(&frame(5));
        for i in 0..w.len() - 1 {
            for flip in [1u8, 0x80] {
                let mut c = w.clone();
                c[i] ^= flip;
                let mut d = Deframer::new();
                let out = feed(&mut d, &c);
                assert!(
                    out.iter().all(|r| r.is_err()),
                    "byte {i} flip {flip}: {out:?}"
                );
            }
        }
    }
}
