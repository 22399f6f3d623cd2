//! The IF-MIB fabric-fence driver against net-snmp's `snmpd` playing a switch: v2c and v3
//! (SHA and SHA-256, authPriv), multipath nodes whose every port must go down, ports by
//! ifIndex, ifName and ifAlias, and the failures the engine must be able to tell apart (a port
//! that ignores the SET, an unknown port, a read-only community, a reboot request).
//!
//! `snmpd` comes from `scripts/deps-fence.sh`; without it these tests fail.

use std::collections::BTreeMap;
use std::time::Duration;

use drivers::fence::snmp::ifmib::{IfMibDevice, IfMibParams, PortRef};
use drivers::fence::snmp::{AuthProtocol, PrivProtocol, SnmpParams, SnmpSecurity};
use drivers::fence::{FenceDevice, FenceErrorKind, PowerState};
use drivers::secret::Secret;
use hwtests::snmpd::{
    Snmpd, SnmpdOptions, V2C_RO_COMMUNITY, V2C_RW_COMMUNITY, V3_AUTH_PASSWORD, V3_PRIV_PASSWORD,
    V3_USER, V3_USER_SHA256,
};
use tokio::time::Instant;

/// Two ports by ifIndex (multipath).
const ALPHA: &str = "alpha";
/// Port 3 by ifName, port 4 by ifAlias.
const BETA: &str = "beta";

fn v2c(community: &str) -> SnmpSecurity {
    SnmpSecurity::V2c {
        community: Secret::new(community),
    }
}

fn v3(username: &str, auth: AuthProtocol, auth_password: &str) -> SnmpSecurity {
    SnmpSecurity::V3 {
        username: username.to_owned(),
        auth,
        auth_password: Secret::new(auth_password),
        privacy: Some((PrivProtocol::Aes128, Secret::new(V3_PRIV_PASSWORD))),
    }
}

fn params(agent: &Snmpd, security: SnmpSecurity, ports: &[(&str, Vec<PortRef>)]) -> IfMibParams {
    IfMibParams {
        snmp: SnmpParams {
            address: agent.address(),
            security,
            request_timeout: Duration::from_millis(300),
            retries: 2,
        },
        ports: ports
            .iter()
            .map(|(node, refs)| ((*node).to_owned(), refs.clone()))
            .collect::<BTreeMap<_, _>>(),
        poll_interval: Duration::from_millis(50),
        check_oper_status: true,
    }
}

fn standard_ports() -> Vec<(&'static str, Vec<PortRef>)> {
    vec![
        (ALPHA, vec![PortRef::Index(1), PortRef::Index(2)]),
        (
            BETA,
            vec![
                PortRef::Name("port3".to_owned()),
                PortRef::Name("host4-hba".to_owned()),
            ],
        ),
    ]
}

fn device(agent: &Snmpd, security: SnmpSecurity) -> IfMibDevice {
    IfMibDevice::new("sw1", params(agent, security, &standard_ports()))
        .unwrap_or_else(|e| panic!("valid parameters refused: {e}"))
}

fn deadline(secs: u64) -> Instant {
    Instant::now() + Duration::from_secs(secs)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// off, status, on for both nodes, each checked against the switch's own state.
async fn fence_and_unfence(agent: &Snmpd, device: &mut IfMibDevice) {
    device.monitor(deadline(5)).await.expect("monitor");
    assert_eq!(device.status(ALPHA, deadline(5)).await, Ok(PowerState::On));

    let started = Instant::now();
    let off = device.off(ALPHA, deadline(5)).await;
    let off = off.unwrap_or_else(|e| panic!("off: {e}\n{}", agent.log()));
    eprintln!("off {ALPHA} (2 ports) confirmed in {:?}", started.elapsed());
    assert_eq!(off.state, PowerState::Off);
    assert!(
        off.polls >= 2,
        "off must be read back after the SETs: {off:?}"
    );
    assert!(
        !agent.port_admin_up(1) && !agent.port_admin_up(2),
        "both paths down"
    );
    assert!(
        agent.port_admin_up(3) && agent.port_admin_up(4),
        "other nodes untouched"
    );
    assert_eq!(device.status(ALPHA, deadline(5)).await, Ok(PowerState::Off));

    // One path back up (someone at the switch): the node is not isolated any more.
    agent.set_port_admin(2, true);
    assert_eq!(device.status(ALPHA, deadline(5)).await, Ok(PowerState::On));
    device.off(ALPHA, deadline(5)).await.expect("off again");
    assert!(!agent.port_admin_up(2));

    let on = device.on(ALPHA, deadline(5)).await.expect("on");
    assert_eq!(on.state, PowerState::On);
    assert!(agent.port_admin_up(1) && agent.port_admin_up(2));
    assert_eq!(device.status(ALPHA, deadline(5)).await, Ok(PowerState::On));

    // By ifName (port3) and ifAlias (host4-hba).
    device.off(BETA, deadline(5)).await.expect("off by name");
    assert!(!agent.port_admin_up(3) && !agent.port_admin_up(4));
    assert!(agent.port_admin_up(5));
    assert_eq!(device.status(BETA, deadline(5)).await, Ok(PowerState::Off));
    device.on(BETA, deadline(5)).await.expect("on by name");
    assert!(agent.port_admin_up(3) && agent.port_admin_up(4));
}

#[test]
fn v2c_fences_and_unfences_every_path() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let mut device = device(&agent, v2c(V2C_RW_COMMUNITY));
    rt().block_on(fence_and_unfence(&agent, &mut device));
    // Names were looked up once: ifName, then ifAlias for the one name ifName lacks.
    assert_eq!(device.stats().walks, 2, "{:?}", device.stats());
    let sets = agent.sets();
    assert!(
        sets.iter()
            .all(|l| l.starts_with(".1.3.6.1.2.1.2.2.1.7.") && l.ends_with("DONE")),
        "only ifAdminStatus is written: {sets:?}"
    );
}

#[test]
fn v3_sha_authpriv_fences_and_unfences() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let mut device = device(&agent, v3(V3_USER, AuthProtocol::Sha1, V3_AUTH_PASSWORD));
    rt().block_on(fence_and_unfence(&agent, &mut device));
}

#[test]
fn v3_sha256_authpriv_fences_and_unfences() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let security = v3(V3_USER_SHA256, AuthProtocol::Sha256, V3_AUTH_PASSWORD);
    let mut device = device(&agent, security);
    rt().block_on(fence_and_unfence(&agent, &mut device));
}

/// A switch whose port 2 acknowledges every SET and stays up.
fn switch_with_port_2_stuck(silent_after_set_gets: Option<u32>) -> Snmpd {
    Snmpd::start(&SnmpdOptions {
        stuck_ports: vec![2],
        silent_after_set_gets,
        ..SnmpdOptions::default()
    })
}

/// `off` of alpha (ports 1 and 2) that must fail `Unconfirmed` naming port 2 alone within
/// `budget` plus slack for a loaded machine; the error's message.
async fn off_is_unconfirmed_naming_port_2(device: &mut IfMibDevice, budget: Duration) -> String {
    let started = Instant::now();
    let e = device
        .off(ALPHA, Instant::now() + budget)
        .await
        .expect_err("a port seen up must not confirm off");
    let elapsed = started.elapsed();
    assert_eq!(e.kind, FenceErrorKind::Unconfirmed, "{e}");
    assert!(e.message.contains("ifIndex 2 admin up(1)"), "{e}");
    assert!(!e.message.contains("ifIndex 1 "), "port 1 went down: {e}");
    assert!(
        elapsed < budget + Duration::from_millis(700),
        "deadline overrun: {elapsed:?}"
    );
    e.message
}

#[test]
fn a_stuck_port_is_unconfirmed_and_named() {
    let agent = switch_with_port_2_stuck(None);
    let mut device = device(&agent, v2c(V2C_RW_COMMUNITY));
    rt().block_on(async {
        off_is_unconfirmed_naming_port_2(&mut device, Duration::from_millis(1500)).await;
        // The healthy path was still shut.
        assert!(!agent.port_admin_up(1));
        assert!(agent.port_admin_up(2));
        assert_eq!(device.status(ALPHA, deadline(5)).await, Ok(PowerState::On));
    });
}

/// The switch answers the SETs and the first read-back (port 2 still up), then stops
/// answering altogether. What is known at the deadline is that port 2 was seen up after the
/// SET: the fence is unconfirmed and names it, it is not reported as a silent switch.
#[test]
fn a_switch_silent_after_the_first_read_back_leaves_the_fence_unconfirmed() {
    // snmpd's read of port 2 before its SET, then one read-back: ifAdminStatus and
    // ifOperStatus of both ports.
    let agent = switch_with_port_2_stuck(Some(5));
    let mut device = device(&agent, v2c(V2C_RW_COMMUNITY));
    let message = rt().block_on(off_is_unconfirmed_naming_port_2(
        &mut device,
        Duration::from_secs(2),
    ));
    assert!(message.contains("after 2 reads"), "{message}");
    // Before the SETs, the answered read-back, and the one left unanswered.
    assert_eq!(device.stats().reads, 3, "{:?}", device.stats());
    let sets = agent.sets();
    assert_eq!(sets.len(), 2, "{sets:?}");
}

#[test]
fn reboot_is_refused_without_touching_the_switch() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let mut device = device(&agent, v2c(V2C_RW_COMMUNITY));
    let e = rt()
        .block_on(device.reboot(ALPHA, deadline(5)))
        .expect_err("reboot");
    assert_eq!(e.kind, FenceErrorKind::Refused);
    assert!(e.message.contains("use off, then on"), "{e}");
    assert!(agent.sets().is_empty(), "{:?}", agent.sets());
    assert!(agent.port_admin_up(1) && agent.port_admin_up(2));
}

#[test]
fn unknown_ports_and_nodes_are_target_unknown_and_nothing_is_written() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let ports = vec![
        (
            ALPHA,
            vec![PortRef::Index(1), PortRef::Name("nosuch".to_owned())],
        ),
        (BETA, vec![PortRef::Index(2), PortRef::Index(99)]),
    ];
    let mut device = IfMibDevice::new("sw1", params(&agent, v2c(V2C_RW_COMMUNITY), &ports))
        .expect("valid parameters");
    rt().block_on(async {
        let e = device
            .off(ALPHA, deadline(5))
            .await
            .expect_err("unknown name");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
        assert!(
            e.message.contains("\"nosuch\"") && e.message.contains("\"port1\""),
            "{e}"
        );

        let e = device
            .off(BETA, deadline(5))
            .await
            .expect_err("unknown ifIndex");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
        assert!(e.message.contains("ifIndex 99"), "{e}");

        let e = device
            .off("gamma", deadline(5))
            .await
            .expect_err("unknown node");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");

        let e = device.monitor(deadline(5)).await.expect_err("monitor");
        assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
    });
    // Port 2 (beta's good path) was not shut: nothing is written before every port is known.
    assert!(agent.sets().is_empty(), "{:?}", agent.sets());
    assert!(agent.port_admin_up(1) && agent.port_admin_up(2));
}

#[test]
fn read_only_community_is_refused() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let mut device = device(&agent, v2c(V2C_RO_COMMUNITY));
    rt().block_on(async {
        // Reading works: monitor and status do not need write access.
        device.monitor(deadline(5)).await.expect("monitor");
        assert_eq!(device.status(ALPHA, deadline(5)).await, Ok(PowerState::On));
        let e = device
            .off(ALPHA, deadline(5))
            .await
            .expect_err("read-only off");
        assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");
        assert!(e.message.contains("ifIndex 1"), "{e}");
    });
    assert!(agent.port_admin_up(1) && agent.port_admin_up(2));
}

#[test]
fn wrong_v3_password_is_auth() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let mut device = device(&agent, v3(V3_USER, AuthProtocol::Sha1, "wrongpass123"));
    let e = rt()
        .block_on(device.status(ALPHA, deadline(3)))
        .expect_err("wrong password");
    assert_eq!(e.kind, FenceErrorKind::Auth, "{e}");
    assert!(agent.port_admin_up(1));
}

#[test]
fn monitor_writes_nothing() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let mut device = device(&agent, v2c(V2C_RW_COMMUNITY));
    agent.set_port_admin(1, false);
    rt().block_on(device.monitor(deadline(5))).expect("monitor");
    assert!(agent.sets().is_empty(), "{:?}", agent.sets());
    assert!(!agent.port_admin_up(1), "monitor must not re-enable a port");
}
