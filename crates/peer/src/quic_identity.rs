//! A device's QUIC identity and certificate pinning: a self-signed
//! certificate per device (`rcgen`), and rustls verifiers that accept
//! exactly the certificates whose SHA-256 fingerprint
//! ([`CertFingerprint`]) the tracker handed out, on both sides (the dialing
//! side pins the server; the accepting side requires a client certificate
//! and accepts only pinned ones). No CA, no trust on first use: a device
//! talks QUIC only to devices that the tracker introduced, and the TLS 1.3
//! handshake (RFC 9001 §4) proves each holds the pinned certificate's key.
//!
//! [`transport_config`] sets quinn's timers for punched paths: a 50 ms
//! initial RTT (quinn's default 333 ms makes the first Initial after a
//! punch, which the peer's NAT usually drops, cost about a second), a
//! 5 s keep-alive so NAT mappings stay open (RFC 4787 REQ-5 asks NATs for
//! at least 2 minutes; carrier NATs often keep 30 s), a 30 s idle timeout,
//! and BBR congestion control (`quinn::congestion::BbrConfig`) in place of
//! quinn's default CUBIC. On the lab's shaped origin link
//! (8 Mbit/s, 40 ms RTT) CUBIC kept a device at about
//! 2 Mbit/s against 7 Mbit/s over TCP for the same 8 MB; BBR, which paces
//! to its estimate of the bottleneck rate instead of filling the queue until
//! a loss, reaches 9.6 s against TCP's 9.2 s (docs/results/hole-punching.md,
//! "The origin over QUIC"). quinn marks its BBR as experimental; this is the
//! one place to change back.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use anyhow::Context;
use ota_proto::rendezvous::CertFingerprint;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

/// The TLS server name every device's certificate carries (pinning, not
/// the name, identifies a device).
pub const SERVER_NAME: &str = "ota-peer";
/// The ALPN protocol of the peer wire over QUIC: BitTorrent's peer
/// protocol (BEP 3), one bidirectional stream per peer connection.
pub const ALPN: &[u8] = b"ota-bt/1";
/// Initial RTT estimate (see the module docs).
pub const INITIAL_RTT: Duration = Duration::from_millis(50);
/// Keep-alive interval on every connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Idle timeout: a connection silent this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// A device's certificate and private key.
pub struct QuicIdentity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
    fingerprint: CertFingerprint,
}

impl std::fmt::Debug for QuicIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QuicIdentity({})", self.fingerprint)
    }
}

impl QuicIdentity {
    /// A new self-signed certificate (ECDSA P-256, name [`SERVER_NAME`]).
    /// Errors only if key generation fails.
    pub fn generate() -> anyhow::Result<QuicIdentity> {
        let c = rcgen::generate_simple_self_signed(vec![SERVER_NAME.to_owned()])
            .context("cannot generate the QUIC certificate")?;
        let cert = c.cert.der().clone();
        let key = PrivatePkcs8KeyDer::from(c.key_pair.serialize_der());
        Ok(Self::from_parts(cert, key))
    }

    /// The identity stored in `dir` (`quic-cert.der`, `quic-key.der`), or a
    /// new one written there (key file mode 0600), so that a device keeps
    /// its pin across restarts. Errors: unreadable or unwritable files.
    pub fn load_or_create(dir: &Path) -> anyhow::Result<QuicIdentity> {
        let (cert_path, key_path) = (dir.join("quic-cert.der"), dir.join("quic-key.der"));
        if cert_path.exists() && key_path.exists() {
            let cert = std::fs::read(&cert_path).with_context(|| format!("cannot read {}", cert_path.display()))?;
            let key = std::fs::read(&key_path).with_context(|| format!("cannot read {}", key_path.display()))?;
            return Ok(Self::from_parts(
                CertificateDer::from(cert),
                PrivatePkcs8KeyDer::from(key),
            ));
        }
        let id = Self::generate()?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        write_private(&key_path, id.key.secret_pkcs8_der())?;
        std::fs::write(&cert_path, id.cert.as_ref())
            .with_context(|| format!("cannot write {}", cert_path.display()))?;
        Ok(id)
    }

    fn from_parts(cert: CertificateDer<'static>, key: PrivatePkcs8KeyDer<'static>) -> QuicIdentity {
        let fingerprint = CertFingerprint::of_der(cert.as_ref());
        QuicIdentity { cert, key, fingerprint }
    }

    /// The certificate's pin, as the device reports it to the tracker.
    pub fn fingerprint(&self) -> CertFingerprint {
        self.fingerprint
    }

    fn chain(&self) -> (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) {
        (vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
    }
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))
}

/// The client certificates the accepting side lets in, each until an
/// expiry (the tracker's introduction adds one). Cheap to clone (shared).
#[derive(Clone, Default, Debug)]
pub struct Pins(Arc<RwLock<HashMap<CertFingerprint, Instant>>>);

impl Pins {
    /// Accepts `fingerprint` for `ttl` from now (an existing pin is
    /// extended, never shortened).
    pub fn allow(&self, fingerprint: CertFingerprint, ttl: Duration) {
        let until = Instant::now() + ttl;
        let mut pins = self.0.write().unwrap_or_else(|e| e.into_inner());
        pins.retain(|_, t| *t > Instant::now());
        let t = pins.entry(fingerprint).or_insert(until);
        *t = (*t).max(until);
    }

    /// Whether `fingerprint` is pinned now.
    pub fn allows(&self, fingerprint: &CertFingerprint) -> bool {
        let pins = self.0.read().unwrap_or_else(|e| e.into_inner());
        pins.get(fingerprint).is_some_and(|t| *t > Instant::now())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// quinn's endpoint settings for every endpoint of ours: quinn's defaults
/// with the QUIC bit never greased. Every endpoint that shares its UDP
/// socket with STUN tells QUIC from STUN by the first byte (RFC 7983 §7,
/// RFC 9443 §3, [`crate::udp_demux`]); a peer that greases the QUIC bit
/// (RFC 9287) clears the fixed bit of half its packets, and one in eight of
/// those (spin bit clear, the three highest header-protected bits zero)
/// starts with 0 to 3 and is taken for STUN: about 1 in 16 packets to a
/// device lost before quinn sees it. RFC 9287 §3 says an endpoint whose
/// demultiplexing depends on the QUIC bit must not send
/// `grease_quic_bit`; without it the peer keeps the bit set.
pub fn endpoint_config() -> quinn::EndpointConfig {
    let mut c = quinn::EndpointConfig::default();
    c.grease_quic_bit(false);
    c
}

/// quinn's transport settings for peer connections (see the module docs).
pub fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    t.initial_rtt(INITIAL_RTT);
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_idle_timeout(Some(IDLE_TIMEOUT.try_into().expect("30 s fits a QUIC varint")));
    t.congestion_controller_factory(Arc::new(quinn::congestion::BbrConfig::default()));
    Arc::new(t)
}

/// The server side: presents `identity` and requires a client certificate
/// that `pins` holds. Errors: a certificate rustls refuses.
pub fn server_config(identity: &QuicIdentity, pins: Pins) -> anyhow::Result<quinn::ServerConfig> {
    let verifier = Arc::new(PinnedClients {
        pins,
        provider: provider(),
    });
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier);
    quic_server(tls, identity)
}

/// The server side of a public listener (the origin seeder): presents
/// `identity` and asks for no client certificate, since whoever may talk
/// BitTorrent to it over TCP may do so over QUIC. Errors: a certificate
/// rustls refuses.
pub fn open_server_config(identity: &QuicIdentity) -> anyhow::Result<quinn::ServerConfig> {
    let tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth();
    quic_server(tls, identity)
}

fn quic_server(
    tls: rustls::ConfigBuilder<rustls::ServerConfig, rustls::server::WantsServerCert>,
    identity: &QuicIdentity,
) -> anyhow::Result<quinn::ServerConfig> {
    let (chain, key) = identity.chain();
    let mut tls = tls.with_single_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

/// The client side towards one peer: presents `identity` and accepts only
/// the server certificate whose fingerprint is `expected`. Errors: a
/// certificate rustls refuses.
pub fn client_config(identity: &QuicIdentity, expected: CertFingerprint) -> anyhow::Result<quinn::ClientConfig> {
    let verifier = Arc::new(PinnedServer {
        expected,
        provider: provider(),
    });
    let (chain, key) = identity.chain();
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(chain, key)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport_config());
    Ok(config)
}

fn pin_error(what: &str, got: CertFingerprint) -> rustls::Error {
    rustls::Error::General(format!("{what} certificate {got} is not the pinned one"))
}

#[derive(Debug)]
struct PinnedServer {
    expected: CertFingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = CertFingerprint::of_der(end_entity.as_ref());
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(pin_error("server", got))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[derive(Debug)]
struct PinnedClients {
    pins: Pins,
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let got = CertFingerprint::of_der(end_entity.as_ref());
        if self.pins.allows(&got) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(pin_error("client", got))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls12NotOffered,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_survives_a_restart_and_pins_expire() {
        let dir = tempfile::tempdir().unwrap();
        let a = QuicIdentity::load_or_create(dir.path()).unwrap();
        let b = QuicIdentity::load_or_create(dir.path()).unwrap();
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_ne!(a.fingerprint(), QuicIdentity::generate().unwrap().fingerprint());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("quic-key.der"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);

        let pins = Pins::default();
        assert!(!pins.allows(&a.fingerprint()));
        pins.allow(a.fingerprint(), Duration::from_secs(60));
        assert!(pins.allows(&a.fingerprint()));
        pins.allow(b.fingerprint(), Duration::ZERO);
        pins.allow(a.fingerprint(), Duration::ZERO);
        assert!(pins.allows(&a.fingerprint()), "a shorter allow does not shorten a pin");
    }
}
