//! Engine and simulator throughput: `cargo run --release -p agent --example bench_engine`.
//!
//! Prints the cost of one engine input (handle, then draining its actions) measured in
//! isolation on a three-node cluster's steady state, and simulated schedules per second.

use std::time::{Duration, Instant};

use agent::engine::{Durable, Engine, EngineConfig, Input, NodeSpec};
use agent::sim::{node_id, random_schedule};
use proto::{Flags, Heartbeat, Role, View};

fn main() {
    // Engine cost per input: a standby receiving heartbeats from two peers, time advancing.
    let ms = Duration::from_millis;
    let nodes: Vec<NodeSpec> = (0..3)
        .map(|i| NodeSpec {
            id: node_id(i),
            name: format!("n{i}"),
            witness: false,
            watchdog_timeout: Some(ms(5000)),
            fencing: Vec::new(),
        })
        .collect();
    let cfg = EngineConfig {
        me: node_id(0),
        nodes,
        heartbeat_interval: ms(100),
        deadtime: ms(1000),
        startup_timeout: ms(3000),
        fence_delay: ms(2000),
        fence_level_timeout: ms(2000),
        fence_retry: ms(1000),
        fence_retry_max: ms(8000),
        watchdog_margin: ms(500),
        stall_timeout: ms(2000),
        election_timeout: ms(1000),
        resources: vec![
            "mount".into(),
            "catalog".into(),
            "ip".into(),
            "sd".into(),
            "dir".into(),
        ],
        restart_limit: 1,
        failure_timeout: None,
    };
    let t0 = Instant::now();
    let mut e = Engine::new(cfg, Durable::default(), 1, 1, t0);
    let mut view = View::default();
    for i in 0..3 {
        view.insert(node_id(i));
    }
    let n = 2_000_000u64;
    let start = Instant::now();
    let mut actions = 0u64;
    for k in 0..n {
        let now = t0 + Duration::from_micros(k * 50);
        let sender = node_id(1 + usize::from(k % 2 == 1));
        let hb = Heartbeat {
            cluster_id: 0,
            sender,
            link: 0,
            role: Role::Holder,
            flags: Flags(Flags::QUORATE),
            holder: Some(node_id(1)),
            prior: None,
            incarnation: 1,
            sequence: k + 1,
            epoch: 1,
            view,
            seen_epoch: 1,
        };
        e.handle(
            now,
            if k % 10 == 0 {
                Input::Tick
            } else {
                Input::Heartbeat(hb)
            },
        );
        while e.poll_action().is_some() {
            actions += 1;
        }
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!("engine: {per:.0} ns per input ({n} inputs, {actions} actions)");

    let count = 2000u64;
    let start = Instant::now();
    let mut inputs = 0u64;
    for seed in 0..count {
        let (mut sim, horizon) = random_schedule(seed);
        let _ = sim.run_until(horizon);
        inputs += sim.inputs();
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "simulator: {:.0} schedules/s (20 s of simulated cluster time each), {:.0} engine inputs/s",
        count as f64 / secs,
        inputs as f64 / secs
    );
}
