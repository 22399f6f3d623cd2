//! PDU and switch fencing benchmark: time to confirmed off, on and status, whole processes, side
//! by side in one run against the same simulators with the same arguments:
//! `fence_watchkeeper --type=apc-snmp` vs ClusterLabs' `fence_apc_snmp` (SNMP v2c and v3
//! authPriv) and `fence_watchkeeper --type=ifmib` vs `fence_ifmib` (v2c), all against net-snmp's
//! `snmpd` (`hwtests::snmpd`), and `fence_watchkeeper --type=modbus` against the pymodbus PDU
//! (`hwtests::modbus_pdu`), for which no ClusterLabs agent exists (absolute times only). Each
//! command runs under hyperfine with a `--prepare` step that puts the outlet or port in the
//! opposite state, so every timed off and on is a real transition. Also the in-process time of
//! the native drivers.
//!
//! Run through `scripts/bench-fence.sh` (after the IPMI/Redfish benchmark), which builds in
//! release mode first. Options: `--runs N` (default 10), `--json-dir DIR` (hyperfine exports).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use drivers::fence::modbus::{plug_outlet, ModbusDevice, ModbusParams, ModbusTransport};
use drivers::fence::snmp::ifmib::{IfMibDevice, IfMibParams, PortRef};
use drivers::fence::snmp::pdu::{OutletRef, PduProfile, SnmpPduDevice, SnmpPduParams};
use drivers::fence::snmp::{AuthProtocol, PrivProtocol, SnmpParams, SnmpSecurity};
use drivers::fence::FenceDevice;
use drivers::secret::Secret;
use hwtests::hyperfine::Hyperfine;
use hwtests::modbus_pdu::{ModbusPdu, ModbusPduOptions};
use hwtests::snmpd::{
    Snmpd, SnmpdOptions, V2C_RW_COMMUNITY, V3_AUTH_PASSWORD, V3_PRIV_PASSWORD, V3_USER,
};

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
        json_prefix: "bench-pdu",
        runs,
        quiet: true,
    };
    let wk = sibling("fence_watchkeeper")?;
    let wk = wk.to_string_lossy().into_owned();

    let snmpd = Snmpd::start(&SnmpdOptions::default());
    let pdu = ModbusPdu::start_tcp(&ModbusPduOptions::default());
    let port = snmpd.port();

    let v2c = format!("--ip=127.0.0.1 --ipport={port} -c {V2C_RW_COMMUNITY} -d 2c -n 3");
    let v3 = format!(
        "--ip=127.0.0.1 --ipport={port} --snmp-version=3 --snmp-sec-level=authPriv \
         --username={V3_USER} --password={V3_AUTH_PASSWORD} --snmp-auth-prot=SHA \
         --snmp-priv-prot=AES --snmp-priv-passwd={V3_PRIV_PASSWORD} -n 3"
    );
    let ifmib = format!("--ip=127.0.0.1 --ipport={port} -c {V2C_RW_COMMUNITY} -n 3");
    let modbus = format!(
        "--type=modbus --ip=127.0.0.1 --ipport={} -n 3",
        pdu.address().port()
    );
    let apc = |args: &str| Agent {
        name: "fence_apc_snmp",
        command: format!("/usr/sbin/fence_apc_snmp {args}"),
    };
    let pairs = [
        Pair {
            peer: "APC PDU, SNMP v2c",
            ours: format!("{wk} --type=apc-snmp {v2c}"),
            theirs: Some(apc(&v2c)),
        },
        Pair {
            peer: "APC PDU, SNMP v3 authPriv",
            ours: format!("{wk} --type=apc-snmp {v3}"),
            theirs: Some(apc(&v3)),
        },
        Pair {
            peer: "IF-MIB switch, SNMP v2c",
            ours: format!("{wk} --type=ifmib {ifmib}"),
            theirs: Some(Agent {
                name: "fence_ifmib",
                command: format!("/usr/sbin/fence_ifmib {ifmib}"),
            }),
        },
        Pair {
            peer: "Modbus TCP PDU",
            ours: format!("{wk} {modbus}"),
            theirs: None,
        },
    ];

    println!("| device | action | fence_watchkeeper median (min–max) s | agent | agent median (min–max) s | ratio |");
    println!("|---|---|---|---|---|---|");
    for Pair { peer, ours, theirs } in &pairs {
        for (action, before) in [("status", "on"), ("off", "on"), ("on", "off")] {
            let prepare = format!("{ours} -o {before}");
            let o = hyperfine.bench(&format!("{ours} -o {action}"), &prepare)?;
            let (agent, t, ratio) = match theirs {
                Some(Agent { name, command }) => {
                    let t = hyperfine.bench(&format!("{command} -o {action}"), &prepare)?;
                    (
                        (*name).to_owned(),
                        format!("{:.3} ({:.3}–{:.3})", t.median, t.min, t.max),
                        format!("{:.3}", o.median / t.median),
                    )
                }
                None => ("none".to_owned(), "–".to_owned(), "–".to_owned()),
            };
            println!(
                "| {peer} | {action} | {:.3} ({:.3}–{:.3}) | {agent} | {t} | {ratio} |",
                o.median, o.min, o.max
            );
        }
    }
    // The bench left outlet 3 and port 3 in their last state; the in-process runs prepare
    // their own.
    println!("\nIn-process (native driver, one operation on an open driver, median of {runs}):");
    in_process(&snmpd, &pdu, runs)?;
    Ok(())
}

/// One device: fence_watchkeeper's command line and the ClusterLabs agent's, if one exists.
struct Pair {
    peer: &'static str,
    ours: String,
    theirs: Option<Agent>,
}

struct Agent {
    name: &'static str,
    command: String,
}

fn in_process(snmpd: &Snmpd, pdu: &ModbusPdu, runs: usize) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let snmp = |security: SnmpSecurity| SnmpParams {
        address: snmpd.address(),
        security,
        request_timeout: Duration::from_secs(1),
        retries: 2,
    };
    let v2c = SnmpSecurity::V2c {
        community: Secret::new(V2C_RW_COMMUNITY),
    };
    let v3 = SnmpSecurity::V3 {
        username: V3_USER.to_owned(),
        auth: AuthProtocol::Sha1,
        auth_password: Secret::new(V3_AUTH_PASSWORD),
        privacy: Some((PrivProtocol::Aes128, Secret::new(V3_PRIV_PASSWORD))),
    };
    let apc = |security| {
        SnmpPduDevice::new(
            "apc",
            SnmpPduParams {
                snmp: snmp(security),
                profile: PduProfile::Auto,
                outlets: BTreeMap::from([("n".to_owned(), vec![OutletRef::Number(4)])]),
                poll_interval: Duration::from_millis(50),
                off_time: Duration::ZERO,
            },
        )
    };
    let ifmib = IfMibDevice::new(
        "ifmib",
        IfMibParams {
            snmp: snmp(v2c.clone()),
            ports: BTreeMap::from([("n".to_owned(), vec![PortRef::Index(4)])]),
            poll_interval: Duration::from_millis(50),
            check_oper_status: true,
        },
    )?;
    let modbus = ModbusDevice::new(
        "modbus",
        ModbusParams {
            transport: ModbusTransport::Tcp {
                address: pdu.address(),
            },
            outlets: BTreeMap::from([("n".to_owned(), plug_outlet(4).into_iter().collect())]),
            request_timeout: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            off_time: Duration::ZERO,
        },
    )?;
    let mut devices: Vec<(&str, Box<dyn FenceDevice>)> = vec![
        ("APC PDU, SNMP v2c", Box::new(apc(v2c)?)),
        ("APC PDU, SNMP v3 authPriv", Box::new(apc(v3)?)),
        ("IF-MIB switch, SNMP v2c", Box::new(ifmib)),
        ("Modbus TCP PDU", Box::new(modbus)),
    ];
    println!("| driver | status ms | off ms | on ms |");
    println!("|---|---|---|---|");
    for (name, device) in &mut devices {
        let mut cols = Vec::new();
        for op in ["status", "off", "on"] {
            let mut times = Vec::new();
            for _ in 0..runs {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
                // Start from the opposite state, untimed (this also opens the session).
                let prep = match op {
                    "on" => rt.block_on(device.off("n", deadline)).map(|_| ()),
                    _ => rt.block_on(device.on("n", deadline)).map(|_| ()),
                };
                prep?;
                let t = Instant::now();
                let r = match op {
                    "status" => rt.block_on(device.status("n", deadline)).map(|_| ()),
                    "off" => rt.block_on(device.off("n", deadline)).map(|_| ()),
                    _ => rt.block_on(device.on("n", deadline)).map(|_| ()),
                };
                r?;
                times.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            times.sort_by(f64::total_cmp);
            let median = times
                .get(times.len() / 2)
                .context("no runs: --runs must be at least 1")?;
            cols.push(format!("{median:.1}"));
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
