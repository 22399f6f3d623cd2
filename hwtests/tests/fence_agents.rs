//! `fence_watchkeeper` against the agents it replaces, and the `exec` driver running those
//! agents: the same actions with the same arguments through `fence_watchkeeper` and through
//! ClusterLabs' `fence_ipmilan` (against `ipmi_sim`) and `fence_redfish` (against sushy-tools
//! over HTTPS), comparing exit codes, the answer line and the simulator's power state after.
//!
//! Peers come from `scripts/deps-ipmi.sh` and `scripts/deps-fence.sh`; the binaries from the
//! workspace build (`FENCE_WATCHKEEPER_BIN` / `WATCHKEEPER_BIN` override).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use drivers::fence::exec::{ExecDevice, ExecParams};
use drivers::fence::redfish::{RedfishAuth, RedfishDevice, RedfishParams, TlsTrust};
use drivers::fence::{FenceDevice, FenceErrorKind, PowerState};
use drivers::secret::Secret;
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig};
use hwtests::sushy::{system_uuid, Sushy, SushyOptions};
use hwtests::util::{first_line, run_agent, strings, workspace_bin, AGENT_DIR};
use tokio::time::Instant;

fn fence_watchkeeper() -> PathBuf {
    workspace_bin("fence_watchkeeper", "FENCE_WATCHKEEPER_BIN")
}

#[test]
fn metadata_validates_against_the_fence_agents_schema() {
    let out = run_agent(&fence_watchkeeper(), &strings(&["-o", "metadata"]), None);
    assert_eq!(out.status.code(), Some(0));
    let dir = tempfile::tempdir().expect("tempdir");
    let xml = dir.path().join("meta.xml");
    std::fs::write(&xml, &out.stdout).expect("write");
    let check = Command::new("xmllint")
        .args([
            "--noout",
            "--relaxng",
            "/usr/share/cluster/relaxng/metadata.rng",
        ])
        .arg(&xml)
        .output()
        .expect("xmllint (libxml2-utils, scripts/deps-fence.sh)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for name in [
        "ip",
        "ipport",
        "username",
        "password",
        "password_script",
        "lanplus",
        "cipher",
        "privlvl",
        "systems_uri",
        "ssl_insecure",
        "ssl_secure",
        "power_timeout",
        "power_wait",
        "delay",
        "type",
    ] {
        assert!(
            text.contains(&format!("<parameter name=\"{name}\"")),
            "parameter {name} missing"
        );
    }
}

#[test]
fn unknown_options_are_refused_like_a_fence_agent() {
    for args in [strings(&["--bogus"]), strings(&["-Y"]), strings(&["--ip"])] {
        let ours = run_agent(&fence_watchkeeper(), &args, None);
        let theirs = run_agent(&Path::new(AGENT_DIR).join("fence_ipmilan"), &args, None);
        assert_eq!(ours.status.code(), theirs.status.code(), "{args:?}");
        assert_eq!(ours.status.code(), Some(1));
        let ours_err = String::from_utf8_lossy(&ours.stderr);
        assert!(ours_err.contains("Parse error: option"), "{ours_err}");
        assert!(String::from_utf8_lossy(&theirs.stderr).contains("Parse error: option"));
    }
    // Redfish-only options are unknown to the ipmi type, as they are to fence_ipmilan.
    let args = strings(&[
        "--ip=127.0.0.1",
        "-l",
        "a",
        "-p",
        "b",
        "--systems-uri=/x",
        "-o",
        "status",
    ]);
    let ours = run_agent(&fence_watchkeeper(), &args, None);
    let theirs = run_agent(&Path::new(AGENT_DIR).join("fence_ipmilan"), &args, None);
    assert_eq!(
        (ours.status.code(), theirs.status.code()),
        (Some(1), Some(1))
    );
    // An unknown action.
    let args = strings(&["--ip=127.0.0.1", "-l", "a", "-p", "b", "-o", "explode"]);
    let ours = run_agent(&fence_watchkeeper(), &args, None);
    assert_eq!(ours.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&ours.stderr).contains("Unrecognised action 'explode'"));
}

/// One simulator and the two programs to compare on it.
struct Pair<'a> {
    name: &'a str,
    theirs: &'a Path,
    common: &'a [String],
    ours_extra: &'a [String],
    set_power: &'a dyn Fn(bool),
    power: &'a dyn Fn() -> bool,
}

/// Runs `action` through both programs from the same starting power state and compares.
fn compare(pair: &Pair<'_>, action: &str, start_on: bool) {
    let Pair {
        name,
        theirs,
        common,
        ours_extra,
        set_power,
        power,
    } = *pair;
    let mut results = Vec::new();
    for (program, extra) in [
        (fence_watchkeeper(), ours_extra.to_vec()),
        (theirs.to_path_buf(), Vec::new()),
    ] {
        set_power(start_on);
        let mut args = common.to_vec();
        args.extend(extra);
        args.push(format!("--action={action}"));
        let out = run_agent(&program, &args, None);
        results.push((
            out.status.code(),
            first_line(&out),
            power(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ));
    }
    let (ours, theirs) = (&results[0], &results[1]);
    assert_eq!(
        (&ours.0, &ours.1, ours.2),
        (&theirs.0, &theirs.1, theirs.2),
        "{name} {action} from {}: ours stderr {:?}, theirs stderr {:?}",
        if start_on { "on" } else { "off" },
        ours.3,
        theirs.3
    );
}

#[test]
fn fence_watchkeeper_matches_fence_ipmilan_on_ipmi_sim() {
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let port = sim.address().port().to_string();
    let common = strings(&[
        "--ip=127.0.0.1",
        "--lanplus",
        "--cipher=3",
        "-l",
        "admin",
        "-p",
        "secret",
        "--power-wait=0",
    ]);
    let mut common = common;
    common.push(format!("--ipport={port}"));
    let theirs = Path::new(AGENT_DIR).join("fence_ipmilan");
    let set = |on: bool| sim.set_power_on(on);
    let get = || sim.power_on();
    for (action, start_on) in [
        ("status", true),
        ("status", false),
        ("off", true),
        ("off", false),
        ("on", false),
        ("on", true),
        ("reboot", true),
        ("reboot", false),
        ("monitor", true),
        ("list", true),
        ("validate-all", true),
    ] {
        let pair = Pair {
            name: "ipmi",
            theirs: &theirs,
            common: &common,
            ours_extra: &[],
            set_power: &set,
            power: &get,
        };
        compare(&pair, action, start_on);
    }
    // The stdin protocol, with fence_ipmilan's key names.
    let stdin = format!("ip=127.0.0.1\nipport={port}\nlanplus=1\ncipher=3\nusername=admin\npassword=secret\naction=status\n");
    sim.set_power_on(false);
    let ours = run_agent(&fence_watchkeeper(), &[], Some(&stdin));
    let theirs_out = run_agent(&theirs, &[], Some(&stdin));
    assert_eq!(
        (ours.status.code(), first_line(&ours)),
        (theirs_out.status.code(), first_line(&theirs_out))
    );
    assert_eq!(ours.status.code(), Some(2));
    // A wrong password fails both, at once, and changes nothing.
    sim.set_power_on(true);
    let bad: Vec<String> = common
        .iter()
        .map(|a| {
            if a == "secret" {
                "Xq9badpw".to_owned()
            } else {
                a.clone()
            }
        })
        .chain([String::from("-o"), String::from("off")])
        .collect();
    let started = std::time::Instant::now();
    let ours = run_agent(&fence_watchkeeper(), &bad, None);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let theirs_out = run_agent(&theirs, &bad, None);
    assert_eq!(
        (ours.status.code(), theirs_out.status.code()),
        (Some(1), Some(1))
    );
    assert!(sim.power_on());
    assert!(
        !String::from_utf8_lossy(&ours.stderr).contains("Xq9badpw"),
        "password printed"
    );
}

#[test]
fn fence_watchkeeper_matches_fence_redfish_on_sushy_over_https() {
    let sushy = Sushy::start(&SushyOptions {
        https: true,
        ..SushyOptions::default()
    })
    .expect("sushy (scripts/deps-fence.sh)");
    let uri = format!("/redfish/v1/Systems/{}", system_uuid(1));
    let mut common = strings(&[
        "--ip=127.0.0.1",
        "--ssl-insecure",
        "-l",
        "admin",
        "-p",
        "secret",
    ]);
    common.push(format!("--ipport={}", sushy.port()));
    common.push(format!("--systems-uri={uri}"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let params = RedfishParams {
        url: sushy.url(),
        system: Some(uri.clone()),
        username: Some("admin".to_owned()),
        password: Some(Secret::new("secret")),
        auth: RedfishAuth::Basic,
        tls: TlsTrust::DangerInsecure,
        request_timeout: Duration::from_secs(5),
        poll_interval: Duration::from_millis(50),
    };
    let device = std::cell::RefCell::new(RedfishDevice::new("rf", "n", params).expect("device"));
    let set = |on: bool| {
        let mut d = device.borrow_mut();
        let deadline = Instant::now() + Duration::from_secs(10);
        let r = if on {
            rt.block_on(d.on("n", deadline))
        } else {
            rt.block_on(d.off("n", deadline))
        };
        r.expect("set power");
    };
    let get = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        rt.block_on(device.borrow_mut().status("n", deadline))
            .expect("status")
            == PowerState::On
    };
    let theirs = Path::new(AGENT_DIR).join("fence_redfish");
    let ours_extra = strings(&["--type=redfish"]);
    for (action, start_on) in [
        ("status", true),
        ("status", false),
        ("off", true),
        ("off", false),
        ("on", false),
        ("on", true),
        ("reboot", true),
        ("monitor", true),
        ("validate-all", true),
    ] {
        let pair = Pair {
            name: "redfish",
            theirs: &theirs,
            common: &common,
            ours_extra: &ours_extra,
            set_power: &set,
            power: &get,
        };
        compare(&pair, action, start_on);
    }
    // Verified TLS: fence_redfish trusts REQUESTS_CA_BUNDLE, and so does fence_watchkeeper.
    let mut secure: Vec<String> = common
        .iter()
        .filter(|a| *a != "--ssl-insecure")
        .cloned()
        .collect();
    secure.push("--ssl-secure".to_owned());
    secure.push("-o".to_owned());
    secure.push("status".to_owned());
    let mut ours_args = secure.clone();
    ours_args.push("--type=redfish".to_owned());
    let ours = Command::new(fence_watchkeeper())
        .args(&ours_args)
        .env("REQUESTS_CA_BUNDLE", sushy.cert_path())
        .output()
        .expect("run");
    let theirs_out = Command::new(&theirs)
        .args(&secure)
        .env("REQUESTS_CA_BUNDLE", sushy.cert_path())
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .expect("run");
    assert_eq!(
        (ours.status.code(), first_line(&ours)),
        (theirs_out.status.code(), first_line(&theirs_out)),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
    // Without the CA the self-signed certificate is refused by both.
    let ours = Command::new(fence_watchkeeper())
        .args(&ours_args)
        .env_remove("REQUESTS_CA_BUNDLE")
        .output()
        .expect("run");
    assert_eq!(ours.status.code(), Some(1));
    // Wrong password: both fail with exit code 1.
    let bad: Vec<String> = common
        .iter()
        .map(|a| {
            if a == "secret" {
                "Xq9badpw".to_owned()
            } else {
                a.clone()
            }
        })
        .chain([String::from("-o"), String::from("status")])
        .collect();
    let mut ours_bad = bad.clone();
    ours_bad.push("--type=redfish".to_owned());
    let ours = run_agent(&fence_watchkeeper(), &ours_bad, None);
    let theirs_out = run_agent(&theirs, &bad, None);
    assert_eq!(
        (ours.status.code(), theirs_out.status.code()),
        (Some(1), Some(1))
    );
    assert!(
        String::from_utf8_lossy(&ours.stderr).contains("Auth"),
        "{}",
        String::from_utf8_lossy(&ours.stderr)
    );
}

fn exec_params(agent: &str, options: &[(&str, String)], password: &str) -> ExecParams {
    ExecParams {
        agent: Path::new(AGENT_DIR).join(agent),
        options: options
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        password: Some(Secret::new(password)),
        plugs: BTreeMap::from([("beta".to_owned(), None)]),
        poll_interval: Duration::from_millis(100),
    }
}

async fn exec_cycle(device: &mut ExecDevice) {
    let deadline = || Instant::now() + Duration::from_secs(30);
    assert_eq!(device.status("beta", deadline()).await, Ok(PowerState::On));
    assert_eq!(
        device.off("beta", deadline()).await.map(|c| c.state),
        Ok(PowerState::Off)
    );
    assert_eq!(device.status("beta", deadline()).await, Ok(PowerState::Off));
    assert_eq!(
        device.on("beta", deadline()).await.map(|c| c.state),
        Ok(PowerState::On)
    );
    assert_eq!(
        device.reboot("beta", deadline()).await.map(|c| c.state),
        Ok(PowerState::On)
    );
    device.monitor(deadline()).await.expect("monitor");
    let e = device
        .off("gamma", deadline())
        .await
        .expect_err("not mapped");
    assert_eq!(e.kind, FenceErrorKind::TargetUnknown);
}

#[test]
fn exec_driver_runs_fence_ipmilan_and_fence_redfish() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let ipmi_opts = [
        ("ip", "127.0.0.1".to_owned()),
        ("ipport", sim.address().port().to_string()),
        ("lanplus", "1".to_owned()),
        ("cipher", "3".to_owned()),
        ("username", "admin".to_owned()),
        ("power_wait", "0".to_owned()),
    ];
    let mut device = ExecDevice::new(
        "ipmilan",
        exec_params("fence_ipmilan", &ipmi_opts, "secret"),
    )
    .expect("device");
    rt.block_on(exec_cycle(&mut device));
    assert!(sim.power_on());

    let mut bad = ExecDevice::new(
        "ipmilan",
        exec_params("fence_ipmilan", &ipmi_opts, "Xq9badpw"),
    )
    .expect("device");
    let e = rt
        .block_on(bad.off("beta", Instant::now() + Duration::from_secs(30)))
        .expect_err("wrong password");
    assert!(
        matches!(e.kind, FenceErrorKind::Refused | FenceErrorKind::Auth),
        "{e}"
    );
    assert!(!e.to_string().contains("Xq9badpw"), "{e}");
    assert!(sim.power_on());

    let sushy = Sushy::start(&SushyOptions {
        https: true,
        ..SushyOptions::default()
    })
    .expect("sushy");
    let rf_opts = [
        ("ip", "127.0.0.1".to_owned()),
        ("ipport", sushy.port().to_string()),
        ("ssl_insecure", "1".to_owned()),
        ("username", "admin".to_owned()),
        (
            "systems_uri",
            format!("/redfish/v1/Systems/{}", system_uuid(1)),
        ),
    ];
    let mut device = ExecDevice::new("redfish", exec_params("fence_redfish", &rf_opts, "secret"))
        .expect("device");
    rt.block_on(exec_cycle(&mut device));
}

/// A stand-in agent that hangs with a child process, for the deadline; it records its child's
/// PID so the test can check the whole group died.
const HANGING_AGENT: &str =
    "#!/bin/sh\nsleep 300 &\necho $! > \"$(dirname \"$0\")/child.pid\"\nwait\n";
/// A stand-in agent whose device acknowledges off but keeps reporting on.
const LYING_AGENT: &str = "#!/bin/sh\nread -r line\ncase \"$line\" in action=status) echo 'Status: ON'; exit 0;; *) echo 'Success: Powered OFF'; exit 0;; esac\n";

fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt as _;
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write script");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn exec_driver_kills_the_process_group_at_the_deadline_and_reports_unconfirmed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let mut params = exec_params("fence_ipmilan", &[], "pw");
    params.agent = script(dir.path(), "hang", HANGING_AGENT);
    let mut device = ExecDevice::new("hang", params).expect("device");
    let started = Instant::now();
    let e = rt
        .block_on(device.off("beta", started + Duration::from_millis(1000)))
        .expect_err("hangs");
    assert_eq!(e.kind, FenceErrorKind::Timeout, "{e}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(950) && elapsed < Duration::from_millis(2500),
        "{elapsed:?}"
    );
    let child: i32 = std::fs::read_to_string(dir.path().join("child.pid"))
        .expect("child pid")
        .trim()
        .parse()
        .expect("pid");
    // The grandchild was killed with its group; give the kernel a moment to tear it down.
    let gone = (0..50).any(|_| {
        let alive = std::fs::read_to_string(format!("/proc/{child}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false);
        if alive {
            std::thread::sleep(Duration::from_millis(20));
        }
        !alive
    });
    assert!(gone, "helper process {child} outlived the deadline");

    let mut params = exec_params("fence_ipmilan", &[], "pw");
    params.agent = script(dir.path(), "liar", LYING_AGENT);
    let mut device = ExecDevice::new("liar", params).expect("device");
    let e = rt
        .block_on(device.off("beta", Instant::now() + Duration::from_millis(1500)))
        .expect_err("never off");
    assert_eq!(e.kind, FenceErrorKind::Unconfirmed, "{e}");
}
