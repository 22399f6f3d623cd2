//! Property tests of the IPMI decoders: arbitrary, truncated or hostile datagrams are errors
//! (or "not ours"), never panics; and what the encoders write decodes to what went in. The
//! cargo-fuzz target `drivers/fuzz` (`ipmi_decode`) drives the same decoders with coverage
//! guidance.

use drivers::fence::ipmi::codec::{self, Packet, V20Header};
use drivers::fence::ipmi::crypto::{self, CipherSuite};
use drivers::fence::ipmi::session::{Handshake, RandomSource, ReplayWindow};
use proptest::prelude::*;

struct Fixed(u8);

impl RandomSource for Fixed {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_mul(13).wrapping_add(7);
            *b = self.0;
        }
    }
}

proptest! {
    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        for len in [0, 12, 16, 20] {
            let _ = codec::decode_packet(&bytes, len);
        }
        let _ = codec::decode_response(&bytes);
        let _ = codec::decode_open_session_response(&bytes);
        for len in [20, 32] {
            let _ = codec::decode_rakp2(&bytes, len);
        }
        for len in [12, 16] {
            let _ = codec::decode_rakp4(&bytes, len);
        }
        let _ = codec::decode_channel_auth_capabilities(&bytes);
        let _ = codec::decode_chassis_power_on(&bytes);
        let _ = crypto::decrypt_payload(&[3; 16], &bytes);
        for suite in [3, 17] {
            let suite = CipherSuite::from_id(suite).unwrap();
            let mut hs = Handshake::new(suite, 4, b"admin", b"secret", &mut Fixed(1));
            let _ = hs.on_open_session_response(&bytes, 0);
            let _ = hs.on_rakp2(&bytes, 0);
            let _ = hs.on_rakp4(&bytes, 0);
        }
    }

    #[test]
    fn rmcp_prefixed_garbage_never_panics(
        ptype in any::<u8>(),
        rest in proptest::collection::vec(any::<u8>(), 0..120),
    ) {
        // Past the RMCP header, so the session-layer paths are reached more often.
        let mut bytes = vec![0x06, 0x00, 0xff, 0x07, 0x06, ptype];
        bytes.extend_from_slice(&rest);
        for len in [0, 12, 16] {
            let _ = codec::decode_packet(&bytes, len);
        }
    }

    #[test]
    fn v20_round_trip(
        ptype in 0u8..0x40,
        encrypted in any::<bool>(),
        authenticated in any::<bool>(),
        session_id in any::<u32>(),
        seq in any::<u32>(),
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        prop_assume!(ptype != 0x02);
        let header = V20Header { payload_type: ptype, encrypted, authenticated, session_id, seq };
        let auth = |covered: &[u8]| crypto::packet_auth_code(&CipherSuite::from_id(17).unwrap(), b"k", covered);
        let bytes = codec::encode_v20(header, &body, if authenticated { Some(&auth) } else { None }).unwrap();
        let auth_len = if authenticated { 16 } else { 0 };
        match codec::decode_packet(&bytes, auth_len).unwrap() {
            Packet::V20 { header: h, payload: p, integrity_data, auth_code } => {
                prop_assert_eq!(h, header);
                prop_assert_eq!(p, &body[..]);
                if authenticated {
                    prop_assert_eq!(auth_code, &auth(integrity_data)[..]);
                }
            }
            other => prop_assert!(false, "decoded as {:?}", other),
        }
    }

    #[test]
    fn aes_round_trip(key in any::<[u8; 16]>(), iv in any::<[u8; 16]>(), plain in proptest::collection::vec(any::<u8>(), 0..100)) {
        let ct = crypto::encrypt_payload(&key, &iv, &plain);
        prop_assert_eq!(crypto::decrypt_payload(&key, &ct).unwrap(), plain);
    }

    #[test]
    fn replay_window_accepts_each_number_once(seqs in proptest::collection::vec(1u32..200, 1..100)) {
        let mut w = ReplayWindow::default();
        let mut accepted = std::collections::HashSet::new();
        for s in seqs {
            if w.accept(s) {
                prop_assert!(accepted.insert(s), "sequence {} accepted twice", s);
            }
        }
    }

    #[test]
    fn request_messages_have_valid_checksums(netfn in 0u8..0x40, cmd in any::<u8>(), seq in 0u8..0x40, data in proptest::collection::vec(any::<u8>(), 0..30)) {
        let mut m = Vec::new();
        codec::encode_request(netfn, cmd, seq, &data, &mut m);
        prop_assert_eq!(codec::checksum(&m[..3]), 0);
        prop_assert_eq!(codec::checksum(&m[3..]), 0);
        let packet = codec::encode_v15_unauthenticated(&m).unwrap();
        prop_assert_eq!(codec::decode_packet(&packet, 0).unwrap(), Packet::V15 { message: &m[..] });
    }
}
