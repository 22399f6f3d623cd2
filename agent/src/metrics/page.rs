//! The HTML status page: one self-contained document rendered on the server from a
//! [`Snapshot`], refreshed by the browser every [`REFRESH_SECONDS`] with a `<meta>` refresh.
//!
//! No script at all: the page must work from a text browser on a console server and from a
//! locked-down workstation, and a page that only reads needs none. Every value from the
//! configuration or a peer is escaped. Stable hooks for tests and scrapers: each node row is
//! `<tr class="node" data-node="NAME">`, the holder's row also has class `holder` and a
//! `HOLDER` badge.

use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use super::Snapshot;
use crate::recent::Severity;

/// Renders the page.
pub fn render(snap: &Snapshot) -> String {
    let st = &snap.status;
    let engine = st.engine.as_ref();
    let holder = engine.and_then(|e| e.holder.as_deref());
    let mut h = String::with_capacity(8 * 1024);
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS}\">\
         <title>watchkeeper: {cluster} / {node}</title><style>{STYLE}</style></head><body>\
         <h1>watchkeeper <small>cluster {cluster}, seen from {node}</small></h1>\
         <p class=\"summary\">Holder: <b id=\"holder\">{holder}</b> &middot; epoch {epoch} \
         &middot; this node: {role}{quorate} &middot; incarnation {inc} &middot; up {up}</p>",
        cluster = esc(&st.cluster),
        node = esc(&st.node),
        holder = esc(holder.unwrap_or("none known")),
        epoch = engine.map_or(0, |e| e.epoch),
        role = esc(engine.map_or("?", |e| e.role.as_str())),
        quorate = if engine.is_some_and(|e| e.quorate) {
            ", quorate"
        } else {
            ", <span class=\"bad\">no quorum</span>"
        },
        inc = st.incarnation,
        up = age(Some(st.uptime_ms)),
    );

    h.push_str(
        "<h2>Nodes</h2><table><tr><th>node</th><th>id</th><th>state</th><th>role</th>\
         <th>last seen</th><th>incarnation</th></tr>",
    );
    let local_role = engine.map_or("?", |e| e.role.as_str());
    node_row(
        &mut h,
        &st.node,
        st.node_id,
        "<span class=\"ok\">this node</span>",
        local_role,
        "-",
        Some(st.incarnation),
        holder,
    );
    for p in &st.peers {
        let state = if p.alive {
            "<span class=\"ok\">alive</span>"
        } else {
            "<span class=\"bad\">silent</span>"
        };
        node_row(
            &mut h,
            &p.name,
            p.id,
            state,
            p.role.as_deref().unwrap_or("?"),
            &age(p.last_seen_ms_ago),
            p.incarnation,
            holder,
        );
    }
    h.push_str("</table>");

    h.push_str(
        "<h2>Links</h2><table><tr><th>link</th><th>kind</th><th>endpoint</th>\
         <th>transport</th><th>frames in / out</th><th>dropped</th><th>peers: last seen</th></tr>",
    );
    for l in &st.links {
        let dropped = l.crc_errors
            + l.auth_failures
            + l.replays
            + l.malformed
            + l.foreign_cluster
            + l.misrouted
            + l.queue_full;
        let peers = st
            .peers
            .iter()
            .filter_map(|p| {
                p.links.iter().find(|pl| pl.link == l.name).map(|pl| {
                    format!(
                        "{} {} ({})",
                        esc(&p.name),
                        if pl.up { "up" } else { "down" },
                        age(pl.last_seen_ms_ago)
                    )
                })
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            h,
            "<tr class=\"link\" data-link=\"{name}\"><td>{name}</td><td>{kind}</td><td>{ep}</td>\
             <td>{tr}</td><td>{fin} / {fout}</td><td>{dropped}</td><td>{peers}</td></tr>",
            name = esc(&l.name),
            kind = esc(&l.kind),
            ep = esc(&l.endpoint),
            tr = up_word(l.transport_up),
            fin = l.frames_in,
            fout = l.frames_out,
        );
    }
    h.push_str("</table>");

    h.push_str(
        "<h2>Fence devices</h2><table><tr><th>device</th><th>type</th><th>fences</th>\
         <th>health</th><th>last check</th><th>took</th><th>error</th></tr>",
    );
    if st.fence_devices.is_empty() {
        h.push_str("<tr><td colspan=\"7\">none configured</td></tr>");
    }
    for d in &st.fence_devices {
        let health = match d.healthy {
            Some(true) => "<span class=\"ok\">healthy</span>",
            Some(false) => "<span class=\"bad\">failing</span>",
            None => "not checked yet",
        };
        let _ = write!(
            h,
            "<tr class=\"device\"><td>{}</td><td>{}</td><td>{}</td><td>{health}</td>\
             <td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&d.name),
            esc(&d.r#type),
            esc(&d.targets.join(", ")),
            age(d.last_check_ms_ago),
            d.last_check_ms
                .map_or_else(|| "-".to_owned(), |ms| format!("{ms} ms")),
            esc(d.error.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</table>");

    h.push_str(
        "<h2>Resources</h2><table><tr><th>resource</th><th>type</th><th>state</th>\
         <th>last error</th></tr>",
    );
    if snap.resources.is_empty() {
        h.push_str("<tr><td colspan=\"4\">none configured</td></tr>");
    }
    for r in &snap.resources {
        let state = if r.state.is_empty() {
            "-"
        } else {
            r.state.as_str()
        };
        let _ = write!(
            h,
            "<tr class=\"resource\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&r.name),
            esc(&r.kind),
            esc(state),
            esc(r.last_error.as_deref().unwrap_or("")),
        );
    }
    h.push_str("</table>");

    h.push_str("<h2>Recent events</h2><table><tr><th>time (UTC)</th><th>event</th></tr>");
    if snap.events.is_empty() {
        h.push_str("<tr><td colspan=\"2\">none yet</td></tr>");
    }
    for e in &snap.events {
        let class = match e.severity {
            Severity::Alert => "event alert",
            Severity::Info => "event",
        };
        let _ = write!(
            h,
            "<tr class=\"{class}\"><td>{}</td><td>{}</td></tr>",
            utc(e.at),
            esc(&e.text)
        );
    }
    let _ = writeln!(
        h,
        "</table><p class=\"foot\">Read-only. Refreshes every {REFRESH_SECONDS} s. \
         Metrics: <a href=\"/metrics\">/metrics</a>.</p></body></html>"
    );
    h
}

#[allow(clippy::too_many_arguments)]
fn node_row(
    h: &mut String,
    name: &str,
    id: u8,
    state: &str,
    role: &str,
    seen: &str,
    incarnation: Option<u32>,
    holder: Option<&str>,
) {
    let is_holder = holder == Some(name);
    let _ = write!(
        h,
        "<tr class=\"node{cls}\" data-node=\"{n}\"><td>{n}{badge}</td><td>{id}</td><td>{state}</td>\
         <td>{role}</td><td>{seen}</td><td>{inc}</td></tr>",
        cls = if is_holder { " holder" } else { "" },
        n = esc(name),
        badge = if is_holder {
            " <span class=\"badge\">HOLDER</span>"
        } else {
            ""
        },
        role = esc(role),
        inc = incarnation.map_or_else(|| "-".to_owned(), |i| i.to_string()),
    );
}

fn up_word(up: bool) -> &'static str {
    if up {
        "<span class=\"ok\">up</span>"
    } else {
        "<span class=\"bad\">down</span>"
    }
}

/// "1.2 s ago" from milliseconds; "never" for none.
fn age(ms: Option<u64>) -> String {
    match ms {
        None => "never".to_owned(),
        Some(ms) if ms < 60_000 => format!("{}.{} s ago", ms / 1000, (ms % 1000) / 100),
        Some(ms) if ms < 3_600_000 => format!("{} min ago", ms / 60_000),
        Some(ms) => format!("{} h ago", ms / 3_600_000),
    }
}

/// `YYYY-MM-DD HH:MM:SS` in UTC, without a date library (days to civil date, Howard
/// Hinnant's algorithm).
fn utc(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Escapes text for HTML element content and double-quoted attributes.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Seconds between two automatic reloads: a heartbeat deadtime is a few seconds, so the page
/// shows a failover while it happens without loading the agent.
pub const REFRESH_SECONDS: u32 = 2;

const STYLE: &str = "body{font-family:sans-serif;margin:1.5em;color:#222}\
h1 small{font-weight:normal;color:#666;font-size:60%}\
table{border-collapse:collapse;margin-bottom:1em}\
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}\
th{background:#eee}.ok{color:#176f2c}.bad{color:#b00020;font-weight:bold}\
tr.holder{background:#fff3c4}.badge{background:#b8860b;color:#fff;padding:0 .4em;\
border-radius:.3em;font-size:80%}tr.alert td{color:#b00020}.summary{font-size:110%}\
.foot{color:#666;font-size:85%}";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates_match_known_instants() {
        let at = |s| UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(utc(at(0)), "1970-01-01 00:00:00");
        assert_eq!(utc(at(951_782_400)), "2000-02-29 00:00:00");
        assert_eq!(utc(at(1_700_000_000)), "2023-11-14 22:13:20");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            esc("<a href=\"x\">&'</a>"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn ages_read_as_people_say_them() {
        assert_eq!(age(None), "never");
        assert_eq!(age(Some(1234)), "1.2 s ago");
        assert_eq!(age(Some(125_000)), "2 min ago");
        assert_eq!(age(Some(7_300_000)), "2 h ago");
    }
}
