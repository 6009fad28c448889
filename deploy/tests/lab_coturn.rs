//! A real STUN server in the lab (needs root and Debian's coturn; CI runs
//! as root, deploy/test-deps.sh installs coturn): coturn's `turnserver
//! --stun-only` on two internet addresses ([`Lab::start_coturn`]) tells a
//! host behind each NAT kind its server-reflexive address, and coturn's own
//! RFC 5780 client, `turnutils_natdiscovery`, classifies the mapping of the
//! Cone and Symmetric routers. Every wait is bounded.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ota_deploy::lab::{in_netns, Coturn, Host, Lab, Router, RouterKind};
use stun_rs::attributes::stun::XorMappedAddress;
use stun_rs::methods::BINDING;
use stun_rs::{MessageClass, MessageDecoderBuilder, TransactionId};

/// How long one binding answer may take (inside one machine).
const ANSWER: Duration = Duration::from_secs(2);
/// How long `turnutils_natdiscovery` may run before it is killed.
const NATDISCOVERY_TIMEOUT: Duration = Duration::from_secs(30);

/// A lab with coturn, a Cone and a Symmetric router, one host behind each.
fn lab() -> (Lab, Coturn, [(Router, Host); 2]) {
    let mut lab = Lab::new().expect("lab (needs root)");
    let coturn = lab.start_coturn().expect("coturn STUN server (Debian package coturn)");
    let mut pair = |kind| {
        let router = lab.add_router(kind).expect("router");
        let host = lab.add_host(&router).expect("host");
        (router, host)
    };
    let cone = pair(RouterKind::Cone);
    let symmetric = pair(RouterKind::Symmetric);
    (lab, coturn, [cone, symmetric])
}

/// The server-reflexive address coturn reports to a binding request from
/// `host` (an ephemeral UDP port).
fn reflexive(host: &Host, server: SocketAddrV4) -> SocketAddr {
    let sock = in_netns(&host.ns, || UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)))
        .expect("enter namespace")
        .expect("bind");
    sock.set_read_timeout(Some(ANSWER)).expect("timeout");
    let id = TransactionId::default();
    sock.send_to(&ota_proto::stun::binding_request(id), server)
        .expect("send");
    let mut buf = [0u8; 1500];
    let (n, from) = sock
        .recv_from(&mut buf)
        .unwrap_or_else(|e| panic!("no binding answer from {server} to {}: {e}", host.ns));
    assert_eq!(from, SocketAddr::V4(server));
    let (msg, _) = MessageDecoderBuilder::default()
        .build()
        .decode(&buf[..n])
        .unwrap_or_else(|e| panic!("coturn's answer does not decode: {:?}", e.0));
    assert_eq!(msg.class(), MessageClass::SuccessResponse);
    assert_eq!(msg.method(), BINDING);
    assert_eq!(msg.transaction_id(), &id);
    *msg.get::<XorMappedAddress>()
        .expect("XOR-MAPPED-ADDRESS")
        .as_xor_mapped_address()
        .expect("XOR-MAPPED-ADDRESS")
        .socket_address()
}

#[test]
fn coturn_reports_each_routers_public_address() {
    let (_lab, coturn, routers) = lab();
    for (router, host) in &routers {
        let seen = reflexive(host, coturn.endpoint());
        assert_eq!(
            seen.ip(),
            std::net::IpAddr::V4(router.public),
            "{} router: coturn saw {seen}",
            router.kind.name()
        );
        // The other address answers with the same public address too.
        let other = reflexive(host, SocketAddrV4::new(coturn.other, ota_deploy::lab::STUN_PORT));
        assert_eq!(other.ip(), std::net::IpAddr::V4(router.public));
    }
}

/// `turnutils_natdiscovery` (Debian package coturn), or a panic naming it.
fn natdiscovery() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/local/bin"].map(PathBuf::from))
        .map(|d| d.join("turnutils_natdiscovery"))
        .find(|p| p.is_file())
        .expect("`turnutils_natdiscovery` not found: install the Debian package coturn (deploy/test-deps.sh does)")
}

/// Runs `turnutils_natdiscovery -m <server>` inside `ns`, killed after
/// [`NATDISCOVERY_TIMEOUT`]; its stdout and stderr together.
fn run_natdiscovery(ns: &str, server: Ipv4Addr) -> String {
    let program = natdiscovery();
    let out_dir = tempfile::tempdir().expect("temp dir");
    let out_path = out_dir.path().join("out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(&program)
        .args(["-m", "-p", &ota_deploy::lab::STUN_PORT.to_string(), &server.to_string()])
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("clone"))
        .stderr(out)
        .spawn()
        .expect("start turnutils_natdiscovery");
    let deadline = Instant::now() + NATDISCOVERY_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&out_path).unwrap_or_default();
    match status {
        Some(_) => text,
        None => panic!("turnutils_natdiscovery in {ns} ran over {NATDISCOVERY_TIMEOUT:?}; output:\n{text}"),
    }
}

/// The mapping verdict line of `turnutils_natdiscovery -m`, e.g.
/// `NAT with Endpoint Independent Mapping!`, or `None`.
fn mapping_verdict(output: &str) -> Option<String> {
    output
        .lines()
        .map(str::trim)
        .find(|l| l.contains("Mapping") && (l.starts_with("NAT with") || l.starts_with("No NAT")))
        .map(str::to_string)
}

#[test]
fn natdiscovery_classifies_cone_and_symmetric_mappings() {
    let (_lab, coturn, routers) = lab();
    for (router, host) in &routers {
        let output = run_natdiscovery(&host.ns, coturn.primary);
        println!(
            "turnutils_natdiscovery -m behind the {} router:\n{output}",
            router.kind.name()
        );
        let verdict = mapping_verdict(&output).unwrap_or_else(|| panic!("no mapping verdict in the output:\n{output}"));
        let independent = verdict.to_ascii_lowercase().contains("endpoint independent mapping");
        match router.kind {
            RouterKind::Cone => assert!(
                independent && verdict.starts_with("NAT with"),
                "Cone: expected endpoint-independent mapping behind a NAT, got {verdict:?}; output:\n{output}"
            ),
            _ => assert!(
                !independent && verdict.starts_with("NAT with"),
                "Symmetric: expected a dependent mapping, got {verdict:?}; output:\n{output}"
            ),
        }
    }
}
