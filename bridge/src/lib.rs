//! The Linux side of the watchkeeper bridge: the output lines and serial ports that the
//! `firmware` crate's board loop drives when it runs as the `watchkeeper-bridge` binary on a
//! small Linux board instead of a microcontroller.

pub mod gpio;
pub mod tty;
