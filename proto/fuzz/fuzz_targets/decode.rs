//! Feeds arbitrary bytes to every wire decoder. Invariants: nothing panics; anything that
//! decodes re-encodes to the same bytes (decode after encode is identity).
#![no_main]

use libfuzzer_sys::fuzz_target;
use proto::serial::{self, Deframer, MAX_ENCODED_LEN};
use proto::{Heartbeat, Key, FRAME_LEN};

const KEY: &[u8] = b"fuzz-key-0123456789abcdef-0123456789";

fuzz_target!(|data: &[u8]| {
    let key = Key::new(KEY);
    // The first four bytes choose the cluster id so the fuzzer can reach past that check when
    // it happens to forge a MAC (it will not, but the paths before it are exercised).
    let cluster = data.get(..4).map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    if let Ok(hb) = Heartbeat::decode(data, &key, cluster) {
        let mut out = [0u8; FRAME_LEN];
        hb.encode(&key, &mut out);
        assert_eq!(&out[..], data);
    }
    let mut d = Deframer::new();
    for &b in data {
        if let Some(Ok(frame)) = d.push(b) {
            let mut wire = [0u8; MAX_ENCODED_LEN];
            let n = serial::encode(&frame, &mut wire);
            assert_eq!(serial::decode_block(&wire[..n - 1]), Ok(frame));
        }
    }
});
