//! The lab's shaped links measured from the outside (needs root; CI runs
//! as root): TCP rates through tbf, UDP round trips and loss through vde's
//! wirefilter, between a host behind a router and a server in the lab's
//! internet. All traffic stays inside the lab's namespaces; every wait is
//! bounded; the lab's drop removes everything.

use std::io::{Read, Write};
use std::net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use ota_deploy::lab::{in_netns, Host, Lab, RouterKind, WanLink};

/// Upper bound for any single transfer.
const TRANSFER_LIMIT: Duration = Duration::from_secs(15);

/// Which way a transfer goes.
#[derive(Debug, Clone, Copy)]
enum Dir {
    /// Host → internet server.
    Up,
    /// Internet server → host.
    Down,
}

/// Sends `bytes` over TCP between `host` and a server on a fresh internet
/// address; the rate the receiver saw, bits per second (first byte to
/// EOF, so the handshake does not count).
fn tcp_rate(lab: &mut Lab, host: &Host, dir: Dir, bytes: usize) -> f64 {
    let addr = lab.add_internet_address().expect("internet address");
    let inet = lab.internet_ns().to_string();
    let listener = in_netns(&inet, || TcpListener::bind(SocketAddrV4::new(addr, 0)))
        .expect("enter internet")
        .expect("bind server");
    let server_addr = listener.local_addr().expect("addr");
    let client = in_netns(&host.ns, || {
        TcpStream::connect_timeout(&server_addr, Duration::from_secs(5))
    })
    .expect("enter host")
    .expect("connect");
    listener.set_nonblocking(false).expect("blocking");
    let (server, _) = listener.accept().expect("accept");
    let (mut sender, mut receiver) = match dir {
        Dir::Up => (client, server),
        Dir::Down => (server, client),
    };
    sender.set_write_timeout(Some(TRANSFER_LIMIT)).expect("timeout");
    receiver.set_read_timeout(Some(TRANSFER_LIMIT)).expect("timeout");
    let writer = std::thread::spawn(move || {
        let chunk = vec![0x5au8; 64 * 1024];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len());
            sender.write_all(&chunk[..n]).expect("send");
            left -= n;
        }
        // Dropping `sender` closes the connection: EOF at the receiver.
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0usize;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + TRANSFER_LIMIT;
    loop {
        let n = receiver.read(&mut buf).expect("receive");
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        got += n;
        assert!(Instant::now() < deadline, "transfer took over {TRANSFER_LIMIT:?}");
    }
    let elapsed = first.expect("some data").elapsed();
    writer.join().expect("writer");
    assert_eq!(got, bytes, "every byte arrives");
    got as f64 * 8.0 / elapsed.as_secs_f64()
}

/// A UDP echo server on a fresh internet address, answering until the
/// returned socket's peer stops (a thread bounded by `for_how_long`).
fn echo_server(lab: &mut Lab, for_how_long: Duration) -> SocketAddrV4 {
    let addr = lab.add_internet_address().expect("internet address");
    let inet = lab.internet_ns().to_string();
    let sock = in_netns(&inet, || UdpSocket::bind(SocketAddrV4::new(addr, 7)))
        .expect("enter internet")
        .expect("bind echo");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let end = Instant::now() + for_how_long;
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while Instant::now() < end {
            if let Ok((n, from)) = sock.recv_from(&mut buf) {
                let _ = sock.send_to(&buf[..n], from);
            }
        }
    });
    SocketAddrV4::new(addr, 7)
}

/// Sends `probes` numbered UDP probes from `host` to `server`, each waiting
/// up to `wait` for its own echo; the round trips of those that came back.
fn udp_round_trips(host: &Host, server: SocketAddrV4, probes: u32, wait: Duration) -> Vec<Duration> {
    let sock = in_netns(&host.ns, || UdpSocket::bind("0.0.0.0:0"))
        .expect("enter host")
        .expect("bind");
    sock.connect(server).expect("connect");
    let mut rtts = Vec::new();
    let mut buf = [0u8; 64];
    for seq in 0..probes {
        let sent = Instant::now();
        sock.send(&seq.to_be_bytes()).expect("send");
        let deadline = sent + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            sock.set_read_timeout(Some(left)).expect("timeout");
            match sock.recv(&mut buf) {
                // A late echo of an earlier probe is skipped.
                Ok(4) if buf[..4] == seq.to_be_bytes() => {
                    rtts.push(sent.elapsed());
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    }
    rtts
}

#[test]
fn tbf_shapes_each_direction_of_a_cone_router() {
    let mut lab = Lab::new().expect("lab");
    let link = WanLink {
        up_bps: Some(8_000_000),
        down_bps: Some(40_000_000),
        ..WanLink::default()
    };
    let shaped = lab.add_router_with(RouterKind::Cone, &link).expect("router");
    let host = lab.add_host(&shaped).expect("host");
    let plain = lab.add_router(RouterKind::Cone).expect("router");
    let plain_host = lab.add_host(&plain).expect("host");

    let up = tcp_rate(&mut lab, &host, Dir::Up, 3_000_000);
    let down = tcp_rate(&mut lab, &host, Dir::Down, 12_000_000);
    let plain_up = tcp_rate(&mut lab, &plain_host, Dir::Up, 40_000_000);
    eprintln!(
        "up {:.2} Mbit/s (8), down {:.2} Mbit/s (40), unshaped up {:.0} Mbit/s",
        up / 1e6,
        down / 1e6,
        plain_up / 1e6
    );
    assert!((up / 8e6 - 1.0).abs() < 0.25, "up {up} bit/s, not 8 Mbit/s ± 25 %");
    assert!(
        (down / 40e6 - 1.0).abs() < 0.25,
        "down {down} bit/s, not 40 Mbit/s ± 25 %"
    );
    assert!(
        plain_up > 5.0 * 40e6,
        "an unshaped WAN is much faster: {plain_up} bit/s"
    );
}

#[test]
fn wirefilter_delays_each_way() {
    let mut lab = Lab::new().expect("lab");
    let link = WanLink {
        delay_ms: 20,
        ..WanLink::default()
    };
    let router = lab.add_router_with(RouterKind::Cone, &link).expect("router");
    let host = lab.add_host(&router).expect("host");
    let server = echo_server(&mut lab, Duration::from_secs(10));
    let mut rtts = udp_round_trips(&host, server, 20, Duration::from_millis(500));
    assert_eq!(rtts.len(), 20, "no loss configured");
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    eprintln!(
        "round trips {:?} .. {:?}, median {median:?}",
        rtts[0],
        rtts[rtts.len() - 1]
    );
    assert!(
        median >= Duration::from_millis(38) && median < Duration::from_millis(80),
        "median round trip {median:?} for 20 ms each way"
    );
}

#[test]
fn wirefilter_loses_packets() {
    let mut lab = Lab::new().expect("lab");
    let link = WanLink {
        loss_pct: 20.0,
        ..WanLink::default()
    };
    let router = lab.add_router_with(RouterKind::Cone, &link).expect("router");
    let host = lab.add_host(&router).expect("host");
    let server = echo_server(&mut lab, Duration::from_secs(30));
    let probes = 200;
    let rtts = udp_round_trips(&host, server, probes, Duration::from_millis(100));
    let failed = probes as usize - rtts.len();
    eprintln!("{failed} of {probes} round trips lost (expected about 36 %)");
    assert!(
        (40..=120).contains(&failed),
        "{failed} of {probes} lost, not 20..60 % for 20 % each way"
    );
}
