//! `[http]` on real agents: two `watchkeeper run` processes on loopback, fenced through real
//! BMC simulators (`ipmi_sim`), each serving `/metrics` and the status page on its own port.
//!
//! - Every scrape is parsed by the reference Python client's OpenMetrics parser
//!   (`prometheus_client.openmetrics.parser`, installed by `scripts/deps-metrics.sh`), which
//!   refuses anything that is not valid OpenMetrics; the values are then checked against the
//!   cluster: epoch, holder, frames counted, peers seen recently, devices healthy. After the
//!   holder is killed, the survivor's detection and fencing histograms must hold the failover.
//! - The status page is loaded by Debian's Chromium, headless: its rendered DOM must list both
//!   nodes and mark the holder, and its screenshot must be a real rendering showing the
//!   holder's highlighted row and badge.
//!
//! Both need their peer programs; without them a test prints `SKIPPED: <why>`, and fails
//! instead under `CI=true`.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hwtests::fifo::FifoWatchdog;
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig, DEFAULT_PASSWORD, DEFAULT_USER};
use hwtests::pair::{Net, Pair, PairSpec, NAMES};
use hwtests::util::{run_bounded, run_bounded_input};
use nix::sys::signal::Signal;
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_millis(600);
const WAIT: Duration = Duration::from_secs(20);
const FEED_INTERVAL: Duration = Duration::from_millis(100);
/// Chromium starts in one to three seconds; a loaded CI machine gets ample margin.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(90);
/// The screenshot's size, in pixels.
const WINDOW: (u32, u32) = (1100, 900);

/// A resource the survivor can take over: a state file per node.
const RESOURCE_SCRIPT: &str = r#"#!/bin/sh
action=$1; node=$2; dir=$3
state="$dir/$node-storage.state"
case "$action" in
  start) : > "$state" ;;
  stop) rm -f "$state" ;;
  status) [ -e "$state" ] || exit 3 ;;
esac
exit 0
"#;

struct Cluster {
    pair: Pair,
    bmcs: [IpmiSim; 2],
    http: [SocketAddr; 2],
    /// Each node's watchdog: a FIFO the agent feeds, read by the test.
    watchdogs: [FifoWatchdog; 2],
}

/// Two agents with IPMI fencing, a FIFO watchdog each, one script resource and `[http]` on a
/// free port each.
fn cluster() -> Cluster {
    let bmcs = [
        IpmiSim::start(&IpmiSimConfig::default()),
        IpmiSim::start(&IpmiSimConfig::default()),
    ];
    let pair = Pair::new(PairSpec::new(
        false,
        Some(Net::Loopback4),
        INTERVAL,
        DEADTIME,
    ))
    .expect("pair");
    let dir = pair.dir().to_path_buf();
    let script = dir.join("res.sh");
    fs::write(&script, RESOURCE_SCRIPT).expect("script");
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).expect("chmod");
    let watchdogs = NAMES
        .map(|n| FifoWatchdog::new(&dir.join(format!("watchdog-{n}"))).expect("FIFO watchdog"));
    let mut text = fs::read_to_string(&pair.config).expect("config");
    for (name, dog) in NAMES.iter().zip(&watchdogs) {
        let line = format!("name = \"{name}\"\n");
        assert_eq!(text.matches(&line).count(), 1, "{text}");
        text = text.replace(
            &line,
            &format!(
                "{line}fencing = [[\"ipmi-{name}\"]]\nwatchdog = {{ device = \"{}\", \
                 timeout = \"2s\", feed_interval = \"{}ms\", progress_timeout = \"1s\" }}\n",
                dog.path().display(),
                FEED_INTERVAL.as_millis()
            ),
        );
    }
    text.push_str("\n[failover]\nfence_delay = \"300ms\"\nstartup_timeout = \"3s\"\n");
    for (i, name) in NAMES.iter().enumerate() {
        text.push_str(&format!(
            "\n[[fence_device]]\nname = \"ipmi-{name}\"\ntype = \"ipmi\"\ntarget = \"{name}\"\n\
             address = \"{}\"\nusername = \"{DEFAULT_USER}\"\npassword = \"{DEFAULT_PASSWORD}\"\n\
             cipher_suite = 3\ntimeout = \"5s\"\npoll_interval = \"50ms\"\n",
            bmcs[i].address()
        ));
    }
    let (s, d) = (script.display(), dir.display());
    text.push_str(&format!(
        "\n[[resource]]\nname = \"storage\"\ntype = \"script\"\n\
         start = [\"{s}\", \"start\", \"{{node}}\", \"{d}\"]\n\
         stop = [\"{s}\", \"stop\", \"{{node}}\", \"{d}\"]\n\
         status = [\"{s}\", \"status\", \"{{node}}\", \"{d}\"]\n\
         monitor_interval = \"1s\"\n"
    ));
    let http = [free_tcp_port(), free_tcp_port()].map(|p| SocketAddr::from(([127, 0, 0, 1], p)));
    text.push_str(&format!(
        "\n[http]\nlisten = {{ alpha = \"{}\", beta = \"{}\" }}\nstatus_page = true\n",
        http[0], http[1]
    ));
    fs::write(&pair.config, text).expect("config");
    Cluster {
        pair,
        bmcs,
        http,
        watchdogs,
    }
}

/// Starts both agents and waits until both name the same holder, it runs the resource, and
/// both fence devices passed their background check on both nodes. Returns the holder's index.
fn start_and_settle(c: &mut Cluster) -> usize {
    c.pair.start(0).expect("start alpha");
    c.pair.start(1).expect("start beta");
    let deadline = Instant::now() + WAIT;
    loop {
        let st: Vec<Value> = (0..2)
            .map(|i| c.pair.status(i).unwrap_or(Value::Null))
            .collect();
        let holder = |s: &Value| s["engine"]["holder"].as_str().map(str::to_owned);
        let checked = |s: &Value| {
            s["fence_devices"].as_array().is_some_and(|d| {
                d.len() == 2 && d.iter().all(|d| d["healthy"] == Value::Bool(true))
            })
        };
        if let (Some(a), Some(b)) = (holder(&st[0]), holder(&st[1])) {
            let h = NAMES.iter().position(|n| *n == a);
            let running = h.is_some_and(|h| {
                c.pair.dir().join(format!("{a}-storage.state")).exists()
                    && st[h]["engine"]["holds"] == Value::Bool(true)
            });
            if a == b && running && checked(&st[0]) && checked(&st[1]) {
                if let Some(h) = h {
                    return h;
                }
            }
        }
        assert!(
            Instant::now() < deadline,
            "no settled holder within {WAIT:?}: {st:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (the agent binds it shortly after).
fn free_tcp_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free TCP port on 127.0.0.1")
}

/// One HTTP/1.1 GET: status code, content type, body.
fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole HTTP response");
    let code = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status code");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type:")
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default();
    (code, content_type, body.to_owned())
}

/// A parsed sample.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// The reference parser's reading of an OpenMetrics text; panics with its complaint if it
/// refuses the text.
fn parse(python: &Path, text: &str) -> Vec<Sample> {
    let out = run_bounded_input(
        Command::new(python).args(["-c", PARSER]),
        text,
        Duration::from_secs(30),
    )
    .expect("run the parser");
    assert!(
        out.status.success(),
        "the OpenMetrics parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("parser output");
    parsed
        .iter()
        .map(|s| Sample {
            name: s["name"].as_str().unwrap_or_default().to_owned(),
            labels: s["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            value: s["value"].as_f64().unwrap_or(f64::NAN),
        })
        .collect()
}

const PARSER: &str = "import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        out.append({'name': s.name, 'labels': s.labels, 'value': s.value})
print(json.dumps(out))
";

/// The value of the one sample called `name` whose labels include `labels`.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert!(
        matching.len() <= 1,
        "several {name} {labels:?}: {matching:?}"
    );
    matching.first().map(|s| s.value)
}

/// The Python with the reference parser, or why there is none (SKIPPED, or a failure in CI).
fn parser_python() -> Option<PathBuf> {
    let why = match hwtests::sushy::venv_python() {
        Ok(p) => {
            let ok = Command::new(&p)
                .args(["-c", "import prometheus_client.openmetrics.parser"])
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return Some(p);
            }
            format!("{} has no prometheus_client", p.display())
        }
        Err(e) => e.to_string(),
    };
    missing(&format!("{why}: run scripts/deps-metrics.sh"));
    None
}

fn missing(why: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "under CI this must not skip: {why}"
    );
    eprintln!("SKIPPED: {why}");
}

#[test]
fn scrapes_parse_and_hold_the_cluster_state_and_the_failover() {
    let Some(python) = parser_python() else {
        return;
    };
    let mut c = cluster();
    let h = start_and_settle(&mut c);
    let s = 1 - h;
    let (holder, standby) = (NAMES[h], NAMES[s]);

    let mut epoch = 0.0;
    for i in [h, s] {
        let (me, peer) = (NAMES[i], NAMES[1 - i]);
        let status = c.pair.status(i).expect("status");
        let (code, content_type, body) = get(c.http[i], "/metrics");
        assert_eq!(code, 200, "{body}");
        assert!(
            content_type.starts_with("application/openmetrics-text"),
            "{content_type}"
        );
        let m = parse(&python, &body);
        let want_epoch = status["engine"]["epoch"].as_f64().expect("epoch");
        let got_epoch = value(&m, "watchkeeper_epoch", &[]);
        assert_eq!(got_epoch, Some(want_epoch), "{me}: {body}");
        assert!(want_epoch >= 1.0, "{status}");
        epoch = want_epoch;
        assert_eq!(
            value(&m, "watchkeeper_holder", &[("node", holder)]),
            Some(1.0),
            "{me}: {body}"
        );
        let holds = if i == h { 1.0 } else { 0.0 };
        assert_eq!(value(&m, "watchkeeper_holds", &[]), Some(holds), "{me}");
        assert_eq!(
            value(&m, "watchkeeper_info", &[("node", me)]),
            Some(1.0),
            "{me}"
        );
        let link = [("link", "lan0")];
        let received = value(&m, "watchkeeper_link_frames_received_total", &link).unwrap_or(0.0);
        let sent = value(&m, "watchkeeper_link_frames_sent_total", &link).unwrap_or(0.0);
        assert!(
            received > 0.0 && sent > 0.0,
            "{me}: in {received}, out {sent}"
        );
        let dropped = value(
            &m,
            "watchkeeper_link_frames_dropped_total",
            &[("link", "lan0"), ("reason", "auth")],
        );
        assert_eq!(dropped, Some(0.0), "{me}: no forged frames were sent");
        assert_eq!(
            value(&m, "watchkeeper_peer_up", &[("peer", peer)]),
            Some(1.0)
        );
        let seen = value(
            &m,
            "watchkeeper_peer_link_last_seen_age_seconds",
            &[("peer", peer), ("link", "lan0")],
        )
        .expect("last seen");
        assert!(
            (0.0..DEADTIME.as_secs_f64()).contains(&seen),
            "{me}: {peer} last seen {seen} s ago"
        );
        for d in NAMES {
            let device = format!("ipmi-{d}");
            let healthy = value(
                &m,
                "watchkeeper_fence_device_healthy",
                &[("device", &device), ("type", "ipmi")],
            );
            assert_eq!(healthy, Some(1.0), "{me}: {device}");
        }
        if i == h {
            let running = value(
                &m,
                "watchkeeper_resource_state",
                &[("resource", "storage"), ("state", "running")],
            );
            assert_eq!(running, Some(1.0), "{me}: {body}");
        }
        assert!(
            value(&m, "watchkeeper_watchdog_feed_gap_seconds_count", &[]).is_some(),
            "{me} has a watchdog: {body}"
        );
        assert!(
            value(
                &m,
                "watchkeeper_peer_detection_seconds_count",
                &[("peer", peer)]
            )
            .is_none(),
            "{me}: nobody was declared dead yet"
        );
    }
    let (code, _, _) = get(c.http[h], "/nothing-here");
    assert_eq!(code, 404);

    // The holder dies: the survivor detects it, fences it through its BMC and takes over.
    let killed = Instant::now();
    c.pair
        .agent(h)
        .kill(Signal::SIGKILL)
        .expect("kill the holder");
    let deadline = Instant::now() + WAIT;
    let m = loop {
        let (code, _, body) = get(c.http[s], "/metrics");
        assert_eq!(code, 200, "{body}");
        let m = parse(&python, &body);
        if value(&m, "watchkeeper_holds", &[]) == Some(1.0) {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "{standby} did not take over within {WAIT:?}: {body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "{standby} holds {} ms after {holder} was killed",
        killed.elapsed().as_millis()
    );
    assert!(!c.bmcs[h].power_on(), "{holder} was powered off by its BMC");
    let dead = [("peer", holder)];
    let detections = value(&m, "watchkeeper_peer_detection_seconds_count", &dead);
    assert_eq!(detections, Some(1.0), "one detection of {holder}");
    let detection = value(&m, "watchkeeper_peer_detection_seconds_sum", &dead).unwrap_or(0.0);
    assert!(
        detection >= DEADTIME.as_secs_f64() && detection < DEADTIME.as_secs_f64() + 1.0,
        "detection took {detection} s with a {DEADTIME:?} deadtime"
    );
    let le_inf = value(
        &m,
        "watchkeeper_peer_detection_seconds_bucket",
        &[("peer", holder), ("le", "+Inf")],
    );
    assert_eq!(le_inf, Some(1.0));
    let fenced = [("peer", holder), ("level", "1"), ("outcome", "off")];
    let fences = value(&m, "watchkeeper_fence_seconds_count", &fenced);
    assert_eq!(fences, Some(1.0), "one confirmed fence of {holder}");
    let fence_s = value(&m, "watchkeeper_fence_seconds_sum", &fenced).unwrap_or(0.0);
    assert!(fence_s > 0.0 && fence_s < 5.0, "fencing took {fence_s} s");
    let device = format!("ipmi-{holder}");
    let by_device = value(
        &m,
        "watchkeeper_fence_device_seconds_count",
        &[("device", &device), ("outcome", "off")],
    );
    assert_eq!(by_device, Some(1.0));
    assert_eq!(
        value(&m, "watchkeeper_holder", &[("node", standby)]),
        Some(1.0)
    );
    let new_epoch = value(&m, "watchkeeper_epoch", &[]).unwrap_or(0.0);
    assert!(new_epoch > epoch, "epoch {epoch} -> {new_epoch}");
    assert_eq!(value(&m, "watchkeeper_peer_up", &dead), Some(0.0));

    // The survivor's feed gaps agree with the feeds its FIFO watchdog received.
    let gaps = value(&m, "watchkeeper_watchdog_feed_gap_seconds_count", &[]).unwrap_or(0.0);
    let gaps_s = value(&m, "watchkeeper_watchdog_feed_gap_seconds_sum", &[]).unwrap_or(0.0);
    let received = c.watchdogs[s].feeds().len();
    let expected = f64::from(u32::try_from(received.saturating_sub(1)).unwrap_or(u32::MAX));
    assert!(
        gaps >= 10.0,
        "{standby}: {gaps} feed gaps after seconds of running"
    );
    assert!(
        (gaps - expected).abs() <= 3.0,
        "{standby}: {gaps} gaps counted, the FIFO received {received} feeds"
    );
    let mean = gaps_s / gaps;
    let interval = FEED_INTERVAL.as_secs_f64();
    assert!(
        mean > interval * 0.8 && mean < interval * 2.0,
        "{standby}: mean feed gap {mean} s, interval {interval} s"
    );
    eprintln!(
        "detection {detection:.3} s, fencing {fence_s:.3} s, {gaps} feed gaps of {:.1} ms on average",
        mean * 1000.0
    );
}

#[test]
fn the_status_page_renders_both_nodes_and_the_holder_in_chromium() {
    let Some(chromium) = ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        missing("Debian's chromium is not installed: run scripts/deps-metrics.sh");
        return;
    };
    let mut c = cluster();
    let h = start_and_settle(&mut c);
    let holder = NAMES[h];
    let url = format!("http://{}/", c.http[1 - h]);
    let (code, content_type, _) = get(c.http[1 - h], "/");
    assert_eq!(
        (code, content_type.as_str()),
        (200, "text/html; charset=utf-8")
    );

    let profile = tempfile::tempdir().expect("profile dir");
    let browser = |extra: &[String]| {
        let mut cmd = Command::new(&chromium);
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(extra)
        .arg(&url);
        let out = run_bounded(&mut cmd, BROWSER_TIMEOUT).expect("chromium");
        assert!(
            out.status.success(),
            "chromium failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    };

    let dom = String::from_utf8_lossy(&browser(&["--dump-dom".to_owned()]).stdout).into_owned();
    for name in NAMES {
        assert!(
            dom.contains(&format!("data-node=\"{name}\"")),
            "{name} missing: {dom}"
        );
    }
    assert!(
        dom.contains(&format!(
            "<tr class=\"node holder\" data-node=\"{holder}\">"
        )),
        "holder row: {dom}"
    );
    assert_eq!(dom.matches("class=\"badge\">HOLDER<").count(), 1, "{dom}");
    assert!(
        dom.contains(&format!("<b id=\"holder\">{holder}</b>")),
        "{dom}"
    );
    assert!(
        dom.contains("ipmi-alpha") && dom.contains("storage"),
        "{dom}"
    );

    let shot = profile.path().join("page.png");
    browser(&[
        format!("--screenshot={}", shot.display()),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
    ]);
    let decoder = png::Decoder::new(std::io::BufReader::new(
        fs::File::open(&shot).expect("screenshot"),
    ));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    assert_eq!((info.width, info.height), WINDOW);
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let pixels: Vec<(u8, u8, u8)> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| (p[0], p[1], p[2]))
        .collect();
    let colours: std::collections::BTreeSet<_> = pixels.iter().collect();
    assert!(
        colours.len() > 20,
        "a blank screenshot: {} colours",
        colours.len()
    );
    // The holder's row background (#fff3c4) and its badge (#b8860b) are painted: the rendered
    // page marks a holder, and only one row (the DOM check says which) carries that style.
    let count = |c: (u8, u8, u8)| pixels.iter().filter(|p| **p == c).count();
    let row = count((0xff, 0xf3, 0xc4));
    let badge = count((0xb8, 0x86, 0x0b));
    assert!(row > 2000, "holder row pixels: {row}");
    assert!(badge > 50, "holder badge pixels: {badge}");
    let copy = std::env::var_os("WATCHKEEPER_SCREENSHOT").map(PathBuf::from);
    if let Some(to) = copy {
        fs::copy(&shot, &to).expect("copy the screenshot");
    }
    eprintln!(
        "status page screenshot {}x{}: {} colours, holder row {row} px, badge {badge} px",
        WINDOW.0,
        WINDOW.1,
        colours.len()
    );
}

#[test]
fn a_port_in_use_stops_the_agent_at_startup_naming_the_address() {
    let mut pair = Pair::new(PairSpec::new(
        false,
        Some(Net::Loopback4),
        INTERVAL,
        DEADTIME,
    ))
    .expect("pair");
    let taken = TcpListener::bind(("127.0.0.1", 0)).expect("hold a port");
    let addr = taken.local_addr().expect("address");
    let mut text = fs::read_to_string(&pair.config).expect("config");
    text.push_str(&format!("\n[http]\nlisten = \"{addr}\"\n"));
    fs::write(&pair.config, text).expect("config");
    let agent = pair.start(0).expect("start alpha");
    let status = agent
        .wait_exit(WAIT)
        .expect("the agent exits when its port is taken");
    assert_eq!(status.code(), Some(69), "EX_UNAVAILABLE");
    let stderr = agent.stderr_text();
    assert!(
        stderr.contains(&format!("http listener {addr}: Address already in use")),
        "{stderr}"
    );
    drop(taken);
}
