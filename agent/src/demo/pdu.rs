//! A switched PDU that exists only inside the demo, spoken to over real Modbus TCP.
//!
//! The demo must show fencing as it happens on a real rack: the surviving agent's Modbus driver
//! connects, writes the dead node's outlet off and reads it back until it reads off. Faking that
//! inside the agent would prove nothing, so the demo serves the protocol itself (tokio-modbus's
//! server) on 127.0.0.1 and turns each outlet into the power of one agent process.
//!
//! # Contract
//!
//! - Coil `i` is outlet `i`: 1 = powered, 0 = off. All outlets start powered.
//! - FC1 (read coils) answers the stored states; FC5 and FC15 (write coils) store them and
//!   report every write, with the instant it was served, on a bounded channel; the demo then
//!   kills (off) or starts (on) the agent behind the outlet. A write is reported even when it
//!   changes nothing, so the demo can stamp the moment a fence arrived; acting on it is
//!   idempotent.
//! - An address outside the outlets is exception 2 (illegal data address), any other function
//!   exception 1 (illegal function), as a real PDU answers. Any unit id is served, as a TCP PDU
//!   without a gateway behind it does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_modbus::server::tcp::{accept_tcp_connection, Server};
use tokio_modbus::server::Service;
use tokio_modbus::{ExceptionCode, Request, Response};

/// What can go wrong setting up the PDU.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PduError {
    /// The listening socket could not be set up.
    #[error("simulated PDU: cannot listen on {address}: {source}")]
    Listen {
        /// Address asked for.
        address: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// One write to an outlet, as served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PowerEvent {
    /// Outlet (coil address).
    pub(crate) outlet: u16,
    /// Written on (true) or off.
    pub(crate) on: bool,
    /// Whether the outlet's state changed.
    pub(crate) changed: bool,
    /// When the write was served.
    pub(crate) at: Instant,
}

/// The running simulator; dropping it stops serving.
#[derive(Debug)]
pub(crate) struct Pdu {
    address: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Pdu {
    /// Serves `outlets` powered outlets on a free port of 127.0.0.1, reporting writes on
    /// `events`. Must be called inside a tokio runtime.
    pub(crate) async fn start(
        outlets: u16,
        events: mpsc::Sender<PowerEvent>,
    ) -> Result<Self, PduError> {
        let listen = |source| PduError::Listen {
            address: LISTEN.to_owned(),
            source,
        };
        let listener = std::net::TcpListener::bind(LISTEN).map_err(listen)?;
        Self::start_on(listener, outlets, events)
    }

    /// As [`Pdu::start`], on a socket already listening (in the demo's switch namespace).
    pub(crate) fn start_on(
        listener: std::net::TcpListener,
        outlets: u16,
        events: mpsc::Sender<PowerEvent>,
    ) -> Result<Self, PduError> {
        let address = listener
            .local_addr()
            .map_or_else(|_| "?".to_owned(), |a| a.to_string());
        let listen = |source| PduError::Listen {
            address: address.clone(),
            source,
        };
        listener.set_nonblocking(true).map_err(&listen)?;
        let listener = TcpListener::from_std(listener).map_err(&listen)?;
        let address = listener.local_addr().map_err(&listen)?;
        let shared = Arc::new(Shared::new(outlets, events));
        let service = PduService {
            shared: shared.clone(),
        };
        let task = tokio::spawn(async move {
            let server = Server::new(listener);
            let on_connected = move |stream, peer| {
                let service = service.clone();
                async move { accept_tcp_connection(stream, peer, move |_| Ok(Some(service.clone()))) }
            };
            let on_error = |e: std::io::Error| {
                tracing::debug!(error = %e, "simulated PDU: a client connection failed");
            };
            if let Err(e) = server.serve(&on_connected, on_error).await {
                tracing::warn!(error = %e, "simulated PDU stopped serving");
            }
        });
        Ok(Self {
            address,
            shared,
            task,
        })
    }

    /// Where it listens.
    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    /// Whether outlet `outlet` is powered (`None` for an outlet it does not have).
    pub(crate) fn powered(&self, outlet: u16) -> Option<bool> {
        self.shared.coil(outlet)
    }
}

impl Drop for Pdu {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The PDU's state behind every connection.
#[derive(Debug)]
struct Shared {
    coils: Mutex<Vec<bool>>,
    events: mpsc::Sender<PowerEvent>,
}

impl Shared {
    fn new(outlets: u16, events: mpsc::Sender<PowerEvent>) -> Self {
        Self {
            coils: Mutex::new(vec![true; usize::from(outlets)]),
            events,
        }
    }

    fn coil(&self, outlet: u16) -> Option<bool> {
        let coils = self.coils.lock().ok()?;
        coils.get(usize::from(outlet)).copied()
    }

    /// Serves one request.
    fn handle(&self, request: Request<'static>) -> Result<Response, ExceptionCode> {
        let Ok(mut coils) = self.coils.lock() else {
            return Err(ExceptionCode::ServerDeviceFailure);
        };
        match request {
            Request::ReadCoils(address, quantity) => {
                let range = span(&coils, address, quantity)?;
                Ok(Response::ReadCoils(coils[range].to_vec()))
            }
            Request::WriteSingleCoil(address, on) => {
                let range = span(&coils, address, 1)?;
                self.write(&mut coils[range], address, &[on]);
                Ok(Response::WriteSingleCoil(address, on))
            }
            Request::WriteMultipleCoils(address, values) => {
                let quantity =
                    u16::try_from(values.len()).map_err(|_| ExceptionCode::IllegalDataValue)?;
                let range = span(&coils, address, quantity)?;
                self.write(&mut coils[range], address, &values);
                Ok(Response::WriteMultipleCoils(address, quantity))
            }
            _ => Err(ExceptionCode::IllegalFunction),
        }
    }

    fn write(&self, coils: &mut [bool], first: u16, values: &[bool]) {
        let at = Instant::now();
        for ((coil, &on), outlet) in coils.iter_mut().zip(values).zip(first..) {
            let changed = *coil != on;
            *coil = on;
            let event = PowerEvent {
                outlet,
                on,
                changed,
                at,
            };
            if self.events.try_send(event).is_err() {
                tracing::warn!(
                    outlet,
                    on,
                    "simulated PDU: the demo is not taking power events"
                );
            }
        }
    }
}

/// The coils `address .. address + quantity`, or exception 2 when any is out of range.
fn span(
    coils: &[bool],
    address: u16,
    quantity: u16,
) -> Result<std::ops::Range<usize>, ExceptionCode> {
    let start = usize::from(address);
    let end = start + usize::from(quantity);
    if quantity == 0 || end > coils.len() {
        return Err(ExceptionCode::IllegalDataAddress);
    }
    Ok(start..end)
}

/// One service per connection, all sharing the PDU's state.
#[derive(Debug, Clone)]
struct PduService {
    shared: Arc<Shared>,
}

impl Service for PduService {
    type Request = Request<'static>;
    type Response = Response;
    type Exception = ExceptionCode;
    type Future = std::future::Ready<Result<Response, ExceptionCode>>;

    fn call(&self, request: Self::Request) -> Self::Future {
        std::future::ready(self.shared.handle(request))
    }
}

/// Loopback only, any free port: the demo's traffic never leaves the machine.
const LISTEN: &str = "127.0.0.1:0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coils_are_outlets_and_writes_are_reported() {
        let (tx, mut rx) = mpsc::channel(8);
        let pdu = Shared::new(2, tx);
        assert_eq!(
            pdu.handle(Request::ReadCoils(0, 2)),
            Ok(Response::ReadCoils(vec![true, true]))
        );
        assert_eq!(
            pdu.handle(Request::WriteSingleCoil(0, false)),
            Ok(Response::WriteSingleCoil(0, false))
        );
        let event = rx.try_recv().expect("the write is reported");
        assert_eq!((event.outlet, event.on, event.changed), (0, false, true));
        assert_eq!(
            pdu.handle(Request::ReadCoils(0, 2)),
            Ok(Response::ReadCoils(vec![false, true]))
        );
        // Writing the same state again is reported, as unchanged.
        assert!(pdu.handle(Request::WriteSingleCoil(0, false)).is_ok());
        let again = rx.try_recv().expect("reported");
        assert!(!again.changed);
        assert!(pdu
            .handle(Request::WriteMultipleCoils(0, vec![true, false].into()))
            .is_ok());
        assert_eq!(pdu.coil(0), Some(true));
        assert_eq!(pdu.coil(1), Some(false));
    }

    #[test]
    fn unknown_outlets_and_functions_are_modbus_exceptions() {
        let (tx, _rx) = mpsc::channel(8);
        let pdu = Shared::new(2, tx);
        assert_eq!(
            pdu.handle(Request::ReadCoils(1, 2)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            pdu.handle(Request::WriteSingleCoil(2, true)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            pdu.handle(Request::ReadCoils(0, 0)),
            Err(ExceptionCode::IllegalDataAddress)
        );
        assert_eq!(
            pdu.handle(Request::ReadHoldingRegisters(0, 1)),
            Err(ExceptionCode::IllegalFunction)
        );
        assert_eq!(pdu.coil(5), None);
    }

    #[tokio::test]
    async fn the_fence_driver_switches_an_outlet_over_tcp() {
        use drivers::fence::modbus::{ModbusParams, ModbusTransport, Outlet, OutletControl};
        use drivers::fence::{FenceDevice as _, PowerState};
        let (tx, mut rx) = mpsc::channel(8);
        let pdu = Pdu::start(2, tx).await.expect("pdu");
        let outlet = |address| Outlet {
            unit: 1,
            control: OutletControl::Coil { address },
        };
        let params = ModbusParams {
            transport: ModbusTransport::Tcp {
                address: pdu.address(),
            },
            outlets: [
                ("alpha".to_owned(), vec![outlet(0)]),
                ("beta".to_owned(), vec![outlet(1)]),
            ]
            .into_iter()
            .collect(),
            request_timeout: std::time::Duration::from_secs(1),
            poll_interval: std::time::Duration::from_millis(20),
            off_time: std::time::Duration::from_millis(50),
        };
        let mut device = drivers::fence::modbus::ModbusDevice::new("pdu", params).expect("driver");
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        device.off("beta", deadline).await.expect("off");
        assert_eq!(pdu.powered(1), Some(false));
        assert_eq!(pdu.powered(0), Some(true));
        let event = rx.recv().await.expect("event");
        assert_eq!((event.outlet, event.on), (1, false));
        assert_eq!(
            device.status("beta", deadline).await.expect("status"),
            PowerState::Off
        );
    }
}
