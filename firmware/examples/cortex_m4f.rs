//! The bridge on a Cortex-M4F: an STM32F411 board ("Black Pill") at its 16 MHz reset clock.
//!
//! Wiring (see firmware/README.md): USART1 (PA9 TX, PA10 RX) to the host's heartbeat cable,
//! USART2 (PA2 TX, PA3 RX) to an RS-485 transceiver on the fence bus, PB0 to the power relay's
//! driver, PB1 to the reset header's optocoupler, PC13 to the on-board LED (lit when low, so
//! it is inverted here). The MCU's independent watchdog (IWDG, 512 ms at its reset values)
//! restarts a hung bridge.
//!
//! This file is the board support for that one chip: a few registers poked directly, so that
//! the example builds without a HAL crate and shows what the logic costs in flash and RAM.
//! A product would use the chip's HAL, whose pins and UARTs implement the same traits.
//!
//! Build: `cargo build -p firmware --release --target thumbv7em-none-eabihf --features
//! cortex-m --example cortex_m4f`. The key below is a placeholder: a product provisions the
//! cluster's key into flash, never into the source.
#![no_std]
#![no_main]

use core::convert::Infallible;
use core::panic::PanicInfo;
use core::ptr::{read_volatile, write_volatile};

use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::entry;
use firmware::board::Pins;
use firmware::{Board, Bridge, Config, TriggerAction, Watchdog};
use proto::{Key, NodeId};

#[entry]
fn main() -> ! {
    let Some(core) = cortex_m::Peripherals::take() else {
        halt()
    };
    let mut syst = core.SYST;
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(CLOCK_HZ / 1000 - 1);
    syst.clear_current();
    syst.enable_counter();

    init_clocks_and_pins();
    let config = Config {
        action: TriggerAction::PowerCycle,
        ..Config::new(Key::new(KEY), CLUSTER_ID, HOST)
    };
    let Ok(bridge) = Bridge::new(config) else {
        halt()
    };
    let pins = Pins {
        power: Pin {
            port: GPIOB,
            bit: 0,
            inverted: false,
        },
        reset: Pin {
            port: GPIOB,
            bit: 1,
            inverted: false,
        },
        led: Pin {
            port: GPIOC,
            bit: 13,
            inverted: true,
        },
    };
    let mut board = Board::new(bridge, pins, Uart(USART1), Uart(USART2), Iwdg::start());
    let mut now_ms: u64 = 0;
    loop {
        if syst.has_wrapped() {
            now_ms += 1;
        }
        // Errors are counted by the core's registers and retried at the next step; there is
        // nobody to tell on this board.
        let _ = board.step(now_ms);
        while board.poll_event().is_some() {}
    }
}

/// A GPIO output through the port's bit set/reset register.
struct Pin {
    port: usize,
    bit: u32,
    inverted: bool,
}

impl embedded_hal::digital::ErrorType for Pin {
    type Error = Infallible;
}

impl embedded_hal::digital::OutputPin for Pin {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.write(self.inverted);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.write(!self.inverted);
        Ok(())
    }
}

impl Pin {
    fn write(&self, high: bool) {
        let shift = if high { self.bit } else { self.bit + 16 };
        poke(self.port + GPIO_BSRR, 1 << shift);
    }
}

/// A USART, polled.
struct Uart(usize);

impl embedded_io::ErrorType for Uart {
    type Error = Infallible;
}

impl embedded_io::ReadReady for Uart {
    fn read_ready(&mut self) -> Result<bool, Infallible> {
        Ok(peek(self.0 + USART_SR) & SR_RXNE != 0)
    }
}

impl embedded_io::Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let mut n = 0;
        while n < buf.len() && peek(self.0 + USART_SR) & SR_RXNE != 0 {
            buf[n] = (peek(self.0 + USART_DR) & 0xFF) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl embedded_io::Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &b in buf {
            while peek(self.0 + USART_SR) & SR_TXE == 0 {}
            poke(self.0 + USART_DR, u32::from(b));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while peek(self.0 + USART_SR) & SR_TC == 0 {}
        Ok(())
    }
}

/// The independent watchdog: once started it cannot be stopped, which is the point.
struct Iwdg;

impl Iwdg {
    fn start() -> Self {
        poke(IWDG_KR, 0xCCCC);
        Self
    }
}

impl Watchdog for Iwdg {
    fn feed(&mut self) {
        poke(IWDG_KR, 0xAAAA);
    }
}

fn init_clocks_and_pins() {
    // GPIOA, GPIOB, GPIOC; USART2 on APB1, USART1 on APB2.
    poke(RCC + 0x30, peek(RCC + 0x30) | 0b111);
    poke(RCC + 0x40, peek(RCC + 0x40) | (1 << 17));
    poke(RCC + 0x44, peek(RCC + 0x44) | (1 << 4));
    // PB0, PB1, PC13 outputs.
    poke(GPIOB, (peek(GPIOB) & !0b1111) | 0b0101);
    poke(GPIOC, (peek(GPIOC) & !(0b11 << 26)) | (0b01 << 26));
    // PA2, PA3, PA9, PA10 alternate function 7 (USART).
    let moder = peek(GPIOA) & !((0b11 << 4) | (0b11 << 6) | (0b11 << 18) | (0b11 << 20));
    poke(
        GPIOA,
        moder | (0b10 << 4) | (0b10 << 6) | (0b10 << 18) | (0b10 << 20),
    );
    poke(GPIOA + 0x20, (peek(GPIOA + 0x20) & !0xFF00) | 0x7700);
    poke(GPIOA + 0x24, (peek(GPIOA + 0x24) & !0x0FF0) | 0x0770);
    for usart in [USART1, USART2] {
        poke(usart + USART_BRR, CLOCK_HZ / BAUD);
        // UE, TE, RE.
        poke(usart + USART_CR1, (1 << 13) | (1 << 3) | (1 << 2));
    }
}

fn peek(address: usize) -> u32 {
    // SAFETY: every address passed here is a 4-byte-aligned peripheral register of the
    // STM32F411 listed below, readable at any time once its clock is enabled.
    unsafe { read_volatile(address as *const u32) }
}

fn poke(address: usize, value: u32) {
    // SAFETY: as in `peek`; this program is the only writer of these registers, and nothing
    // runs concurrently (no interrupts are enabled).
    unsafe { write_volatile(address as *mut u32, value) }
}

fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    // The IWDG is no longer fed, so the MCU restarts; the host's relay stays closed meanwhile
    // (normally-closed contact).
    halt()
}

const KEY: &[u8] = b"placeholder: provision the cluster key";
const CLUSTER_ID: u32 = 1;
const HOST: NodeId = match NodeId::new(1) {
    Some(id) => id,
    None => panic!("node 1 is valid"),
};
const CLOCK_HZ: u32 = 16_000_000;
const BAUD: u32 = 9_600;
const RCC: usize = 0x4002_3800;
const GPIOA: usize = 0x4002_0000;
const GPIOB: usize = 0x4002_0400;
const GPIOC: usize = 0x4002_0800;
const GPIO_BSRR: usize = 0x18;
const USART1: usize = 0x4001_1000;
const USART2: usize = 0x4000_4400;
const USART_SR: usize = 0x00;
const USART_DR: usize = 0x04;
const USART_BRR: usize = 0x08;
const USART_CR1: usize = 0x0C;
const SR_RXNE: u32 = 1 << 5;
const SR_TC: u32 = 1 << 6;
const SR_TXE: u32 = 1 << 7;
/// The independent watchdog's key register (at the start of its block).
const IWDG_KR: usize = 0x4000_3000;
