//! Unit tests of [`TlsIdentity`]: each key type and encoding loads, each bad file gives its own
//! error naming the file, real handshakes over 127.0.0.1 see the chain and ALPN `http/1.1`, and
//! a reload (direct, or by SIGHUP) reaches new handshakes only. Certificates come from rcgen;
//! the RSA and EC keys are fixtures in `testdata/` because ring (rcgen's backend) cannot generate
//! RSA keys nor write SEC1 or PKCS#1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, PKCS_ED25519,
};
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

const RSA_PKCS8: &str = include_str!("testdata/rsa-pkcs8.pem");
const RSA_PKCS1: &str = include_str!("testdata/rsa-pkcs1.pem");
const P256_PKCS8: &str = include_str!("testdata/p256-pkcs8.pem");
const P256_SEC1: &str = include_str!("testdata/p256-sec1.pem");
const P384_PKCS8: &str = include_str!("testdata/p384-pkcs8.pem");
const P384_SEC1: &str = include_str!("testdata/p384-sec1.pem");
const P521_PKCS8: &str = include_str!("testdata/p521-pkcs8.pem");

/// A folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "signalling-tls-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn paths(&self) -> CertPaths {
        CertPaths {
            cert: self.0.join("cert.pem"),
            key: self.0.join("key.pem"),
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A test CA that signs leaves for `localhost`.
struct Ca(CertifiedIssuer<'static, KeyPair>);

impl Ca {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "test CA");
        let key = KeyPair::generate().unwrap();
        Self(CertifiedIssuer::self_signed(params, key).unwrap())
    }

    fn root(&self) -> CertificateDer<'static> {
        self.0.der().clone()
    }

    /// A leaf for `localhost` whose common name is `name`, for `key`.
    fn leaf(&self, key: &KeyPair, name: &str) -> rcgen::Certificate {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.signed_by(key, &self.0).unwrap()
    }
}

fn p256() -> KeyPair {
    KeyPair::from_pem(P256_PKCS8).unwrap()
}

/// Writes a leaf signed by `ca` for a new P-256 key into `dir`'s cert.pem and key.pem.
fn write_pair(dir: &TempDir, ca: &Ca, name: &str) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let leaf = ca.leaf(&key, name);
    dir.write("cert.pem", leaf.pem());
    dir.write("key.pem", key.serialize_pem());
    leaf.der().clone()
}

fn client_config(root: CertificateDer<'static>, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root).unwrap();
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    // Each handshake must show the certificate served now, not a resumed session's.
    config.resumption = Resumption::disabled();
    Arc::new(config)
}

type Client = tokio_rustls::client::TlsStream<TcpStream>;
type Server = tokio_rustls::server::TlsStream<TcpStream>;

/// A full handshake over 127.0.0.1 between `identity` and a client trusting `root`.
async fn handshake(identity: &TlsIdentity, root: CertificateDer<'static>) -> (Client, Server) {
    handshake_offering(identity, root, &[b"h2", b"http/1.1"]).await
}

async fn handshake_offering(
    identity: &TlsIdentity,
    root: CertificateDer<'static>,
    alpn: &[&[u8]],
) -> (Client, Server) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = identity.acceptor();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.unwrap();
        acceptor.accept(socket).await.unwrap()
    });
    let connector = tokio_rustls::TlsConnector::from(client_config(root, alpn));
    let socket = TcpStream::connect(addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let client = timeout(WAIT, connector.connect(name, socket))
        .await
        .unwrap()
        .unwrap();
    let server = timeout(WAIT, server).await.unwrap().unwrap();
    (client, server)
}

fn leaf_seen(client: &Client) -> CertificateDer<'static> {
    client.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// Sends a line each way and checks it arrives.
async fn exchange(client: &mut Client, server: &mut Server) {
    client.write_all(b"ping\n").await.unwrap();
    client.flush().await.unwrap();
    let mut buf = [0; 5];
    timeout(WAIT, server.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"ping\n");
    server.write_all(b"pong\n").await.unwrap();
    server.flush().await.unwrap();
    timeout(WAIT, client.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"pong\n");
}

#[tokio::test]
async fn every_key_type_and_encoding_loads_and_serves_its_leaf_with_alpn_http11() {
    let ca = Ca::new();
    let ed25519 = KeyPair::generate_for(&PKCS_ED25519).unwrap();
    let ed25519_pem = ed25519.serialize_pem();
    // (name, the key rcgen signs the leaf for, the key file the server reads)
    let cases: [(&str, KeyPair, &str); 7] = [
        (
            "RSA PKCS#8",
            KeyPair::from_pem(RSA_PKCS8).unwrap(),
            RSA_PKCS8,
        ),
        (
            "RSA PKCS#1",
            KeyPair::from_pem(RSA_PKCS8).unwrap(),
            RSA_PKCS1,
        ),
        ("P-256 PKCS#8", p256(), P256_PKCS8),
        ("P-256 SEC1", p256(), P256_SEC1),
        (
            "P-384 PKCS#8",
            KeyPair::from_pem(P384_PKCS8).unwrap(),
            P384_PKCS8,
        ),
        (
            "P-384 SEC1",
            KeyPair::from_pem(P384_PKCS8).unwrap(),
            P384_SEC1,
        ),
        ("Ed25519 PKCS#8", ed25519, &ed25519_pem),
    ];
    for (name, key, key_file) in cases {
        let dir = TempDir::new();
        let leaf = ca.leaf(&key, name);
        dir.write("cert.pem", leaf.pem());
        dir.write("key.pem", key_file);
        let identity = TlsIdentity::load(dir.paths()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(identity.paths(), &dir.paths());
        let (mut client, mut server) = handshake(&identity, ca.root()).await;
        assert_eq!(leaf_seen(&client), *leaf.der(), "{name}");
        assert_eq!(
            client.get_ref().1.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "{name}"
        );
        exchange(&mut client, &mut server).await;
    }
}

#[tokio::test]
async fn a_client_offering_no_alpn_still_connects() {
    let (dir, ca) = (TempDir::new(), Ca::new());
    let leaf = write_pair(&dir, &ca, "leaf");
    let identity = TlsIdentity::load(dir.paths()).unwrap();
    let (client, _server) = handshake_offering(&identity, ca.root(), &[]).await;
    assert_eq!(leaf_seen(&client), leaf);
    assert_eq!(client.get_ref().1.alpn_protocol(), None);
}

#[tokio::test]
async fn the_whole_chain_is_served_so_a_client_trusting_only_the_root_connects() {
    let (dir, root) = (TempDir::new(), Ca::new());
    let mut params = CertificateParams::new(Vec::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "intermediate");
    let intermediate =
        Ca(CertifiedIssuer::signed_by(params, KeyPair::generate().unwrap(), &root.0).unwrap());
    let key = p256();
    let leaf = intermediate.leaf(&key, "leaf");
    dir.write(
        "cert.pem",
        format!("{}{}", leaf.pem(), intermediate.0.pem()),
    );
    dir.write("key.pem", P256_PKCS8);
    let identity = TlsIdentity::load(dir.paths()).unwrap();
    let (client, _server) = handshake(&identity, root.root()).await;
    let seen = client.get_ref().1.peer_certificates().unwrap();
    assert_eq!(seen, [leaf.der().clone(), intermediate.root()]);
}

/// Loads `dir`'s pair and returns the error, checking that its message names `named`.
fn load_error(dir: &TempDir, named: &Path) -> TlsError {
    let err = TlsIdentity::load(dir.paths()).unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains(&named.display().to_string()),
        "{message:?} does not name {}",
        named.display()
    );
    err
}

#[test]
fn each_bad_certificate_or_key_gives_its_own_error_naming_the_file() {
    let ca = Ca::new();
    let good = |dir: &TempDir| write_pair(dir, &ca, "leaf");

    let dir = TempDir::new();
    let err = load_error(&dir, &dir.paths().cert);
    assert!(matches!(err, TlsError::Missing { .. }), "{err}");
    good(&dir);
    std::fs::remove_file(dir.paths().key).unwrap();
    let err = load_error(&dir, &dir.paths().key);
    assert!(matches!(err, TlsError::Missing { .. }), "{err}");
    assert!(err.to_string().ends_with("key.pem: no such file"), "{err}");

    // A folder where the file should be: the read fails (we run as root, so no chmod test).
    let dir = TempDir::new();
    good(&dir);
    std::fs::remove_file(dir.paths().cert).unwrap();
    std::fs::create_dir(dir.paths().cert).unwrap();
    let err = load_error(&dir, &dir.paths().cert);
    assert!(matches!(err, TlsError::Unreadable { .. }), "{err}");

    let dir = TempDir::new();
    good(&dir);
    dir.write("cert.pem", " \n");
    let err = load_error(&dir, &dir.paths().cert);
    assert!(matches!(err, TlsError::EmptyChain { .. }), "{err}");

    // DER where PEM belongs.
    let leaf = good(&dir);
    dir.write("cert.pem", leaf.as_ref());
    let err = load_error(&dir, &dir.paths().cert);
    assert!(matches!(err, TlsError::NotPem { .. }), "{err}");

    // A section that never ends.
    dir.write("cert.pem", "-----BEGIN CERTIFICATE-----\nMIIB\n");
    let err = load_error(&dir, &dir.paths().cert);
    assert!(matches!(err, TlsError::NotPem { .. }), "{err}");

    // The key given as the certificate.
    dir.write("cert.pem", P256_PKCS8);
    let err = load_error(&dir, &dir.paths().cert);
    assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
    assert!(err.to_string().contains("it holds PRIVATE KEY"), "{err}");

    // The certificate given as the key.
    let leaf = good(&dir);
    dir.write(
        "key.pem",
        std::fs::read_to_string(dir.paths().cert).unwrap(),
    );
    let err = load_error(&dir, &dir.paths().key);
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    assert!(err.to_string().contains("it holds CERTIFICATE"), "{err}");

    dir.write(
        "key.pem",
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    );
    let err = load_error(&dir, &dir.paths().key);
    assert!(matches!(err, TlsError::UnsupportedKey { .. }), "{err}");
    assert!(err.to_string().contains("encrypted"), "{err}");

    // ring signs with P-256 and P-384 only.
    dir.write("key.pem", P521_PKCS8);
    let err = load_error(&dir, &dir.paths().key);
    assert!(matches!(err, TlsError::UnsupportedKey { .. }), "{err}");

    // A key of another certificate: the message names both files.
    dir.write("key.pem", P384_PKCS8);
    let err = load_error(&dir, &dir.paths().key);
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&dir.paths().cert.display().to_string()),
        "{err}"
    );

    // A CERTIFICATE section whose bytes are no certificate.
    good(&dir);
    dir.write(
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
    );
    let err = load_error(&dir, &dir.paths().cert);
    assert!(matches!(err, TlsError::BadCertificate { .. }), "{err}");
    drop(leaf);
}

#[tokio::test]
async fn a_reload_reaches_new_handshakes_while_an_established_connection_carries_on() {
    let (dir, ca) = (TempDir::new(), Ca::new());
    let first = write_pair(&dir, &ca, "first");
    let identity = TlsIdentity::load(dir.paths()).unwrap();
    let (mut old_client, mut old_server) = handshake(&identity, ca.root()).await;
    assert_eq!(leaf_seen(&old_client), first);

    let second = write_pair(&dir, &ca, "second");
    let reloads = identity.reloads();
    identity.reload().unwrap();
    assert!(reloads.has_changed().unwrap());
    let (mut new_client, mut new_server) = handshake(&identity, ca.root()).await;
    assert_eq!(leaf_seen(&new_client), second);

    exchange(&mut old_client, &mut old_server).await;
    exchange(&mut new_client, &mut new_server).await;
}

#[tokio::test]
async fn a_bad_new_pair_is_refused_and_the_old_certificate_stays_served() {
    let (dir, ca) = (TempDir::new(), Ca::new());
    let first = write_pair(&dir, &ca, "first");
    let identity = TlsIdentity::load(dir.paths()).unwrap();

    // A renewal caught halfway: the new certificate is written, the key not yet.
    let key = p256();
    dir.write("cert.pem", ca.leaf(&key, "second").pem());
    let err = identity.reload().unwrap_err();
    assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    dir.write("cert.pem", "");
    let err = identity.reload().unwrap_err();
    assert!(matches!(err, TlsError::EmptyChain { .. }), "{err}");

    let (client, _server) = handshake(&identity, ca.root()).await;
    assert_eq!(leaf_seen(&client), first);
    assert!(!identity.reloads().has_changed().unwrap());
}

/// A log sink for one test's subscriber.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn served(identity: &TlsIdentity) -> CertificateDer<'static> {
    identity.inner.resolver.0.load().cert[0].clone()
}

#[test]
fn reload_all_reads_shared_paths_once_swaps_each_identity_and_logs_each_port() {
    let ca = Ca::new();
    let (shared, own) = (TempDir::new(), TempDir::new());
    write_pair(&shared, &ca, "shared 1");
    let own_first = write_pair(&own, &ca, "own 1");
    let player = TlsIdentity::load(shared.paths()).unwrap();
    let streamer = TlsIdentity::load(shared.paths()).unwrap();
    let sfu = TlsIdentity::load(own.paths()).unwrap();

    let renewed = write_pair(&shared, &ca, "shared 2");
    own.write("key.pem", P384_PKCS8);
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        reload_all(&[
            ("player", player.clone()),
            ("streamer", streamer.clone()),
            ("SFU", sfu.clone()),
            // The same identity twice is swapped once.
            ("player", player.clone()),
        ]);
    });

    assert_eq!(served(&player), renewed);
    assert_eq!(served(&streamer), renewed);
    assert_eq!(served(&sfu), own_first);
    assert_eq!(*player.reloads().borrow(), 1);
    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    let cert = shared.paths().cert.display().to_string();
    for port in ["player", "streamer"] {
        let line = format!(
            "INFO signalling::tls: TLS certificate for the {port} port reloaded from {cert}"
        );
        assert!(log.contains(&line), "{line:?} not in {log}");
    }
    let line = format!(
        "ERROR signalling::tls: TLS certificate for the SFU port not reloaded: {}: the private key does not match the certificate in {}; the previous certificate stays in use",
        own.paths().key.display(),
        own.paths().cert.display()
    );
    assert!(log.contains(&line), "{line:?} not in {log}");
}
