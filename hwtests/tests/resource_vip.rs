//! `VipResource` on a real veth link between two network namespaces made for the test: the
//! executor runs in side A (through `ip netns exec` and the `resource-vip-helper` binary), a
//! raw `AF_PACKET` capture runs in side B. Adding an IPv4 and an IPv6 address shows them in
//! `ip addr` (IPv6 not tentative: NODAD), announces them (gratuitous ARP from A's MAC,
//! unsolicited NA to ff02::1 with hop limit 255 and the override flag) and monitor follows the
//! link state; stop removes them, idempotently; a missing interface is NotConfigured.
//!
//! Needs root. Without root the test prints why and returns, except under CI=true, where it
//! fails. The namespaces (and with them the veth pair and the addresses) are deleted on drop.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};

use hwtests::netns::VethPair;

const HELPER: &str = env!("CARGO_BIN_EXE_resource-vip-helper");
const VIP4: &str = "10.231.0.100";
const VIP6: &str = "fd00:231::100";

/// The capture in side B, killed on drop if the test fails before it ends.
struct Capture(Option<Child>);

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn root_or_skip() -> bool {
    if hwtests::netns::available() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI runs as root: network namespaces must be available"
    );
    eprintln!("skipped: network namespaces need root and iproute2");
    false
}

/// Runs one executor action inside side A; returns its one-line answer.
fn vip(pair: &VethPair, action: &str, address: &str, prefix: &str, interface: &str) -> String {
    let out = Command::new("ip")
        .args(pair.exec_prefix(0))
        .args([HELPER, "vip", action, address, prefix, interface])
        .output()
        .expect("ip netns exec");
    assert!(
        out.status.success(),
        "helper failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn ip_out(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn addresses(pair: &VethPair) -> String {
    ip_out(&["-n", &pair.ns[0], "addr", "show", "dev", &pair.dev[0]])
}

#[test]
fn vip_is_added_announced_monitored_and_removed() {
    if !root_or_skip() {
        return;
    }
    let pair = VethPair::new().expect("veth pair in two namespaces");
    let dev = pair.dev[0].clone();
    let link = ip_out(&["-n", &pair.ns[0], "-o", "link", "show", "dev", &dev]);
    let mac_a = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .expect("side A has a MAC")
        .to_owned();

    let mut child = Command::new("ip")
        .args(pair.exec_prefix(1))
        .args([HELPER, "capture"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("capture");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut capture = Capture(Some(child));
    let mut lines = BufReader::new(stdout).lines();
    assert_eq!(
        lines.next().and_then(Result::ok).as_deref(),
        Some("ready"),
        "capture did not start"
    );

    assert_eq!(vip(&pair, "monitor", VIP4, "24", &dev), "stopped");
    assert_eq!(vip(&pair, "stop", VIP4, "24", &dev), "ok");

    assert_eq!(vip(&pair, "start", VIP4, "24", &dev), "ok");
    assert!(
        addresses(&pair).contains(&format!("inet {VIP4}/24")),
        "{}",
        addresses(&pair)
    );
    assert_eq!(vip(&pair, "monitor", VIP4, "24", &dev), "running");
    assert_eq!(vip(&pair, "start", VIP4, "24", &dev), "ok");

    assert_eq!(vip(&pair, "start", VIP6, "64", &dev), "ok");
    let shown = addresses(&pair);
    let line6 = shown
        .lines()
        .find(|l| l.contains(&format!("inet6 {VIP6}/64")))
        .unwrap_or_else(|| panic!("{VIP6} missing: {shown}"));
    assert!(!line6.contains("tentative"), "{line6}");
    assert_eq!(vip(&pair, "monitor", VIP6, "64", &dev), "running");

    // The announcements were sent during start; give the last ones a moment to arrive.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let mut child = capture.0.take().expect("capture running");
    drop(child.stdin.take());
    let seen: Vec<String> = lines.map_while(Result::ok).collect();
    let _ = child.wait();
    let arp = |op: u8| format!("arp op={op} sha={mac_a} spa={VIP4} tpa={VIP4}");
    assert!(
        seen.contains(&arp(1)),
        "no gratuitous ARP request in {seen:#?}"
    );
    assert!(
        seen.contains(&arp(2)),
        "no gratuitous ARP reply in {seen:#?}"
    );
    let arps = seen.iter().filter(|l| **l == arp(1)).count();
    assert!(arps >= 2, "expected repeated announcements, got {seen:#?}");
    let na = format!("dst=ff02::1 hlim=255 override=1 target={VIP6} tll={mac_a}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("na src={VIP6} ")) && l.ends_with(&na)),
        "no unsolicited neighbour advertisement in {seen:#?}"
    );

    // A link that is down makes a present address a failure.
    pair.set_up(0, false).expect("link down");
    let answer = vip(&pair, "monitor", VIP4, "24", &dev);
    assert!(
        answer.starts_with("error Failed") && answer.contains("down"),
        "{answer}"
    );
    pair.set_up(0, true).expect("link up");
    let mut answer = String::new();
    // Carrier returns within milliseconds on veth; bounded wait.
    for _ in 0..50 {
        answer = vip(&pair, "monitor", VIP4, "24", &dev);
        if answer == "running" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(answer, "running");

    assert_eq!(vip(&pair, "stop", VIP4, "24", &dev), "ok");
    assert_eq!(vip(&pair, "stop", VIP6, "64", &dev), "ok");
    let shown = addresses(&pair);
    assert!(!shown.contains(VIP4) && !shown.contains(VIP6), "{shown}");
    assert_eq!(vip(&pair, "stop", VIP4, "24", &dev), "ok");
    assert_eq!(vip(&pair, "monitor", VIP4, "24", &dev), "stopped");
    assert_eq!(vip(&pair, "monitor", VIP6, "64", &dev), "stopped");

    let answer = vip(&pair, "start", VIP4, "24", "wknosuch0");
    assert!(answer.starts_with("error NotConfigured"), "{answer}");
    // A prefix already present with another length is not ours to remove.
    assert_eq!(vip(&pair, "start", VIP4, "24", &dev), "ok");
    let answer = vip(&pair, "stop", VIP4, "25", &dev);
    assert!(
        answer.starts_with("error Failed") && answer.contains("refusing"),
        "{answer}"
    );
    assert_eq!(vip(&pair, "stop", VIP4, "24", &dev), "ok");
}
