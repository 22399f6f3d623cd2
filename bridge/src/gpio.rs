//! The bridge's output lines: GPIO character-device lines on a real board, or files on a
//! simulated one.
//!
//! On a Linux board (a Raspberry Pi with a relay hat, say) each output is a line of a
//! `/dev/gpiochipN`, requested as an output through linux-embedded-hal's `CdevPin`, starting
//! low: relay released (power through its normally-closed contact), reset released, LED dark.
//! The kernel releases the lines when the process ends, which leaves the relay released too.
//!
//! Tests have no GPIO chip, and a mock would prove nothing about the binary. The simulated
//! backend writes each line's level to a file of its own (`0` or `1` and a newline, replaced
//! atomically by a rename, so a reader never sees a half-written level) and appends every
//! change to `<line>.log` with the wall-clock time in microseconds, so an end-to-end test can
//! both poll the present level and measure when it changed.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use embedded_hal::digital::{self, OutputPin};
use linux_embedded_hal::gpio_cdev::{Chip, LineRequestFlags};
use linux_embedded_hal::CdevPin;

/// One output line.
pub enum OutPin {
    /// A GPIO character-device line.
    Cdev(CdevPin),
    /// A simulated line (a file).
    Sim(SimPin),
}

/// A simulated line: its level lives in `dir/name`.
#[derive(Debug)]
pub struct SimPin {
    path: PathBuf,
    log: PathBuf,
}

/// Errors requesting or driving a line.
#[derive(Debug, thiserror::Error)]
pub enum GpioError {
    /// The chip or line could not be requested.
    #[error("GPIO {chip} line {line} ({name}): {source}")]
    Request {
        /// The chip device.
        chip: PathBuf,
        /// Line offset.
        line: u32,
        /// What the line is for.
        name: &'static str,
        /// What the kernel said.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A simulated line's file could not be written.
    #[error("simulated GPIO {path}: {source}")]
    Sim {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// Setting a line failed.
    #[error("setting a GPIO line failed: {0}")]
    Set(String),
}

impl digital::Error for GpioError {
    fn kind(&self) -> digital::ErrorKind {
        digital::ErrorKind::Other
    }
}

impl std::fmt::Debug for OutPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cdev(_) => f.write_str("OutPin::Cdev"),
            Self::Sim(p) => f.debug_tuple("OutPin::Sim").field(&p.path).finish(),
        }
    }
}

impl OutPin {
    /// Requests `line` of `chip` as an output, initially low.
    pub fn cdev(chip: &Path, line: u32, name: &'static str) -> Result<Self, GpioError> {
        let request = |source: Box<dyn std::error::Error + Send + Sync>| GpioError::Request {
            chip: chip.to_owned(),
            line,
            name,
            source,
        };
        let mut c = Chip::new(chip).map_err(|e| request(Box::new(e)))?;
        let handle = c
            .get_line(line)
            .and_then(|l| l.request(LineRequestFlags::OUTPUT, 0, CONSUMER))
            .map_err(|e| request(Box::new(e)))?;
        let pin = CdevPin::new(handle).map_err(|e| request(Box::new(e)))?;
        Ok(Self::Cdev(pin))
    }

    /// A simulated line in `dir`, initially low.
    pub fn sim(dir: &Path, name: &str) -> Result<Self, GpioError> {
        let pin = SimPin {
            path: dir.join(name),
            log: dir.join(format!("{name}.log")),
        };
        pin.write(false)?;
        Ok(Self::Sim(pin))
    }
}

impl SimPin {
    fn write(&self, high: bool) -> Result<(), GpioError> {
        let err = |path: &Path, source| GpioError::Sim {
            path: path.to_owned(),
            source,
        };
        // The log first: a reader that sees the new level also finds it in the log.
        let us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let mut log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| err(&self.log, e))?;
        writeln!(log, "{us} {}", u8::from(high)).map_err(|e| err(&self.log, e))?;
        let tmp = self.path.with_extension("tmp");
        let level = if high { "1\n" } else { "0\n" };
        fs::write(&tmp, level).map_err(|e| err(&tmp, e))?;
        fs::rename(&tmp, &self.path).map_err(|e| err(&self.path, e))
    }
}

impl digital::ErrorType for OutPin {
    type Error = GpioError;
}

impl OutputPin for OutPin {
    fn set_low(&mut self) -> Result<(), GpioError> {
        match self {
            Self::Cdev(p) => p.set_low().map_err(|e| GpioError::Set(e.to_string())),
            Self::Sim(p) => p.write(false),
        }
    }

    fn set_high(&mut self) -> Result<(), GpioError> {
        match self {
            Self::Cdev(p) => p.set_high().map_err(|e| GpioError::Set(e.to_string())),
            Self::Sim(p) => p.write(true),
        }
    }
}

/// The consumer label the kernel shows for the lines (`gpioinfo`).
const CONSUMER: &str = "watchkeeper-bridge";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_line_shows_its_level_and_logs_each_change() {
        let dir = std::env::temp_dir().join(format!("wk-bridge-gpio-{}", std::process::id()));
        fs::create_dir_all(&dir).expect("dir");
        let mut pin = OutPin::sim(&dir, "power").expect("sim pin");
        assert_eq!(fs::read_to_string(dir.join("power")).expect("level"), "0\n");
        pin.set_high().expect("high");
        assert_eq!(fs::read_to_string(dir.join("power")).expect("level"), "1\n");
        pin.set_low().expect("low");
        let log = fs::read_to_string(dir.join("power.log")).expect("log");
        let levels: Vec<&str> = log.lines().filter_map(|l| l.split(' ').nth(1)).collect();
        assert_eq!(levels, ["0", "1", "0"]);
        fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_missing_chip_is_an_error_naming_it() {
        let e = OutPin::cdev(Path::new("/nonexistent/gpiochip9"), 17, "power")
            .expect_err("no such chip");
        let text = e.to_string();
        assert!(
            text.contains("/nonexistent/gpiochip9 line 17 (power)"),
            "{text}"
        );
    }
}
