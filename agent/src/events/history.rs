//! `watchkeeper history`: the journal read back, to explain after the fact why a node was
//! fenced or took over.
//!
//! Each journal line becomes one line of text: time of day (UTC), node, the input that caused
//! the decision, what the engine concluded and what it did, e.g.
//!
//! ```text
//! 01:58:01.100 beta  time passed: declared alpha dead (no frame for 612 ms on lan0 (udp)); fencing alpha with level 1 (ipmi-alpha (ipmi)) -> fence alpha level 1 via ipmi-alpha (ipmi)
//! 01:58:01.420 beta  fenced alpha via ipmi-alpha (ipmi) level 1 (off confirmed in 310 ms): alpha confirmed fenced by level 1 -> persist epoch 7
//! 01:58:01.430 beta  epoch 7 on disk: takeover allowed: alpha fenced by level 1; took over the group at epoch 7 -> start storage
//! ```
//!
//! `--json` prints the journal lines as they are stored.

use super::journal::{self, Entry};
use crate::config::Config;

/// Options of `watchkeeper history`.
#[derive(Debug, Clone, Default)]
pub struct HistoryArgs {
    /// Only entries at or after this wall time (ms since the Unix epoch).
    pub since_ms: Option<u64>,
    /// Print the stored JSON lines.
    pub json: bool,
}

/// Errors of `watchkeeper history`.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The journal could not be read.
    #[error(transparent)]
    Journal(#[from] journal::JournalError),
    /// `--since` was not understood.
    #[error("--since {0:?}: expected a time such as 2026-11-29T01:00:00 (UTC), a date, or a duration ago such as 90s, 30m, 2h or 7d")]
    Since(String),
}

/// The text `history` prints for one journal line (without time and node).
pub fn line_text(e: &Entry) -> String {
    let mut out = e.cause.text.clone();
    let events: Vec<&str> = e.events.iter().map(|p| p.text.as_str()).collect();
    if !events.is_empty() {
        out.push_str(": ");
        out.push_str(&events.join("; "));
    }
    let actions: Vec<&str> = e.actions.iter().map(|p| p.text.as_str()).collect();
    if !actions.is_empty() {
        out.push_str(" -> ");
        out.push_str(&actions.join("; "));
    }
    out
}

/// Every entry of node `node`'s journal matching `args`, rendered as `history` prints them.
pub fn render(
    config: &Config,
    node: &crate::config::Node,
    args: &HistoryArgs,
) -> Result<(Vec<String>, usize), HistoryError> {
    let path = config.journal.path_for(&node.name, &node.state_dir);
    let (entries, skipped) = journal::read(&path, config.journal.keep)?;
    let mut lines = Vec::new();
    let mut day = String::new();
    for e in entries
        .iter()
        .filter(|e| args.since_ms.is_none_or(|s| e.unix_ms >= s))
    {
        if args.json {
            lines.push(serde_json::to_string(e).unwrap_or_default());
            continue;
        }
        let (y, mo, d, h, mi, s, ms) = super::civil(e.unix_ms);
        let today = format!("{y:04}-{mo:02}-{d:02}");
        if today != day {
            lines.push(format!("-- {today} (UTC)"));
            day = today;
        }
        lines.push(format!(
            "{h:02}:{mi:02}:{s:02}.{ms:03} {:<8} [epoch {}] {}",
            e.node,
            e.epoch,
            line_text(e)
        ));
    }
    if !args.json {
        let stories = takeovers(
            entries
                .iter()
                .filter(|e| args.since_ms.is_none_or(|s| e.unix_ms >= s)),
        );
        if !stories.is_empty() {
            lines.push("-- takeovers".to_owned());
            lines.extend(stories);
        }
    }
    Ok((lines, skipped))
}

/// One line per takeover, from the silence that started it to the last resource started: why
/// this node fenced whom, how long the fence took, on what evidence it took over, and what it
/// started, e.g. `02:09:44.582 beta took over at epoch 3: declared alpha dead (no frame for 601
/// ms on lan0 (udp)) -> fenced alpha via ipmi-alpha (ipmi) level 1 (off confirmed in 27 ms) ->
/// takeover allowed: alpha fenced by level 1; started storage, catalog`.
pub fn takeovers<'a>(entries: impl Iterator<Item = &'a Entry>) -> Vec<String> {
    struct Story {
        head: String,
        steps: Vec<String>,
        started: Vec<String>,
        failed: Vec<String>,
    }
    let finish = |st: Story| {
        let mut line = format!("{}: {}", st.head, st.steps.join(" -> "));
        if !st.started.is_empty() {
            line.push_str(&format!("; started {}", st.started.join(", ")));
        }
        if !st.failed.is_empty() {
            line.push_str(&format!("; FAILED {}", st.failed.join(", ")));
        }
        line
    };
    let mut out = Vec::new();
    let mut down: std::collections::BTreeMap<String, String> = Default::default();
    let mut fenced: std::collections::BTreeMap<String, String> = Default::default();
    let mut allowed: Option<(Option<String>, String)> = None;
    let mut story: Option<Story> = None;
    let field =
        |p: &super::Part, k: &str| p.fields.get(k).and_then(|v| v.as_str()).map(str::to_owned);
    for e in entries {
        if e.cause.kind == "fence_result" && field(&e.cause, "outcome").as_deref() == Some("off") {
            if let Some(t) = field(&e.cause, "target") {
                fenced.insert(t, e.cause.text.clone());
            }
        }
        if e.cause.kind == "resource_result" {
            if let (Some(st), Some(r), Some(o)) = (
                story.as_mut(),
                field(&e.cause, "resource"),
                field(&e.cause, "outcome"),
            ) {
                match o.as_str() {
                    "Started" => st.started.push(r),
                    "StartFailed" => st.failed.push(r),
                    _ => {}
                }
            }
        }
        for p in &e.events {
            match p.kind.as_str() {
                "peer_down" => {
                    if let Some(peer) = field(p, "peer") {
                        down.insert(peer, p.text.clone());
                    }
                }
                "takeover_allowed" => allowed = Some((field(p, "previous"), p.text.clone())),
                "holding" => {
                    out.extend(story.take().map(finish));
                    let (previous, why) = allowed.take().unwrap_or((None, String::new()));
                    let mut steps = Vec::new();
                    if let Some(prev) = &previous {
                        steps.extend(down.remove(prev));
                        steps.extend(fenced.remove(prev));
                    }
                    if !why.is_empty() {
                        steps.push(why);
                    }
                    let (_, _, _, h, mi, s, ms) = super::civil(e.unix_ms);
                    story = Some(Story {
                        head: format!(
                            "{h:02}:{mi:02}:{s:02}.{ms:03} {} took over at epoch {}",
                            e.node, e.epoch
                        ),
                        steps,
                        started: Vec::new(),
                        failed: Vec::new(),
                    });
                }
                "released" | "self_fence" => out.extend(story.take().map(finish)),
                _ => {}
            }
        }
    }
    out.extend(story.map(finish));
    out
}

/// Parses `--since`: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS]` (UTC, `Z` optional) or a duration
/// ago (`90s`, `30m`, `2h`, `7d`), against `now_ms`.
pub fn parse_since(text: &str, now_ms: u64) -> Result<u64, HistoryError> {
    let bad = || HistoryError::Since(text.to_owned());
    let t = text.trim();
    if let Some(unit) = t.chars().last().filter(|c| "smhd".contains(*c)) {
        if let Ok(n) = t[..t.len() - 1].parse::<u64>() {
            let secs = match unit {
                's' => n,
                'm' => n.saturating_mul(60),
                'h' => n.saturating_mul(3600),
                _ => n.saturating_mul(86_400),
            };
            return Ok(now_ms.saturating_sub(secs.saturating_mul(1000)));
        }
    }
    let t = t.strip_suffix('Z').unwrap_or(t);
    let (date, time) = t.split_once(['T', ' ']).unwrap_or((t, "00:00:00"));
    let num = |s: &str| s.parse::<u64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, mo, da] = d.as_slice() else {
        return Err(bad());
    };
    let tm: Vec<&str> = time.split(':').collect();
    let (h, mi, s) = match tm.as_slice() {
        [h, m] => (num(h)?, num(m)?, 0),
        [h, m, s] => (num(h)?, num(m)?, num(s)?),
        _ => return Err(bad()),
    };
    let (y, mo, da) = (num(y)?, num(mo)?, num(da)?);
    if !(1970..=9999).contains(&y)
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&da)
        || h > 23
        || mi > 59
        || s > 60
    {
        return Err(bad());
    }
    let days = days_from_civil(y, mo, da);
    Ok((days * 86_400 + h * 3600 + mi * 60 + s) * 1000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

/// Prints node `node`'s history; returns the exit code.
pub fn print(config: &Config, node: &crate::config::Node, args: &HistoryArgs) -> u8 {
    match render(config, node, args) {
        Ok((lines, skipped)) => {
            let path = config.journal.path_for(&node.name, &node.state_dir);
            if lines.is_empty() && !args.json {
                println!(
                    "no decisions recorded in {}{}",
                    path.display(),
                    if args.since_ms.is_some() {
                        " in that period"
                    } else {
                        ""
                    }
                );
            }
            for l in lines {
                println!("{l}");
            }
            if skipped > 0 {
                eprintln!(
                    "{}: {skipped} unreadable line(s) skipped (a torn write after a crash)",
                    path.display()
                );
            }
            0
        }
        Err(e) => {
            eprintln!("watchkeeper history: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_dates_times_and_durations_ago() {
        assert_eq!(parse_since("1970-01-02", 0).ok(), Some(86_400_000));
        assert_eq!(
            parse_since("2000-02-29T12:34:56Z", 0).ok(),
            Some(951_827_696_000)
        );
        assert_eq!(
            parse_since("2000-02-29 12:34", 0).ok(),
            Some(951_827_640_000)
        );
        assert_eq!(
            parse_since("30m", 10_000_000).ok(),
            Some(10_000_000 - 1_800_000)
        );
        assert_eq!(parse_since("2d", 1_000).ok(), Some(0));
        for bad in ["yesterday", "2026-13-01", "12:00", "5x", ""] {
            assert!(parse_since(bad, 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_takeover_reads_as_one_story_from_the_silence_to_the_starts() {
        use super::super::Part;
        use serde_json::json;
        let line = |ms: u64, cause: Part, events: Vec<Part>| Entry {
            time: String::new(),
            unix_ms: ms,
            node: "beta".to_owned(),
            epoch: 7,
            cause,
            events,
            actions: Vec::new(),
        };
        let started = |r: &str| {
            Part::new("resource_result", format!("{r} started"))
                .with(json!({ "resource": r, "outcome": "Started" }))
        };
        let entries = [
            line(
                1_000,
                Part::new("tick", "time passed"),
                vec![Part::new(
                    "peer_down",
                    "declared alpha dead (no frame for 612 ms on serial0 (serial), lan0 (udp))",
                )
                .with(json!({ "peer": "alpha" }))],
            ),
            line(
                2_000,
                Part::new(
                    "fence_result",
                    "fenced alpha via ipmi-alpha (ipmi) level 1 (off confirmed in 310 ms)",
                )
                .with(json!({ "target": "alpha", "outcome": "off" })),
                vec![],
            ),
            line(
                2_100,
                Part::new("persisted", "epoch 7 on disk"),
                vec![
                    Part::new(
                        "takeover_allowed",
                        "takeover allowed: alpha fenced by level 1",
                    )
                    .with(json!({ "previous": "alpha" })),
                    Part::new("holding", "took over the group at epoch 7"),
                ],
            ),
            line(2_200, started("storage"), vec![]),
            line(2_300, started("catalog"), vec![]),
        ];
        assert_eq!(
            takeovers(entries.iter()),
            ["00:00:02.100 beta took over at epoch 7: declared alpha dead (no frame for 612 ms on \
              serial0 (serial), lan0 (udp)) -> fenced alpha via ipmi-alpha (ipmi) level 1 (off \
              confirmed in 310 ms) -> takeover allowed: alpha fenced by level 1; started storage, \
              catalog"]
        );
    }

    #[test]
    fn a_line_reads_cause_then_conclusions_then_actions() {
        let e = Entry {
            time: String::new(),
            unix_ms: 0,
            node: "beta".to_owned(),
            epoch: 7,
            cause: super::super::Part::new("tick", "time passed"),
            events: vec![super::super::Part::new("peer_down", "declared alpha dead")],
            actions: vec![super::super::Part::new("fence", "fence alpha level 1")],
        };
        assert_eq!(
            line_text(&e),
            "time passed: declared alpha dead -> fence alpha level 1"
        );
    }
}
