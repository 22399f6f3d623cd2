//! Known-answer tests of the RMCP+ computations and datagrams for cipher suites 3 and 17.
//!
//! The expected values are not from this crate: `drivers/tests/kat/ipmi_kat.py` computes them
//! with Python's hmac/hashlib and the openssl command line from the specification's formulas,
//! and its output is pasted below. Suite 17 matters most here: `ipmi_sim` lacks it, so these
//! tests and `ipmitool -C 17` against the demo BMC (which shares this crate's cryptography,
//! `agent/src/demo/bmc.rs`) are its checks against independent implementations. Suite 3 is
//! checked the same way, which also proves the script right against `ipmi_sim` (see
//! hwtests/tests/ipmi.rs).

use drivers::fence::ipmi::codec::{self, cmd};
use drivers::fence::ipmi::crypto::{self, CipherSuite, RakpInputs};
use drivers::fence::ipmi::session::{Handshake, RandomSource};

// Output of `python3 drivers/tests/kat/ipmi_kat.py`:
const S3_RAKP2_CODE: &str = "c2f75e06269a6f971811db0b4c747609e65c4f29";
const S3_RAKP3_CODE: &str = "00640f9bf2be8ef915dc41871d69e07515329d81";
const S3_SIK: &str = "a39ae2b160a1e5efe017ffd6ec1a4ff8eeac6f54";
const S3_K1: &str = "58dbc1afa00eb3f9487c9eaef0dc7892cc43e496";
const S3_K2: &str = "8bd9b8ce0674b5d745ced91e728ac1a51464fcaf";
const S3_RAKP4_ICV: &str = "c329a8147c72cf75607844c8";
const S3_OPEN_REQUEST: &str = "0600ff07061000000000000000002000000400000d0c0b0a000000080100000001000008010000000200000801000000";
const S3_OPEN_RESPONSE: &str = "0600ff07061100000000000000002400000004000d0c0b0a44332211000000080100000001000008010000000200000801000000";
const S3_RAKP1: &str = "0600ff070612000000000000000021000000000044332211000102030405060708090a0b0c0d0e0f1400000561646d696e";
const S3_RAKP2: &str = "0600ff07061300000000000000003c00000000000d0c0b0a101112131415161718191a1b1c1d1e1fa0a1a2a3a4a5a6a7a8a9aaabacadaeafc2f75e06269a6f971811db0b4c747609e65c4f29";
const S3_RAKP3: &str =
    "0600ff07061400000000000000001c00000000004433221100640f9bf2be8ef915dc41871d69e07515329d81";
const S3_RAKP4: &str = "0600ff07061500000000000000001400000000000d0c0b0ac329a8147c72cf75607844c8";
const S3_REQUEST: &str = "0600ff0706c044332211010000002000303132333435363738393a3b3c3d3e3f9ef77ac333651030580f3a141b37e9f3ffff0207a88857d6d87a685963316d51";
const S3_RESPONSE: &str = "0600ff0706c00d0c0b0a070000002000404142434445464748494a4b4c4d4e4f76bc5e065748ee7f3fe71f2502bcf656ffff0207c5f041b64f2bcf1de3a318cf";
const S17_RAKP2_CODE: &str = "d4c569946c96055a72feb98f68df415f75476468c144a668136279bb8bbcfc3f";
const S17_RAKP3_CODE: &str = "c2f903c899345d19330710312a2b57d09e3dafb47b471ae895562797913e1e01";
const S17_SIK: &str = "0c4b7464110cf18fd94ec46aa0242c66ab06157709c02ea7db1653aac04b1023";
const S17_K1: &str = "b56faef1c37759ee6f92dccb3dfb8a7610c83e064883aa735d3e84c1cb0c5728";
const S17_K2: &str = "45d88aac4a3d9b6ac2cdf022f1f31a5a82ac0aecfe8d8559b4060eb4a13b4334";
const S17_RAKP4_ICV: &str = "c5f260397306c2004c10cc08280e2535";
const S17_OPEN_REQUEST: &str = "0600ff07061000000000000000002000000400000d0c0b0a000000080300000001000008040000000200000801000000";
const S17_OPEN_RESPONSE: &str = "0600ff07061100000000000000002400000004000d0c0b0a44332211000000080300000001000008040000000200000801000000";
const S17_RAKP1: &str = "0600ff070612000000000000000021000000000044332211000102030405060708090a0b0c0d0e0f1400000561646d696e";
const S17_RAKP2: &str = "0600ff07061300000000000000004800000000000d0c0b0a101112131415161718191a1b1c1d1e1fa0a1a2a3a4a5a6a7a8a9aaabacadaeafd4c569946c96055a72feb98f68df415f75476468c144a668136279bb8bbcfc3f";
const S17_RAKP3: &str = "0600ff070614000000000000000028000000000044332211c2f903c899345d19330710312a2b57d09e3dafb47b471ae895562797913e1e01";
const S17_RAKP4: &str =
    "0600ff07061500000000000000001800000000000d0c0b0ac5f260397306c2004c10cc08280e2535";
const S17_REQUEST: &str = "0600ff0706c044332211010000002000303132333435363738393a3b3c3d3e3f56aed85554955ad462f77acabc2a9b46ffff0207f8582897a8bb6b826aa8715a2fb3e0b7";
const S17_RESPONSE: &str = "0600ff0706c00d0c0b0a070000002000404142434445464748494a4b4c4d4e4fc1b84eda7ecb99364be362d0dc81dea2ffff0207a0da257dddfcae83428a38875c1860f0";

const SIDC: u32 = 0x0a0b_0c0d;
const SIDM: u32 = 0x1122_3344;
const ROLE: u8 = 0x14;
const USER: &[u8] = b"admin";
const PASSWORD: &[u8] = b"secret";

struct Kat {
    suite: u8,
    rakp2_code: &'static str,
    rakp3_code: &'static str,
    sik: &'static str,
    k1: &'static str,
    k2: &'static str,
    rakp4_icv: &'static str,
    open_request: &'static str,
    open_response: &'static str,
    rakp1: &'static str,
    rakp2: &'static str,
    rakp3: &'static str,
    rakp4: &'static str,
    request: &'static str,
    response: &'static str,
}

const SUITE3: Kat = Kat {
    suite: 3,
    rakp2_code: S3_RAKP2_CODE,
    rakp3_code: S3_RAKP3_CODE,
    sik: S3_SIK,
    k1: S3_K1,
    k2: S3_K2,
    rakp4_icv: S3_RAKP4_ICV,
    open_request: S3_OPEN_REQUEST,
    open_response: S3_OPEN_RESPONSE,
    rakp1: S3_RAKP1,
    rakp2: S3_RAKP2,
    rakp3: S3_RAKP3,
    rakp4: S3_RAKP4,
    request: S3_REQUEST,
    response: S3_RESPONSE,
};

const SUITE17: Kat = Kat {
    suite: 17,
    rakp2_code: S17_RAKP2_CODE,
    rakp3_code: S17_RAKP3_CODE,
    sik: S17_SIK,
    k1: S17_K1,
    k2: S17_K2,
    rakp4_icv: S17_RAKP4_ICV,
    open_request: S17_OPEN_REQUEST,
    open_response: S17_OPEN_RESPONSE,
    rakp1: S17_RAKP1,
    rakp2: S17_RAKP2,
    rakp3: S17_RAKP3,
    rakp4: S17_RAKP4,
    request: S17_REQUEST,
    response: S17_RESPONSE,
};

fn hex(s: &str) -> Vec<u8> {
    assert_eq!(s.len() % 2, 0);
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn range16(start: u8) -> [u8; 16] {
    std::array::from_fn(|i| start + u8::try_from(i).unwrap())
}

/// Hands out the script's "random" values in the order the driver draws them: console session
/// id, console random number, then one IV per encrypted request.
struct Scripted(Vec<u8>);

impl RandomSource for Scripted {
    fn fill(&mut self, buf: &mut [u8]) {
        assert!(
            self.0.len() >= buf.len(),
            "the driver drew more randomness than scripted"
        );
        let rest = self.0.split_off(buf.len());
        buf.copy_from_slice(&self.0);
        self.0 = rest;
    }
}

fn inputs() -> RakpInputs<'static> {
    RakpInputs {
        console_session_id: SIDC,
        bmc_session_id: SIDM,
        console_random: range16(0x00),
        bmc_random: range16(0x10),
        bmc_guid: range16(0xa0),
        role: ROLE,
        username: USER,
    }
}

fn computations(k: &Kat) {
    let suite = CipherSuite::from_id(k.suite).unwrap();
    let i = inputs();
    assert_eq!(
        crypto::rakp2_code(suite.hash, PASSWORD, &i),
        hex(k.rakp2_code)
    );
    assert_eq!(
        crypto::rakp3_code(suite.hash, PASSWORD, &i),
        hex(k.rakp3_code)
    );
    let sik = crypto::sik(suite.hash, PASSWORD, &i);
    assert_eq!(sik, hex(k.sik));
    assert_eq!(crypto::additional_key(suite.hash, &sik, 1), hex(k.k1));
    assert_eq!(crypto::additional_key(suite.hash, &sik, 2), hex(k.k2));
    assert_eq!(crypto::rakp4_icv(&suite, &sik, &i), hex(k.rakp4_icv));
}

/// The whole handshake and the first request/response of a session, byte for byte.
fn datagrams(k: &Kat) {
    let suite = CipherSuite::from_id(k.suite).unwrap();
    let mut random = SIDC.to_le_bytes().to_vec();
    random.extend_from_slice(&range16(0x00));
    random.extend_from_slice(&range16(0x30));
    let mut rng = Scripted(random);
    let mut hs = Handshake::new(suite, 4, USER, PASSWORD, &mut rng);
    assert_eq!(hs.console_session_id(), SIDC);
    assert_eq!(hs.open_session_request(0), hex(k.open_request));
    assert_eq!(
        hs.on_open_session_response(&hex(k.open_response), 0),
        Ok(Some(()))
    );
    assert_eq!(hs.rakp1(0).unwrap(), hex(k.rakp1));
    assert_eq!(hs.on_rakp2(&hex(k.rakp2), 0), Ok(Some(())));
    assert_eq!(hs.rakp3(0), hex(k.rakp3));
    let mut session = hs
        .on_rakp4(&hex(k.rakp4), 0)
        .unwrap()
        .expect("session established");
    let rq_seq = session.next_rq_seq();
    assert_eq!(rq_seq, 1);
    let request = session
        .encode_request(
            cmd::NETFN_CHASSIS,
            cmd::GET_CHASSIS_STATUS,
            rq_seq,
            &[],
            &mut rng,
        )
        .unwrap();
    assert_eq!(request, hex(k.request));
    let response = session.decode_response(&hex(k.response)).unwrap();
    assert_eq!(
        (
            response.netfn,
            response.cmd,
            response.rq_seq,
            response.completion
        ),
        (1, 1, 1, 0)
    );
    assert!(codec::decode_chassis_power_on(&response.data).unwrap());
    // The same datagram again is a replay.
    assert!(session.decode_response(&hex(k.response)).is_err());
    // Any flipped bit fails the integrity check (or the framing around it).
    let good = hex(k.response);
    for byte in 4..good.len() {
        let mut bad = good.clone();
        bad[byte] ^= 0x01;
        assert!(
            session.decode_response(&bad).is_err(),
            "flipped byte {byte} accepted"
        );
    }
}

#[test]
fn suite3_computations() {
    computations(&SUITE3);
}

#[test]
fn suite17_computations() {
    computations(&SUITE17);
}

#[test]
fn suite3_datagrams() {
    datagrams(&SUITE3);
}

#[test]
fn suite17_datagrams() {
    datagrams(&SUITE17);
}

#[test]
fn wrong_password_is_detected_at_rakp2() {
    let suite = CipherSuite::from_id(17).unwrap();
    let mut random = SIDC.to_le_bytes().to_vec();
    random.extend_from_slice(&range16(0x00));
    let mut rng = Scripted(random);
    let mut hs = Handshake::new(suite, 4, USER, b"wrong", &mut rng);
    hs.on_open_session_response(&hex(S17_OPEN_RESPONSE), 0)
        .unwrap();
    let err = hs.on_rakp2(&hex(S17_RAKP2), 0).unwrap_err();
    assert!(err.is_auth());
}
