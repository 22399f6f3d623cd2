//! Runs the bounded exhaustive check for every shape: `cargo run --release -p agent --example exhaustive [MAX_FAULTS]`.
fn main() {
    let k: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    for shape in [
        agent::sim::Shape::TwoNodes,
        agent::sim::Shape::TwoNodesWitness,
        agent::sim::Shape::ThreeNodes,
    ] {
        let t = std::time::Instant::now();
        let out = agent::sim::run_exhaustive(shape, k);
        println!(
            "{shape:?}: {} schedules, {} states, {} with failover, {:?}",
            out.schedules,
            out.states,
            out.failovers,
            t.elapsed()
        );
        if let Some(v) = out.violation {
            println!("{v}");
            return;
        }
    }
}
