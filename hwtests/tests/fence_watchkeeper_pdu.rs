//! `fence_watchkeeper --type=apc-snmp|ifmib|modbus` against real peers: net-snmp's `snmpd`
//! playing APC PDUs and an IF-MIB switch (`hwtests::snmpd`), and a pymodbus PDU
//! (`hwtests::modbus_pdu`). Every action is checked in the simulator's own state, and where a
//! ClusterLabs agent exists (`fence_apc_snmp`, `fence_ifmib`) the same options are given to it
//! from the same starting state: same exit code, same answer line, same final state.
//!
//! Peers and agents come from `scripts/deps-fence.sh`; the binary from the workspace build
//! (`FENCE_WATCHKEEPER_BIN` overrides).

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use hwtests::modbus_pdu::{ModbusPdu, ModbusPduOptions, REGISTER_BASE, REGISTER_OFF, REGISTER_ON};
use hwtests::snmpd::{
    PduModel, Snmpd, SnmpdOptions, V2C_RW_COMMUNITY, V3_AUTH_PASSWORD, V3_PRIV_PASSWORD, V3_USER,
};
use hwtests::util::{first_line, run_agent, strings, workspace_bin, AGENT_DIR};

fn fence_watchkeeper() -> PathBuf {
    workspace_bin("fence_watchkeeper", "FENCE_WATCHKEEPER_BIN")
}

fn agent(name: &str) -> PathBuf {
    Path::new(AGENT_DIR).join(name)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// What one program did: exit code, first line of stdout, the target's state afterwards.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    code: Option<i32>,
    line: String,
    on_after: bool,
}

/// Runs `action` through fence_watchkeeper (with `ours_extra`) and through `theirs`, each from
/// the state `start_on` set by `set`, and asserts both did the same.
struct Side<'a> {
    theirs: &'a Path,
    common: &'a [String],
    ours_extra: &'a [String],
    set: &'a dyn Fn(bool),
    get: &'a dyn Fn() -> bool,
}

impl Side<'_> {
    fn once(
        &self,
        program: &Path,
        extra: &[String],
        action: Option<&str>,
        start_on: bool,
    ) -> (Outcome, String) {
        (self.set)(start_on);
        let mut args = self.common.to_vec();
        args.extend_from_slice(extra);
        if let Some(action) = action {
            args.push(format!("--action={action}"));
        }
        let out = run_agent(program, &args, None);
        (
            Outcome {
                code: out.status.code(),
                line: first_line(&out),
                on_after: (self.get)(),
            },
            stderr(&out),
        )
    }

    /// Both programs, compared; returns fence_watchkeeper's outcome.
    fn compare(&self, label: &str, action: Option<&str>, start_on: bool) -> Outcome {
        let (ours, ours_err) = self.once(&fence_watchkeeper(), self.ours_extra, action, start_on);
        let (theirs, theirs_err) = self.once(self.theirs, &[], action, start_on);
        assert_eq!(
            ours,
            theirs,
            "{label} {action:?} from {}: ours stderr {ours_err:?}, theirs stderr {theirs_err:?}",
            if start_on { "on" } else { "off" }
        );
        ours
    }
}

fn apc_common(snmpd: &Snmpd, plug: &str) -> Vec<String> {
    vec![
        "--ip=127.0.0.1".to_owned(),
        format!("--ipport={}", snmpd.port()),
        "-c".to_owned(),
        V2C_RW_COMMUNITY.to_owned(),
        "-d".to_owned(),
        "2c".to_owned(),
        "-n".to_owned(),
        plug.to_owned(),
    ]
}

fn v3_common(snmpd: &Snmpd, plug: &str) -> Vec<String> {
    vec![
        "--ip=127.0.0.1".to_owned(),
        format!("--ipport={}", snmpd.port()),
        "--snmp-version=3".to_owned(),
        "--snmp-sec-level=authPriv".to_owned(),
        format!("--username={V3_USER}"),
        format!("--password={V3_AUTH_PASSWORD}"),
        "--snmp-auth-prot=SHA".to_owned(),
        "--snmp-priv-prot=AES".to_owned(),
        format!("--snmp-priv-passwd={V3_PRIV_PASSWORD}"),
        "-n".to_owned(),
        plug.to_owned(),
    ]
}

/// status, off, on and reboot from both states, side by side with fence_apc_snmp.
fn apc_actions(side: &Side<'_>, label: &str) {
    for (action, start_on, code, line, on_after) in [
        ("status", true, 0, "Status: ON", true),
        ("status", false, 2, "Status: OFF", false),
        ("off", true, 0, "Success: Powered OFF", false),
        ("off", false, 0, "Success: Already OFF", false),
        ("on", false, 0, "Success: Powered ON", true),
        ("on", true, 0, "Success: Already ON", true),
        ("reboot", true, 0, "Success: Rebooted", true),
        ("reboot", false, 0, "Success: Rebooted", true),
        ("monitor", true, 0, "", true),
    ] {
        let ours = side.compare(label, Some(action), start_on);
        assert_eq!(
            ours,
            Outcome {
                code: Some(code),
                line: line.to_owned(),
                on_after
            },
            "{label} {action}"
        );
    }
}

#[test]
fn apc_snmp_v2c_matches_fence_apc_snmp_on_both_apc_models() {
    for model in [PduModel::ApcMasterSwitch, PduModel::ApcRpdu] {
        let snmpd = Snmpd::start(&SnmpdOptions {
            model,
            ..SnmpdOptions::default()
        });
        let theirs = agent("fence_apc_snmp");
        let set = |on: bool| snmpd.set_outlet(3, on);
        let get = || snmpd.outlet_on(3);
        let common = apc_common(&snmpd, "3");
        let ours_extra = strings(&["--type=apc-snmp"]);
        let side = Side {
            theirs: &theirs,
            common: &common,
            ours_extra: &ours_extra,
            set: &set,
            get: &get,
        };
        apc_actions(&side, &format!("{model:?} v2c"));
        // Neighbours untouched.
        assert!(snmpd.outlet_on(2) && snmpd.outlet_on(4), "{model:?}");

        // An outlet by name.
        let common = apc_common(&snmpd, "Outlet 5");
        let set = |on: bool| snmpd.set_outlet(5, on);
        let get = || snmpd.outlet_on(5);
        let side = Side {
            theirs: &theirs,
            common: &common,
            ours_extra: &ours_extra,
            set: &set,
            get: &get,
        };
        for (action, start_on) in [("off", true), ("status", false), ("on", false)] {
            side.compare(&format!("{model:?} by name"), Some(action), start_on);
        }
        assert!(snmpd.outlet_on(5));

        // list: the same outlets and names.
        let mut args = apc_common(&snmpd, "1");
        args.push("-o".to_owned());
        args.push("list".to_owned());
        let theirs_out = run_agent(&theirs, &args, None);
        args.extend(ours_extra.iter().cloned());
        let ours_out = run_agent(&fence_watchkeeper(), &args, None);
        assert_eq!(ours_out.status.code(), Some(0), "{}", stderr(&ours_out));
        assert_eq!(
            String::from_utf8_lossy(&ours_out.stdout),
            String::from_utf8_lossy(&theirs_out.stdout),
            "{model:?} list"
        );
        assert!(String::from_utf8_lossy(&ours_out.stdout).contains("3,Outlet 3\n"));
        // list-status: ours reads the states (fence_apc_snmp prints UNKNOWN for every one).
        snmpd.set_outlet(4, false);
        let action = args.len() - 2;
        args[action] = "list-status".to_owned();
        let listed = run_agent(&fence_watchkeeper(), &args, None);
        let text = String::from_utf8_lossy(&listed.stdout);
        assert!(
            text.contains("4,Outlet 4,OFF\n") && text.contains("3,Outlet 3,ON\n"),
            "{text}"
        );
        snmpd.set_outlet(4, true);
    }
}

#[test]
fn apc_snmp_v3_auth_priv_matches_fence_apc_snmp() {
    let snmpd = Snmpd::start(&SnmpdOptions::default());
    let theirs = agent("fence_apc_snmp");
    let set = |on: bool| snmpd.set_outlet(2, on);
    let get = || snmpd.outlet_on(2);
    let common = v3_common(&snmpd, "2");
    let ours_extra = strings(&["--type=apc-snmp"]);
    let side = Side {
        theirs: &theirs,
        common: &common,
        ours_extra: &ours_extra,
        set: &set,
        get: &get,
    };
    apc_actions(&side, "v3 authPriv");

    // The stdin protocol with the same keys (fence_apc_snmp warns about type= and ignores it).
    let stdin = format!(
        "type=apc-snmp\nip=127.0.0.1\nipport={}\nsnmp_version=3\nsnmp_sec_level=authPriv\n\
         login={V3_USER}\npasswd={V3_AUTH_PASSWORD}\nsnmp_auth_prot=SHA\nsnmp_priv_prot=AES\n\
         snmp_priv_passwd={V3_PRIV_PASSWORD}\nport=2\naction=status\n",
        snmpd.port()
    );
    snmpd.set_outlet(2, false);
    let ours = run_agent(&fence_watchkeeper(), &[], Some(&stdin));
    let theirs_out = run_agent(&theirs, &[], Some(&stdin));
    assert_eq!(
        (ours.status.code(), first_line(&ours)),
        (theirs_out.status.code(), first_line(&theirs_out)),
        "{}",
        stderr(&ours)
    );
    assert_eq!(ours.status.code(), Some(2));

    // A wrong privacy passphrase: the agent cannot decrypt and stays silent; a wrong
    // authentication passphrase is reported. Either way exit 1, nothing switched, and no
    // passphrase printed.
    snmpd.set_outlet(2, true);
    for (bad, flag) in [
        ("Xq9wrongauth", "--password="),
        ("Xq9wrongpriv", "--snmp-priv-passwd="),
    ] {
        let mut args: Vec<String> = v3_common(&snmpd, "2")
            .into_iter()
            .map(|a| {
                if a.starts_with(flag) {
                    format!("{flag}{bad}")
                } else {
                    a
                }
            })
            .collect();
        args.extend(strings(&[
            "--type=apc-snmp",
            "-o",
            "off",
            "--power-timeout=2",
            "--login-timeout=1",
        ]));
        let started = Instant::now();
        let out = run_agent(&fence_watchkeeper(), &args, None);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(out.status.code(), Some(1), "{flag}");
        let err = stderr(&out);
        assert!(err.contains("ERROR: Failed:"), "{err}");
        assert!(!err.contains(bad), "passphrase printed: {err}");
        assert!(snmpd.outlet_on(2));
    }
}

#[test]
fn weak_or_unsupported_snmp_choices_are_refused_with_a_reason() {
    let snmpd = Snmpd::start(&SnmpdOptions::default());
    for (extra, needle) in [
        (&["-d", "1"][..], "version 1 is not supported"),
        (&["-d", "3", "-b", "MD5"][..], "MD5 is not supported"),
        (
            &["-d", "3", "-E", "noAuthNoPriv"][..],
            "noAuthNoPriv is not supported",
        ),
        (&["-d", "3", "-B", "DES"][..], "DES is not supported"),
        (&["-n", "2:3"][..], "switch 2"),
    ] {
        let mut args = v3_common(&snmpd, "3");
        args.retain(|a| !a.starts_with("--snmp-version") && !a.starts_with("--snmp-priv-prot"));
        args.extend(strings(extra));
        args.extend(strings(&["--type=apc-snmp", "-o", "off"]));
        let out = run_agent(&fence_watchkeeper(), &args, None);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        assert!(stderr(&out).contains(needle), "{extra:?}: {}", stderr(&out));
        assert!(snmpd.outlet_on(3));
    }
    assert!(snmpd.sets().is_empty(), "{:?}", snmpd.sets());
}

#[test]
fn a_wrong_community_fails_clearly_within_the_timeout() {
    let snmpd = Snmpd::start(&SnmpdOptions::default());
    let mut args = apc_common(&snmpd, "3");
    args[3] = "Xq9notcommunity".to_owned();
    args.extend(strings(&[
        "-o",
        "off",
        "--power-timeout=2",
        "--login-timeout=1",
    ]));
    let mut ours_args = args.clone();
    ours_args.push("--type=apc-snmp".to_owned());
    let started = Instant::now();
    let ours = run_agent(&fence_watchkeeper(), &ours_args, None);
    let elapsed = started.elapsed();
    // The deadline is power-timeout + login-timeout = 3 s.
    assert!(
        elapsed >= Duration::from_millis(2500) && elapsed < Duration::from_millis(4500),
        "{elapsed:?}"
    );
    assert_eq!(ours.status.code(), Some(1));
    let err = stderr(&ours);
    assert!(err.contains("wrong community"), "{err}");
    assert!(!err.contains("Xq9notcommunity"), "community printed: {err}");
    let theirs = run_agent(&agent("fence_apc_snmp"), &args, None);
    assert_eq!(theirs.status.code(), Some(1), "{}", stderr(&theirs));
    assert!(snmpd.outlet_on(3));
    // A read-only community is refused by the agent on the write: also exit 1, outlet on.
    let mut ro = ours_args.clone();
    ro[3] = "public".to_owned();
    let out = run_agent(&fence_watchkeeper(), &ro, None);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(snmpd.outlet_on(3));
}

#[test]
fn ifmib_matches_fence_ifmib_by_index_and_by_name() {
    let snmpd = Snmpd::start(&SnmpdOptions::default());
    let theirs = agent("fence_ifmib");
    let ours_extra = strings(&["--type=ifmib"]);
    for (plug, port) in [("3", 3), ("port4", 4)] {
        let common = vec![
            "--ip=127.0.0.1".to_owned(),
            format!("--ipport={}", snmpd.port()),
            "-c".to_owned(),
            V2C_RW_COMMUNITY.to_owned(),
            "-n".to_owned(),
            plug.to_owned(),
        ];
        let set = |up: bool| snmpd.set_port_admin(port, up);
        let get = || snmpd.port_admin_up(port);
        let side = Side {
            theirs: &theirs,
            common: &common,
            ours_extra: &ours_extra,
            set: &set,
            get: &get,
        };
        for (action, start_on, code, line, up_after) in [
            (Some("status"), true, 0, "Status: ON", true),
            (Some("status"), false, 2, "Status: OFF", false),
            (Some("off"), true, 0, "Success: Powered OFF", false),
            (Some("off"), false, 0, "Success: Already OFF", false),
            (Some("on"), false, 0, "Success: Powered ON", true),
            (Some("on"), true, 0, "Success: Already ON", true),
            // fence_ifmib's fabric-fencing names, and its default action: off.
            (Some("disable"), true, 0, "Success: Powered OFF", false),
            (Some("enable"), false, 0, "Success: Powered ON", true),
            (None, true, 0, "Success: Powered OFF", false),
            // No reboot for a fabric fence: refused before anything is sent.
            (Some("reboot"), false, 1, "", false),
            (Some("monitor"), true, 0, "", true),
        ] {
            let ours = side.compare(&format!("ifmib {plug}"), action, start_on);
            assert_eq!(
                ours,
                Outcome {
                    code: Some(code),
                    line: line.to_owned(),
                    on_after: up_after
                },
                "ifmib {plug} {action:?}"
            );
        }
        for other in (1..=8).filter(|p| *p != port) {
            assert!(snmpd.port_admin_up(other), "port {other} touched");
        }
    }
    let out = run_agent(
        &fence_watchkeeper(),
        &strings(&[
            "--type=ifmib",
            "--ip=127.0.0.1",
            "-c",
            "private",
            "-n",
            "3",
            "-o",
            "reboot",
        ]),
        None,
    );
    assert!(
        stderr(&out).contains("Unrecognised action 'reboot'"),
        "{}",
        stderr(&out)
    );

    // list: one line per port, name and alias, as fence_ifmib.
    let args = vec![
        "--ip=127.0.0.1".to_owned(),
        format!("--ipport={}", snmpd.port()),
        "-c".to_owned(),
        V2C_RW_COMMUNITY.to_owned(),
        "-o".to_owned(),
        "list".to_owned(),
    ];
    let theirs_out = run_agent(&theirs, &args, None);
    let mut ours_args = args.clone();
    ours_args.extend(ours_extra.iter().cloned());
    let ours = run_agent(&fence_watchkeeper(), &ours_args, None);
    assert_eq!(ours.status.code(), Some(0), "{}", stderr(&ours));
    assert_eq!(
        String::from_utf8_lossy(&ours.stdout),
        String::from_utf8_lossy(&theirs_out.stdout)
    );
    assert!(String::from_utf8_lossy(&ours.stdout).contains("port3,host3-hba\n"));
    snmpd.set_port_admin(6, false);
    let mut status_args = ours_args.clone();
    status_args[5] = "list-status".to_owned();
    let listed = run_agent(&fence_watchkeeper(), &status_args, None);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.contains("port6,host6-hba,OFF\n") && text.contains("port5,host5-hba,ON\n"),
        "{text}"
    );
}

fn modbus_args(pdu: &ModbusPdu, extra: &[&str]) -> Vec<String> {
    let mut args = vec![
        "--type=modbus".to_owned(),
        "--ip=127.0.0.1".to_owned(),
        format!("--ipport={}", pdu.address().port()),
    ];
    args.extend(strings(extra));
    args
}

#[test]
fn modbus_tcp_plug_is_coil_n_minus_one() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let wk = fence_watchkeeper();
    for (action, start_on, code, line, on_after) in [
        ("status", true, 0, "Status: ON", true),
        ("status", false, 2, "Status: OFF", false),
        ("off", true, 0, "Success: Powered OFF", false),
        ("off", false, 0, "Success: Already OFF", false),
        ("on", false, 0, "Success: Powered ON", true),
        ("on", true, 0, "Success: Already ON", true),
        ("monitor", true, 0, "", true),
    ] {
        pdu.set_outlet(1, 2, start_on);
        let out = run_agent(&wk, &modbus_args(&pdu, &["-n", "3", "-o", action]), None);
        assert_eq!(
            Outcome {
                code: out.status.code(),
                line: first_line(&out),
                on_after: pdu.outlet(2)
            },
            Outcome {
                code: Some(code),
                line: line.to_owned(),
                on_after
            },
            "{action} from {start_on}: {}",
            stderr(&out)
        );
        assert!(
            pdu.outlet(1) && pdu.outlet(3),
            "neighbours touched by {action}"
        );
    }
    // reboot with an explicit (zero) power wait: off, confirmed, on.
    let out = run_agent(
        &wk,
        &modbus_args(&pdu, &["-n", "3", "--power-wait=0", "-o", "reboot"]),
        None,
    );
    assert_eq!(
        (out.status.code(), first_line(&out)),
        (Some(0), "Success: Rebooted".to_owned())
    );
    assert!(pdu.outlet(2));
    assert!(
        pdu.writes()
            .iter()
            .any(|w| w.contains("fc=5") && w.contains("addr=2")),
        "{:?}",
        pdu.writes()
    );
    // Two plugs joined by the plug separator switch both outlets.
    let out = run_agent(&wk, &modbus_args(&pdu, &["-n", "5,6", "-o", "off"]), None);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!pdu.outlet(4) && !pdu.outlet(5));
    // A plug beyond the PDU's coils is an illegal address: exit 1, said so.
    let out = run_agent(&wk, &modbus_args(&pdu, &["-n", "40", "-o", "off"]), None);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("ERROR: Failed:"), "{}", stderr(&out));
    // Nothing listening: exit 1 at once.
    let port = pdu.address().port();
    drop(pdu);
    let started = Instant::now();
    let out = run_agent(
        &wk,
        &strings(&[
            "--type=modbus",
            "--ip=127.0.0.1",
            &format!("--ipport={port}"),
            "-n",
            "1",
            "-o",
            "status",
        ]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn modbus_map_switches_every_outlet_of_a_plug() {
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions {
        units: vec![1, 2],
        ..ModbusPduOptions::default()
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let map = dir.path().join("plugs.toml");
    std::fs::write(
        &map,
        format!(
            "[plugs]\n3 = {{ coil = 2 }}\n\"db1\" = [{{ coil = 0 }}, {{ register = {}, on = {REGISTER_ON}, off = {REGISTER_OFF}, unit = 2 }}]\n",
            REGISTER_BASE + 1
        ),
    )
    .expect("map");
    let map_arg = format!("--map={}", map.display());
    let wk = fence_watchkeeper();
    let db1 = |action: &str| {
        run_agent(
            &wk,
            &modbus_args(&pdu, &[&map_arg, "-n", "db1", "-o", action]),
            None,
        )
    };
    let out = db1("off");
    assert_eq!(
        (out.status.code(), first_line(&out)),
        (Some(0), "Success: Powered OFF".to_owned()),
        "{}",
        stderr(&out)
    );
    assert!(!pdu.unit_outlet(1, 0));
    // The register outlet: written 2 (off), stored by the PDU as outlet off.
    assert!(!pdu.unit_outlet(2, 1));
    assert!(
        pdu.unit_outlet(1, 1) && pdu.unit_outlet(2, 0),
        "neighbours touched"
    );
    let out = db1("status");
    assert_eq!(
        (out.status.code(), first_line(&out)),
        (Some(2), "Status: OFF".to_owned())
    );
    // One outlet back on behind our back: the plug is powered.
    pdu.set_outlet(1, 0, true);
    let out = db1("status");
    assert_eq!(
        (out.status.code(), first_line(&out)),
        (Some(0), "Status: ON".to_owned())
    );
    let out = db1("off");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = db1("on");
    assert_eq!(
        (out.status.code(), first_line(&out)),
        (Some(0), "Success: Powered ON".to_owned())
    );
    assert!(pdu.unit_outlet(1, 0));
    assert!(pdu.unit_outlet(2, 1));
    assert!(
        pdu.writes()
            .iter()
            .any(|w| w.contains("unit=2 fc=6 addr=101 value=2")),
        "{:?}",
        pdu.writes()
    );

    // The numbered plug of the map, and the list of plugs.
    let out = run_agent(
        &wk,
        &modbus_args(&pdu, &[&map_arg, "-n", "3", "-o", "off"]),
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!pdu.unit_outlet(1, 2));
    let out = run_agent(
        &wk,
        &modbus_args(&pdu, &[&map_arg, "-o", "list-status"]),
        None,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "3,coil 2 on unit 1,OFF\ndb1,coil 0 on unit 1 + register 101 on unit 2,ON\n",
        "{}",
        stderr(&out)
    );
    // A plug the map does not name is refused with the names it has.
    let out = run_agent(
        &wk,
        &modbus_args(&pdu, &[&map_arg, "-n", "db2", "-o", "off"]),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("it maps 3, db1"), "{}", stderr(&out));
    // A broken map: every mistake with its line.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[plugs]\na = { coil = 1, on = 1 }\nb = { register = 3 }\n",
    )
    .expect("map");
    let out = run_agent(
        &wk,
        &modbus_args(
            &pdu,
            &[&format!("--map={}", bad.display()), "-n", "a", "-o", "off"],
        ),
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml:2:5: plugs.a[0]") && err.contains("bad.toml:3:5: plugs.b[0]"),
        "{err}"
    );
    assert!(pdu.unit_outlet(1, 1) && pdu.unit_outlet(1, 0));
}
