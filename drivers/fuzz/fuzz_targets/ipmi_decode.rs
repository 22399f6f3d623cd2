//! Fuzzes every IPMI decoder with one input: none may panic, and an established session must
//! never accept a datagram it did not verify. Run: `cd drivers && cargo +nightly fuzz run
//! ipmi_decode`.

#![no_main]

use drivers::fence::ipmi::codec;
use drivers::fence::ipmi::crypto::{self, CipherSuite};
use drivers::fence::ipmi::session::{Handshake, RandomSource, ReplayWindow};
use libfuzzer_sys::fuzz_target;

struct Counter(u8);

impl RandomSource for Counter {
    fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
    }
}

fuzz_target!(|data: &[u8]| {
    for len in [0, 12, 16] {
        let _ = codec::decode_packet(data, len);
    }
    let _ = codec::decode_response(data);
    let _ = codec::decode_open_session_response(data);
    let _ = codec::decode_rakp2(data, 20);
    let _ = codec::decode_rakp2(data, 32);
    let _ = codec::decode_rakp4(data, 12);
    let _ = codec::decode_rakp4(data, 16);
    let _ = codec::decode_channel_auth_capabilities(data);
    let _ = codec::decode_chassis_power_on(data);
    let _ = crypto::decrypt_payload(&[0x5a; 16], data);
    for id in [3, 17] {
        let suite = CipherSuite::from_id(id).expect("implemented suite");
        let mut hs = Handshake::new(suite, 4, b"admin", b"secret", &mut Counter(0));
        let _ = hs.on_open_session_response(data, 0);
        let _ = hs.on_rakp2(data, 0);
        let _ = hs.on_rakp4(data, 0);
    }
    let mut window = ReplayWindow::default();
    for chunk in data.chunks_exact(4) {
        let _ = window.accept(u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]));
    }
});
