//! The native IPMI driver against a real BMC implementation: OpenIPMI's `ipmi_sim`, started
//! per test on 127.0.0.1 with a generated configuration (see `hwtests::ipmi_sim`).
//!
//! What these prove that unit tests cannot: our RMCP+ handshake, keys, integrity and AES
//! interoperate with an independent implementation, and the fence semantics (confirm by
//! reading back, auth errors at once, deadlines) hold over a real socket.

use std::time::Duration;

use drivers::fence::ipmi::{ChassisControl, IpmiDevice, IpmiParams, Privilege};
use drivers::fence::{FenceDevice, FenceErrorKind, PowerState};
use drivers::secret::Secret;
use hwtests::ipmi_sim::{
    IpmiSim, IpmiSimConfig, PowerBehaviour, DEFAULT_PASSWORD, DEFAULT_USER, OPERATOR_PASSWORD,
    OPERATOR_USER,
};
use tokio::time::Instant;

/// Generous for a BMC on loopback that answers in about a millisecond.
const DEADLINE: Duration = Duration::from_secs(5);
/// Upper bound on datagrams a test relay forwards; the tests send a few dozen.
const RELAY_MAX_DATAGRAMS: usize = 10_000;
/// A node name the devices below are bound to.
const TARGET: &str = "node-b";

fn params(sim: &IpmiSim, suite: u8) -> IpmiParams {
    let mut p = IpmiParams::new(sim.address(), DEFAULT_USER, Secret::new(DEFAULT_PASSWORD));
    p.cipher_suite = suite;
    p.retransmit_initial = Duration::from_millis(100);
    p.poll_interval = Duration::from_millis(20);
    p
}

fn device(p: IpmiParams) -> IpmiDevice {
    IpmiDevice::new("bmc-b", TARGET, p).expect("valid parameters")
}

fn deadline() -> Instant {
    Instant::now() + DEADLINE
}

#[tokio::test]
async fn status_off_on_reboot_monitor_suite3() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let mut dev = device(params(&sim, 3));
    assert_eq!(
        dev.status(TARGET, deadline()).await.unwrap(),
        PowerState::On,
        "{}",
        sim.log()
    );

    let off = dev.off(TARGET, deadline()).await.unwrap();
    assert_eq!(off.state, PowerState::Off);
    assert!(off.polls >= 1);
    assert!(!sim.power_on());
    assert_eq!(
        dev.status(TARGET, deadline()).await.unwrap(),
        PowerState::Off
    );

    let on = dev.on(TARGET, deadline()).await.unwrap();
    assert_eq!(on.state, PowerState::On);
    assert!(sim.power_on());

    let rebooted = dev.reboot(TARGET, deadline()).await.unwrap();
    assert_eq!(rebooted.state, PowerState::On);
    let log = sim.power_log();
    let tail: Vec<&str> = log
        .iter()
        .rev()
        .take(2)
        .map(|l| l.rsplit(' ').next().unwrap())
        .collect();
    assert_eq!(
        tail,
        ["power=1", "power=0"],
        "reboot is a real off then on: {log:?}"
    );

    dev.monitor(deadline()).await.unwrap();
    let m = dev.metrics();
    assert_eq!(m.errors.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert!(m.sessions.load(std::sync::atomic::Ordering::Relaxed) >= 5);
}

#[tokio::test]
async fn suite2_integrity_without_encryption() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let mut dev = device(params(&sim, 2));
    dev.off(TARGET, deadline()).await.unwrap();
    assert!(!sim.power_on());
    assert_eq!(
        dev.status(TARGET, deadline()).await.unwrap(),
        PowerState::Off
    );
}

#[tokio::test]
async fn suite1_only_with_danger_flag() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let err = IpmiDevice::new("bmc-b", TARGET, params(&sim, 1)).unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::Refused);
    let mut p = params(&sim, 1);
    p.danger_allow_no_integrity = true;
    let mut dev = device(p);
    assert_eq!(
        dev.status(TARGET, deadline()).await.unwrap(),
        PowerState::On
    );
}

#[tokio::test]
async fn operator_privilege_can_fence() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let mut p = params(&sim, 3);
    p.username = OPERATOR_USER.into();
    p.password = Secret::new(OPERATOR_PASSWORD);
    p.privilege = Privilege::Operator;
    let mut dev = device(p);
    dev.off(TARGET, deadline()).await.unwrap();
    assert!(!sim.power_on());
}

#[tokio::test]
async fn wrong_password_is_auth_at_once() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let mut p = params(&sim, 3);
    p.password = Secret::new("not-the-password");
    let mut dev = device(p);
    let start = Instant::now();
    let err = dev.off(TARGET, deadline()).await.unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::Auth, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "took {:?}",
        start.elapsed()
    );
    assert!(!err.to_string().contains("not-the-password"));
    assert!(sim.power_on(), "nothing was switched");
}

#[tokio::test]
async fn wrong_username_is_auth_at_once() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let mut p = params(&sim, 3);
    p.username = "nobody".into();
    let mut dev = device(p);
    let start = Instant::now();
    let err = dev.status(TARGET, deadline()).await.unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::Auth, "{err}");
    assert!(
        start.elapsed() < Duration::from_millis(500),
        "took {:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn unreachable_port_times_out_at_deadline() {
    let port = hwtests::free_udp_port();
    let mut p = IpmiParams::new(
        (std::net::Ipv4Addr::LOCALHOST, port).into(),
        DEFAULT_USER,
        Secret::new(DEFAULT_PASSWORD),
    );
    p.retransmit_initial = Duration::from_millis(50);
    let mut dev = device(p);
    let wait = Duration::from_millis(800);
    let start = Instant::now();
    let err = dev.status(TARGET, start + wait).await.unwrap_err();
    let took = start.elapsed();
    assert_eq!(err.kind(), FenceErrorKind::Unreachable, "{err}");
    assert!(
        took >= wait && took < wait + Duration::from_millis(500),
        "took {took:?}"
    );
}

#[tokio::test]
async fn bmc_that_stays_on_is_unconfirmed() {
    let sim = IpmiSim::start(&IpmiSimConfig {
        behaviour: PowerBehaviour::IgnoreOff,
        ..IpmiSimConfig::default()
    });
    let mut dev = device(params(&sim, 3));
    let wait = Duration::from_millis(1500);
    let start = Instant::now();
    let err = dev.off(TARGET, start + wait).await.unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::Unconfirmed, "{err}");
    assert!(start.elapsed() <= wait + Duration::from_millis(500));
    assert!(
        sim.power_log().iter().any(|l| l.ends_with("power=0")),
        "the command was sent"
    );
    assert!(sim.power_on());
}

#[tokio::test]
async fn wrong_target_and_cipher_0_are_refused() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let err = IpmiDevice::new("bmc-b", TARGET, params(&sim, 0)).unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::Refused);
    let mut p = params(&sim, 0);
    p.danger_allow_no_integrity = true;
    assert!(
        IpmiDevice::new("bmc-b", TARGET, p).is_err(),
        "suite 0 is never allowed"
    );
    let mut dev = device(params(&sim, 3));
    let err = dev.off("node-c", deadline()).await.unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::TargetUnknown);
    assert!(sim.power_on());
}

#[tokio::test]
async fn host_that_powers_itself_back_is_seen() {
    let sim = IpmiSim::start(&IpmiSimConfig {
        power_on: false,
        ..IpmiSimConfig::default()
    });
    let mut dev = device(params(&sim, 3));
    assert_eq!(
        dev.status(TARGET, deadline()).await.unwrap(),
        PowerState::Off
    );
    sim.set_power_on(true);
    assert_eq!(
        dev.status(TARGET, deadline()).await.unwrap(),
        PowerState::On
    );
}

#[tokio::test]
async fn hard_reset_and_power_cycle_are_sent() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let mut dev = device(params(&sim, 3));
    dev.chassis_control(TARGET, ChassisControl::HardReset, deadline())
        .await
        .unwrap();
    assert!(
        sim.power_log().iter().any(|l| l.ends_with(" reset")),
        "{:?}",
        sim.power_log()
    );
    dev.chassis_control(TARGET, ChassisControl::PowerCycle, deadline())
        .await
        .unwrap();
    assert!(sim.power_log().len() >= 2, "{:?}", sim.power_log());
}

#[tokio::test]
async fn password_never_in_debug_or_errors() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let mut p = params(&sim, 17);
    p.password = Secret::new("hunter2-pass");
    // Suite 17 is not in ipmi_sim: the session is refused, and the error says so.
    let mut dev = device(p);
    assert!(!format!("{dev:?}").contains("hunter2"));
    let err = dev.status(TARGET, deadline()).await.unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::Refused, "{err}");
    assert!(!format!("{err} {err:?}").contains("hunter2"));
}

/// A UDP relay between the driver and `ipmi_sim` that drops the client's datagrams that
/// `drop(n)` selects (`n` counts from 0), to inject loss and silence.
struct Relay {
    address: std::net::SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(bmc: std::net::SocketAddr, drop: fn(usize) -> bool) -> Self {
        let front = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let back = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        back.connect(bmc).await.unwrap();
        let address = front.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut client = None;
            let (mut a, mut b) = ([0u8; 1024], [0u8; 1024]);
            let mut sent = 0usize;
            // Ends when the test aborts the task, or after a bound far above any test's traffic.
            for _ in 0..RELAY_MAX_DATAGRAMS {
                tokio::select! {
                    Ok((len, from)) = front.recv_from(&mut a) => {
                        client = Some(from);
                        if !drop(sent) {
                            let _ = back.send(&a[..len]).await;
                        }
                        sent += 1;
                    }
                    Ok(len) = back.recv(&mut b) => {
                        if let Some(c) = client {
                            let _ = front.send_to(&b[..len], c).await;
                        }
                    }
                }
            }
        });
        Self { address, task }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn lost_datagrams_are_retransmitted() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    // Every other datagram from the driver is lost, the first of each request included.
    let relay = Relay::start(sim.address(), |n| n % 2 == 0).await;
    let mut p = params(&sim, 3);
    p.address = relay.address;
    p.retransmit_initial = Duration::from_millis(20);
    let mut dev = device(p);
    let off = dev.off(TARGET, deadline()).await.unwrap();
    assert_eq!(off.state, PowerState::Off);
    assert!(!sim.power_on());
    assert!(
        dev.metrics()
            .retransmits
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5
    );
}

#[tokio::test]
async fn bmc_that_goes_silent_is_timeout() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    // Capabilities, open session, RAKP 1, RAKP 3, set privilege, chassis control pass; then
    // the BMC is never heard again (power reads and close session are lost).
    let relay = Relay::start(sim.address(), |n| n >= 6).await;
    let mut p = params(&sim, 3);
    p.address = relay.address;
    let mut dev = device(p);
    let wait = Duration::from_millis(800);
    let start = Instant::now();
    let err = dev.off(TARGET, start + wait).await.unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::Timeout, "{err}");
    let took = start.elapsed();
    assert!(
        took >= wait && took < wait + Duration::from_millis(500),
        "took {took:?}"
    );
    assert!(!sim.power_on(), "the command itself got through");
}

/// The BMC acknowledges the power-off, answers the first read-back (still on: it ignores
/// the command), then is never heard again. What is known at the deadline is that it read on
/// after the command: the fence is unconfirmed with that state, not a BMC that went silent.
#[tokio::test]
async fn bmc_silent_after_the_first_read_back_is_unconfirmed() {
    let sim = IpmiSim::start(&IpmiSimConfig {
        behaviour: PowerBehaviour::IgnoreOff,
        ..IpmiSimConfig::default()
    });
    // Capabilities, open session, RAKP 1, RAKP 3, set privilege, chassis control and the
    // first power read pass; everything after is lost.
    let relay = Relay::start(sim.address(), |n| n >= 7).await;
    let mut p = params(&sim, 3);
    p.address = relay.address;
    // No retransmission before the first answer, even on a loaded machine: a resent
    // datagram would shift the count above.
    p.retransmit_initial = Duration::from_millis(500);
    let mut dev = device(p);
    let wait = Duration::from_millis(2500);
    let start = Instant::now();
    let err = dev.off(TARGET, start + wait).await.unwrap_err();
    assert_eq!(err.kind(), FenceErrorKind::Unconfirmed, "{err}");
    assert!(
        err.to_string().contains("still reports On after 1 reads"),
        "{err}"
    );
    assert!(start.elapsed() < wait + Duration::from_millis(700));
    assert!(sim.power_on());
}
