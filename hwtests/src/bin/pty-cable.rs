//! An emulated serial null-modem cable between two paths, for trying watchkeeper's serial
//! link on one machine without hardware: `pty-cable DIR NAME_A NAME_B` creates `DIR/NAME_A` and
//! `DIR/NAME_B`, two pty devices joined back to back, prints their paths, and relays bytes until
//! it gets SIGTERM or SIGINT, then removes the paths. SIGUSR1 cuts the cable (bytes are dropped
//! in both directions, the devices stay), SIGUSR2 reconnects it.

use anyhow::{bail, Context, Result};
use hwtests::cable::PtyCable;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dir, a, b] = args.as_slice() else {
        bail!("usage: pty-cable DIR NAME_A NAME_B");
    };
    // Block the stop signals before the relay thread starts, so that it inherits the mask and
    // only this thread receives them, through sigwait.
    let mut stop = SigSet::empty();
    stop.add(Signal::SIGTERM);
    stop.add(Signal::SIGINT);
    stop.add(Signal::SIGUSR1);
    stop.add(Signal::SIGUSR2);
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stop), None)
        .context("block signals")?;
    let cable = PtyCable::new(std::path::Path::new(dir), a, b).context("create cable")?;
    println!(
        "{} <-> {}",
        cable.a_path().display(),
        cable.b_path().display()
    );
    loop {
        match stop.wait().context("sigwait")? {
            Signal::SIGUSR1 => {
                cable.cut();
                eprintln!("pty-cable: cut");
            }
            Signal::SIGUSR2 => {
                cable.restore();
                eprintln!("pty-cable: reconnected");
            }
            sig => {
                eprintln!("pty-cable: {sig}, unplugging");
                drop(cable);
                return Ok(());
            }
        }
    }
}
