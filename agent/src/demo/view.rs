//! The demo's live view: what each agent reports, redrawn in place on a terminal, or one line
//! per change when the output is a file or a pipe (a test, a CI log).
//!
//! Everything shown comes from outside the agents' code: their control sockets (`status` and
//! `resources`, the same answers `watchkeeper status` and `watchkeeper resources` print, fence
//! devices' health included), the demo's own view of their processes, of the PDU's outlets and
//! of the BMCs' chassis, and their JSON log. On a terminal the view is plain text redrawn with two ANSI escapes (home, clear to end), so no
//! terminal library is needed; the story of the demo (what it did, what the agents did) runs
//! below it, keeping its last [`STORY_LINES`] lines.

use std::collections::VecDeque;
use std::io::Write as _;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::runtime::Status;

/// What the demo knows of one node at one refresh.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    /// Node name.
    pub(crate) name: String,
    /// Pid of its running agent.
    pub(crate) pid: Option<u32>,
    /// Whether it has power (outlet and chassis on); `None` for a witness (neither).
    pub(crate) powered: Option<bool>,
    /// Its status report, if it answered.
    pub(crate) status: Option<Status>,
    /// Its resources report, if it answered.
    pub(crate) resources: Option<Value>,
    /// The last fence result it logged.
    pub(crate) last_fence: Option<String>,
}

impl Snapshot {
    /// Whether it holds the group with every resource running.
    pub(crate) fn runs_group(&self, size: usize) -> bool {
        self.resources.as_ref().is_some_and(|r| {
            r["holds"] == Value::Bool(true)
                && r["resources"]
                    .as_array()
                    .is_some_and(|a| a.len() == size && a.iter().all(|x| x["state"] == "running"))
        })
    }

    /// Whether it answered and holds nothing.
    pub(crate) fn holds_nothing(&self) -> bool {
        self.resources
            .as_ref()
            .is_some_and(|r| r["holds"] == Value::Bool(false))
    }

    /// Its role, as it reports it.
    pub(crate) fn role(&self) -> &str {
        self.resources
            .as_ref()
            .and_then(|r| r["role"].as_str())
            .unwrap_or("-")
    }

    /// Its epoch, as it reports it.
    pub(crate) fn epoch(&self) -> Option<u64> {
        self.resources.as_ref().and_then(|r| r["epoch"].as_u64())
    }

    /// Whether it sees peer `name` alive.
    pub(crate) fn sees_alive(&self, name: &str) -> bool {
        self.status
            .as_ref()
            .is_some_and(|s| s.peers.iter().any(|p| p.name == name && p.alive))
    }
}

/// The screen: the live view on top, the story below (terminal), or plain lines (otherwise).
#[derive(Debug)]
pub(crate) struct Screen {
    tty: bool,
    started: Instant,
    story: VecDeque<String>,
    prompt: Option<String>,
    /// Per node, the last one-line view printed (plain output only).
    printed: Vec<String>,
}

impl Screen {
    /// A screen; `tty` redraws in place.
    pub(crate) fn new(tty: bool, started: Instant) -> Self {
        Self {
            tty,
            started,
            story: VecDeque::new(),
            prompt: None,
            printed: Vec::new(),
        }
    }

    /// Adds a line to the story, stamped with the time since the demo started.
    pub(crate) fn say(&mut self, line: &str) {
        let secs = self.started.elapsed().as_secs_f64();
        let line = format!("[{secs:7.3} s] {line}");
        if self.tty {
            if self.story.len() == STORY_LINES {
                self.story.pop_front();
            }
            self.story.push_back(line);
        } else {
            println!("{line}");
        }
    }

    /// A line printed as is, without a stamp (headers, the summary).
    pub(crate) fn plain(&mut self, line: &str) {
        if self.tty {
            if self.story.len() == STORY_LINES {
                self.story.pop_front();
            }
            self.story.push_back(line.to_owned());
        } else {
            println!("{line}");
        }
    }

    /// Shows `prompt` under the story until cleared (terminal only).
    pub(crate) fn set_prompt(&mut self, prompt: Option<&str>) {
        self.prompt = prompt.map(str::to_owned);
    }

    /// Shows the nodes: redraws everything on a terminal, else prints the nodes that changed.
    pub(crate) fn show(&mut self, nodes: &[Snapshot]) {
        if self.tty {
            let mut out = String::from("\x1b[H");
            out.push_str("watchkeeper demo  (Ctrl-C stops everything)\x1b[K\n\x1b[K\n");
            for n in nodes {
                for line in node_lines(n) {
                    out.push_str(&line);
                    out.push_str("\x1b[K\n");
                }
            }
            out.push_str("\x1b[K\n");
            for line in &self.story {
                out.push_str(line);
                out.push_str("\x1b[K\n");
            }
            if let Some(p) = &self.prompt {
                out.push_str(&format!("\x1b[K\n{p}\x1b[K\n"));
            }
            out.push_str("\x1b[J");
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            return;
        }
        self.printed.resize(nodes.len(), String::new());
        for (n, printed) in nodes.iter().zip(&mut self.printed) {
            let line = one_line(n);
            if *printed != line {
                let secs = self.started.elapsed().as_secs_f64();
                println!("[{secs:7.3} s] view {line}");
                *printed = line;
            }
        }
    }

    /// Clears the terminal before the first frame.
    pub(crate) fn clear(&self) {
        if self.tty {
            print!("\x1b[H\x1b[2J");
        }
    }

    /// Leaves the story on the terminal after the last frame (the view is gone by then).
    pub(crate) fn finish(&mut self) {
        if self.tty {
            println!();
        }
    }
}

/// The terminal view of one node: four lines.
fn node_lines(n: &Snapshot) -> Vec<String> {
    let process = match n.pid {
        Some(pid) => format!("up (pid {pid})"),
        None => "DOWN".to_owned(),
    };
    let power = match n.powered {
        Some(true) => "power on ",
        Some(false) => "power OFF",
        None => "no outlet",
    };
    let holds = match n
        .resources
        .as_ref()
        .map(|r| r["holds"] == Value::Bool(true))
    {
        Some(true) => "holds the group",
        Some(false) => "holds nothing",
        None => "",
    };
    let epoch = n.epoch().map_or_else(|| "-".to_owned(), |e| e.to_string());
    let mut peers = Vec::new();
    for p in n.status.iter().flat_map(|s| &s.peers) {
        let links: Vec<&str> = p
            .links
            .iter()
            .filter(|l| l.up)
            .map(|l| l.link.as_str())
            .collect();
        let age = p.last_seen_ms_ago.map_or_else(
            || "never heard".to_owned(),
            |ms| format!("heard {ms} ms ago"),
        );
        peers.push(format!(
            "{} {} [{}] {age}",
            p.name,
            if p.alive { "alive" } else { "DEAD" },
            if links.is_empty() {
                "no link".to_owned()
            } else {
                links.join("+")
            },
        ));
    }
    vec![
        format!(
            "{:<6} {:<16} {power}  {:<12} epoch {epoch:<3} {holds}",
            n.name,
            process,
            n.role()
        ),
        format!(
            "       peers: {}",
            if peers.is_empty() {
                "-".to_owned()
            } else {
                peers.join("   ")
            }
        ),
        format!(
            "       {}   fence: {}",
            resources_words(n),
            n.last_fence.as_deref().unwrap_or("-")
        ),
        format!("       fence devices: {}", devices_words(n, true)),
    ]
}

/// The plain view of one node: one line, without ages, so it changes only when state does.
fn one_line(n: &Snapshot) -> String {
    let process = n
        .pid
        .map_or_else(|| "down".to_owned(), |pid| format!("up pid {pid}"));
    let power = match n.powered {
        Some(true) => ", power on",
        Some(false) => ", power off",
        None => "",
    };
    let epoch = n.epoch().map_or_else(|| "-".to_owned(), |e| e.to_string());
    let mut peers = Vec::new();
    for p in n.status.iter().flat_map(|s| &s.peers) {
        let links: Vec<&str> = p
            .links
            .iter()
            .filter(|l| l.up)
            .map(|l| l.link.as_str())
            .collect();
        peers.push(format!(
            "{} {}{}",
            p.name,
            if p.alive { "alive" } else { "dead" },
            if links.is_empty() {
                String::new()
            } else {
                format!(" via {}", links.join("+"))
            }
        ));
    }
    format!(
        "{}: {process}{power}, {} epoch {epoch}; peers: {}; {}; fence: {}; devices: {}",
        n.name,
        n.role(),
        if peers.is_empty() {
            "-".to_owned()
        } else {
            peers.join(", ")
        },
        resources_words(n),
        n.last_fence.as_deref().unwrap_or("-"),
        devices_words(n, false)
    )
}

/// The fence devices as the node's last background checks found them (`status --json`'s
/// `fence_devices`), with how long each check took when `timed`.
fn devices_words(n: &Snapshot, timed: bool) -> String {
    let Some(devices) = n.status.as_ref().map(|s| &s.fence_devices) else {
        return "-".to_owned();
    };
    if devices.is_empty() {
        return "-".to_owned();
    }
    let words: Vec<String> = devices
        .iter()
        .map(|d| {
            let health = match d.healthy {
                Some(true) => "ok",
                Some(false) => "FAILING",
                None => "unchecked",
            };
            match d.last_check_ms.filter(|_| timed) {
                Some(ms) => format!("{} ({}) {health} {ms} ms", d.name, d.r#type),
                None => format!("{} ({}) {health}", d.name, d.r#type),
            }
        })
        .collect();
    words.join(", ")
}

fn resources_words(n: &Snapshot) -> String {
    let Some(list) = n.resources.as_ref().and_then(|r| r["resources"].as_array()) else {
        return "resources: -".to_owned();
    };
    let words: Vec<String> = list
        .iter()
        .map(|r| {
            let state = r["state"].as_str().filter(|s| !s.is_empty());
            format!(
                "{} {}",
                r["name"].as_str().unwrap_or("?"),
                state.unwrap_or("stopped")
            )
        })
        .collect();
    words.join(", ")
}

/// Milliseconds between two instants, for the story.
pub(crate) fn ms_between(from: Instant, to: Instant) -> u64 {
    u64::try_from(to.saturating_duration_since(from).as_millis()).unwrap_or(u64::MAX)
}

/// Milliseconds of a duration.
pub(crate) fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Story lines kept under the view on a terminal: a whole failover fits.
const STORY_LINES: usize = 40;
