//! Modbus RTU, server side: reassembling requests from a serial byte stream, checking them, and
//! encoding answers and exceptions.
//!
//! Only what a relay fence needs is spoken: read coils (0x01), write single coil (0x05), write
//! multiple coils (0x0F) and read input registers (0x04). Every other function is answered
//! with exception 1 (illegal function), an address beyond the tables with exception 2 and a
//! malformed value or quantity with exception 3, as the spec requires, so the agent's driver
//! reports a misconfiguration instead of timing out. A request with a bad CRC is dropped
//! without an answer (the spec's rule: the master cannot tell whom a garbled frame was for), and
//! so is a request for another unit, since an RS-485 bus is shared.
//!
//! RTU delimits frames by 3.5 character times of silence, which a Linux board's scheduler
//! cannot time reliably, so [`RtuReceiver`] ends a request as soon as its length is known from
//! its function code (every function above has a fixed or self-described length) and uses
//! silence only for functions it does not know, whose frames it must still consume to answer
//! with an exception.

use crc::{Crc, CRC_16_MODBUS};
use heapless::Vec;

/// Largest RTU frame (unit, PDU of at most 253 bytes, CRC).
pub const ADU_MAX: usize = 256;
/// Read coils.
pub const READ_COILS: u8 = 0x01;
/// Read input registers.
pub const READ_INPUT_REGISTERS: u8 = 0x04;
/// Write single coil.
pub const WRITE_SINGLE_COIL: u8 = 0x05;
/// Write multiple coils.
pub const WRITE_MULTIPLE_COILS: u8 = 0x0F;
/// Unit id 0: a broadcast, executed by every device and answered by none.
pub const BROADCAST: u8 = 0;

/// A frame buffer.
pub type Adu = Vec<u8, ADU_MAX>;

/// Modbus exception codes this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exception {
    /// The function code is not supported.
    IllegalFunction = 1,
    /// The address range is outside the table.
    IllegalDataAddress = 2,
    /// A quantity, byte count or coil value is malformed.
    IllegalDataValue = 3,
}

/// A checked request, borrowing from the frame it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request<'a> {
    /// Read `quantity` coils from `start`.
    ReadCoils {
        /// First coil.
        start: u16,
        /// Number of coils (1–2000).
        quantity: u16,
    },
    /// Read `quantity` input registers from `start`.
    ReadInputRegisters {
        /// First register.
        start: u16,
        /// Number of registers (1–125).
        quantity: u16,
    },
    /// Set one coil.
    WriteSingleCoil {
        /// Coil address.
        address: u16,
        /// On (0xFF00) or off (0x0000).
        on: bool,
    },
    /// Set `quantity` coils from `start`; bit `i` of `bits` (LSB first) is coil `start + i`.
    WriteMultipleCoils {
        /// First coil.
        start: u16,
        /// Number of coils (1–1968).
        quantity: u16,
        /// Packed coil values (exactly `quantity.div_ceil(8)` bytes).
        bits: &'a [u8],
    },
}

/// What a received frame turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed<'a> {
    /// Too short, or the CRC does not match: dropped without an answer.
    Garbled,
    /// For another unit on the bus: ignored.
    NotForUs,
    /// A request to execute; `broadcast` ones get no answer.
    Request {
        /// The request.
        request: Request<'a>,
        /// Sent to unit 0.
        broadcast: bool,
    },
    /// A request this server refuses with an exception (none for a broadcast).
    Refused {
        /// The request's function code.
        function: u8,
        /// Why.
        exception: Exception,
        /// Sent to unit 0.
        broadcast: bool,
    },
}

/// Reassembles RTU request frames from bytes and their arrival times.
#[derive(Debug, Clone)]
pub struct RtuReceiver {
    buf: Adu,
    last_ms: u64,
    /// A frame longer than [`ADU_MAX`] is being skipped until the next silence.
    discarding: bool,
    silence_ms: u32,
}

impl RtuReceiver {
    /// A receiver that ends frames of unknown length after `silence_ms` without a byte.
    pub const fn new(silence_ms: u32) -> Self {
        Self {
            buf: Vec::new(),
            last_ms: 0,
            discarding: false,
            silence_ms,
        }
    }

    /// Feeds one byte received at `now_ms`. Returns a frame when this byte completes one
    /// whose length the function code tells, or when the silence before this byte ended a
    /// frame of unknown length (the byte then starts the next frame). `Err` reports a frame
    /// that overran [`ADU_MAX`], once.
    pub fn push(&mut self, now_ms: u64, byte: u8) -> Result<Option<Adu>, Overrun> {
        let ended = self.expire(now_ms);
        self.last_ms = now_ms;
        if self.discarding {
            return Ok(ended);
        }
        if self.buf.push(byte).is_err() {
            self.buf.clear();
            self.discarding = true;
            return Err(Overrun);
        }
        if ended.is_some() {
            return Ok(ended);
        }
        match expected_len(&self.buf) {
            Some(len) if self.buf.len() >= len => Ok(Some(core::mem::take(&mut self.buf))),
            _ => Ok(None),
        }
    }

    /// Ends the frame in progress if the line has been silent for the configured time since
    /// its last byte; a skipped overlong frame ends there too.
    pub fn expire(&mut self, now_ms: u64) -> Option<Adu> {
        if now_ms.saturating_sub(self.last_ms) < u64::from(self.silence_ms) {
            return None;
        }
        self.discarding = false;
        if self.buf.is_empty() {
            None
        } else {
            Some(core::mem::take(&mut self.buf))
        }
    }

    /// When a frame in progress would end by silence, if one is.
    pub fn deadline(&self) -> Option<u64> {
        (!self.buf.is_empty() || self.discarding).then(|| self.last_ms + u64::from(self.silence_ms))
    }
}

/// A frame longer than [`ADU_MAX`] arrived; it is skipped up to the next silence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overrun;

/// Checks a frame's CRC and unit and decodes its request.
pub fn parse(adu: &[u8], unit: u8) -> Parsed<'_> {
    // Unit, function, CRC: anything shorter is noise.
    if adu.len() < 4 {
        return Parsed::Garbled;
    }
    let (body, crc) = adu.split_at(adu.len() - 2);
    if CRC16.checksum(body).to_le_bytes() != [crc[0], crc[1]] {
        return Parsed::Garbled;
    }
    let broadcast = body[0] == BROADCAST;
    if !broadcast && body[0] != unit {
        return Parsed::NotForUs;
    }
    let function = body[1];
    let data = &body[2..];
    match decode(function, data) {
        Ok(request) => Parsed::Request { request, broadcast },
        Err(exception) => Parsed::Refused {
            function,
            exception,
            broadcast,
        },
    }
}

/// An answer under construction: unit and function, then the data, then [`Reply::finish`]
/// appends the CRC.
#[derive(Debug, Clone)]
pub struct Reply {
    adu: Adu,
}

impl Reply {
    /// Starts an answer from `unit` to `function`.
    pub fn new(unit: u8, function: u8) -> Self {
        let mut adu = Adu::new();
        // Two bytes into an empty 256-byte buffer always fit.
        let _ = adu.extend_from_slice(&[unit, function]);
        Self { adu }
    }

    /// The exception answer to `function`.
    pub fn exception(unit: u8, function: u8, exception: Exception) -> Adu {
        let mut reply = Self::new(unit, function | 0x80);
        reply.byte(exception as u8);
        reply.finish()
    }

    /// Appends a byte; bytes beyond the frame limit are dropped (callers size their answers
    /// from checked quantities, which always fit).
    pub fn byte(&mut self, b: u8) {
        // Room for the CRC is kept.
        if self.adu.len() < ADU_MAX - 2 {
            let _ = self.adu.push(b);
        }
    }

    /// Appends a big-endian word.
    pub fn word(&mut self, w: u16) {
        for b in w.to_be_bytes() {
            self.byte(b);
        }
    }

    /// Appends the CRC and returns the frame.
    pub fn finish(mut self) -> Adu {
        let crc = CRC16.checksum(&self.adu).to_le_bytes();
        // `byte` keeps two bytes free, so the CRC always fits.
        let _ = self.adu.extend_from_slice(&crc);
        self.adu
    }
}

/// CRC-16/MODBUS of `bytes` (sent low byte first).
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

fn decode(function: u8, data: &[u8]) -> Result<Request<'_>, Exception> {
    let word = |i: usize| -> Result<u16, Exception> {
        match data.get(i..i + 2) {
            Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
            _ => Err(Exception::IllegalDataValue),
        }
    };
    match function {
        READ_COILS | READ_INPUT_REGISTERS => {
            if data.len() != 4 {
                return Err(Exception::IllegalDataValue);
            }
            let (start, quantity) = (word(0)?, word(2)?);
            let max = if function == READ_COILS {
                READ_COILS_MAX
            } else {
                READ_REGISTERS_MAX
            };
            if quantity == 0 || quantity > max {
                return Err(Exception::IllegalDataValue);
            }
            Ok(if function == READ_COILS {
                Request::ReadCoils { start, quantity }
            } else {
                Request::ReadInputRegisters { start, quantity }
            })
        }
        WRITE_SINGLE_COIL => {
            if data.len() != 4 {
                return Err(Exception::IllegalDataValue);
            }
            let address = word(0)?;
            let on = match word(2)? {
                COIL_ON => true,
                COIL_OFF => false,
                _ => return Err(Exception::IllegalDataValue),
            };
            Ok(Request::WriteSingleCoil { address, on })
        }
        WRITE_MULTIPLE_COILS => {
            let (start, quantity) = (word(0)?, word(2)?);
            let count = data.get(4).copied().ok_or(Exception::IllegalDataValue)?;
            let packed = &data[5.min(data.len())..];
            if quantity == 0
                || quantity > WRITE_COILS_MAX
                || usize::from(count) != usize::from(quantity).div_ceil(8)
                || packed.len() != usize::from(count)
            {
                return Err(Exception::IllegalDataValue);
            }
            Ok(Request::WriteMultipleCoils {
                start,
                quantity,
                bits: packed,
            })
        }
        _ => Err(Exception::IllegalFunction),
    }
}

/// The length of the whole frame in `buf` (so far), when its function code tells it.
fn expected_len(buf: &[u8]) -> Option<usize> {
    match buf.get(1).copied()? {
        // Unit, function, two words, CRC.
        READ_COILS | 0x02 | 0x03 | READ_INPUT_REGISTERS | WRITE_SINGLE_COIL | 0x06 => Some(8),
        // Unit, function, two words, byte count, the bytes, CRC.
        WRITE_MULTIPLE_COILS | 0x10 => buf.get(6).map(|&n| 9 + usize::from(n)),
        _ => None,
    }
}

/// The spec's limits on quantities per request.
const READ_COILS_MAX: u16 = 2000;
const READ_REGISTERS_MAX: u16 = 125;
const WRITE_COILS_MAX: u16 = 1968;
/// Coil values of write single coil.
const COIL_ON: u16 = 0xFF00;
const COIL_OFF: u16 = 0x0000;
const CRC16: Crc<u16> = Crc::<u16>::new(&CRC_16_MODBUS);

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(bytes: &[u8]) -> std::vec::Vec<u8> {
        let mut v = bytes.to_vec();
        v.extend_from_slice(&crc16(bytes).to_le_bytes());
        v
    }

    fn feed(rx: &mut RtuReceiver, now_ms: u64, bytes: &[u8]) -> std::vec::Vec<Adu> {
        bytes
            .iter()
            .filter_map(|&b| rx.push(now_ms, b).expect("no overrun"))
            .collect()
    }

    #[test]
    fn crc_matches_the_spec_example() {
        // Modbus over serial line, appendix B: 01 03 00 00 00 0A -> CRC C5 CD.
        assert_eq!(
            crc16(&[0x01, 0x03, 0x00, 0x00, 0x00, 0x0A]).to_le_bytes(),
            [0xC5, 0xCD]
        );
    }

    #[test]
    fn fixed_and_counted_lengths_end_frames_without_waiting() {
        let mut rx = RtuReceiver::new(4);
        let read = frame(&[1, READ_COILS, 0, 0, 0, 2]);
        let write = frame(&[1, WRITE_MULTIPLE_COILS, 0, 0, 0, 2, 1, 0b01]);
        let mut both = read.clone();
        both.extend_from_slice(&write);
        let got = feed(&mut rx, 10, &both);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_slice(), read.as_slice());
        assert_eq!(got[1].as_slice(), write.as_slice());
        assert_eq!(rx.deadline(), None);
    }

    #[test]
    fn unknown_functions_end_at_silence_and_not_before() {
        let mut rx = RtuReceiver::new(4);
        let unknown = frame(&[1, 0x2B, 0x0E, 1, 0]);
        assert!(feed(&mut rx, 100, &unknown).is_empty());
        assert_eq!(rx.deadline(), Some(104));
        assert_eq!(rx.expire(103), None, "3 ms is not yet silence");
        let adu = rx.expire(104).expect("4 ms ends it");
        assert_eq!(adu.as_slice(), unknown.as_slice());
        // A byte after the silence ends the old frame and starts a new one.
        assert!(feed(&mut rx, 200, &[1, 0x2B]).is_empty());
        let ended = rx
            .push(300, 1)
            .expect("no overrun")
            .expect("ended by silence");
        assert_eq!(ended.as_slice(), &[1, 0x2B]);
    }

    #[test]
    fn an_overlong_frame_is_reported_once_and_skipped_to_the_silence() {
        let mut rx = RtuReceiver::new(4);
        let mut overruns = 0;
        for i in 0..300u32 {
            let byte = u8::try_from(i % 200).expect("below 200").max(0x40);
            if rx.push(0, byte).is_err() {
                overruns += 1;
            }
        }
        assert_eq!(overruns, 1);
        assert_eq!(rx.expire(4), None, "the skipped frame yields nothing");
        let read = frame(&[1, READ_COILS, 0, 0, 0, 1]);
        assert_eq!(feed(&mut rx, 10, &read).len(), 1, "the next frame is clean");
    }

    #[test]
    fn requests_decode() {
        assert_eq!(
            parse(&frame(&[1, READ_COILS, 0, 1, 0, 2]), 1),
            Parsed::Request {
                request: Request::ReadCoils {
                    start: 1,
                    quantity: 2
                },
                broadcast: false
            }
        );
        assert_eq!(
            parse(&frame(&[1, WRITE_SINGLE_COIL, 0, 0, 0xFF, 0]), 1),
            Parsed::Request {
                request: Request::WriteSingleCoil {
                    address: 0,
                    on: true
                },
                broadcast: false
            }
        );
        assert_eq!(
            parse(&frame(&[0, WRITE_SINGLE_COIL, 0, 0, 0, 0]), 1),
            Parsed::Request {
                request: Request::WriteSingleCoil {
                    address: 0,
                    on: false
                },
                broadcast: true
            }
        );
        match parse(&frame(&[1, WRITE_MULTIPLE_COILS, 0, 0, 0, 2, 1, 3]), 1) {
            Parsed::Request {
                request: Request::WriteMultipleCoils { bits, quantity, .. },
                ..
            } => assert_eq!((bits, quantity), (&[3u8][..], 2)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn garbled_foreign_and_malformed_frames_are_told_apart() {
        let mut bad = frame(&[1, READ_COILS, 0, 0, 0, 1]);
        bad[3] ^= 0x10;
        assert_eq!(parse(&bad, 1), Parsed::Garbled);
        assert_eq!(parse(&[1, 1, 0], 1), Parsed::Garbled);
        assert_eq!(
            parse(&frame(&[2, READ_COILS, 0, 0, 0, 1]), 1),
            Parsed::NotForUs
        );
        let refused = |bytes: &[u8]| match parse(&frame(bytes), 1) {
            Parsed::Refused { exception, .. } => exception,
            other => panic!("{other:?}"),
        };
        assert_eq!(refused(&[1, 0x03, 0, 0, 0, 1]), Exception::IllegalFunction);
        assert_eq!(refused(&[1, 0x2B, 0x0E]), Exception::IllegalFunction);
        assert_eq!(
            refused(&[1, READ_COILS, 0, 0, 0, 0]),
            Exception::IllegalDataValue
        );
        assert_eq!(
            refused(&[1, READ_COILS, 0, 0, 0x07, 0xD1]),
            Exception::IllegalDataValue
        );
        assert_eq!(
            refused(&[1, READ_INPUT_REGISTERS, 0, 0, 0, 126]),
            Exception::IllegalDataValue
        );
        assert_eq!(
            refused(&[1, WRITE_SINGLE_COIL, 0, 0, 0x12, 0x34]),
            Exception::IllegalDataValue
        );
        assert_eq!(
            refused(&[1, WRITE_MULTIPLE_COILS, 0, 0, 0, 9, 1, 0xFF]),
            Exception::IllegalDataValue,
            "9 coils need 2 bytes"
        );
        assert_eq!(
            refused(&[1, WRITE_MULTIPLE_COILS, 0, 0, 0, 2]),
            Exception::IllegalDataValue,
            "no byte count"
        );
        assert_eq!(refused(&[1, READ_COILS, 0]), Exception::IllegalDataValue);
    }

    #[test]
    fn answers_carry_the_crc_and_exceptions_set_the_high_bit() {
        let exc = Reply::exception(1, READ_COILS, Exception::IllegalDataAddress);
        assert_eq!(&exc[..3], &[1, 0x81, 2]);
        assert!(parse_crc_ok(&exc));
        let mut reply = Reply::new(1, READ_INPUT_REGISTERS);
        reply.byte(2);
        reply.word(0x1234);
        let adu = reply.finish();
        assert_eq!(&adu[..5], &[1, 4, 2, 0x12, 0x34]);
        assert!(parse_crc_ok(&adu));
    }

    fn parse_crc_ok(adu: &[u8]) -> bool {
        let (body, crc) = adu.split_at(adu.len() - 2);
        crc16(body).to_le_bytes() == [crc[0], crc[1]]
    }
}
