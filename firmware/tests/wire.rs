//! Wire input never panics and answers are always well-formed: arbitrary bytes on either line,
//! at arbitrary times, against the whole core.

mod common;

use common::*;
use firmware::modbus::{self, Parsed, Request};
use proptest::prelude::*;

fn crc_ok(adu: &[u8]) -> bool {
    adu.len() >= 4 && {
        let (body, crc) = adu.split_at(adu.len() - 2);
        modbus::crc16(body).to_le_bytes() == [crc[0], crc[1]]
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn any_bytes_on_either_line_are_survived_and_every_answer_is_a_valid_frame(
        chunks in proptest::collection::vec(
            (any::<bool>(), 0u64..50, proptest::collection::vec(any::<u8>(), 0..300)),
            0..12,
        )
    ) {
        let mut b = bridge();
        let mut now = 0u64;
        for (to_bus, gap_ms, bytes) in chunks {
            now += gap_ms;
            for byte in bytes {
                if to_bus {
                    b.modbus_byte(now, byte);
                } else {
                    b.host_byte(now, byte);
                }
                if let Some(reply) = b.poll_reply() {
                    prop_assert!(reply.len() <= modbus::ADU_MAX);
                    prop_assert!(crc_ok(&reply), "{reply:?}");
                    prop_assert_eq!(reply[0], UNIT);
                }
            }
            b.tick(now + 10);
            if let Some(reply) = b.poll_reply() {
                prop_assert!(crc_ok(&reply));
            }
        }
        // Noise never arms the watchdog.
        prop_assert_eq!(b.state(), firmware::State::Disarmed);
    }

    #[test]
    fn a_read_request_decodes_to_what_was_encoded(start in any::<u16>(), quantity in 1u16..=125) {
        let [sh, sl] = start.to_be_bytes();
        let [qh, ql] = quantity.to_be_bytes();
        let adu = request(&[UNIT, 0x04, sh, sl, qh, ql]);
        prop_assert_eq!(
            modbus::parse(&adu, UNIT),
            Parsed::Request {
                request: Request::ReadInputRegisters { start, quantity },
                broadcast: false
            }
        );
    }
}
