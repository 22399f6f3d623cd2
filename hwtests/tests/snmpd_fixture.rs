//! The `snmpd` fixture itself, checked with net-snmp's own command-line tools (not with the
//! driver code the fixture exists to test): every PDU model switches over v2c, both v3 users
//! work with authPriv, the read-only community and wrong keys are refused, errors are those a
//! real agent gives, the state file follows SETs both ways, and nothing outlives the fixture.
//!
//! `snmpd` and the `snmp` tools come from `scripts/deps-fence.sh`; without them these tests
//! fail.

use std::process::Command;
use std::time::{Duration, Instant};

use hwtests::snmpd::{
    PduModel, Snmpd, SnmpdOptions, V2C_RO_COMMUNITY, V2C_RW_COMMUNITY, V3_AUTH_PASSWORD,
    V3_PRIV_PASSWORD, V3_USER, V3_USER_SHA256,
};

/// How a CLI call authenticates.
#[derive(Clone, Copy)]
enum Auth {
    Community(&'static str),
    V3 { user: &'static str, sha256: bool },
    V3WrongKey,
}

/// Output of one CLI call.
struct Reply {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `tool` (snmpget, snmpset, snmpwalk) against the fixture with numeric output and no MIB
/// files, the client's persistent state in the fixture's directory, one try of one second.
fn cli(agent: &Snmpd, tool: &str, auth: Auth, args: &[&str]) -> Reply {
    let mut command = Command::new(tool);
    command
        .env("MIBS", ":")
        .env("MIBDIRS", "/nonexistent")
        .env("SNMP_PERSISTENT_DIR", agent.dir().join("client"))
        .args(["-On", "-Oe", "-t", "1", "-r", "0"]);
    match auth {
        Auth::Community(c) => {
            command.args(["-v2c", "-c", c]);
        }
        Auth::V3 { user, sha256 } => {
            let proto = if sha256 { "SHA-256" } else { "SHA" };
            command.args(["-v3", "-l", "authPriv", "-u", user, "-a", proto]);
            command.args(["-A", V3_AUTH_PASSWORD, "-x", "AES", "-X", V3_PRIV_PASSWORD]);
        }
        Auth::V3WrongKey => {
            command.args(["-v3", "-l", "authPriv", "-u", V3_USER, "-a", "SHA"]);
            command.args(["-A", "wrongpass123", "-x", "AES", "-X", V3_PRIV_PASSWORD]);
        }
    }
    command.arg(agent.address().to_string()).args(args);
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}): install with scripts/deps-fence.sh"));
    Reply {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The value part of a one-varbind `snmpget -On` answer (`.oid = TYPE: value`).
fn get(agent: &Snmpd, auth: Auth, oid: &str) -> String {
    let reply = cli(agent, "snmpget", auth, &[oid]);
    assert!(
        reply.ok,
        "snmpget {oid}: {}{}\nagent log:\n{}",
        reply.stdout,
        reply.stderr,
        agent.log()
    );
    value(&reply.stdout)
}

fn value(line: &str) -> String {
    line.trim()
        .split_once(" = ")
        .map(|(_, v)| v.to_owned())
        .unwrap_or_else(|| panic!("unexpected snmp output {line:?}"))
}

fn set_ok(agent: &Snmpd, auth: Auth, oid: &str, typ: &str, v: &str) {
    let reply = cli(agent, "snmpset", auth, &[oid, typ, v]);
    assert!(
        reply.ok,
        "snmpset {oid} {typ} {v}: {}{}\nagent log:\n{}",
        reply.stdout,
        reply.stderr,
        agent.log()
    );
}

/// A SET that must fail; returns the tool's error text.
fn set_err(agent: &Snmpd, auth: Auth, oid: &str, typ: &str, v: &str) -> String {
    let reply = cli(agent, "snmpset", auth, &[oid, typ, v]);
    assert!(
        !reply.ok,
        "snmpset {oid} {typ} {v} succeeded: {}",
        reply.stdout
    );
    reply.stderr
}

const RW: Auth = Auth::Community(V2C_RW_COMMUNITY);
const RO: Auth = Auth::Community(V2C_RO_COMMUNITY);

/// Per model: (control OID prefix, on, off, status OID prefix, status on, status off, name
/// OID prefix); the outlet number follows each prefix.
struct Oids {
    control: &'static str,
    on: &'static str,
    off: &'static str,
    status: &'static str,
    status_on: &'static str,
    status_off: &'static str,
    name: &'static str,
}

fn oids(model: PduModel) -> Oids {
    match model {
        PduModel::ApcMasterSwitch => Oids {
            control: ".1.3.6.1.4.1.318.1.1.4.4.2.1.3.",
            on: "1",
            off: "2",
            status: ".1.3.6.1.4.1.318.1.1.4.4.2.1.3.",
            status_on: "1",
            status_off: "2",
            name: ".1.3.6.1.4.1.318.1.1.4.4.2.1.4.",
        },
        PduModel::ApcRpdu => Oids {
            control: ".1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.",
            on: "1",
            off: "2",
            status: ".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.",
            status_on: "1",
            status_off: "2",
            name: ".1.3.6.1.4.1.318.1.1.12.3.3.1.1.2.",
        },
        PduModel::RaritanPx => Oids {
            control: ".1.3.6.1.4.1.13742.6.4.1.2.1.2.1.",
            on: "1",
            off: "0",
            status: ".1.3.6.1.4.1.13742.6.4.1.2.1.3.1.",
            status_on: "7",
            status_off: "8",
            name: ".1.3.6.1.4.1.13742.6.3.5.3.1.3.1.",
        },
        // Eaton has separate on and off columns; `control` is the off one (see below).
        PduModel::EatonEpdu => Oids {
            control: ".1.3.6.1.4.1.534.6.6.7.6.6.1.3.0.",
            on: "0",
            off: "0",
            status: ".1.3.6.1.4.1.534.6.6.7.6.6.1.2.0.",
            status_on: "1",
            status_off: "0",
            name: ".1.3.6.1.4.1.534.6.6.7.6.1.1.3.0.",
        },
    }
}

fn control_oid(model: PduModel, on: bool, n: u32) -> String {
    match (model, on) {
        (PduModel::EatonEpdu, true) => format!(".1.3.6.1.4.1.534.6.6.7.6.6.1.4.0.{n}"),
        _ => format!("{}{n}", oids(model).control),
    }
}

const MODELS: [PduModel; 4] = [
    PduModel::ApcMasterSwitch,
    PduModel::ApcRpdu,
    PduModel::RaritanPx,
    PduModel::EatonEpdu,
];

#[test]
fn every_pdu_model_switches_outlets_over_v2c() {
    for model in MODELS {
        let started = Instant::now();
        let agent = Snmpd::start(&SnmpdOptions {
            outlets: 4,
            ports: 0,
            model,
            ..SnmpdOptions::default()
        });
        let start_time = started.elapsed();
        let o = oids(model);
        assert_eq!(
            get(&agent, RO, ".1.3.6.1.2.1.1.2.0"),
            format!("OID: {}", model.sys_object_id()),
            "{model:?}"
        );
        assert_eq!(
            get(&agent, RO, &format!("{}2", o.name)),
            "STRING: \"Outlet 2\""
        );
        let status = format!("{}2", o.status);
        assert_eq!(
            get(&agent, RO, &status),
            format!("INTEGER: {}", o.status_on)
        );

        set_ok(&agent, RW, &control_oid(model, false, 2), "i", o.off);
        assert_eq!(
            get(&agent, RO, &status),
            format!("INTEGER: {}", o.status_off),
            "{model:?}"
        );
        assert!(!agent.outlet_on(2), "{model:?}: state file still on");
        assert!(agent.outlet_on(1) && agent.outlet_on(3));

        set_ok(&agent, RW, &control_oid(model, true, 2), "i", o.on);
        assert_eq!(
            get(&agent, RO, &status),
            format!("INTEGER: {}", o.status_on)
        );
        assert!(agent.outlet_on(2));

        // The other way round: a change in the state file shows in the agent.
        agent.set_outlet(3, false);
        assert_eq!(
            get(&agent, RO, &format!("{}3", o.status)),
            format!("INTEGER: {}", o.status_off)
        );

        // Names are writable, as on the real PDUs.
        set_ok(&agent, RW, &format!("{}4", o.name), "s", "db-node-4");
        assert_eq!(
            get(&agent, RO, &format!("{}4", o.name)),
            "STRING: \"db-node-4\""
        );

        // A value out of the enumeration, a wrong type, a read-only column.
        let bad = if model == PduModel::EatonEpdu {
            "-5"
        } else {
            "9"
        };
        let e = set_err(&agent, RW, &control_oid(model, false, 1), "i", bad);
        assert!(e.contains("wrongValue"), "{model:?}: {e}");
        let e = set_err(&agent, RW, &control_oid(model, false, 1), "s", "off");
        assert!(e.contains("wrongType"), "{model:?}: {e}");
        if o.status != o.control {
            let e = set_err(&agent, RW, &format!("{}1", o.status), "i", o.status_off);
            assert!(e.contains("notWritable"), "{model:?}: {e}");
        }
        assert!(
            agent.outlet_on(1),
            "{model:?}: a refused SET switched outlet 1"
        );

        let sets = agent.sets();
        assert!(
            sets.iter()
                .any(|l| l.starts_with(&control_oid(model, false, 2)) && l.ends_with("DONE")),
            "{model:?}: {sets:?}"
        );
        assert!(sets.iter().any(|l| l.ends_with("wrong-value")), "{sets:?}");
        eprintln!("{model:?}: started in {start_time:?}");
    }
}

#[test]
fn v3_sha_and_sha256_authpriv_get_and_set() {
    let agent = Snmpd::start(&SnmpdOptions {
        model: PduModel::ApcRpdu,
        ..SnmpdOptions::default()
    });
    for (n, sha256) in [(5u32, false), (6, true)] {
        let user = if sha256 { V3_USER_SHA256 } else { V3_USER };
        let auth = Auth::V3 { user, sha256 };
        let status = format!(".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.{n}");
        assert_eq!(get(&agent, auth, &status), "INTEGER: 1");
        set_ok(
            &agent,
            auth,
            &format!(".1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.{n}"),
            "i",
            "2",
        );
        assert_eq!(get(&agent, auth, &status), "INTEGER: 2");
        assert!(!agent.outlet_on(n));
        // The switch side works over v3 too.
        set_ok(&agent, auth, &format!(".1.3.6.1.2.1.2.2.1.7.{n}"), "i", "2");
        assert!(!agent.port_admin_up(n));
    }
    let wrong = cli(&agent, "snmpget", Auth::V3WrongKey, &[".1.3.6.1.2.1.1.5.0"]);
    assert!(!wrong.ok, "a wrong v3 key was accepted: {}", wrong.stdout);
    assert!(
        wrong.stderr.contains("Authentication failure") || wrong.stderr.contains("Timeout"),
        "{}",
        wrong.stderr
    );
    assert!(agent.outlet_on(1));
}

#[test]
fn read_only_community_is_refused_and_nothing_changes() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let e = set_err(&agent, RO, ".1.3.6.1.4.1.318.1.1.4.4.2.1.3.1", "i", "2");
    assert!(e.contains("noAccess"), "{e}");
    let e = set_err(&agent, RO, ".1.3.6.1.2.1.2.2.1.7.1", "i", "2");
    assert!(e.contains("noAccess"), "{e}");
    assert!(agent.outlet_on(1));
    assert!(agent.port_admin_up(1));
    // snmpd refused them itself: the backends never saw a SET.
    assert_eq!(agent.sets(), Vec::<String>::new());
    // An unknown community gets no answer at all.
    let reply = cli(
        &agent,
        "snmpget",
        Auth::Community("nosuch"),
        &[".1.3.6.1.2.1.1.5.0"],
    );
    assert!(
        !reply.ok && reply.stderr.contains("Timeout"),
        "{}",
        reply.stderr
    );
}

#[test]
fn switch_ports_follow_if_admin_status() {
    let agent = Snmpd::start(&SnmpdOptions {
        outlets: 0,
        ports: 4,
        ..SnmpdOptions::default()
    });
    assert_eq!(get(&agent, RO, ".1.3.6.1.2.1.2.1.0"), "INTEGER: 4");
    assert_eq!(
        get(&agent, RO, ".1.3.6.1.2.1.2.2.1.2.3"),
        "STRING: \"port3\""
    );
    assert_eq!(
        get(&agent, RO, ".1.3.6.1.2.1.31.1.1.1.1.3"),
        "STRING: \"port3\""
    );
    assert_eq!(
        get(&agent, RO, ".1.3.6.1.2.1.31.1.1.1.18.3"),
        "STRING: \"host3-hba\""
    );

    set_ok(&agent, RW, ".1.3.6.1.2.1.2.2.1.7.3", "i", "2");
    assert_eq!(get(&agent, RO, ".1.3.6.1.2.1.2.2.1.7.3"), "INTEGER: 2");
    assert_eq!(get(&agent, RO, ".1.3.6.1.2.1.2.2.1.8.3"), "INTEGER: 2");
    assert!(!agent.port_admin_up(3));
    assert!(agent.port_admin_up(2));
    set_ok(&agent, RW, ".1.3.6.1.2.1.2.2.1.7.3", "i", "1");
    assert!(agent.port_admin_up(3));

    agent.set_port_admin(4, false);
    assert_eq!(get(&agent, RO, ".1.3.6.1.2.1.2.2.1.8.4"), "INTEGER: 2");

    set_ok(&agent, RW, ".1.3.6.1.2.1.31.1.1.1.18.2", "s", "node-b hba");
    assert_eq!(
        get(&agent, RO, ".1.3.6.1.2.1.31.1.1.1.18.2"),
        "STRING: \"node-b hba\""
    );

    let e = set_err(&agent, RW, ".1.3.6.1.2.1.2.2.1.8.1", "i", "2");
    assert!(e.contains("notWritable"), "{e}");
    let e = set_err(&agent, RW, ".1.3.6.1.2.1.2.2.1.7.1", "s", "down");
    assert!(e.contains("wrongType"), "{e}");
    let e = set_err(&agent, RW, ".1.3.6.1.2.1.2.2.1.7.1", "i", "3");
    assert!(e.contains("wrongValue"), "{e}");
    let e = set_err(&agent, RW, ".1.3.6.1.2.1.2.2.1.7.9", "i", "2");
    assert!(e.contains("notWritable") || e.contains("noCreation"), "{e}");
    assert!(agent.port_admin_up(1));

    let walk = cli(&agent, "snmpwalk", RO, &[".1.3.6.1.2.1.31.1.1.1.1"]);
    assert!(walk.ok, "{}", walk.stderr);
    assert_eq!(walk.stdout.lines().count(), 4, "{}", walk.stdout);

    assert_eq!(
        agent.sets().first().map(String::as_str),
        Some(".1.3.6.1.2.1.2.2.1.7.3 integer 2 DONE")
    );
}

#[test]
fn stuck_outlets_and_ports_acknowledge_but_never_change() {
    let agent = Snmpd::start(&SnmpdOptions {
        stuck_outlets: vec![2],
        stuck_ports: vec![3],
        ..SnmpdOptions::default()
    });
    set_ok(&agent, RW, ".1.3.6.1.4.1.318.1.1.4.4.2.1.3.2", "i", "2");
    assert_eq!(
        get(&agent, RO, ".1.3.6.1.4.1.318.1.1.4.4.2.1.3.2"),
        "INTEGER: 1"
    );
    assert!(agent.outlet_on(2));
    set_ok(&agent, RW, ".1.3.6.1.2.1.2.2.1.7.3", "i", "2");
    assert_eq!(get(&agent, RO, ".1.3.6.1.2.1.2.2.1.7.3"), "INTEGER: 1");
    assert!(agent.port_admin_up(3));
    // Their neighbours work.
    set_ok(&agent, RW, ".1.3.6.1.2.1.2.2.1.7.4", "i", "2");
    assert!(!agent.port_admin_up(4));
    assert_eq!(agent.sets().len(), 3, "{:?}", agent.sets());
}

#[test]
fn reboot_keeps_an_outlet_off_for_reboot_secs() {
    let agent = Snmpd::start(&SnmpdOptions {
        model: PduModel::ApcRpdu,
        reboot_secs: 1,
        ..SnmpdOptions::default()
    });
    let started = Instant::now();
    set_ok(&agent, RW, ".1.3.6.1.4.1.318.1.1.12.3.3.1.1.4.1", "i", "3");
    assert_eq!(
        get(&agent, RO, ".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.1"),
        "INTEGER: 2"
    );
    assert!(!agent.outlet_on(1));
    while !agent.outlet_on(1) {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "outlet 1 never came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(
        get(&agent, RO, ".1.3.6.1.4.1.318.1.1.12.3.5.1.1.4.1"),
        "INTEGER: 1"
    );
}

#[test]
fn nothing_outlives_the_fixture() {
    let agent = Snmpd::start(&SnmpdOptions::default());
    let pid = agent.pid().expect("snmpd runs");
    let backends = agent.backend_pids();
    // PDU, ifTable and ifXTable backends, all started by the readiness probe.
    assert_eq!(backends.len(), 3, "backends: {backends:?}\n{}", agent.log());
    let dir = agent.dir().to_owned();
    let started = Instant::now();
    drop(agent);
    let stop_time = started.elapsed();
    for p in std::iter::once(pid).chain(backends) {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next());
        assert!(
            state.is_none() || state == Some("Z"),
            "process {p} still alive after drop: {stat}"
        );
    }
    assert!(!dir.exists(), "temporary directory left behind");
    eprintln!("stopped in {stop_time:?}");
}
