//! Fencing benchmark: time to confirmed off, on, reboot and status, whole processes, side by
//! side in one run against the same simulators with the same arguments: `fence_watchkeeper`
//! vs ClusterLabs' `fence_ipmilan` (`ipmi_sim`, cipher suite 3; once with its defaults, once
//! with `--power-wait=0`) and vs `fence_redfish` (sushy-tools over HTTPS). Each command runs
//! under hyperfine with a `--prepare` step that puts the target in the opposite state, so every
//! timed off and on is a real transition. Also the in-process time of the native drivers, which
//! is what the agent itself spends when it fences.
//!
//! Run through `scripts/bench-fence.sh`, which builds in release mode first. Options:
//! `--runs N` (default 10; reboot included), `--json-dir DIR` (hyperfine exports).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use drivers::fence::ipmi::{IpmiDevice, IpmiParams};
use drivers::fence::redfish::{RedfishAuth, RedfishDevice, RedfishParams, TlsTrust};
use drivers::fence::FenceDevice;
use drivers::secret::Secret;
use hwtests::hyperfine::{Hyperfine, Stats};
use hwtests::ipmi_sim::{IpmiSim, IpmiSimConfig};
use hwtests::sushy::{system_uuid, Sushy, SushyOptions};

fn main() -> Result<()> {
    let mut runs = 10usize;
    let mut json_dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "--json-dir" => json_dir = Some(PathBuf::from(args.next().context("--json-dir DIR")?)),
            other => bail!("unknown argument {other}; options: --runs N --json-dir DIR"),
        }
    }
    let tmp = tempfile::tempdir()?;
    let json_dir = json_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&json_dir)?;
    let hyperfine = Hyperfine {
        json_dir: &json_dir,
        json_prefix: "bench",
        runs,
        quiet: false,
    };
    let wk = sibling("fence_watchkeeper")?;
    let wk = wk.to_string_lossy().into_owned();

    let sim = IpmiSim::start(&IpmiSimConfig::default());
    let sushy = Sushy::start(&SushyOptions {
        https: true,
        ..SushyOptions::default()
    })?;

    let ipmi_args = format!(
        "--ip=127.0.0.1 --ipport={} --lanplus --cipher=3 -l admin -p secret",
        sim.address().port()
    );
    let rf_args = format!(
        "--ip=127.0.0.1 --ipport={} --ssl-insecure -l admin -p secret --systems-uri=/redfish/v1/Systems/{}",
        sushy.port(),
        system_uuid(1)
    );
    let wk_ipmi = format!("{wk} {ipmi_args}");
    let wk_rf = format!("{wk} --type=redfish {rf_args}");
    let ipmilan = format!("/usr/sbin/fence_ipmilan {ipmi_args}");
    let redfish = format!("/usr/sbin/fence_redfish {rf_args}");

    let mut rows = Vec::new();
    for (action, before) in [
        ("status", "on"),
        ("off", "on"),
        ("on", "off"),
        ("reboot", "on"),
    ] {
        let prepare_ipmi = format!("{wk_ipmi} -o {before}");
        let prepare_rf = format!("{wk_rf} -o {before}");
        let ours = hyperfine.bench(&format!("{wk_ipmi} -o {action}"), &prepare_ipmi)?;
        let theirs = hyperfine.bench(&format!("{ipmilan} -o {action}"), &prepare_ipmi)?;
        let tuned = if action == "status" {
            None
        } else {
            Some(hyperfine.bench(
                &format!("{ipmilan} --power-wait=0 -o {action}"),
                &prepare_ipmi,
            )?)
        };
        rows.push(Row {
            peer: "IPMI (ipmi_sim)",
            action,
            ours,
            theirs,
            theirs_name: "fence_ipmilan",
            tuned,
        });
        let ours = hyperfine.bench(&format!("{wk_rf} -o {action}"), &prepare_rf)?;
        let theirs = hyperfine.bench(&format!("{redfish} -o {action}"), &prepare_rf)?;
        rows.push(Row {
            peer: "Redfish (sushy, HTTPS)",
            action,
            ours,
            theirs,
            theirs_name: "fence_redfish",
            tuned: None,
        });
    }

    println!("| simulator | action | fence_watchkeeper median (min–max) s | agent | agent default median s | ratio | agent --power-wait=0 median s | ratio |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let (tuned, tuned_ratio) = r.tuned.map_or_else(
            || ("–".to_owned(), "–".to_owned()),
            |t| {
                (
                    format!("{:.3}", t.median),
                    format!("{:.3}", r.ours.median / t.median),
                )
            },
        );
        println!(
            "| {} | {} | {:.3} ({:.3}–{:.3}) | {} | {:.3} | {:.3} | {tuned} | {tuned_ratio} |",
            r.peer,
            r.action,
            r.ours.median,
            r.ours.min,
            r.ours.max,
            r.theirs_name,
            r.theirs.median,
            r.ours.median / r.theirs.median
        );
    }

    println!("\nIn-process (native driver, one operation, median of {runs}):");
    in_process(&sim, &sushy, runs)?;
    Ok(())
}

struct Row {
    peer: &'static str,
    action: &'static str,
    ours: Stats,
    theirs: Stats,
    theirs_name: &'static str,
    tuned: Option<Stats>,
}

fn in_process(sim: &IpmiSim, sushy: &Sushy, runs: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut ipmi_params = IpmiParams::new(sim.address(), "admin", Secret::new("secret"));
    ipmi_params.poll_interval = Duration::from_millis(50);
    let ipmi = IpmiDevice::new("ipmi", "n", ipmi_params)?;
    let redfish = RedfishDevice::new(
        "redfish",
        "n",
        RedfishParams {
            url: sushy.url(),
            system: Some(system_uuid(1)),
            username: Some("admin".to_owned()),
            password: Some(Secret::new("secret")),
            auth: RedfishAuth::Basic,
            tls: TlsTrust::DangerInsecure,
            request_timeout: Duration::from_secs(5),
            poll_interval: Duration::from_millis(50),
        },
    )?;
    let mut devices: Vec<(&str, Box<dyn FenceDevice>)> =
        vec![("IPMI", Box::new(ipmi)), ("Redfish", Box::new(redfish))];
    println!("| driver | status ms | off ms | on ms | reboot ms |");
    println!("|---|---|---|---|---|");
    for (name, device) in &mut devices {
        let mut cols = Vec::new();
        for op in ["status", "off", "on", "reboot"] {
            let mut times = Vec::new();
            for _ in 0..runs {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                // Start from the opposite state, untimed.
                let prep = match op {
                    "on" => rt.block_on(device.off("n", deadline)).map(|_| ()),
                    _ => rt.block_on(device.on("n", deadline)).map(|_| ()),
                };
                prep?;
                let t = Instant::now();
                let r = match op {
                    "status" => rt.block_on(device.status("n", deadline)).map(|_| ()),
                    "off" => rt.block_on(device.off("n", deadline)).map(|_| ()),
                    "on" => rt.block_on(device.on("n", deadline)).map(|_| ()),
                    _ => rt.block_on(device.reboot("n", deadline)).map(|_| ()),
                };
                r?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            cols.push(format!("{:.1}", times[times.len() / 2]));
        }
        println!("| {name} | {} |", cols.join(" | "));
    }
    Ok(())
}

/// A binary built next to this one (`target/<profile>/`).
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.parent().context("exe dir")?.join(name);
    if !path.is_file() {
        bail!(
            "{} is missing: build it first (cargo build --release -p agent)",
            path.display()
        );
    }
    Ok(path)
}
