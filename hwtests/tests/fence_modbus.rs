//! The Modbus fence driver against a pymodbus switched PDU (`hwtests/src/modbus_pdu.py`) over
//! TCP on 127.0.0.1 and over RTU through a pty null-modem cable: confirmed switching seen in
//! the server's own state, nodes with two supplies, several unit ids, register outlets, and the
//! failures the engine must be able to tell apart, each returned by its deadline.
//!
//! pymodbus comes from `scripts/deps-fence.sh`; without it these tests fail.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::time::Duration;

use drivers::fence::modbus::{ModbusDevice, ModbusParams, ModbusTransport, Outlet, OutletControl};
use drivers::fence::{FenceDevice, FenceError, FenceErrorKind, PowerState};
use hwtests::cable::PtyCable;
use hwtests::modbus_pdu::{ModbusPdu, ModbusPduOptions, REGISTER_BASE, REGISTER_OFF, REGISTER_ON};
use tokio::time::Instant;

fn coil(unit: u8, address: u16) -> Outlet {
    Outlet {
        unit,
        control: OutletControl::Coil { address },
    }
}

fn register(unit: u8, n: u16) -> Outlet {
    Outlet {
        unit,
        control: OutletControl::Register {
            address: REGISTER_BASE + n,
            on: REGISTER_ON,
            off: REGISTER_OFF,
        },
    }
}

fn params(address: SocketAddr, nodes: &[(&str, Vec<Outlet>)]) -> ModbusParams {
    ModbusParams {
        transport: ModbusTransport::Tcp { address },
        outlets: nodes
            .iter()
            .map(|(node, outlets)| ((*node).to_owned(), outlets.clone()))
            .collect::<BTreeMap<_, _>>(),
        request_timeout: Duration::from_secs(2),
        poll_interval: Duration::from_millis(50),
        off_time: Duration::from_millis(300),
    }
}

fn device(params: ModbusParams) -> ModbusDevice {
    ModbusDevice::new("pdu", params).expect("valid parameters")
}

fn deadline(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn expect_err<T: std::fmt::Debug>(result: Result<T, FenceError>, kind: FenceErrorKind) -> String {
    match result {
        Ok(v) => panic!("expected {kind:?}, got Ok({v:?})"),
        Err(e) => {
            assert_eq!(e.kind, kind, "{e}");
            e.message
        }
    }
}

/// Runs `op` and asserts it returned no later than `slack` after its deadline.
async fn within<T>(budget_ms: u64, slack_ms: u64, op: impl std::future::Future<Output = T>) -> T {
    let start = Instant::now();
    let out = op.await;
    let took = start.elapsed();
    assert!(
        took <= Duration::from_millis(budget_ms + slack_ms),
        "took {took:?}, budget {budget_ms} ms + {slack_ms} ms slack"
    );
    out
}

#[test]
fn tcp_off_on_status_reboot_and_monitor_are_confirmed_by_the_pdu() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let mut dev = device(params(
        pdu.address(),
        &[("alpha", vec![coil(1, 2)]), ("beta", vec![coil(1, 5)])],
    ));
    rt().block_on(async {
        assert_eq!(
            dev.status("alpha", deadline(5000)).await,
            Ok(PowerState::On)
        );
        let off = dev.off("alpha", deadline(5000)).await.expect("off");
        assert_eq!(off.state, PowerState::Off);
        assert!(off.polls >= 1, "{off:?}");
        assert!(!pdu.outlet(2), "the PDU's own state shows outlet 2 off");
        assert!(pdu.outlet(5) && pdu.outlet(1), "no other outlet is touched");
        assert_eq!(
            dev.status("alpha", deadline(5000)).await,
            Ok(PowerState::Off)
        );
        dev.on("alpha", deadline(5000)).await.expect("on");
        assert!(pdu.outlet(2));

        let reboot = dev.reboot("alpha", deadline(5000)).await.expect("reboot");
        assert_eq!(reboot.state, PowerState::On);
        assert!(
            reboot.polls >= 2,
            "off and on are both read back: {reboot:?}"
        );
        assert!(
            reboot.elapsed >= Duration::from_millis(300),
            "the outlet stays off for off_time: {reboot:?}"
        );
        assert!(pdu.outlet(2));
        dev.monitor(deadline(5000)).await.expect("monitor");
    });
    assert_eq!(
        pdu.writes(),
        [
            "unit=1 fc=5 addr=2 value=0",
            "unit=1 fc=5 addr=2 value=1",
            "unit=1 fc=5 addr=2 value=0",
            "unit=1 fc=5 addr=2 value=1",
        ],
        "status and monitor write nothing"
    );
    assert_eq!(
        dev.metrics().connects.load(Ordering::Relaxed),
        1,
        "one connection serves every call"
    );
}

#[test]
fn a_node_with_two_supplies_is_off_only_when_both_are_and_a_stuck_one_is_named() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let mut dev = device(params(
        pdu.address(),
        &[("beta", vec![coil(1, 3), coil(1, 4)])],
    ));
    let rt = rt();
    rt.block_on(async {
        dev.off("beta", deadline(5000)).await.expect("off");
        assert!(!pdu.outlet(3) && !pdu.outlet(4));
        // One supply back on behind our back: the node is powered.
        pdu.set_outlet(1, 4, true);
        assert_eq!(dev.status("beta", deadline(5000)).await, Ok(PowerState::On));
        dev.on("beta", deadline(5000)).await.expect("on");

        pdu.set_stuck(1, 4, true);
        let message = within(1000, 500, async {
            expect_err(
                dev.off("beta", deadline(1000)).await,
                FenceErrorKind::Unconfirmed,
            )
        })
        .await;
        assert!(message.contains("coil 4 on unit 1"), "{message}");
        assert!(
            !message.contains("coil 3"),
            "outlet 3 did switch: {message}"
        );
        assert!(!pdu.outlet(3) && pdu.outlet(4));
        assert_eq!(dev.status("beta", deadline(5000)).await, Ok(PowerState::On));
    });
    assert!(pdu
        .writes()
        .contains(&"unit=1 fc=5 addr=4 value=0".to_owned()));
}

/// The PDU takes the writes and answers the first read-back (coil 4 still on), then stops
/// answering: what is known at the deadline is that coil 4 was seen on after its write, so
/// the fence is unconfirmed naming it, not reported as a silent PDU.
#[test]
fn a_pdu_silent_after_the_first_read_back_leaves_the_fence_unconfirmed() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let mut params = params(pdu.address(), &[("beta", vec![coil(1, 3), coil(1, 4)])]);
    params.request_timeout = Duration::from_millis(300);
    let mut dev = device(params);
    pdu.set_stuck(1, 4, true);
    // One read-back: coil 3, then coil 4.
    pdu.set_silent_after_write_reads(Some(2));
    rt().block_on(async {
        let message = within(2000, 700, async {
            expect_err(
                dev.off("beta", deadline(2000)).await,
                FenceErrorKind::Unconfirmed,
            )
        })
        .await;
        assert!(message.contains("coil 4 on unit 1"), "{message}");
        assert!(message.contains("after 1 reads"), "{message}");
    });
    assert!(!pdu.outlet(3) && pdu.outlet(4));
}

#[test]
fn outlets_on_two_unit_ids_are_switched_together() {
    let options = ModbusPduOptions {
        units: vec![1, 2],
        ..ModbusPduOptions::default()
    };
    let pdu = ModbusPdu::start_tcp(&options);
    // Configured unit 2 first: requests are grouped by unit, both outlets still switch.
    let mut dev = device(params(
        pdu.address(),
        &[("gamma", vec![coil(2, 0), coil(1, 0)])],
    ));
    rt().block_on(async {
        dev.off("gamma", deadline(5000)).await.expect("off");
        assert!(!pdu.unit_outlet(1, 0) && !pdu.unit_outlet(2, 0));
        assert!(pdu.unit_outlet(1, 1) && pdu.unit_outlet(2, 1));
        assert_eq!(
            dev.status("gamma", deadline(5000)).await,
            Ok(PowerState::Off)
        );
        dev.on("gamma", deadline(5000)).await.expect("on");
        assert!(pdu.unit_outlet(1, 0) && pdu.unit_outlet(2, 0));
    });
    assert_eq!(
        pdu.writes(),
        [
            "unit=1 fc=5 addr=0 value=0",
            "unit=2 fc=5 addr=0 value=0",
            "unit=1 fc=5 addr=0 value=1",
            "unit=2 fc=5 addr=0 value=1",
        ]
    );
}

#[test]
fn register_outlets_are_switched_and_a_foreign_value_is_refused() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let mut dev = device(params(pdu.address(), &[("delta", vec![register(1, 5)])]));
    rt().block_on(async {
        assert_eq!(
            dev.status("delta", deadline(5000)).await,
            Ok(PowerState::On)
        );
        dev.off("delta", deadline(5000)).await.expect("off");
        assert!(!pdu.outlet(5));
        dev.reboot("delta", deadline(5000)).await.expect("reboot");
        assert!(pdu.outlet(5));
        pdu.set_value(1, 5, 7);
        let message = expect_err(
            dev.status("delta", deadline(5000)).await,
            FenceErrorKind::Refused,
        );
        assert!(message.contains("reads 7"), "{message}");
        assert!(message.contains("register 105 on unit 1"), "{message}");
    });
    assert_eq!(
        pdu.writes(),
        [
            "unit=1 fc=6 addr=105 value=2",
            "unit=1 fc=6 addr=105 value=2",
            "unit=1 fc=6 addr=105 value=1",
        ]
    );
}

#[test]
fn an_outlet_beyond_the_pdu_is_target_unknown_and_so_is_an_unknown_node() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let mut dev = device(params(
        pdu.address(),
        &[("alpha", vec![coil(1, 0)]), ("omega", vec![coil(1, 8)])],
    ));
    rt().block_on(async {
        let message = expect_err(
            dev.off("omega", deadline(5000)).await,
            FenceErrorKind::TargetUnknown,
        );
        assert!(
            message.contains("outlet coil 8 does not exist on unit 1 (illegal data address)"),
            "{message}"
        );
        expect_err(
            dev.monitor(deadline(5000)).await,
            FenceErrorKind::TargetUnknown,
        );
        let message = expect_err(
            dev.status("nobody", deadline(5000)).await,
            FenceErrorKind::TargetUnknown,
        );
        assert!(message.contains("alpha, omega"), "{message}");
        // An exception leaves the connection usable.
        dev.off("alpha", deadline(5000)).await.expect("off");
    });
    assert!(!pdu.outlet(0));
    assert_eq!(dev.metrics().connects.load(Ordering::Relaxed), 1);
}

#[test]
fn a_busy_pdu_is_refused_until_it_is_not() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let mut dev = device(params(pdu.address(), &[("alpha", vec![coil(1, 1)])]));
    rt().block_on(async {
        pdu.set_busy(true);
        let message = expect_err(
            dev.off("alpha", deadline(5000)).await,
            FenceErrorKind::Refused,
        );
        assert!(message.contains("device busy, try again"), "{message}");
        assert!(pdu.outlet(1));
        pdu.set_busy(false);
        dev.off("alpha", deadline(5000)).await.expect("off");
        assert!(!pdu.outlet(1));
    });
}

#[test]
fn a_stopped_pdu_is_unreachable() {
    let mut pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let address = pdu.address();
    pdu.stop();
    let mut dev = device(params(address, &[("alpha", vec![coil(1, 0)])]));
    rt().block_on(async {
        let message = within(5000, 500, async {
            expect_err(
                dev.status("alpha", deadline(5000)).await,
                FenceErrorKind::Unreachable,
            )
        })
        .await;
        assert!(message.contains(&address.to_string()), "{message}");
        expect_err(
            dev.monitor(deadline(5000)).await,
            FenceErrorKind::Unreachable,
        );
    });
}

#[test]
fn a_silent_pdu_times_out_by_the_request_timeout_and_by_the_deadline() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    pdu.set_delay(Duration::from_secs(10));
    let rt = rt();

    // The request timeout is the shorter bound.
    let mut dev = device(ModbusParams {
        request_timeout: Duration::from_millis(300),
        ..params(pdu.address(), &[("alpha", vec![coil(1, 0)])])
    });
    let message = rt.block_on(within(300, 400, async {
        expect_err(
            dev.off("alpha", deadline(5000)).await,
            FenceErrorKind::Timeout,
        )
    }));
    assert!(
        message.contains("no answer from the PDU within 300ms"),
        "{message}"
    );

    // The deadline is the shorter bound.
    let mut dev = device(ModbusParams {
        request_timeout: Duration::from_secs(30),
        ..params(pdu.address(), &[("alpha", vec![coil(1, 0)])])
    });
    rt.block_on(within(700, 400, async {
        expect_err(
            dev.status("alpha", deadline(700)).await,
            FenceErrorKind::Timeout,
        )
    }));

    // A listener that accepts and never says anything.
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("listener");
    let address = listener.local_addr().expect("address");
    let mut dev = device(params(address, &[("alpha", vec![coil(1, 0)])]));
    rt.block_on(within(800, 400, async {
        expect_err(
            dev.off("alpha", deadline(800)).await,
            FenceErrorKind::Timeout,
        )
    }));
    drop(listener);
}

#[test]
fn a_unit_nobody_answers_for_times_out() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let mut dev = device(ModbusParams {
        request_timeout: Duration::from_millis(300),
        ..params(
            pdu.address(),
            &[("alpha", vec![coil(1, 0)]), ("ghost", vec![coil(9, 0)])],
        )
    });
    rt().block_on(async {
        let message = within(300, 400, async {
            expect_err(
                dev.status("ghost", deadline(5000)).await,
                FenceErrorKind::Timeout,
            )
        })
        .await;
        assert!(message.contains("coil 0 on unit 9"), "{message}");
        // The timeout dropped the connection; the next call opens a fresh one.
        dev.off("alpha", deadline(5000)).await.expect("off");
    });
    assert!(!pdu.outlet(0));
    assert_eq!(dev.metrics().connects.load(Ordering::Relaxed), 2);
}

#[test]
fn the_driver_reconnects_after_the_pdu_restarts_on_the_same_port() {
    let mut pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let mut dev = device(params(pdu.address(), &[("alpha", vec![coil(1, 6)])]));
    let rt = rt();
    rt.block_on(async {
        dev.off("alpha", deadline(5000)).await.expect("off");
    });
    assert!(!pdu.outlet(6));
    pdu.restart();
    assert!(pdu.outlet(6), "a restarted PDU starts with every outlet on");
    rt.block_on(async {
        // The kept connection is dead; the call reconnects and still succeeds.
        assert_eq!(
            dev.status("alpha", deadline(5000)).await,
            Ok(PowerState::On)
        );
        dev.off("alpha", deadline(5000))
            .await
            .expect("off after restart");
    });
    assert!(!pdu.outlet(6));
    assert_eq!(dev.metrics().connects.load(Ordering::Relaxed), 2);
}

#[test]
fn rtu_over_a_pty_cable_is_confirmed() {
    let dir = hwtests::util::unique_tempdir("wk-mbrtu-").expect("tempdir");
    let cable = PtyCable::new(dir.path(), "pdu", "agent").expect("pty cable");
    let options = ModbusPduOptions {
        units: vec![1, 2],
        ..ModbusPduOptions::default()
    };
    let pdu = ModbusPdu::start_rtu(&options, cable.a_path());
    let mut dev = device(ModbusParams {
        transport: ModbusTransport::Rtu {
            path: cable.b_path().to_owned(),
            baud: options.baud,
        },
        request_timeout: Duration::from_millis(500),
        ..params(
            SocketAddr::from((Ipv4Addr::LOCALHOST, 1)),
            &[
                ("alpha", vec![coil(1, 0), register(2, 3)]),
                ("ghost", vec![coil(7, 0)]),
            ],
        )
    });
    rt().block_on(async {
        assert_eq!(
            dev.status("alpha", deadline(5000)).await,
            Ok(PowerState::On)
        );
        let off = dev.off("alpha", deadline(5000)).await.expect("off");
        assert_eq!(off.state, PowerState::Off);
        assert!(!pdu.unit_outlet(1, 0) && !pdu.unit_outlet(2, 3));
        assert_eq!(
            dev.status("alpha", deadline(5000)).await,
            Ok(PowerState::Off)
        );
        dev.on("alpha", deadline(5000)).await.expect("on");
        assert!(pdu.unit_outlet(1, 0) && pdu.unit_outlet(2, 3));
        dev.reboot("alpha", deadline(5000)).await.expect("reboot");
        // No device answers for unit 7 on the bus.
        within(500, 400, async {
            expect_err(
                dev.status("ghost", deadline(5000)).await,
                FenceErrorKind::Timeout,
            )
        })
        .await;
        // After the silence the port is reopened and the bus works again.
        assert_eq!(
            dev.status("alpha", deadline(5000)).await,
            Ok(PowerState::On)
        );
        let message = expect_err(dev.monitor(deadline(5000)).await, FenceErrorKind::Timeout);
        assert!(message.contains("unit 7"), "{message}");
    });
    assert_eq!(
        pdu.writes(),
        [
            "unit=1 fc=5 addr=0 value=0",
            "unit=2 fc=6 addr=103 value=2",
            "unit=1 fc=5 addr=0 value=1",
            "unit=2 fc=6 addr=103 value=1",
            "unit=1 fc=5 addr=0 value=0",
            "unit=2 fc=6 addr=103 value=2",
            "unit=1 fc=5 addr=0 value=1",
            "unit=2 fc=6 addr=103 value=1",
        ]
    );
}
