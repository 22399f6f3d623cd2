//! Link drivers against real file descriptors: pty pairs as serial cables, UDP on loopback.
//! The test plays the peer node with the proto crate directly, so every byte on the wire is
//! under its control (noise, forgeries, replays).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use drivers::link::serial::{self, SerialError, SerialParams, SerialPort};
use drivers::link::udp::{self, UdpParams, UdpPort};
use drivers::link::{LinkCommon, LinkCounters, LinkEvent, LinkSender};
use proto::serial::{Deframer, MAX_ENCODED_LEN};
use proto::{Flags, Heartbeat, Key, NodeId, Role, View, FRAME_LEN};
use tokio::sync::{mpsc, watch};

const KEY: &[u8] = b"link-test-key-0123456789abcdef-0123";
const CLUSTER: u32 = 77;

fn node(n: u8) -> NodeId {
    NodeId::new(n).expect("test ids are 1..=32")
}

fn heartbeat(sender: u8, link: u8, incarnation: u32, sequence: u64) -> Heartbeat {
    Heartbeat {
        cluster_id: CLUSTER,
        sender: node(sender),
        link,
        role: Role::Standby,
        flags: Flags::default(),
        holder: None,
        prior: None,
        incarnation,
        sequence,
        epoch: 0,
        view: View::default(),
        seen_epoch: 0,
    }
}

fn encode(hb: &Heartbeat, key: &[u8]) -> [u8; FRAME_LEN] {
    let mut out = [0u8; FRAME_LEN];
    hb.encode(&Key::new(key), &mut out);
    out
}

fn serial_wire(hb: &Heartbeat, key: &[u8]) -> Vec<u8> {
    let mut w = [0u8; MAX_ENCODED_LEN];
    let n = proto::serial::encode(&encode(hb, key), &mut w);
    w[..n].to_vec()
}

fn common(
    link: u8,
    local: u8,
    peers: &[u8],
) -> (LinkCommon, mpsc::Receiver<LinkEvent>, Arc<LinkCounters>) {
    let (tx, rx) = mpsc::channel(64);
    let counters = Arc::new(LinkCounters::default());
    let c = LinkCommon {
        link,
        name: format!("link{link}"),
        local: node(local),
        peers: peers.iter().map(|&p| node(p)).collect(),
        cluster_id: CLUSTER,
        key: Arc::from(KEY),
        events: tx,
        counters: counters.clone(),
    };
    (c, rx, counters)
}

async fn next_frame(rx: &mut mpsc::Receiver<LinkEvent>) -> Heartbeat {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(LinkEvent::Frame { heartbeat, .. })) => return heartbeat,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("link closed its event channel"),
            Err(_) => panic!("no frame within 5 s"),
        }
    }
}

async fn next_transport(rx: &mut mpsc::Receiver<LinkEvent>) -> LinkEvent {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(LinkEvent::Frame { .. })) => continue,
            Ok(Some(ev)) => return ev,
            Ok(None) => panic!("link closed its event channel"),
            Err(_) => panic!("no transport event within 5 s"),
        }
    }
}

/// A pty pair whose slave is reachable through a symlink the test can re-point.
struct Pty {
    master: tokio::io::unix::AsyncFd<OwnedFd>,
    _slave: OwnedFd,
}

fn open_pty(link_path: &Path) -> Pty {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let mut t = nix::sys::termios::tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(pty.slave.as_fd(), nix::sys::termios::SetArg::TCSANOW, &t)
        .expect("tcsetattr");
    let name: PathBuf = nix::unistd::ttyname(pty.slave.as_fd()).expect("ttyname");
    let _ = std::fs::remove_file(link_path);
    std::os::unix::fs::symlink(&name, link_path).expect("symlink");
    let fl = nix::fcntl::fcntl(pty.master.as_fd(), nix::fcntl::FcntlArg::F_GETFL).expect("getfl");
    let fl = nix::fcntl::OFlag::from_bits_truncate(fl) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(pty.master.as_fd(), nix::fcntl::FcntlArg::F_SETFL(fl)).expect("setfl");
    // AsyncFd::new is deprecated for I/O-safety reasons that do not apply: the OwnedFd moves
    // into the AsyncFd and is closed only when it drops.
    #[allow(deprecated)]
    let master = tokio::io::unix::AsyncFd::with_interest(
        pty.master,
        tokio::io::Interest::READABLE | tokio::io::Interest::WRITABLE,
    )
    .expect("asyncfd");
    Pty {
        master,
        _slave: pty.slave,
    }
}

impl Pty {
    async fn write(&self, bytes: &[u8]) {
        let mut off = 0;
        while off < bytes.len() {
            let mut g = self.master.writable().await.expect("writable");
            match g.try_io(|fd| nix::unistd::write(fd, &bytes[off..]).map_err(std::io::Error::from))
            {
                Ok(Ok(n)) => off += n,
                Ok(Err(e)) => panic!("pty write: {e}"),
                Err(_) => continue,
            }
        }
    }

    /// Reads frames the link wrote, until one decodes or the time runs out.
    async fn read_frame(&self) -> Heartbeat {
        let mut d = Deframer::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let mut g = tokio::time::timeout_at(deadline, self.master.readable())
                .await
                .expect("a frame within 5 s")
                .expect("readable");
            let mut buf = [0u8; 256];
            match g.try_io(|fd| nix::unistd::read(fd, &mut buf).map_err(std::io::Error::from)) {
                Ok(Ok(n)) => {
                    for &b in &buf[..n] {
                        if let Some(Ok(frame)) = d.push(b) {
                            return Heartbeat::decode(&frame, &Key::new(KEY), CLUSTER)
                                .expect("the link sends valid frames");
                        }
                    }
                }
                Ok(Err(e)) => panic!("pty read: {e}"),
                Err(_) => continue,
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_link_exchanges_frames_and_counts_noise_forgeries_and_replays() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cable");
    let pty = open_pty(&path);
    let params = SerialParams {
        device: path.clone(),
        baud: 115_200,
    };
    let (c, mut events, counters) = common(0, 1, &[2]);
    let port = SerialPort::open(&params).expect("open pty slave");
    let (sender, outgoing) = LinkSender::new();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(serial::run(c, params.clone(), Some(port), outgoing, stop));
    assert_eq!(
        next_transport(&mut events).await,
        LinkEvent::TransportUp { link: 0 }
    );

    // A second opener is refused while the link holds the port.
    match SerialPort::open(&params) {
        Err(SerialError::Busy { device }) => assert_eq!(device, path),
        other => panic!("second open should be refused as busy, got {other:?}"),
    }

    // Outgoing: the link stamps its link id and keeps the sender's sequence.
    sender.send(heartbeat(1, 9, 3, 1));
    let out = pty.read_frame().await;
    assert_eq!(
        (out.sender, out.link, out.incarnation, out.sequence),
        (node(1), 0, 3, 1)
    );
    sender.send(heartbeat(1, 9, 3, 2));
    assert_eq!(pty.read_frame().await.sequence, 2);

    // Incoming: noise, then a frame; the frame decodes and the noise is counted.
    let mut bytes = vec![0x55, 0x13, 0x00];
    bytes.extend(serial_wire(&heartbeat(2, 0, 1, 1), KEY));
    pty.write(&bytes).await;
    assert_eq!(next_frame(&mut events).await.sequence, 1);
    // Forged (wrong key), replayed, and a long run of garbage (overrun), then a good frame.
    let mut bytes = serial_wire(
        &heartbeat(2, 0, 1, 2),
        b"wrong-key-wrong-key-wrong-key-0000",
    );
    bytes.extend(serial_wire(&heartbeat(2, 0, 1, 1), KEY));
    bytes.extend([0xAB; 300]);
    bytes.push(0);
    bytes.extend(serial_wire(&heartbeat(2, 1, 1, 5), KEY)); // sent on another link
    bytes.extend(serial_wire(&heartbeat(2, 0, 1, 2), KEY));
    pty.write(&bytes).await;
    assert_eq!(next_frame(&mut events).await.sequence, 2);
    let s = counters.snapshot();
    assert_eq!(s.frames_in, 2);
    assert_eq!(s.auth_failures, 1);
    assert_eq!(s.replays, 1);
    assert_eq!(s.misrouted, 1);
    assert_eq!(s.crc_errors, 1, "{s:?}");
    assert_eq!(s.resyncs, 1, "{s:?}");
    assert_eq!(s.frames_out, 2);

    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serial_link_reopens_after_unplug() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("usb-cable");
    let pty = open_pty(&path);
    let params = SerialParams {
        device: path.clone(),
        baud: 9600,
    };
    let (c, mut events, counters) = common(0, 1, &[2]);
    let (_sender, outgoing) = LinkSender::new();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(serial::run(c, params, None, outgoing, stop));
    assert_eq!(
        next_transport(&mut events).await,
        LinkEvent::TransportUp { link: 0 }
    );
    pty.write(&serial_wire(&heartbeat(2, 0, 1, 1), KEY)).await;
    next_frame(&mut events).await;

    // Unplug: the pty goes away entirely and its path with it.
    drop(pty);
    std::fs::remove_file(&path).expect("remove link");
    match next_transport(&mut events).await {
        LinkEvent::TransportDown { link: 0, reason } => assert!(!reason.is_empty()),
        other => panic!("expected TransportDown, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Replug under the same name.
    let pty = open_pty(&path);
    assert_eq!(
        next_transport(&mut events).await,
        LinkEvent::TransportUp { link: 0 }
    );
    pty.write(&serial_wire(&heartbeat(2, 0, 1, 2), KEY)).await;
    assert_eq!(next_frame(&mut events).await.sequence, 2);
    assert!(counters.snapshot().opens >= 2);

    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
}

async fn udp_pair(a: &str, b: &str) {
    let std_b = std::net::UdpSocket::bind(b).expect("bind peer");
    let peer_addr = std_b.local_addr().expect("addr");
    let a_params = UdpParams {
        bind: a.parse().expect("addr"),
        interface: None,
        peers: vec![peer_addr],
        multicast: None,
    };
    let port = UdpPort::open(&a_params).expect("open");
    let a_addr = port.local_addr().expect("addr");
    let (c, mut events, counters) = common(1, 1, &[2]);
    let (sender, outgoing) = LinkSender::new();
    let (stop_tx, stop) = watch::channel(false);
    let task = tokio::spawn(udp::run(c, port, outgoing, stop));
    assert_eq!(
        next_transport(&mut events).await,
        LinkEvent::TransportUp { link: 1 }
    );

    sender.send(heartbeat(1, 0, 1, 1));
    std_b
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 128];
    let n = std_b.recv(&mut buf).expect("frame from the link");
    let got = Heartbeat::decode(&buf[..n], &Key::new(KEY), CLUSTER).expect("valid");
    assert_eq!((got.sender, got.link, got.sequence), (node(1), 1, 1));

    let send = |bytes: &[u8]| {
        std_b.send_to(bytes, a_addr).expect("send");
    };
    send(&encode(&heartbeat(2, 1, 4, 10), KEY));
    assert_eq!(next_frame(&mut events).await.sequence, 10);
    send(&encode(&heartbeat(2, 1, 4, 10), KEY)); // replay
    send(&encode(&heartbeat(2, 1, 3, 11), KEY)); // older incarnation
    send(&encode(
        &heartbeat(2, 1, 4, 11),
        b"forged-forged-forged-forged-forged",
    ));
    send(&encode(&heartbeat(7, 1, 4, 11), KEY)); // not a peer on this link
    let mut foreign = heartbeat(2, 1, 4, 11);
    foreign.cluster_id = CLUSTER + 1;
    send(&encode(&foreign, KEY));
    send(&[1, 2, 3]); // truncated
    send(&[0u8; FRAME_LEN + 40]); // oversized
    send(&encode(&heartbeat(1, 1, 4, 11), KEY)); // claims to be this node
    send(&encode(&heartbeat(2, 1, 4, 11), KEY));
    assert_eq!(next_frame(&mut events).await.sequence, 11);
    let s = counters.snapshot();
    assert_eq!(
        (
            s.frames_in,
            s.replays,
            s.auth_failures,
            s.misrouted,
            s.foreign_cluster,
            s.malformed,
            s.own_frames
        ),
        (2, 2, 1, 1, 1, 2, 1),
        "{s:?}"
    );
    stop_tx.send_replace(true);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("stops")
        .expect("no panic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_link_ipv4() {
    udp_pair("127.0.0.1:0", "127.0.0.1:0").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_link_ipv6() {
    udp_pair("[::1]:0", "[::1]:0").await;
}

/// Two nodes on one multicast group and port, on the loopback interface: each receives the
/// other's frames, and its own looped-back frames are counted and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_multicast_group_on_loopback() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("free port")
        .port();
    let group: std::net::IpAddr = "239.255.77.1".parse().expect("group");
    let params = UdpParams {
        bind: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        interface: None,
        peers: vec![],
        multicast: Some(group),
    };
    let a = UdpPort::open(&params).expect("open a");
    let b = UdpPort::open(&params).expect("a second member binds the same group and port");
    let (ca, mut ea, counters_a) = common(1, 1, &[2]);
    let (cb, mut eb, counters_b) = common(1, 2, &[1]);
    let (sa, oa) = LinkSender::new();
    let (sb, ob) = LinkSender::new();
    let (stop_tx, stop) = watch::channel(false);
    let ta = tokio::spawn(udp::run(ca, a, oa, stop.clone()));
    let tb = tokio::spawn(udp::run(cb, b, ob, stop));
    sa.send(heartbeat(1, 0, 1, 1));
    assert_eq!(next_frame(&mut eb).await.sender, node(1));
    sb.send(heartbeat(2, 0, 1, 1));
    assert_eq!(next_frame(&mut ea).await.sender, node(2));
    assert!(
        counters_a.snapshot().own_frames >= 1,
        "{:?}",
        counters_a.snapshot()
    );
    assert_eq!(counters_b.snapshot().frames_in, 1);
    stop_tx.send_replace(true);
    for t in [ta, tb] {
        tokio::time::timeout(Duration::from_secs(5), t)
            .await
            .expect("stops")
            .expect("no panic");
    }
}
