//! Runs randomised simulator schedules: `cargo run --release -p agent --example simrand FIRST COUNT`.
fn main() {
    let first: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let count: u64 = std::env::args()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    if std::env::var_os("REPLAY").is_some() {
        let (mut sim, horizon) = agent::sim::random_schedule(first);
        sim.trace_frames = true;
        let r = sim.run_until(horizon);
        for l in sim.trace() {
            println!("{l}");
        }
        println!("{r:?}");
        return;
    }
    let t = std::time::Instant::now();
    let out = agent::sim::run_random(first, count);
    println!(
        "{} schedules, {} takeovers, {:?}",
        out.schedules,
        out.takeovers,
        t.elapsed()
    );
    if let Some(v) = out.violation {
        println!("{v}");
    }
}
