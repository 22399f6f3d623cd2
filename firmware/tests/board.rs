//! The board loop against embedded-hal-mock pins (every pin write is an expected transaction,
//! checked with `.done()`) and UARTs made of byte queues.

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use common::*;
use embedded_hal_mock::eh1::digital::{Mock as Pin, State as Level, Transaction as T};
use embedded_hal_mock::eh1::MockError;
use firmware::board::{NoWatchdog, Pins};
use firmware::{Board, BoardError, Watchdog};

#[derive(Default)]
struct Line {
    rx: VecDeque<u8>,
    tx: Vec<u8>,
    fail: Option<embedded_io::ErrorKind>,
    /// Where writes are also recorded, next to pin writes, when a test checks their order.
    order: Option<Rc<RefCell<Vec<String>>>>,
}

/// A UART whose received bytes and sent bytes the test reaches through a shared handle.
#[derive(Clone, Default)]
struct Uart(Rc<RefCell<Line>>);

impl Uart {
    fn receive(&self, bytes: &[u8]) {
        self.0.borrow_mut().rx.extend(bytes);
    }

    fn sent(&self) -> Vec<u8> {
        std::mem::take(&mut self.0.borrow_mut().tx)
    }

    fn fail(&self, kind: Option<embedded_io::ErrorKind>) {
        self.0.borrow_mut().fail = kind;
    }
}

impl embedded_io::ErrorType for Uart {
    type Error = embedded_io::ErrorKind;
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Self::Error> {
        let line = self.0.borrow();
        match line.fail {
            Some(kind) => Err(kind),
            None => Ok(!line.rx.is_empty()),
        }
    }
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut line = self.0.borrow_mut();
        // Hand out at most 5 bytes per read, as a UART FIFO would, so frames span reads.
        let n = buf.len().min(line.rx.len()).min(5);
        for slot in &mut buf[..n] {
            *slot = line.rx.pop_front().unwrap_or(0);
        }
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        let mut line = self.0.borrow_mut();
        if let Some(order) = &line.order {
            order.borrow_mut().push("tx".to_owned());
        }
        line.tx.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

#[derive(Default)]
struct CountingWatchdog(u32);

impl Watchdog for &mut CountingWatchdog {
    fn feed(&mut self) {
        self.0 += 1;
    }
}

fn pins(power: &[T], reset: &[T], led: &[T]) -> Pins<Pin, Pin, Pin> {
    Pins {
        power: Pin::new(power),
        reset: Pin::new(reset),
        led: Pin::new(led),
    }
}

fn done<W: Watchdog>(board: Board<'_, Pin, Pin, Pin, Uart, Uart, W>) {
    let (_, mut pins, _, _, _) = board.release();
    pins.power.done();
    pins.reset.done();
    pins.led.done();
}

#[test]
fn pins_follow_arm_timeout_pulse_and_grace_and_are_written_only_on_change() {
    let host = Uart::default();
    let bus = Uart::default();
    let mut wd = CountingWatchdog::default();
    let p = pins(
        &[T::set(Level::Low), T::set(Level::High), T::set(Level::Low)],
        &[T::set(Level::Low)],
        &[T::set(Level::High), T::set(Level::Low)],
    );
    let mut board = Board::new(bridge(), p, host.clone(), bus.clone(), &mut wd);
    // Disarmed at 0: LED in its flash, power through, reset released.
    board.step(0).expect("step");
    host.receive(&Host::new().arm());
    board.step(10).expect("step");
    // Armed: steady LED (already lit), nothing to write.
    board.step(500).expect("step");
    // Timeout: the relay opens; the LED blinks fast (lit at 1 010, dark at 1 110).
    board.step(1_010).expect("step");
    board.step(1_110).expect("step");
    // Pulse over at 1 510: power back; grace LED dark at 1 510 + ... (1510 % 1000 >= 500).
    board.step(1_510).expect("step");
    assert!(matches!(
        board.bridge().state(),
        firmware::State::Grace { .. }
    ));
    assert!(bus.sent().is_empty());
    done(board);
    assert_eq!(wd.0, 6, "the board watchdog is fed once per step");
}

#[test]
fn modbus_requests_are_answered_on_the_bus_and_switch_the_relay() {
    let host = Uart::default();
    let bus = Uart::default();
    let p = pins(
        &[T::set(Level::Low), T::set(Level::High)],
        &[T::set(Level::Low)],
        // Disarmed flash at 0, dark at 150, fenced pattern lit at 200.
        &[T::set(Level::High), T::set(Level::Low), T::set(Level::High)],
    );
    let mut board = Board::new(bridge(), p, host, bus.clone(), NoWatchdog);
    board.step(0).expect("step");
    let read = request(&[UNIT, 0x01, 0, 0, 0, 1]);
    bus.receive(&read);
    board.step(150).expect("step");
    assert_eq!(bus.sent(), request(&[UNIT, 0x01, 1, 1]));
    let off = request(&[UNIT, 0x05, 0, 0, 0, 0]);
    bus.receive(&off);
    board.step(200).expect("step");
    assert_eq!(bus.sent(), off, "write single coil echoes the request");
    assert_eq!(
        board.bridge().state(),
        firmware::State::Fenced { armed: false }
    );
    done(board);
}

#[test]
fn a_failed_uart_does_not_stop_the_timers_or_the_pins() {
    let host = Uart::default();
    let bus = Uart::default();
    let p = pins(
        &[T::set(Level::Low), T::set(Level::High)],
        &[T::set(Level::Low)],
        &[T::set(Level::High)],
    );
    let mut board = Board::new(bridge(), p, host.clone(), bus.clone(), NoWatchdog);
    host.receive(&Host::new().arm());
    board.step(0).expect("step");
    host.fail(Some(embedded_io::ErrorKind::BrokenPipe));
    bus.fail(Some(embedded_io::ErrorKind::Other));
    assert_eq!(
        board.step(1_000),
        Err(BoardError::HostUart(embedded_io::ErrorKind::BrokenPipe))
    );
    assert!(matches!(
        board.bridge().state(),
        firmware::State::Triggered { .. }
    ));
    host.fail(None);
    assert_eq!(
        board.step(1_050),
        Err(BoardError::BusUart(embedded_io::ErrorKind::Other))
    );
    done(board);
}

#[test]
fn a_failed_pin_is_reported_and_every_pin_is_written_again_next_step() {
    let host = Uart::default();
    let bus = Uart::default();
    let broken = MockError::Io(std::io::ErrorKind::Other);
    let p = pins(
        &[
            T::set(Level::Low).with_error(broken.clone()),
            T::set(Level::Low),
        ],
        &[T::set(Level::Low), T::set(Level::Low)],
        &[T::set(Level::High), T::set(Level::High)],
    );
    let mut board = Board::new(bridge(), p, host, bus, NoWatchdog);
    assert_eq!(
        board.step(0),
        Err(BoardError::Pin {
            pin: "power",
            kind: embedded_hal::digital::ErrorKind::Other
        })
    );
    board.step(10).expect("second try");
    board.step(20).expect("nothing changed");
    done(board);
}

/// A pin that records its writes in a log shared with the bus, to check their order.
struct LoggedPin(&'static str, Rc<RefCell<Vec<String>>>);

impl embedded_hal::digital::ErrorType for LoggedPin {
    type Error = core::convert::Infallible;
}

impl embedded_hal::digital::OutputPin for LoggedPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.1.borrow_mut().push(format!("{}=0", self.0));
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.1.borrow_mut().push(format!("{}=1", self.0));
        Ok(())
    }
}

#[test]
fn an_answer_leaves_only_after_the_relay_moved() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let pins = Pins {
        power: LoggedPin("power", log.clone()),
        reset: LoggedPin("reset", log.clone()),
        led: LoggedPin("led", log.clone()),
    };
    let host = Uart::default();
    let bus = Uart::default();
    bus.0.borrow_mut().order = Some(log.clone());
    let mut board = Board::new(bridge(), pins, host, bus.clone(), NoWatchdog);
    board.step(0).expect("step");
    log.borrow_mut().clear();
    // The echo of "power off" and the answer to the read right behind it, in one step.
    bus.receive(&request(&[UNIT, 0x05, 0, 0, 0, 0]));
    bus.receive(&request(&[UNIT, 0x01, 0, 0, 0, 1]));
    board.step(50).expect("step");
    let sent = bus.sent();
    assert_eq!(sent.len(), 8 + 6, "the echo and the read answer");
    assert_eq!(&sent[8..12], &[UNIT, 0x01, 1, 0], "reads power off");
    let order = log.borrow().clone();
    let power = order.iter().position(|e| e == "power=1");
    let tx = order.iter().position(|e| e == "tx");
    assert!(power.is_some() && power < tx, "{order:?}");
}
