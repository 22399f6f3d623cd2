//! The decision journal, `watchkeeper history` and alerts on real processes: two `watchkeeper
//! run` agents with IPMI fencing (ipmi_sim) elect a holder, the holder is killed with SIGKILL,
//! the survivor fences it and takes over. Then, from outside the agents:
//!
//! - the survivor's journal (`journal.jsonl` in its state directory) holds the decisions: the
//!   peer declared dead, the fence with its outcome and duration, the takeover and the starts;
//! - `watchkeeper history` explains them in words, and `--json` / `--since` work;
//! - a hook got the fence and failover alerts as JSON on stdin and `WATCHKEEPER_EVENT_*`
//!   variables;
//! - a real SMTP server (aiosmtpd, Debian's python3-aiosmtpd, installed by
//!   scripts/deps-alerts.sh) on 127.0.0.1 received the failover mail, and only that (the
//!   recipient filters on `events`);
//! - an HTTP receiver on 127.0.0.1 (Python's http.server) got the webhook JSON;
//! - a hook that hangs was killed at its 300 ms timeout, and the alerts after it still reached
//!   the same hook;
//! - a fence device whose BMC goes away raises a `fence_device` alert from its background check.
//!
//! The SMTP server and the HTTP receiver are stopped by PID when the test ends.

use std::fs;
use std::io::Read as _;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use hwtests::agent::watchkeeper_bin;
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig, DEFAULT_PASSWORD, DEFAULT_USER};
use hwtests::pair::{Net, Pair, PairSpec, NAMES};
use nix::sys::signal::Signal;
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_millis(600);
const WAIT: Duration = Duration::from_secs(20);
/// Debian's interpreter, which has python3-aiosmtpd (another python3 may come first on PATH).
const SYSTEM_PYTHON: &str = "/usr/bin/python3";

/// A resource that only keeps a state file per node.
const RESOURCE_SCRIPT: &str = r#"#!/bin/sh
action=$1; name=$2; node=$3; dir=$4
state="$dir/$node-$name.state"
case "$action" in
  start) : > "$state" ;;
  stop) rm -f "$state" ;;
  status) [ -e "$state" ] || exit 3 ;;
esac
exit 0
"#;

/// Records each alert: its stdin and its WATCHKEEPER_EVENT_* environment.
const RECORD_HOOK: &str = r#"#!/bin/sh
out=$1
base="$out/$WATCHKEEPER_EVENT_NODE-$WATCHKEEPER_EVENT_SEQUENCE"
cat > "$base.json.tmp"
env | grep '^WATCHKEEPER_EVENT_' | sort > "$base.env"
mv "$base.json.tmp" "$base.json"
"#;

/// Hangs on a node's first alert (its PID is the hung process, thanks to exec), records the
/// later ones.
const HANGING_HOOK: &str = r#"#!/bin/sh
out=$1
if [ ! -e "$out/hung-$WATCHKEEPER_EVENT_NODE" ]; then
  echo $$ > "$out/hung-$WATCHKEEPER_EVENT_NODE"
  exec sleep 60
fi
cat > "$out/after-$WATCHKEEPER_EVENT_NODE-$WATCHKEEPER_EVENT_SEQUENCE.json"
"#;

/// Writes each POSTed body as one line, answers 204; writes its port to argv[1].
const HTTP_RECEIVER: &str = r#"
import http.server, sys
port_file, out = sys.argv[1], sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        if self.path == "/fail":
            self.send_response(500)
            self.end_headers()
            return
        with open(out, "ab") as f:
            f.write(body.strip() + b"\n")
        self.send_response(204)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 4:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
import os
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
"#;

/// A server process the test started; stopped and reaped by PID on drop.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        // Child::kill signals this child's PID only.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_tcp_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free TCP port")
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn smtp_sink(maildir: &Path) -> (Server, u16) {
    let ok = Command::new(SYSTEM_PYTHON)
        .args(["-c", "import aiosmtpd.handlers"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "aiosmtpd is missing: install it with scripts/deps-alerts.sh (python3-aiosmtpd)"
    );
    let port = free_tcp_port();
    let child = Command::new(SYSTEM_PYTHON)
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
        .args(["-c", "aiosmtpd.handlers.Mailbox"])
        .arg(maildir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start aiosmtpd");
    let server = Server(child);
    wait_for("aiosmtpd listening", Duration::from_secs(10), || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (server, port)
}

fn http_receiver(dir: &Path) -> (Server, u16, PathBuf) {
    receiver(dir, None)
}

/// The receiver, over HTTPS with `tls` (certificate, key) when given.
fn receiver(dir: &Path, tls: Option<(&Path, &Path)>) -> (Server, u16, PathBuf) {
    let script = dir.join("receiver.py");
    fs::write(&script, HTTP_RECEIVER).expect("receiver script");
    let port_file = dir.join("receiver.port");
    let out = dir.join("webhook.jsonl");
    let child = Command::new(SYSTEM_PYTHON)
        .arg(&script)
        .arg(&port_file)
        .arg(&out)
        .args(tls.map(|(c, k)| [c, k]).into_iter().flatten())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the HTTP receiver");
    let server = Server(child);
    wait_for("HTTP receiver port", Duration::from_secs(10), || {
        port_file.exists()
    });
    let port: u16 = fs::read_to_string(&port_file)
        .expect("port file")
        .trim()
        .parse()
        .expect("port");
    (server, port, out)
}

fn script(path: &Path, text: &str) {
    fs::write(path, text).expect("script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn watchkeeper(config: &Path, node: &str, args: &[&str]) -> Output {
    Command::new(watchkeeper_bin().expect("watchkeeper binary"))
        .args(args)
        .args(["--node", node, "--config"])
        .arg(config)
        .output()
        .expect("run watchkeeper")
}

fn holds_all(config: &Path, node: &str) -> bool {
    let out = watchkeeper(config, node, &["resources", "--json"]);
    let r: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    r["holds"] == Value::Bool(true)
        && r["resources"]
            .as_array()
            .is_some_and(|r| r.len() == 2 && r.iter().all(|r| r["state"] == "running"))
}

/// Every JSON object in the files of `dir` whose names start with `prefix` and end in `.json`.
fn recorded(dir: &Path, prefix: &str) -> Vec<(PathBuf, Value)> {
    let mut out: Vec<(PathBuf, Value)> = fs::read_dir(dir)
        .expect("hook dir")
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".json"))
        })
        .filter_map(|p| {
            let v = serde_json::from_str(&fs::read_to_string(&p).ok()?).ok()?;
            Some((p, v))
        })
        .collect();
    out.sort_by_key(|(_, v)| v["sequence"].as_u64());
    out
}

fn mails(maildir: &Path) -> Vec<String> {
    let Ok(rd) = fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    rd.filter_map(Result::ok)
        .filter_map(|e| {
            let mut s = String::new();
            fs::File::open(e.path()).ok()?.read_to_string(&mut s).ok()?;
            Some(s)
        })
        .collect()
}

#[test]
fn a_failover_is_journaled_explained_and_alerted_by_hook_mail_and_webhook() {
    let mut bmcs = [
        IpmiSim::start(&IpmiSimConfig::default()),
        IpmiSim::start(&IpmiSimConfig::default()),
    ];
    let mut pair = Pair::new(PairSpec::new(
        false,
        Some(Net::Loopback4),
        INTERVAL,
        DEADTIME,
    ))
    .expect("pair");
    let dir = pair.dir().to_path_buf();
    let hooks = dir.join("hooks");
    fs::create_dir(&hooks).expect("hook dir");
    script(&dir.join("res.sh"), RESOURCE_SCRIPT);
    script(&dir.join("record.sh"), RECORD_HOOK);
    script(&dir.join("hang.sh"), HANGING_HOOK);
    let maildir = dir.join("maildir");
    let (_smtp, smtp_port) = smtp_sink(&maildir);
    let (_http, http_port, webhook_out) = http_receiver(&dir);

    let mut text = fs::read_to_string(&pair.config).expect("config");
    for name in NAMES {
        let line = format!("name = \"{name}\"\n");
        text = text.replace(&line, &format!("{line}fencing = [[\"ipmi-{name}\"]]\n"));
    }
    text.push_str("\n[failover]\nfence_delay = \"300ms\"\nstartup_timeout = \"3s\"\n");
    for (i, name) in NAMES.iter().enumerate() {
        text.push_str(&format!(
            "\n[[fence_device]]\nname = \"ipmi-{name}\"\ntype = \"ipmi\"\ntarget = \"{name}\"\n\
             address = \"{}\"\nusername = \"{DEFAULT_USER}\"\npassword = \"{DEFAULT_PASSWORD}\"\n\
             cipher_suite = 3\ntimeout = \"2s\"\npoll_interval = \"50ms\"\n\
             monitor_interval = \"500ms\"\n",
            bmcs[i].address()
        ));
    }
    let (d, h) = (dir.display(), hooks.display());
    for res in ["storage", "catalog"] {
        text.push_str(&format!(
            "\n[[resource]]\nname = \"{res}\"\ntype = \"script\"\n\
             start = [\"{d}/res.sh\", \"start\", \"{res}\", \"{{node}}\", \"{d}\"]\n\
             stop = [\"{d}/res.sh\", \"stop\", \"{res}\", \"{{node}}\", \"{d}\"]\n\
             status = [\"{d}/res.sh\", \"status\", \"{res}\", \"{{node}}\", \"{d}\"]\n\
             monitor_interval = \"1s\"\n"
        ));
    }
    text.push_str(&format!(
        "\n[journal]\nmax_size = \"1MiB\"\nkeep = 2\n\
         \n[[alert]]\nname = \"record\"\nkind = \"hook\"\ncommand = [\"{d}/record.sh\", \"{h}\"]\n\
         \n[[alert]]\nname = \"hang\"\nkind = \"hook\"\ncommand = [\"{d}/hang.sh\", \"{h}\"]\ntimeout = \"300ms\"\n\
         \n[[alert]]\nname = \"mail\"\nkind = \"smtp\"\nrelay = \"127.0.0.1:{smtp_port}\"\n\
         from = \"watchkeeper@pairtest.invalid\"\nto = [\"ops@pairtest.invalid\"]\nevents = [\"failover\"]\n\
         \n[[alert]]\nname = \"web\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{http_port}/alerts\"\n"
    ));
    fs::write(&pair.config, text).expect("config");
    let config = pair.config.clone();
    pair.start(0).expect("start alpha");
    pair.start(1).expect("start beta");

    let mut first = None;
    wait_for("a holder with every resource running", WAIT, || {
        first = (0..2).find(|&i| holds_all(&config, NAMES[i]));
        first.is_some()
    });
    let first = first.unwrap_or(0);
    let survivor = 1 - first;
    let (dead, live) = (NAMES[first], NAMES[survivor]);

    // The holder crashes; the survivor fences it through its BMC and takes over.
    pair.agent(first)
        .kill(Signal::SIGKILL)
        .expect("kill holder");
    wait_for("the survivor holding the group", WAIT, || {
        holds_all(&config, live)
    });
    assert!(!bmcs[first].power_on(), "{dead} was powered off by its BMC");

    // 1. The journal holds the decisions, one JSON object per line.
    let journal = dir.join(format!("{live}-state/journal.jsonl"));
    let lines: Vec<Value> = fs::read_to_string(&journal)
        .expect("journal")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let has = |pred: &dyn Fn(&Value) -> bool| lines.iter().any(pred);
    let kinds = |v: &Value, key: &str| -> Vec<String> {
        v[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|p| p["kind"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(
        lines.iter().all(|l| l["node"] == live
            && l["time"].is_string()
            && l["epoch"].is_u64()
            && l["cause"]["kind"].is_string()),
        "{lines:#?}"
    );
    assert!(
        has(&|l| kinds(l, "events").contains(&"peer_down".to_owned())),
        "no line declares {dead} dead: {lines:#?}"
    );
    assert!(
        has(
            &|l| kinds(l, "events").contains(&"fence_started".to_owned())
                && kinds(l, "actions").contains(&"fence".to_owned())
        ),
        "no line fences {dead}: {lines:#?}"
    );
    let fenced = lines
        .iter()
        .find(|l| l["cause"]["kind"] == "fence_result")
        .unwrap_or_else(|| panic!("no fence result: {lines:#?}"));
    assert_eq!(fenced["cause"]["fields"]["target"], dead);
    assert_eq!(fenced["cause"]["fields"]["outcome"], "off");
    assert!(
        fenced["cause"]["fields"]["ms"].as_u64().is_some(),
        "{fenced}"
    );
    assert!(
        has(&|l| kinds(l, "events").contains(&"holding".to_owned())
            && kinds(l, "actions").contains(&"start".to_owned())),
        "no takeover line: {lines:#?}"
    );

    // 2. history explains it in words.
    let out = watchkeeper(&config, live, &["history"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let story = String::from_utf8_lossy(&out.stdout).into_owned();
    for needle in [
        format!("declared {dead} dead (no frame for "),
        format!("fenced {dead} via ipmi-{dead} (ipmi) level 1 (off confirmed in "),
        format!("takeover allowed: {dead} fenced by level 1"),
        "took over the group at epoch".to_owned(),
        "start storage".to_owned(),
        "storage started -> start catalog".to_owned(),
    ] {
        assert!(
            story.contains(&needle),
            "history lacks {needle:?}:\n{story}"
        );
    }
    // ... and sums the failover up in one line.
    let summary = story
        .lines()
        .find(|l| l.contains(&format!("{live} took over at epoch")))
        .unwrap_or_else(|| panic!("no takeover summary:\n{story}"));
    for needle in [
        format!("declared {dead} dead (no frame for "),
        format!(" -> fenced {dead} via ipmi-{dead} (ipmi) level 1 (off confirmed in "),
        format!(" -> takeover allowed: {dead} fenced by level 1"),
        "; started storage, catalog".to_owned(),
    ] {
        assert!(
            summary.contains(&needle),
            "summary lacks {needle:?}: {summary}"
        );
    }
    let out = watchkeeper(&config, live, &["history", "--json", "--since", "1h"]);
    let json_lines = String::from_utf8_lossy(&out.stdout).lines().count();
    // Lines may have been added since the file was read, never removed.
    assert!(json_lines >= lines.len(), "--json prints every stored line");
    let out = watchkeeper(&config, live, &["history", "--since", "2999-01-01"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("no decisions recorded"),
        "{out:?}"
    );
    eprintln!("history of {live}:\n{story}");

    // 3. The hook got the fence and failover alerts, JSON on stdin, facts in the environment.
    let prefix = format!("{live}-");
    wait_for("the hook's failover alert", WAIT, || {
        recorded(&hooks, &prefix)
            .iter()
            .any(|(_, v)| v["kind"] == "failover")
    });
    let alerts = recorded(&hooks, &prefix);
    let (fence_path, fence) = alerts
        .iter()
        .find(|(_, v)| v["kind"] == "fence" && v["outcome"] == "off")
        .unwrap_or_else(|| panic!("no fence alert: {alerts:#?}"));
    assert_eq!(fence["target"], dead);
    assert_eq!(fence["node"], live);
    assert_eq!(fence["cluster"], "pairtest");
    let took = fence["duration_ms"].as_u64().expect("duration_ms");
    let env = fs::read_to_string(fence_path.with_extension("env")).expect("env file");
    for var in [
        "WATCHKEEPER_EVENT_KIND=fence".to_owned(),
        format!("WATCHKEEPER_EVENT_TARGET={dead}"),
        format!("WATCHKEEPER_EVENT_NODE={live}"),
        "WATCHKEEPER_EVENT_OUTCOME=off".to_owned(),
        format!("WATCHKEEPER_EVENT_DURATION_MS={took}"),
    ] {
        assert!(env.lines().any(|l| l == var), "{var} missing:\n{env}");
    }
    let (_, failover) = alerts
        .iter()
        .find(|(_, v)| v["kind"] == "failover")
        .expect("failover alert");
    assert_eq!(failover["target"], dead);
    assert!(
        failover["epoch"].as_u64().is_some_and(|e| e > 0),
        "{failover}"
    );
    assert!(
        alerts
            .iter()
            .any(|(_, v)| v["kind"] == "peer" && v["outcome"] == "down"),
        "{alerts:#?}"
    );
    eprintln!("fence of {dead}: off confirmed in {took} ms (alert)");

    // 4. The relay got the failover mail and nothing else (events = ["failover"]).
    wait_for("the failover mail", WAIT, || {
        mails(&maildir)
            .iter()
            .any(|m| m.contains(&format!("failover on {live}: {dead}")))
    });
    let all = mails(&maildir);
    assert!(
        all.iter().all(|m| m.contains("] failover on ")),
        "only failovers are mailed: {all:#?}"
    );
    let mail = all
        .iter()
        .find(|m| m.contains(&format!("failover on {live}")))
        .expect("mail");
    assert!(mail.contains("To: ops@pairtest.invalid"), "{mail}");
    assert!(mail.contains("\"kind\": \"failover\""), "{mail}");

    // 5. The webhook got the same alerts as JSON.
    wait_for("the webhook's failover alert", WAIT, || {
        fs::read_to_string(&webhook_out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["kind"] == "failover" && v["node"] == live)
    });
    let posted: Vec<Value> = fs::read_to_string(&webhook_out)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        posted
            .iter()
            .any(|v| v["kind"] == "fence" && v["target"] == dead && v["node"] == live),
        "{posted:#?}"
    );

    // 6. The hanging hook was killed at its timeout and still got the later alerts.
    let hung: i32 = fs::read_to_string(hooks.join(format!("hung-{live}")))
        .expect("the hanging hook ran")
        .trim()
        .parse()
        .expect("pid");
    wait_for("the hung hook gone", Duration::from_secs(5), || {
        !Path::new(&format!("/proc/{hung}")).exists()
    });
    wait_for("alerts after the hung one", WAIT, || {
        recorded(&hooks, &format!("after-{live}-"))
            .iter()
            .any(|(_, v)| v["kind"] == "failover")
    });
    // 7. The dead node's BMC goes away: the survivor's background check reports it.
    bmcs[first].stop();
    wait_for("the fence device alert", WAIT, || {
        recorded(&hooks, &prefix).iter().any(|(_, v)| {
            v["kind"] == "fence_device"
                && v["target"] == format!("ipmi-{dead}")
                && v["outcome"] == "failing"
        })
    });

    let log = fs::read_to_string(pair.log(survivor)).expect("survivor log");
    assert!(
        log.lines().any(|l| l.contains("\"event\":\"alert_failed\"")
            && l.contains("\"alert\":\"hang\"")
            && l.contains("no answer within 300 ms; killed")),
        "no timeout logged for the hanging hook"
    );
}

/// Receives journald's native protocol on a unix datagram socket and writes each record as one
/// JSON object per line. A field is `KEY=value\n`, or `KEY\n`, a 64-bit little-endian length,
/// the value and `\n` (systemd's "Native Journal Protocol").
const JOURNALD_RECEIVER: &str = r#"
import json, socket, struct, sys
path, out = sys.argv[1], sys.argv[2]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(path)
while True:
    data = s.recv(1 << 20)
    fields, i = {}, 0
    while i < len(data):
        nl = data.index(b"\n", i)
        line = data[i:nl]
        if b"=" in line:
            k, v = line.split(b"=", 1)
            i = nl + 1
        else:
            k = line
            (n,) = struct.unpack("<Q", data[nl + 1:nl + 9])
            v = data[nl + 9:nl + 9 + n]
            i = nl + 9 + n + 1
        fields[k.decode()] = v.decode("utf-8", "replace")
    with open(out, "a") as f:
        f.write(json.dumps(fields) + "\n")
"#;

/// Runs in a private mount namespace: a tmpfs over /run holds the journald socket, served by
/// the receiver; then becomes the agent with JOURNAL_STREAM set, as systemd starts it.
const JOURNALD_RUNNER: &str = r#"#!/bin/sh
set -e
receiver=$1; out=$2; pidfile=$3; shift 3
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/journal
/usr/bin/python3 "$receiver" /run/systemd/journal/socket "$out" &
echo $! > "$pidfile"
i=0
while [ ! -S /run/systemd/journal/socket ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
JOURNAL_STREAM=8:12345 exec "$@"
"#;

#[test]
fn under_systemd_log_records_reach_journald_with_watchkeeper_fields() {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "this test needs root (a private mount namespace with its own journald socket)"
        );
        eprintln!(
            "SKIPPED: not root: a private mount namespace with its own journald socket needs root"
        );
        return;
    }
    let pair = Pair::new(PairSpec::new(
        false,
        Some(Net::Loopback4),
        INTERVAL,
        DEADTIME,
    ))
    .expect("pair");
    let dir = pair.dir().to_path_buf();
    fs::write(dir.join("journald.py"), JOURNALD_RECEIVER).expect("receiver");
    script(&dir.join("runner.sh"), JOURNALD_RUNNER);
    let out = dir.join("journald.out");
    let pidfile = dir.join("receiver.pid");
    let bin = watchkeeper_bin().expect("watchkeeper binary");
    let args: Vec<std::ffi::OsString> = vec![
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "/bin/sh".into(),
        dir.join("runner.sh").into(),
        dir.join("journald.py").into(),
        out.clone().into(),
        pidfile.clone().into(),
        bin.into(),
        "run".into(),
        "--node".into(),
        "alpha".into(),
        "--config".into(),
        pair.config.clone().into(),
    ];
    let args: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_os_str()).collect();
    // unshare and the runner exec into the agent: this PID is the agent's.
    let mut agent = hwtests::agent::AgentProcess::spawn(
        Path::new("/usr/bin/unshare"),
        &args,
        &dir.join("alpha.log"),
    )
    .expect("start the agent in its namespace");
    let records = || -> Vec<Value> {
        fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    };
    // The link's decision: whether the first tick ("quorum gained") or the link coming up is
    // decided first depends on scheduling, so the test waits for the link's.
    let is_decision = |r: &Value| {
        r["WATCHKEEPER_EVENT"] == "decision"
            && r["MESSAGE"]
                .as_str()
                .is_some_and(|m| m.contains("transport up"))
    };
    let found = {
        let deadline = Instant::now() + WAIT;
        loop {
            if records().iter().any(is_decision) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The receiver first (by the PID it was started with), then the agent (on drop).
    if let Some(pid) = fs::read_to_string(&pidfile)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())
    {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
    }
    let _ = agent.stop();
    let all = records();
    assert!(
        found,
        "no decision record reached journald: {all:#?}\nstderr:\n{}",
        agent.stderr_text()
    );
    let decision = all
        .iter()
        .find(|r| is_decision(r))
        .expect("decision record");
    assert_eq!(decision["SYSLOG_IDENTIFIER"], "watchkeeper", "{decision}");
    assert!(
        decision["WATCHKEEPER_EPOCH"]
            .as_str()
            .is_some_and(|e| e.parse::<u64>().is_ok()),
        "{decision}"
    );
    assert_eq!(decision["WATCHKEEPER_CAUSE"], "link", "{decision}");
    assert!(
        all.iter()
            .any(|r| r["WATCHKEEPER_EVENT"] == "started" && r["WATCHKEEPER_NODE"] == "alpha"),
        "{all:#?}"
    );
    assert!(
        fs::read_to_string(dir.join("alpha.log"))
            .unwrap_or_default()
            .is_empty(),
        "under journald nothing goes to stdout"
    );
}

/// A self-signed certificate for 127.0.0.1, made with openssl, as (certificate, key).
fn certificate(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    let ok = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        ])
        .args(["-subj", "/CN=localhost"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "openssl could not make a certificate (scripts/deps-fence.sh installs it)"
    );
    (cert, key)
}

#[tokio::test]
async fn an_https_webhook_is_checked_against_its_ca_file_and_a_failure_status_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = certificate(dir.path(), "server");
    let (other, _) = certificate(dir.path(), "other");
    let (_server, port, out) = receiver(dir.path(), Some((&cert, &key)));
    let sink = |path: &str, ca: &Path| {
        agent::events::deliver::Sink::new(
            &agent::config::AlertConfig {
                name: "web".to_owned(),
                kind: agent::config::AlertKind::Webhook {
                    url: format!("https://127.0.0.1:{port}{path}"),
                    ca_file: Some(ca.to_owned()),
                },
                timeout: Duration::from_secs(5),
                events: Vec::new(),
            },
            "beta",
        )
        .expect("sink")
    };
    let alert = agent::events::Alert {
        kind: "failover".to_owned(),
        time: agent::events::rfc3339(0),
        unix_ms: 0,
        cluster: "pairtest".to_owned(),
        node: "beta".to_owned(),
        sequence: 1,
        target: Some("alpha".to_owned()),
        epoch: 7,
        outcome: Some("holding".to_owned()),
        duration_ms: None,
        message: "took over".to_owned(),
        details: Value::Null,
    };
    sink("/alerts", &cert)
        .deliver(&alert)
        .await
        .expect("delivered over HTTPS");
    let got: Value = serde_json::from_str(
        fs::read_to_string(&out)
            .expect("received")
            .lines()
            .next()
            .expect("a line"),
    )
    .expect("json");
    assert_eq!(got["kind"], "failover");
    assert_eq!(got["epoch"], 7);
    let e = sink("/alerts", &other)
        .deliver(&alert)
        .await
        .expect_err("a certificate the CA file does not vouch for");
    assert!(
        e.to_string()
            .starts_with(&format!("webhook https://127.0.0.1:{port}/alerts"))
            && e.to_string().contains("certificate"),
        "{e}"
    );
    let e = sink("/fail", &cert)
        .deliver(&alert)
        .await
        .expect_err("HTTP 500");
    assert!(e.to_string().ends_with("HTTP 500"), "{e}");
    assert_eq!(
        fs::read_to_string(&out).expect("received").lines().count(),
        1
    );
}
