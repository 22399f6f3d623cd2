//! `watchkeeper fence DEVICE ACTION` with a real configuration file against the simulators:
//! results and step timings as text and JSON, exit codes, and no password in anything the
//! command prints, even with every log level enabled.

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output};

use hwtests::agent::watchkeeper_bin;
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig};
use hwtests::sushy::{system_uuid, Sushy, SushyOptions};
use serde_json::Value;

const PASSWORD: &str = "Zp7-cli-secret-42";

fn config(dir: &Path, sushy: &Sushy, ipmi: &IpmiSim, redfish_password: &str) -> std::path::PathBuf {
    let private = |name: &str, text: &str| {
        let path = dir.join(name);
        fs::write(&path, text).expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    };
    private("cluster.key", &"k".repeat(40));
    private("rf.pass", &format!("{redfish_password}\n"));
    private("ipmi.pass", "secret\n");
    let fingerprint = sushy.cert_sha256().expect("fingerprint");
    let text = format!(
        r#"[cluster]
name = "test"
key_file = "cluster.key"

[[link]]
name = "lan0"
kind = "udp"

[[node]]
id = 1
name = "alpha"
links.lan0 = {{ address = "127.0.0.1:1" }}

[[node]]
id = 2
name = "beta"
links.lan0 = {{ address = "127.0.0.1:2" }}
fencing = [["rf-beta"], ["ipmi-beta"]]

[[fence_device]]
name = "rf-beta"
type = "redfish"
target = "beta"
url = "{url}"
system = "{system}"
username = "admin"
password_file = "rf.pass"
auth = "session"
fingerprint = "{fingerprint}"
timeout = "10s"
poll_interval = "50ms"

[[fence_device]]
name = "ipmi-beta"
type = "ipmi"
target = "beta"
address = "{ipmi}"
username = "admin"
password_file = "ipmi.pass"
cipher_suite = 3
timeout = "10s"
"#,
        url = sushy.url(),
        system = system_uuid(1),
        ipmi = ipmi.address(),
    );
    let path = dir.join("wk.toml");
    fs::write(&path, text).expect("config");
    path
}

fn fence(config: &Path, args: &[&str]) -> Output {
    Command::new(watchkeeper_bin().expect("watchkeeper binary (cargo build --workspace)"))
        .arg("fence")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "trace")
        .output()
        .expect("run watchkeeper fence")
}

/// Base64 of `user:password`, as it would appear in a logged basic-auth header.
fn basic_auth(user: &str, password: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let bytes = format!("{user}:{password}").into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn assert_no_secret(out: &Output, secret: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(secret), "the password was printed:\n{text}");
    assert!(
        !text.contains(&basic_auth("admin", secret)),
        "the basic-auth header was printed:\n{text}"
    );
}

#[test]
fn fence_command_reports_results_and_step_times_without_leaking_passwords() {
    let sushy = Sushy::start(&SushyOptions {
        https: true,
        credentials: Some(("admin".to_owned(), PASSWORD.to_owned())),
        ..SushyOptions::default()
    })
    .expect("sushy (scripts/deps-fence.sh)");
    let ipmi = IpmiSim::start(&IpmiSimConfig::default());
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = config(dir.path(), &sushy, &ipmi, PASSWORD);

    let out = fence(&cfg, &["rf-beta", "status", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["ok"], true);
    assert_eq!(report["state"], "on");
    assert_eq!(report["target"], "beta");
    assert_eq!(report["type"], "redfish");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(steps, ["load config", "build driver", "status"]);
    assert_no_secret(&out, PASSWORD);

    let out = fence(&cfg, &["rf-beta", "reboot", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    let steps: Vec<&str> = report["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["step"].as_str())
        .collect();
    assert_eq!(steps, ["load config", "build driver", "off", "on"]);
    assert!(
        report["steps"][2]["polls"].as_u64().is_some_and(|p| p >= 2),
        "{report}"
    );
    assert_no_secret(&out, PASSWORD);

    for action in ["off", "status", "on", "monitor"] {
        let out = fence(&cfg, &["rf-beta", action, "--target", "beta"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{action}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.starts_with(&format!("{action} beta on rf-beta (redfish): ok")),
            "{text}"
        );
        assert!(text.contains(" ms"), "{text}");
        assert_no_secret(&out, PASSWORD);
    }

    // The native IPMI device through the same command.
    let out = fence(&cfg, &["ipmi-beta", "off"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ipmi.power_on());
    let out = fence(&cfg, &["ipmi-beta", "on", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(ipmi.power_on());
    assert_no_secret(&out, "secret");

    // Unknown device and target.
    let out = fence(&cfg, &["nope", "status"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configured: rf-beta, ipmi-beta"));
    let out = fence(&cfg, &["rf-beta", "status", "--target", "alpha"]);
    assert_eq!(out.status.code(), Some(78));

    // A wrong password in the file: an authentication failure, at once, and still no secret.
    let wrong = "Wq3-wrong-pass-77";
    let cfg = config(dir.path(), &sushy, &ipmi, wrong);
    let out = fence(&cfg, &["rf-beta", "off", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(report["error"]["kind"], "Auth", "{report}");
    assert_no_secret(&out, wrong);
}
