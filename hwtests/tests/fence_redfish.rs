//! The Redfish fence driver against sushy-tools' Redfish emulator (fake driver): HTTP and HTTPS
//! with a self-signed certificate (CA file, fingerprint pin, explicit insecure), basic and
//! session authentication, and the failures the engine must be able to tell apart.
//!
//! The emulator comes from `scripts/deps-fence.sh`; without it these tests fail.

use std::net::{Ipv4Addr, TcpListener};
use std::time::Duration;

use drivers::fence::redfish::{
    parse_fingerprint, RedfishAuth, RedfishDevice, RedfishParams, TlsTrust,
};
use drivers::fence::{FenceDevice, FenceErrorKind, PowerState};
use drivers::secret::Secret;
use hwtests::sushy::{system_uuid, Sushy, SushyOptions};
use tokio::time::Instant;

const NODE: &str = "beta";

/// Starts the emulator; a missing emulator fails the test (install: scripts/deps-fence.sh).
fn start(options: &SushyOptions) -> Sushy {
    Sushy::start(options).unwrap_or_else(|e| panic!("cannot start the Redfish emulator: {e}"))
}

fn params(sushy: &Sushy) -> RedfishParams {
    RedfishParams {
        url: sushy.url(),
        system: Some(system_uuid(1)),
        username: Some("admin".to_owned()),
        password: Some(Secret::new("secret")),
        auth: RedfishAuth::Basic,
        tls: TlsTrust::System,
        request_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
    }
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

/// off, status, on, reboot and monitor, each confirmed by the emulator's own PowerState.
async fn full_cycle(device: &mut RedfishDevice) {
    assert_eq!(device.status(NODE, deadline(10)).await, Ok(PowerState::On));
    let off = device.off(NODE, deadline(10)).await.expect("off");
    assert_eq!(off.state, PowerState::Off);
    assert!(
        off.polls >= 2,
        "off must be read back after the reset: {off:?}"
    );
    assert_eq!(device.status(NODE, deadline(10)).await, Ok(PowerState::Off));
    // Already off: confirmed by one read, no reset sent.
    assert_eq!(device.off(NODE, deadline(10)).await.map(|c| c.polls), Ok(1));
    let on = device.on(NODE, deadline(10)).await.expect("on");
    assert_eq!(on.state, PowerState::On);
    let reboot = device.reboot(NODE, deadline(10)).await.expect("reboot");
    assert_eq!(reboot.state, PowerState::On);
    assert!(
        reboot.polls >= 3,
        "reboot reads the state, then off and on back: {reboot:?}"
    );
    device.monitor(deadline(10)).await.expect("monitor");
}

#[test]
fn http_with_basic_auth() {
    let sushy = start(&SushyOptions::default());
    let mut device = RedfishDevice::new("rf", NODE, params(&sushy)).expect("device");
    rt().block_on(full_cycle(&mut device));
    assert_eq!(sushy.session_log(), "", "basic auth opens no session");
}

#[test]
fn http_without_auth() {
    let options = SushyOptions {
        credentials: None,
        ..SushyOptions::default()
    };
    let sushy = start(&options);
    let p = RedfishParams {
        username: None,
        password: None,
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    rt().block_on(full_cycle(&mut device));
}

#[test]
fn session_auth_logs_out_after_every_operation() {
    let sushy = start(&SushyOptions::default());
    let p = RedfishParams {
        auth: RedfishAuth::Session,
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    rt().block_on(full_cycle(&mut device));
    let log = sushy.session_log();
    let creates = log.lines().filter(|l| l.starts_with("create")).count();
    let deletes = log.lines().filter(|l| l.starts_with("delete")).count();
    assert!(creates >= 7, "one session per operation: {log}");
    assert_eq!(creates, deletes, "every session is deleted: {log}");
}

#[test]
fn https_verified_by_ca_file_and_by_pin() {
    let options = SushyOptions {
        https: true,
        ..SushyOptions::default()
    };
    let sushy = start(&options);
    let rt = rt();

    let p = RedfishParams {
        tls: TlsTrust::CaFile(sushy.cert_path()),
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    rt.block_on(full_cycle(&mut device));

    let pin = parse_fingerprint(&sushy.cert_sha256().expect("fingerprint")).expect("pin parses");
    let p = RedfishParams {
        tls: TlsTrust::Pin(pin),
        auth: RedfishAuth::Session,
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    rt.block_on(full_cycle(&mut device));

    let p = RedfishParams {
        tls: TlsTrust::DangerInsecure,
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    assert_eq!(
        rt.block_on(device.status(NODE, deadline(10))),
        Ok(PowerState::On)
    );
}

#[test]
fn https_refuses_an_untrusted_or_mismatched_certificate() {
    let options = SushyOptions {
        https: true,
        ..SushyOptions::default()
    };
    let sushy = start(&options);
    let rt = rt();
    let mut device = RedfishDevice::new("rf", NODE, params(&sushy)).expect("device");
    let e = rt
        .block_on(device.status(NODE, deadline(10)))
        .expect_err("self-signed is untrusted");
    assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");

    let p = RedfishParams {
        tls: TlsTrust::Pin([0x42; 32]),
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    let e = rt
        .block_on(device.status(NODE, deadline(10)))
        .expect_err("wrong pin");
    assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");
    assert!(e.message.contains("does not match the pinned"), "{e}");
}

#[test]
fn wrong_password_is_an_auth_error_at_once() {
    let sushy = start(&SushyOptions::default());
    let rt = rt();
    for auth in [RedfishAuth::Basic, RedfishAuth::Session] {
        let p = RedfishParams {
            password: Some(Secret::new("Xq9badpw")),
            auth,
            ..params(&sushy)
        };
        let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
        let started = Instant::now();
        let e = rt
            .block_on(device.off(NODE, deadline(20)))
            .expect_err("wrong password");
        assert_eq!(e.kind, FenceErrorKind::Auth, "{auth:?}: {e}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "not a timeout: {:?}",
            started.elapsed()
        );
        assert!(
            !e.to_string().contains("Xq9badpw"),
            "the password is not in the error: {e}"
        );
    }
    // Nothing was switched off by the failed attempts.
    let mut device = RedfishDevice::new("rf", NODE, params(&sushy)).expect("device");
    assert_eq!(
        rt.block_on(device.status(NODE, deadline(10))),
        Ok(PowerState::On)
    );
}

#[test]
fn unknown_or_ambiguous_system_is_target_unknown() {
    let options = SushyOptions {
        systems: 3,
        ..SushyOptions::default()
    };
    let sushy = start(&options);
    let rt = rt();

    let p = RedfishParams {
        system: Some("no-such-system".to_owned()),
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    let e = rt
        .block_on(device.off(NODE, deadline(10)))
        .expect_err("unknown system");
    assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
    assert!(
        e.message.contains(&system_uuid(3)),
        "lists what exists: {e}"
    );

    let p = RedfishParams {
        system: None,
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    let e = rt
        .block_on(device.off(NODE, deadline(10)))
        .expect_err("ambiguous");
    assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
    assert!(
        e.message.contains("3 systems and none is configured"),
        "{e}"
    );
    for n in 1..=3 {
        assert!(e.message.contains(&system_uuid(n)), "{e}");
    }

    // By URI works too, and only that system changes.
    let uri = format!("/redfish/v1/Systems/{}", system_uuid(2));
    let p = RedfishParams {
        system: Some(uri),
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    assert_eq!(
        rt.block_on(device.off(NODE, deadline(10))).map(|c| c.state),
        Ok(PowerState::Off)
    );
    let mut first = RedfishDevice::new("rf", NODE, params(&sushy)).expect("device");
    assert_eq!(
        rt.block_on(first.status(NODE, deadline(10))),
        Ok(PowerState::On)
    );

    // A node this device does not fence.
    let e = rt
        .block_on(first.off("gamma", deadline(10)))
        .expect_err("other node");
    assert_eq!(e.kind, FenceErrorKind::TargetUnknown, "{e}");
}

#[test]
fn silent_service_times_out_at_the_deadline() {
    // Accepts TCP connections (the kernel does, into the backlog) and never answers.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let p = RedfishParams {
        url: format!("http://127.0.0.1:{port}"),
        system: None,
        username: Some("admin".to_owned()),
        password: Some(Secret::new("secret")),
        auth: RedfishAuth::Basic,
        tls: TlsTrust::System,
        request_timeout: Duration::from_secs(30),
        poll_interval: Duration::from_millis(100),
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    let started = Instant::now();
    let e = rt()
        .block_on(device.off(NODE, started + Duration::from_millis(1500)))
        .expect_err("silence");
    let elapsed = started.elapsed();
    assert_eq!(e.kind, FenceErrorKind::Timeout, "{e}");
    assert!(
        elapsed >= Duration::from_millis(1400) && elapsed < Duration::from_millis(2500),
        "returned at the deadline: {elapsed:?}"
    );
    drop(listener);
}

#[test]
fn nothing_listening_is_unreachable() {
    let port = hwtests::sushy::free_tcp_port().expect("port");
    let p = RedfishParams {
        url: format!("http://127.0.0.1:{port}"),
        system: None,
        username: None,
        password: None,
        auth: RedfishAuth::Basic,
        tls: TlsTrust::System,
        request_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(100),
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    let e = rt()
        .block_on(device.status(NODE, deadline(5)))
        .expect_err("refused");
    assert_eq!(e.kind, FenceErrorKind::Unreachable, "{e}");
}

#[test]
fn bmc_that_accepts_off_but_stays_on_is_unconfirmed() {
    // The emulator accepts the reset and would apply it only after an hour.
    let options = SushyOptions {
        power_delay_s: 3600,
        ..SushyOptions::default()
    };
    let sushy = start(&options);
    let mut device = RedfishDevice::new("rf", NODE, params(&sushy)).expect("device");
    let started = Instant::now();
    // What is checked is the kind the driver gives to "accepted, still On".
    let e = rt()
        .block_on(device.off(NODE, started + Duration::from_secs(5)))
        .expect_err("never off");
    assert_eq!(e.kind, FenceErrorKind::Unconfirmed, "{e}");
    assert!(e.message.contains("still reports On"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(7),
        "{:?}",
        started.elapsed()
    );
}

/// The BMC accepts the reset and answers the first read-back (still On), then stops
/// answering: at the deadline the fence is unconfirmed with the state last read, not reported
/// as a silent BMC.
#[test]
fn bmc_silent_after_the_first_read_back_leaves_the_fence_unconfirmed() {
    let options = SushyOptions {
        power_delay_s: 3600,
        silent_after_reset_gets: Some(1),
        ..SushyOptions::default()
    };
    let sushy = start(&options);
    let mut device = RedfishDevice::new(
        "rf",
        NODE,
        RedfishParams {
            request_timeout: Duration::from_millis(500),
            ..params(&sushy)
        },
    )
    .expect("device");
    let started = Instant::now();
    let e = rt()
        .block_on(device.off(NODE, started + Duration::from_secs(3)))
        .expect_err("never off");
    let elapsed = started.elapsed();
    assert_eq!(e.kind, FenceErrorKind::Unconfirmed, "{e}");
    assert!(e.message.contains("still reports On after 2 reads"), "{e}");
    assert!(elapsed < Duration::from_millis(3700), "{elapsed:?}");
}

#[test]
fn session_auth_without_a_session_service_says_so() {
    let options = SushyOptions {
        sessions: false,
        ..SushyOptions::default()
    };
    let sushy = start(&options);
    let p = RedfishParams {
        auth: RedfishAuth::Session,
        ..params(&sushy)
    };
    let mut device = RedfishDevice::new("rf", NODE, p).expect("device");
    let e = rt()
        .block_on(device.status(NODE, deadline(10)))
        .expect_err("no session service");
    assert_eq!(e.kind, FenceErrorKind::Refused, "{e}");
    assert!(e.message.contains("auth = \"basic\""), "{e}");
}
