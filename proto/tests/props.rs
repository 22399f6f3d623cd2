//! Property tests: no decoder panics on any input, encodings round-trip, the deframer always
//! recovers at the next delimiter, and the replay guard never accepts a number twice.

use std::collections::HashSet;

use proptest::prelude::*;
use proto::serial::{self, Deframer, MAX_ENCODED_LEN};
use proto::{Flags, Heartbeat, Key, NodeId, ReplayGuard, Role, View, FRAME_LEN};

const KEY: &[u8] = b"property-test-key-0123456789abcdef";
const CLUSTER: u32 = 0x5157_4b48;

fn heartbeat() -> impl Strategy<Value = Heartbeat> {
    (
        1u8..=32,
        0u8..8,
        0u8..7,
        any::<u16>(),
        0u8..=32,
        any::<u32>(),
        1u64..,
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(sender, link, role, flags, holder, inc, seq, epoch, view)| Heartbeat {
                cluster_id: CLUSTER,
                sender: NodeId::new(sender).expect("strategy yields 1..=32"),
                link,
                role: Role::from_u8(role).expect("strategy yields 0..7"),
                flags: Flags(flags),
                holder: NodeId::new(holder),
                prior: NodeId::new(holder.wrapping_add(1) % 33),
                incarnation: inc,
                sequence: seq,
                epoch,
                view: View(view),
                seen_epoch: epoch.wrapping_add(u64::from(inc)),
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = Heartbeat::decode(&bytes, &Key::new(KEY), CLUSTER);
    }

    #[test]
    fn frame_roundtrip(hb in heartbeat()) {
        let mut buf = [0u8; FRAME_LEN];
        hb.encode(&Key::new(KEY), &mut buf);
        prop_assert_eq!(Heartbeat::decode(&buf, &Key::new(KEY), CLUSTER), Ok(hb));
    }

    #[test]
    fn deframer_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut d = Deframer::new();
        for b in bytes {
            if let Some(Ok(frame)) = d.push(b) {
                // Anything that decodes passed the CRC; it is still just bytes to the caller.
                prop_assert_eq!(frame.len(), FRAME_LEN);
            }
            prop_assert!(d.pending() < MAX_ENCODED_LEN);
        }
    }

    #[test]
    fn recovers_after_noise(
        noise in proptest::collection::vec(any::<u8>(), 0..500),
        hb in heartbeat(),
    ) {
        let mut frame = [0u8; FRAME_LEN];
        hb.encode(&Key::new(KEY), &mut frame);
        let mut wire = [0u8; MAX_ENCODED_LEN];
        let n = serial::encode(&frame, &mut wire);
        let mut d = Deframer::new();
        for b in noise {
            let _ = d.push(b);
        }
        // A delimiter ends whatever the noise left behind; the next frame must then decode.
        let _ = d.push(0);
        let out: Vec<_> = wire[..n].iter().filter_map(|&b| d.push(b)).collect();
        prop_assert_eq!(out.len(), 1);
        prop_assert_eq!(out[0], Ok(frame));
        prop_assert_eq!(Heartbeat::decode(&frame, &Key::new(KEY), CLUSTER), Ok(hb));
    }

    #[test]
    fn serial_roundtrip_any_bytes(frame in proptest::array::uniform32(any::<u8>()),
                                  tail in proptest::collection::vec(any::<u8>(), FRAME_LEN - 32)) {
        let mut f = [0u8; FRAME_LEN];
        f[..32].copy_from_slice(&frame);
        f[32..].copy_from_slice(&tail);
        let mut wire = [0u8; MAX_ENCODED_LEN];
        let n = serial::encode(&f, &mut wire);
        prop_assert!(!wire[..n - 1].contains(&0));
        prop_assert_eq!(serial::decode_block(&wire[..n - 1]), Ok(f));
    }

    #[test]
    fn replay_never_accepts_twice(ops in proptest::collection::vec((1u32..4, 1u64..200, 0u8..2), 1..400)) {
        let mut g = ReplayGuard::new();
        let node = NodeId::new(3).expect("3 is a valid id");
        let mut accepted: HashSet<(u32, u8, u64)> = HashSet::new();
        let mut max_inc = 0u32;
        for (inc, seq, link) in ops {
            let r = g.accept(node, link, inc, seq);
            if r.is_ok() {
                prop_assert!(inc >= max_inc, "accepted an older incarnation");
                max_inc = inc;
                prop_assert!(accepted.insert((inc, link, seq)), "accepted ({inc}, {link}, {seq}) twice");
            }
        }
    }
}
