//! Two real `watchkeeper run` processes, linked by a pty null-modem cable and UDP: liveness,
//! link failures, noise, forgeries, replays and exclusive use of the cable, observed through the
//! agents' own logs and control sockets.

use std::ffi::OsStr;
use std::net::UdpSocket;
use std::process::Command;
use std::time::{Duration, SystemTime};

use hwtests::agent::{log_timestamp, watchkeeper_bin, AgentProcess};
use hwtests::cable::Direction;
use hwtests::pair::{self, Net, Pair, PairSpec, NAMES};
use nix::sys::signal::Signal;
use proto::{Flags, Heartbeat, Key, NodeId, Role, View, FRAME_LEN};
use serde_json::Value;

const INTERVAL: Duration = Duration::from_millis(100);
const DEADTIME: Duration = Duration::from_millis(1000);
const WAIT: Duration = Duration::from_secs(10);

fn spec(serial: bool, udp: Option<Net>) -> PairSpec {
    PairSpec::new(serial, udp, INTERVAL, DEADTIME)
}

fn is_event(v: &Value, event: &str, peer: Option<&str>, link: Option<&str>) -> bool {
    v["event"] == event
        && peer.is_none_or(|p| v["peer"] == p)
        && link.is_none_or(|l| v["link"] == l)
}

fn wait_event(a: &mut AgentProcess, event: &str, peer: Option<&str>, link: Option<&str>) -> Value {
    a.wait_for_log(|v| is_event(v, event, peer, link), WAIT)
        .unwrap_or_else(|| {
            panic!(
                "no {event} (peer {peer:?}, link {link:?}) within {WAIT:?}; log:\n{}\nstderr:\n{}",
                std::fs::read_to_string(a.log_path()).unwrap_or_default(),
                a.stderr_text()
            )
        })
}

fn count_events(a: &AgentProcess, event: &str) -> usize {
    a.logs().iter().filter(|v| v["event"] == event).count()
}

fn ts(v: &Value) -> SystemTime {
    log_timestamp(v).unwrap_or_else(|| panic!("log line without a timestamp: {v}"))
}

fn since(later: SystemTime, earlier: SystemTime) -> Duration {
    later.duration_since(earlier).unwrap_or(Duration::ZERO)
}

fn start_both(p: &mut Pair) {
    p.start(0).expect("start alpha");
    p.start(1).expect("start beta");
    wait_event(p.agent(0), "peer_up", Some("beta"), None);
    wait_event(p.agent(1), "peer_up", Some("alpha"), None);
}

#[test]
fn two_agents_see_each_other_within_two_intervals() {
    let mut p = Pair::new(spec(true, Some(Net::Loopback4))).expect("pair");
    start_both(&mut p);
    for (me, peer) in [(0, 1), (1, 0)] {
        let both_running = ts(&wait_event(p.agent(0), "started", None, None)).max(ts(&wait_event(
            p.agent(1),
            "started",
            None,
            None,
        )));
        let up = ts(&wait_event(p.agent(me), "peer_up", Some(NAMES[peer]), None));
        let took = since(up, both_running);
        assert!(
            took <= 2 * INTERVAL,
            "{} saw {} alive {took:?} after both ran; expected within two intervals",
            NAMES[me],
            NAMES[peer]
        );
        for link in ["serial0", "lan0"] {
            wait_event(p.agent(me), "link_up", Some(NAMES[peer]), Some(link));
        }
    }
    let st = p
        .wait_status(
            0,
            |s| {
                pair::peer_link(s, "beta", "serial0")
                    .is_some_and(|l| l["frames_in"].as_u64() >= Some(3))
            },
            WAIT,
        )
        .expect("status with frames on serial0");
    let beta = pair::peer(&st, "beta").expect("beta in status");
    assert_eq!(beta["alive"], true);
    // The pair elects one holder: each sees the other as holder or standby, never both holders.
    let roles = p
        .wait_status(
            0,
            |s| {
                pair::peer(s, "beta")
                    .is_some_and(|b| b["role"] == "holder" || b["role"] == "standby")
            },
            WAIT,
        )
        .expect("beta settles");
    let beta_role = pair::peer(&roles, "beta").map(|b| b["role"].clone());
    let alpha_seen = p
        .wait_status(
            1,
            |s| {
                pair::peer(s, "alpha")
                    .is_some_and(|a| a["role"] == "holder" || a["role"] == "standby")
            },
            WAIT,
        )
        .expect("alpha settles");
    let alpha_role = pair::peer(&alpha_seen, "alpha").map(|a| a["role"].clone());
    assert!(
        !(beta_role == Some(Value::from("holder")) && alpha_role == Some(Value::from("holder"))),
        "two holders: alpha {alpha_role:?}, beta {beta_role:?}"
    );
    for link in ["serial0", "lan0"] {
        let l = pair::link(&st, link).expect("link in status");
        assert_eq!(l["transport_up"], true, "{l}");
        assert!(l["frames_out"].as_u64() > Some(0), "{l}");
        for c in ["crc_errors", "auth_failures", "replays", "malformed"] {
            assert_eq!(l[c], 0, "{link} {c}: {l}");
        }
    }

    // The operator's view, through the real CLI.
    let bin = watchkeeper_bin().expect("binary");
    let out = Command::new(&bin)
        .args(["status", "--socket"])
        .arg(p.socket(0))
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("node alpha (1)"), "{text}");
    assert!(text.contains("peer beta (2): ALIVE"), "{text}");
    let out = Command::new(&bin)
        .args(["status", "--json", "--socket"])
        .arg(p.socket(1))
        .output()
        .expect("status");
    let v: Value = serde_json::from_slice(&out.stdout).expect("status --json prints JSON");
    assert_eq!(
        pair::peer(&v, "alpha").map(|p| &p["alive"]),
        Some(&Value::Bool(true))
    );
}

#[test]
fn serial_cut_keeps_peer_alive_over_udp_and_reports_the_cable_down() {
    let mut p = Pair::new(spec(true, Some(Net::Loopback4))).expect("pair");
    start_both(&mut p);
    // The cable must carry frames before its loss can be seen.
    for (me, peer) in [(0, 1), (1, 0)] {
        wait_event(p.agent(me), "link_up", Some(NAMES[peer]), Some("serial0"));
    }
    p.cable.as_ref().expect("cable").cut();
    for (me, peer) in [(0, 1), (1, 0)] {
        let down = wait_event(p.agent(me), "link_down", Some(NAMES[peer]), Some("serial0"));
        assert_eq!(down["kind"], "serial");
        let msg = down["message"].as_str().unwrap_or_default();
        assert!(
            msg.starts_with(&format!("serial link serial0 to {} down", NAMES[peer])),
            "{msg}"
        );
    }
    let st = p.status(0).expect("status");
    assert_eq!(
        pair::peer(&st, "beta").map(|b| &b["alive"]),
        Some(&Value::Bool(true)),
        "{st}"
    );
    assert_eq!(
        pair::peer_link(&st, "beta", "serial0").map(|l| &l["up"]),
        Some(&Value::Bool(false))
    );
    assert_eq!(
        pair::peer_link(&st, "beta", "lan0").map(|l| &l["up"]),
        Some(&Value::Bool(true))
    );
    assert_eq!(count_events(p.agent(0), "peer_down"), 0);
    assert_eq!(count_events(p.agent(1), "peer_down"), 0);

    p.cable.as_ref().expect("cable").restore();
    let before = count_events(p.agent(0), "link_up");
    let deadline = std::time::Instant::now() + WAIT;
    while count_events(p.agent(0), "link_up") == before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        count_events(p.agent(0), "link_up") > before,
        "serial0 never came back up"
    );
}

#[test]
fn cutting_every_link_declares_the_peer_dead_after_deadtime() {
    let netns = hwtests::netns::available();
    if !netns {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root: network namespaces must be available"
        );
        eprintln!(
            "not root: the UDP path cannot be cut without network namespaces; this run cuts the \
             serial cable and freezes the peer instead (SIGSTOP), which silences every link"
        );
    }
    let mut p = Pair::new(spec(
        true,
        Some(if netns {
            Net::Namespaces
        } else {
            Net::Loopback4
        }),
    ))
    .expect("pair");
    start_both(&mut p);
    for me in 0..2 {
        wait_event(p.agent(me), "link_up", Some(NAMES[1 - me]), Some("lan0"));
        wait_event(p.agent(me), "link_up", Some(NAMES[1 - me]), Some("serial0"));
    }
    let cut_at = SystemTime::now();
    p.cable.as_ref().expect("cable").cut();
    match &p.veth {
        Some(v) => v.set_up(0, false).expect("veth down"),
        None => p.agent(1).sigstop().expect("SIGSTOP beta"),
    }
    let observers: &[usize] = if netns { &[0, 1] } else { &[0] };
    for &me in observers {
        let dead = wait_event(p.agent(me), "peer_down", Some(NAMES[1 - me]), None);
        let after = since(ts(&dead), cut_at);
        assert!(
            after + INTERVAL >= DEADTIME && after <= DEADTIME + INTERVAL,
            "{} declared {} dead {after:?} after the cut; expected deadtime {DEADTIME:?} ± one interval",
            NAMES[me],
            NAMES[1 - me]
        );
        assert!(
            dead["silent_ms"].as_u64() >= Some(u64::try_from(DEADTIME.as_millis()).unwrap_or(0))
        );
    }
    // Reconnect: both come back.
    p.cable.as_ref().expect("cable").restore();
    match &p.veth {
        Some(v) => v.set_up(0, true).expect("veth up"),
        None => p.agent(1).sigcont().expect("SIGCONT beta"),
    }
    let deadline = std::time::Instant::now() + WAIT;
    while count_events(p.agent(0), "peer_up") < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        count_events(p.agent(0), "peer_up"),
        2,
        "beta never came back for alpha"
    );
}

#[test]
fn noise_on_the_cable_is_dropped_and_counted_without_losing_the_peer() {
    let mut p = Pair::new(spec(true, None)).expect("pair");
    start_both(&mut p);
    let cable = p.cable.as_ref().expect("cable");
    // Short bursts (which end in a delimiter and fail the CRC) and one long run without a
    // delimiter (an overrun), spread over several heartbeats.
    for i in 0..10u8 {
        let mut noise = vec![0, 0x13, 0x37, i + 1, 0x42, 0x99, 0];
        if i == 5 {
            noise.extend([0x7Eu8; 300]);
            noise.push(0);
        }
        cable.inject(Direction::AtoB, &noise).expect("inject");
        std::thread::sleep(INTERVAL / 2);
    }
    let st = p
        .wait_status(
            1,
            |s| pair::link(s, "serial0").is_some_and(|l| l["resyncs"].as_u64() >= Some(1)),
            WAIT,
        )
        .expect("beta counts the noise");
    let l = pair::link(&st, "serial0").expect("serial0");
    assert!(l["crc_errors"].as_u64() >= Some(10), "{l}");
    assert_eq!(
        l["auth_failures"], 0,
        "noise must fail the CRC, not reach the MAC: {l}"
    );
    let frames = pair::peer_link(&st, "alpha", "serial0")
        .and_then(|x| x["frames_in"].as_u64())
        .unwrap_or(0);
    // Frames keep arriving after the noise.
    let st = p
        .wait_status(
            1,
            |s| {
                pair::peer_link(s, "alpha", "serial0").and_then(|x| x["frames_in"].as_u64())
                    > Some(frames + 3)
            },
            WAIT,
        )
        .expect("frames keep arriving");
    assert_eq!(
        pair::peer(&st, "alpha").map(|a| &a["alive"]),
        Some(&Value::Bool(true))
    );
    assert_eq!(
        count_events(p.agent(1), "link_down"),
        0,
        "noise must not take the link down"
    );
}

fn frame(key: &[u8], cluster: u32, incarnation: u32, sequence: u64) -> [u8; FRAME_LEN] {
    let mut view = View::default();
    let alpha = NodeId::new(1).expect("id 1");
    view.insert(alpha);
    let hb = Heartbeat {
        cluster_id: cluster,
        sender: alpha,
        link: 0,
        role: Role::Standby,
        flags: Flags::default(),
        holder: None,
        prior: None,
        incarnation,
        sequence,
        epoch: 0,
        view,
        seen_epoch: 0,
    };
    let mut out = [0u8; FRAME_LEN];
    hb.encode(&Key::new(key), &mut out);
    out
}

#[test]
fn forged_truncated_and_replayed_frames_are_dropped_counted_and_never_keep_a_peer_alive() {
    let mut p = Pair::new(spec(false, Some(Net::Loopback4))).expect("pair");
    p.start(1).expect("start beta");
    wait_event(p.agent(1), "started", None, None);
    let st = p.status(1).expect("status");
    let cluster = cluster_id(&p);
    let alpha = UdpSocket::bind(p.udp[0].expect("alpha address")).expect("play alpha");
    let beta = p.udp[1].expect("beta address");
    let send = |bytes: &[u8]| {
        alpha.send_to(bytes, beta).expect("send");
    };
    assert_eq!(st["peers"][0]["alive"], false);

    for seq in 1..=5 {
        send(&frame(
            b"not-the-cluster-key-not-the-cluster-key!",
            cluster,
            7,
            seq,
        ));
    }
    send(&frame(&p.key, cluster, 7, 1)[..20]);
    let st = p
        .wait_status(
            1,
            |s| {
                pair::link(s, "lan0")
                    .is_some_and(|l| l["malformed"] == 1 && l["auth_failures"] == 5)
            },
            WAIT,
        )
        .expect("forgeries counted");
    assert_eq!(
        pair::peer(&st, "alpha").map(|a| &a["alive"]),
        Some(&Value::Bool(false)),
        "a forgery made alpha alive"
    );

    send(&frame(&p.key, cluster, 7, 1));
    wait_event(p.agent(1), "peer_up", Some("alpha"), None);
    // From now on only replays: of the last frame, and from an older incarnation.
    let up_at = SystemTime::now();
    let replay_until = std::time::Instant::now() + DEADTIME * 2;
    let mut sent = 0u64;
    while std::time::Instant::now() < replay_until {
        send(&frame(&p.key, cluster, 7, 1));
        send(&frame(&p.key, cluster, 6, 100 + sent));
        sent += 2;
        std::thread::sleep(INTERVAL);
    }
    let dead = wait_event(p.agent(1), "peer_down", Some("alpha"), None);
    assert!(
        since(ts(&dead), up_at) <= DEADTIME + INTERVAL,
        "replays kept alpha alive"
    );
    let st = p.status(1).expect("status");
    let l = pair::link(&st, "lan0").expect("lan0");
    assert_eq!(l["replays"].as_u64(), Some(sent), "{l}");
    assert_eq!(l["frames_in"], 1, "{l}");
    assert!(p.agent(1).is_running(), "the agent must survive bad input");
}

fn cluster_id(p: &Pair) -> u32 {
    let bin = watchkeeper_bin().expect("binary");
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&p.config)
        .output()
        .expect("check-config");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let id = text
        .split("(id ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .unwrap_or_default();
    id.parse()
        .unwrap_or_else(|_| panic!("no cluster id in {text:?}"))
}

#[test]
fn a_second_agent_cannot_share_the_serial_cable() {
    let mut p = Pair::new(spec(true, None)).expect("pair");
    p.start(0).expect("start alpha");
    wait_event(p.agent(0), "started", None, None);
    // A second configuration where beta points at alpha's end of the cable.
    let text = std::fs::read_to_string(&p.config).expect("config");
    let text = text
        .replace("tty-beta", "tty-alpha")
        .replace("beta.sock", "beta2.sock")
        .replace("beta-state", "beta2-state");
    let other = p.dir().join("other.toml");
    std::fs::write(&other, text).expect("write");
    let bin = watchkeeper_bin().expect("binary");
    let args: Vec<&OsStr> = ["run", "--log-json", "--node", "beta", "--config"]
        .iter()
        .map(OsStr::new)
        .chain([other.as_os_str()])
        .collect();
    let mut second = AgentProcess::spawn(&bin, &args, &p.dir().join("second.log")).expect("spawn");
    let status = second.wait_exit(WAIT).expect("the second agent must exit");
    assert_eq!(status.code(), Some(69), "{}", second.stderr_text());
    assert!(
        second
            .stderr_text()
            .contains("is in use by another process"),
        "{}",
        second.stderr_text()
    );
    assert!(p.agent(0).is_running());
}

#[test]
fn an_unplugged_serial_adapter_is_reopened_when_it_comes_back() {
    let mut p = Pair::new(spec(true, None)).expect("pair");
    start_both(&mut p);
    p.cable.as_ref().expect("cable").unplug().expect("unplug");
    wait_event(p.agent(0), "transport_down", None, Some("serial0"));
    wait_event(p.agent(0), "peer_down", Some("beta"), None);
    std::thread::sleep(Duration::from_millis(300));
    p.cable.as_ref().expect("cable").replug().expect("replug");
    let deadline = std::time::Instant::now() + WAIT;
    while count_events(p.agent(0), "peer_up") < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        count_events(p.agent(0), "peer_up"),
        2,
        "alpha did not reopen the replugged port"
    );
    let st = p.status(0).expect("status");
    assert!(
        pair::link(&st, "serial0").and_then(|l| l["opens"].as_u64()) >= Some(2),
        "{st}"
    );
}

#[test]
fn udp_over_ipv6_loopback() {
    let mut p = Pair::new(spec(false, Some(Net::Loopback6))).expect("pair");
    start_both(&mut p);
    let st = p.status(1).expect("status");
    assert!(
        pair::link(&st, "lan0")
            .and_then(|l| l["endpoint"].as_str())
            .is_some_and(|e| e.starts_with("[::1]:")),
        "{st}"
    );
}

#[test]
fn a_killed_peer_is_declared_dead_and_its_restart_is_seen() {
    let mut p = Pair::new(spec(true, Some(Net::Loopback4))).expect("pair");
    start_both(&mut p);
    let killed_at = SystemTime::now();
    p.agent(1).kill(Signal::SIGKILL).expect("kill beta");
    let dead = wait_event(p.agent(0), "peer_down", Some("beta"), None);
    assert!(since(ts(&dead), killed_at) <= DEADTIME + INTERVAL);
    drop(p.take(1));
    p.start(1).expect("restart beta");
    wait_event(p.agent(0), "peer_restarted", Some("beta"), None);
    p.wait_status(
        0,
        |s| pair::peer(s, "beta").is_some_and(|b| b["alive"] == true),
        WAIT,
    )
    .expect("beta is alive again for alpha");
}

#[test]
fn udp_multicast_bound_to_a_dedicated_interface_goes_down_with_its_carrier() {
    if !hwtests::netns::available() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI runs as root: network namespaces must be available"
        );
        eprintln!(
            "not root: binding to an interface needs CAP_NET_RAW and network namespaces; not run"
        );
        return;
    }
    let mut s = spec(false, Some(Net::Namespaces));
    s.multicast = Some("239.192.7.1".parse().expect("group"));
    s.bind_interface = true;
    let mut p = Pair::new(s).expect("pair");
    start_both(&mut p);
    let st = p.status(0).expect("status");
    assert_eq!(
        pair::peer_link(&st, "beta", "lan0").map(|l| &l["up"]),
        Some(&Value::Bool(true))
    );
    // A pulled crossover cable: the bound socket cannot fall back to another route.
    p.veth
        .as_ref()
        .expect("veth")
        .set_up(1, false)
        .expect("carrier down");
    wait_event(p.agent(0), "peer_down", Some("beta"), None);
    p.veth
        .as_ref()
        .expect("veth")
        .set_up(1, true)
        .expect("carrier up");
    let deadline = std::time::Instant::now() + WAIT;
    while count_events(p.agent(0), "peer_up") < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        count_events(p.agent(0), "peer_up"),
        2,
        "beta did not come back after the carrier returned"
    );
}
