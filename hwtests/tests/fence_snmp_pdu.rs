//! The SNMP PDU fence driver and its session layer against net-snmp's `snmpd` playing each PDU
//! model (APC MasterSwitch and rPDU, Raritan PX, Eaton ePDU): v2c and v3 authPriv (SHA-1 and
//! SHA-256 with AES-128), model detection by sysObjectID, and the failures the engine must be
//! able to tell apart (silence, refused credentials, a read-only community, a stuck outlet, an
//! unknown outlet).
//!
//! `snmpd` comes from `scripts/deps-fence.sh`; without it these tests fail.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use drivers::fence::snmp::pdu::{OutletRef, PduProfile, SnmpPduDevice, SnmpPduParams};
use drivers::fence::snmp::{
    AuthProtocol, Oid, PrivProtocol, SnmpParams, SnmpSecurity, SnmpSession, SnmpValue,
};
use drivers::fence::{FenceDevice, FenceErrorKind, PowerState};
use drivers::secret::Secret;
use hwtests::snmpd::{
    PduModel, Snmpd, SnmpdOptions, V2C_RO_COMMUNITY, V2C_RW_COMMUNITY, V3_AUTH_PASSWORD,
    V3_PRIV_PASSWORD, V3_USER, V3_USER_SHA256,
};
use tokio::time::Instant;

const NODE: &str = "beta";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn agent(model: PduModel) -> Snmpd {
    Snmpd::start(&SnmpdOptions {
        outlets: 8,
        ports: 0,
        model,
        ..SnmpdOptions::default()
    })
}

fn v2c(address: SocketAddr, community: &str) -> SnmpParams {
    SnmpParams {
        address,
        security: SnmpSecurity::V2c {
            community: Secret::new(community),
        },
        request_timeout: Duration::from_millis(300),
        retries: 2,
    }
}

fn v3(
    address: SocketAddr,
    user: &str,
    auth: AuthProtocol,
    auth_pw: &str,
    priv_pw: &str,
) -> SnmpParams {
    SnmpParams {
        address,
        security: SnmpSecurity::V3 {
            username: user.to_owned(),
            auth,
            auth_password: Secret::new(auth_pw),
            privacy: Some((PrivProtocol::Aes128, Secret::new(priv_pw))),
        },
        request_timeout: Duration::from_millis(300),
        retries: 2,
    }
}

fn pdu(snmp: SnmpParams, profile: PduProfile, outlets: Vec<OutletRef>) -> SnmpPduDevice {
    SnmpPduDevice::new(
        "pdu1",
        SnmpPduParams {
            snmp,
            profile,
            outlets: BTreeMap::from([(NODE.to_owned(), outlets)]),
            poll_interval: Duration::from_millis(100),
            off_time: Duration::from_millis(200),
        },
    )
    .expect("valid parameters")
}

fn profile_of(model: PduModel) -> PduProfile {
    match model {
        PduModel::ApcMasterSwitch => PduProfile::ApcMasterSwitch,
        PduModel::ApcRpdu => PduProfile::ApcRpdu,
        PduModel::RaritanPx => PduProfile::RaritanPx,
        PduModel::EatonEpdu => PduProfile::EatonEpdu,
    }
}

/// status, off, on, reboot and monitor on outlet 3, each checked against the agent's own state,
/// with the profile configured and then detected.
fn cycle(model: PduModel) {
    let snmpd = agent(model);
    rt().block_on(async {
        for profile in [profile_of(model), PduProfile::Auto] {
            let auto = profile == PduProfile::Auto;
            let mut device = pdu(
                v2c(snmpd.address(), V2C_RW_COMMUNITY),
                profile,
                vec![OutletRef::Number(3)],
            );
            device.monitor(deadline(5)).await.expect("monitor");
            assert_eq!(
                device.profile(),
                Some(&profile_of(model)),
                "{model:?} auto={auto}"
            );
            assert_eq!(device.status(NODE, deadline(5)).await, Ok(PowerState::On));

            let started = Instant::now();
            let off = device.off(NODE, deadline(5)).await.expect("off");
            println!(
                "{model:?} v2c off: {:?} ({} polls)",
                started.elapsed(),
                off.polls
            );
            assert_eq!(off.state, PowerState::Off);
            assert!(off.polls >= 1);
            assert!(
                !snmpd.outlet_on(3),
                "{model:?}: the agent still has outlet 3 on"
            );
            assert!(
                snmpd.outlet_on(2) && snmpd.outlet_on(4),
                "only outlet 3 switches"
            );
            assert_eq!(device.status(NODE, deadline(5)).await, Ok(PowerState::Off));

            let on = device.on(NODE, deadline(5)).await.expect("on");
            assert_eq!(on.state, PowerState::On);
            assert!(snmpd.outlet_on(3));

            let sets_before = snmpd.sets().len();
            let started = Instant::now();
            let reboot = device.reboot(NODE, deadline(5)).await.expect("reboot");
            assert_eq!(reboot.state, PowerState::On);
            assert!(
                started.elapsed() >= Duration::from_millis(200),
                "off_time is kept"
            );
            assert!(snmpd.outlet_on(3));
            let sets = snmpd.sets();
            assert_eq!(
                sets.len() - sets_before,
                2,
                "reboot is an off and an on: {sets:?}"
            );
            assert!(sets.iter().all(|s| s.ends_with("DONE")), "{sets:?}");
        }
    });
}

#[test]
fn apc_masterswitch_v2c_off_on_reboot_and_detection() {
    cycle(PduModel::ApcMasterSwitch);
}

#[test]
fn apc_rpdu_v2c_off_on_reboot_and_detection() {
    cycle(PduModel::ApcRpdu);
}

#[test]
fn raritan_v2c_off_on_reboot_and_detection() {
    cycle(PduModel::RaritanPx);
}

#[test]
fn eaton_v2c_off_on_reboot_and_detection() {
    cycle(PduModel::EatonEpdu);
}

#[test]
fn the_writes_use_each_models_own_columns_and_values() {
    let expect = [
        (
            PduModel::ApcMasterSwitch,
            ".1.3.6.1.4.1.318.1.1.4.4.2.1.3.3 integer 2",
        ),
        (
            PduModel::ApcRpdu,
            ".1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.3 integer 2",
        ),
        (
            PduModel::RaritanPx,
            ".1.3.6.1.4.1.13742.6.4.1.2.1.2.1.3 integer 0",
        ),
        (
            PduModel::EatonEpdu,
            ".1.3.6.1.4.1.534.6.6.7.6.6.1.3.0.3 integer 0",
        ),
    ];
    for (model, first_set) in expect {
        let snmpd = agent(model);
        rt().block_on(async {
            let mut device = pdu(
                v2c(snmpd.address(), V2C_RW_COMMUNITY),
                PduProfile::Auto,
                vec![OutletRef::Number(3)],
            );
            device.off(NODE, deadline(5)).await.expect("off");
        });
        let sets = snmpd.sets();
        assert_eq!(sets.len(), 1, "{model:?}: {sets:?}");
        assert!(sets[0].starts_with(first_set), "{model:?}: {sets:?}");
    }
}

fn v3_cycle(user: &str, auth: AuthProtocol) {
    let snmpd = agent(PduModel::ApcRpdu);
    rt().block_on(async {
        let params = v3(
            snmpd.address(),
            user,
            auth,
            V3_AUTH_PASSWORD,
            V3_PRIV_PASSWORD,
        );
        let mut device = pdu(params, PduProfile::Auto, vec![OutletRef::Number(5)]);
        device.monitor(deadline(5)).await.expect("monitor");
        assert_eq!(device.profile(), Some(&PduProfile::ApcRpdu));
        let started = Instant::now();
        let off = device.off(NODE, deadline(5)).await.expect("off");
        println!(
            "v3 {user} off: {:?} ({} polls)",
            started.elapsed(),
            off.polls
        );
        assert!(!snmpd.outlet_on(5));
        assert_eq!(device.status(NODE, deadline(5)).await, Ok(PowerState::Off));
        device.on(NODE, deadline(5)).await.expect("on");
        assert!(snmpd.outlet_on(5));
    });
}

#[test]
fn v3_auth_priv_sha1_aes128() {
    v3_cycle(V3_USER, AuthProtocol::Sha1);
}

#[test]
fn v3_auth_priv_sha256_aes128() {
    v3_cycle(V3_USER_SHA256, AuthProtocol::Sha256);
}

#[test]
fn wrong_community_is_silence_reported_by_the_deadline() {
    let snmpd = agent(PduModel::ApcMasterSwitch);
    rt().block_on(async {
        let mut device = pdu(
            v2c(snmpd.address(), "nosuchcommunity"),
            PduProfile::ApcMasterSwitch,
            vec![OutletRef::Number(1)],
        );
        let started = Instant::now();
        let e = device.off(NODE, deadline(3)).await.expect_err("silence");
        let elapsed = started.elapsed();
        assert_eq!(e.kind, FenceErrorKind::Timeout, "{e}");
        assert!(
            e.message.contains(&format!(
                "no answer from {}: wrong community or v3 credentials",
                snmpd.address()
            )),
            "{e}"
        );
        // Three tries of 300 ms, well inside the deadline.
        assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
        assert!(
            !e.message.contains("nosuchcommunity"),
            "the community is a secret: {e}"
        );
    });
    assert!(snmpd.outlet_on(1));
}

#[test]
fn silence_stops_at_the_deadline_not_after_all_retries() {
    let snmpd = agent(PduModel::ApcMasterSwitch);
    rt().block_on(async {
        let mut params = v2c(snmpd.address(), "nosuchcommunity");
        params.request_timeout = Duration::from_secs(2);
        params.retries = 5;
        let mut device = pdu(
            params,
            PduProfile::ApcMasterSwitch,
            vec![OutletRef::Number(1)],
        );
        let started = Instant::now();
        let e = device
            .status(NODE, Instant::now() + Duration::from_millis(700))
            .await
            .expect_err("silence");
        assert_eq!(e.kind, FenceErrorKind::Timeout);
        let elapsed = started.elapsed();
        assert!(
            // An overrun would be a whole request timeout (2 s); the slack is for a loaded
            // machine's late timer.
            elapsed >= Duration::from_millis(650) && elapsed < Duration::from_millis(1300),
            "{elapsed:?}"
        );
    });
}

#[test]
fn closed_port_is_unreachable() {
    // Bound and dropped: nothing listens there, so the kernel answers port unreachable.
    let port = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    rt().block_on(async {
        let mut device = pdu(
            v2c((Ipv4Addr::LOCALHOST, port).into(), V2C_RW_COMMUNITY),
            PduProfile::ApcMasterSwitch,
            vec![OutletRef::Number(1)],
        );
        let e = device.status(NODE, deadline(3)).await.expect_err("closed");
        assert_eq!(e.kind, FenceErrorKind::Unreachable, "{e}");
        assert!(e.message.contains("no answer from"), "{e}");
    });
}

#[test]
fn wrong_v3_auth_password_is_an_auth_error() {
    let snmpd = agent(PduModel::ApcMasterSwitch);
    rt().block_on(async {
        let params = v3(
            snmpd.address(),
            V3_USER,
            AuthProtocol::Sha1,
            "wrongpass123",
            V3_PRIV_PASSWORD,
        );
        let mut device = pdu(
            params,
            PduProfile::ApcMasterSwitch,
            vec![OutletRef::Number(1)],
        );
        let started = Instant::now();
        let e = device.off(NODE, deadline(5)).await.expect_err("wrong key");
        assert_eq!(e.kind, FenceErrorKind::Auth, "{e}");
        assert!(e.message.contains("usmStatsWrongDigests"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "at once, not by timeout"
        );
        assert!(!e.message.contains("wrongpass123"));
    });
    assert!(snmpd.outlet_on(1));
}

#[test]
fn unknown_v3_user_is_an_auth_error() {
    let snmpd = agent(PduModel::ApcMasterSwitch);
    rt().block_on(async {
        let params = v3(
            snmpd.address(),
            "nobody",
            AuthProtocol::Sha1,
            V3_AUTH_PASSWORD,
            V3_PRIV_PASSWORD,
        );
        let mut device = pdu(
            params,
            PduProfile::ApcMasterSwitch,
            vec![OutletRef::Number(1)],
        );
        let e = device
            .status(NODE, deadline(5))
            .await
            .expect_err("no such user");
        assert_eq!(e.kind, FenceErrorKind::Auth, "{e}");
        assert!(e.message.contains("\"nobody\""), "{e}");
    });
}

#[test]
fn wrong_v3_privacy_password_is_silence() {
    let snmpd = agent(PduModel::ApcMasterSwitch);
    rt().block_on(async {
        let params = v3(
            snmpd.address(),
            V3_USER,
            AuthProtocol::Sha1,
            V3_AUTH_PASSWORD,
            "wrongpriv123",
        );
        let mut device = pdu(
            params,
            PduProfile::ApcMasterSwitch,
            vec![OutletRef::Number(1)],
        );
        let e = device
            .off(NODE, deadline(5))
            .await
            .expect_err("undecryptable");
        // net-snmp drops what it cannot decrypt without a report.
        assert_eq!(e.kind, FenceErrorKind::Timeout, "{e}");
        assert!(e.message.contains("no answer from"), "{e}");
    });
    assert!(snmpd.outlet_on(1));
}

#[test]
fn read_only_community_is_refused() {
    let snmpd = agent(PduModel::ApcRpdu);
    rt().block_on(async {
        let mut device = pdu(
            v2c(snmpd.address(), V2C_RO_COMMUNITY),
            PduProfile::Auto,
            vec![OutletRef::Number(2)],
        );
        // Reading is allowed: monitor and status work.
        device.monitor(deadline(5)).await.expect("monitor");
        assert_eq!(device.status(NODE, deadline(5)).await, Ok(PowerState::On));
        let e = device.off(NODE, deadline(5)).await.expect_err("read-only");
        assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");
        assert!(e.message.contains("outlet 2"), "{e}");
        assert!(e.message.contains("use a read-write community"), "{e}");
        assert!(
            e.message.contains(".1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.2"),
            "{e}"
        );
    });
    assert!(snmpd.outlet_on(2));
}

/// An Eaton PDU whose outlet 4 acknowledges every command and never switches.
fn eaton_with_outlet_4_stuck(silent_after_set_gets: Option<u32>) -> Snmpd {
    Snmpd::start(&SnmpdOptions {
        outlets: 8,
        ports: 0,
        model: PduModel::EatonEpdu,
        stuck_outlets: vec![4],
        silent_after_set_gets,
        ..SnmpdOptions::default()
    })
}

/// `off` of a node fed by outlets 3 and 4 that must fail `Unconfirmed` naming outlet 4 within
/// `budget` plus slack for a loaded machine; the device, for more checks.
async fn off_is_unconfirmed_naming_outlet_4(snmpd: &Snmpd, budget: Duration) -> SnmpPduDevice {
    let mut device = pdu(
        v2c(snmpd.address(), V2C_RW_COMMUNITY),
        PduProfile::Auto,
        vec![OutletRef::Number(3), OutletRef::Number(4)],
    );
    let started = Instant::now();
    let e = device
        .off(NODE, Instant::now() + budget)
        .await
        .expect_err("an outlet seen on must not confirm off");
    let elapsed = started.elapsed();
    assert_eq!(e.kind, FenceErrorKind::Unconfirmed, "{e}");
    assert!(e.message.contains("outlet 4 still read on"), "{e}");
    assert!(
        elapsed < budget + Duration::from_millis(700),
        "deadline overrun: {elapsed:?}"
    );
    assert!(!snmpd.outlet_on(3));
    assert!(snmpd.outlet_on(4));
    device
}

#[test]
fn stuck_outlet_is_unconfirmed_naming_it() {
    let snmpd = eaton_with_outlet_4_stuck(None);
    rt().block_on(async {
        let mut device =
            off_is_unconfirmed_naming_outlet_4(&snmpd, Duration::from_millis(1500)).await;
        assert_eq!(
            device.status(NODE, deadline(5)).await,
            Ok(PowerState::On),
            "one outlet still feeds the node"
        );
    });
}

/// The PDU answers the commands and the first read-back (outlet 4 still on), then stops
/// answering: at the deadline the fence is unconfirmed naming outlet 4, not a silent PDU.
#[test]
fn a_pdu_silent_after_the_first_read_back_leaves_the_fence_unconfirmed() {
    // snmpd's read of outlet 4 before its command, then one read-back: the state of outlets
    // 3 and 4.
    let snmpd = eaton_with_outlet_4_stuck(Some(3));
    rt().block_on(off_is_unconfirmed_naming_outlet_4(
        &snmpd,
        Duration::from_secs(2),
    ));
}

#[test]
fn two_outlets_of_one_node_are_both_switched_and_both_read() {
    let snmpd = agent(PduModel::RaritanPx);
    rt().block_on(async {
        let mut device = pdu(
            v2c(snmpd.address(), V2C_RW_COMMUNITY),
            PduProfile::Auto,
            vec![OutletRef::Number(6), OutletRef::Number(7)],
        );
        device.off(NODE, deadline(5)).await.expect("off");
        assert!(!snmpd.outlet_on(6) && !snmpd.outlet_on(7));
        assert_eq!(device.status(NODE, deadline(5)).await, Ok(PowerState::Off));
        // Already off: confirmed by one read, nothing written.
        let sets = snmpd.sets().len();
        let again = device.off(NODE, deadline(5)).await.expect("off again");
        assert_eq!(again.polls, 1);
        assert_eq!(snmpd.sets().len(), sets);
        // Someone at the front panel powers one supply again: the node is not off.
        snmpd.set_outlet(7, true);
        assert_eq!(device.status(NODE, deadline(5)).await, Ok(PowerState::On));
        device.on(NODE, deadline(5)).await.expect("on");
        assert!(snmpd.outlet_on(6) && snmpd.outlet_on(7));
    });
}

#[test]
fn outlets_by_name() {
    for model in [PduModel::ApcMasterSwitch, PduModel::EatonEpdu] {
        let snmpd = agent(model);
        rt().block_on(async {
            let mut device = pdu(
                v2c(snmpd.address(), V2C_RW_COMMUNITY),
                PduProfile::Auto,
                vec![OutletRef::Name("Outlet 5".to_owned())],
            );
            device.off(NODE, deadline(5)).await.expect("off");
            assert!(!snmpd.outlet_on(5), "{model:?}");
            assert!(snmpd.outlet_on(4) && snmpd.outlet_on(6), "{model:?}");
            device.on(NODE, deadline(5)).await.expect("on");
            assert!(snmpd.outlet_on(5), "{model:?}");
        });
    }
}

#[test]
fn unknown_outlets_and_nodes_are_target_unknown() {
    let snmpd = agent(PduModel::ApcRpdu);
    rt().block_on(async {
        let rw = v2c(snmpd.address(), V2C_RW_COMMUNITY);

        let mut by_name = pdu(
            rw.clone(),
            PduProfile::Auto,
            vec![OutletRef::Name("db1-psu1".to_owned())],
        );
        let e = by_name
            .off(NODE, deadline(5))
            .await
            .expect_err("no such name");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
        assert!(e.message.contains("\"Outlet 1\""), "lists the names: {e}");

        let mut by_number = pdu(rw.clone(), PduProfile::ApcRpdu, vec![OutletRef::Number(42)]);
        let e = by_number
            .status(NODE, deadline(5))
            .await
            .expect_err("no outlet 42");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
        assert!(e.message.contains("42"), "{e}");
        let e = by_number
            .monitor(deadline(5))
            .await
            .expect_err("monitor checks outlets");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
        let e = by_number
            .off(NODE, deadline(5))
            .await
            .expect_err("no outlet 42");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");

        let mut device = pdu(rw, PduProfile::ApcRpdu, vec![OutletRef::Number(1)]);
        let e = device
            .off("gamma", deadline(5))
            .await
            .expect_err("not served");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
    });
    assert!((1..=8).all(|n| snmpd.outlet_on(n)), "nothing switched");
}

#[test]
fn session_reads_walks_and_writes() {
    let snmpd = Snmpd::start(&SnmpdOptions {
        outlets: 8,
        ports: 4,
        model: PduModel::ApcMasterSwitch,
        ..SnmpdOptions::default()
    });
    rt().block_on(async {
        for params in [
            v2c(snmpd.address(), V2C_RW_COMMUNITY),
            v3(
                snmpd.address(),
                V3_USER,
                AuthProtocol::Sha1,
                V3_AUTH_PASSWORD,
                V3_PRIV_PASSWORD,
            ),
        ] {
            let mut session = SnmpSession::connect("switch", &params, deadline(5))
                .await
                .expect("connect");
            let id = session
                .sys_object_id(deadline(5))
                .await
                .expect("sysObjectID");
            assert_eq!(id.to_string(), PduModel::ApcMasterSwitch.sys_object_id());

            let if_name = Oid::parse("1.3.6.1.2.1.31.1.1.1.1").expect("ifName");
            let rows = session.walk(&if_name, deadline(5), 16).await.expect("walk");
            let names: Vec<String> = rows.iter().filter_map(|(_, v)| v.as_text()).collect();
            assert_eq!(names, ["port1", "port2", "port3", "port4"]);
            assert_eq!(rows[2].0, if_name.child(3));
            let e = session
                .walk(&if_name, deadline(5), 3)
                .await
                .expect_err("bounded");
            assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");

            let admin = Oid::parse(".1.3.6.1.2.1.2.2.1.7").expect("ifAdminStatus");
            session
                .set_int(&admin.child(2), 2, deadline(5))
                .await
                .expect("set");
            let values = session
                .get(&[admin.child(1), admin.child(2)], deadline(5))
                .await
                .expect("get");
            assert_eq!(values[0], (admin.child(1), SnmpValue::Int(1)));
            assert_eq!(values[1], (admin.child(2), SnmpValue::Int(2)));
            session
                .set_int(&admin.child(2), 1, deadline(5))
                .await
                .expect("set");

            let e = session
                .get(&[admin.child(99)], deadline(5))
                .await
                .expect_err("no such port");
            assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
            assert!(e.message.contains(".1.3.6.1.2.1.2.2.1.7.99"), "{e}");
            let e = session
                .set_int(&admin.child(2), 9, deadline(5))
                .await
                .expect_err("bad value");
            assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");
            assert!(e.message.contains("value 9"), "{e}");
            let oper = Oid::parse(".1.3.6.1.2.1.2.2.1.8.2").expect("ifOperStatus");
            let e = session
                .set_int(&oper, 2, deadline(5))
                .await
                .expect_err("read-only");
            assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");
            let stats = session.stats();
            assert_eq!(stats.retransmits, 0, "{stats:?}");
        }
    });
    assert!(snmpd.port_admin_up(2));
}
