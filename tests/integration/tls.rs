//! TLS on every port (rustls): HTTPS and WSS on the player's HTTPS port, WSS on the streamer and
//! SFU ports, Wilbur's redirect, HSTS, a certificate renewed by SIGHUP, and start-up refused for
//! each bad certificate. Certificates are generated here with rcgen.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{CertificateParams, KeyPair};
use signalling::config::Config;
use signalling::server::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::binary::{listening_addr, next_line, sigterm, start_logged};
use crate::support::{CONFIG, TIMEOUT, TestServer, config};

/// A self-signed certificate for localhost and 127.0.0.1, written as PEM files in a new folder.
struct Cert {
    dir: PathBuf,
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

impl Cert {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("signalling-tls-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = KeyPair::generate().expect("key");
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("params");
        let cert = params.self_signed(&key).expect("certificate");
        let this = Self {
            dir,
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        };
        this.write(&this.cert_path(), &this.key_path());
        this
    }

    fn write(&self, cert: &Path, key: &Path) {
        std::fs::write(cert, &self.cert_pem).expect("write cert");
        std::fs::write(key, &self.key_pem).expect("write key");
    }

    fn cert_path(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    fn key_path(&self) -> PathBuf {
        self.dir.join("key.pem")
    }

    fn configure(&self, config: &mut Config) {
        config.ssl_cert_path = self.cert_path();
        config.ssl_key_path = self.key_path();
    }
}

/// Connects over TLS trusting only `trusted`; returns the stream and the certificate served.
async fn tls_connect(
    addr: SocketAddr,
    trusted: &CertificateDer<'static>,
) -> (TlsStream<TcpStream>, CertificateDer<'static>) {
    let mut roots = RootCertStore::empty();
    roots
        .add(trusted.clone())
        .expect("trust the test certificate");
    let mut client = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    client.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from("localhost").expect("name");
    let stream = tokio::time::timeout(
        TIMEOUT,
        TlsConnector::from(Arc::new(client)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake in time")
    .expect("TLS handshake");
    let (_, session) = stream.get_ref();
    assert_eq!(
        session.alpn_protocol(),
        Some(b"http/1.1".as_slice()),
        "ALPN"
    );
    let served = session.peer_certificates().expect("a certificate")[0]
        .clone()
        .into_owned();
    (stream, served)
}

/// One HTTP/1.1 request with `Connection: close`; the whole response.
async fn request<S: AsyncReadExt + AsyncWriteExt + Unpin>(stream: &mut S, head: &str) -> String {
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut response = Vec::new();
    let _ = tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut response))
        .await
        .expect("a response in time");
    String::from_utf8_lossy(&response).into_owned()
}

/// The player protocol over WSS: the handshake, then the config message.
async fn wss_config(addr: SocketAddr, trusted: &CertificateDer<'static>) {
    let (stream, _) = tls_connect(addr, trusted).await;
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{}/", addr.port()), stream)
            .await
            .expect("WebSocket over TLS");
    use futures_util::StreamExt;
    let first = tokio::time::timeout(TIMEOUT, ws.next())
        .await
        .expect("a message in time")
        .expect("open")
        .expect("a frame");
    assert_eq!(first.into_text().expect("text").as_str(), CONFIG);
}

fn https_config(cert: &Cert) -> Config {
    let mut config = config();
    config.https = true;
    config.https_port = 0;
    cert.configure(&mut config);
    config
}

#[tokio::test]
async fn https_and_wss_on_the_player_port_with_hsts() {
    let cert = Cert::new("https");
    let config = https_config(&cert);
    let server = Server::bind(config).await.expect("bind");
    let https = server.https_addr().expect("an HTTPS port");
    assert_eq!(
        server.player_addr(),
        https,
        "without https_redirect, no plain player port"
    );
    let token = server.shutdown_token();
    tokio::spawn(server.run_until(std::future::pending()));
    let (mut stream, served) = tls_connect(https, &cert.der).await;
    assert_eq!(served, cert.der);
    let response = request(
        &mut stream,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(
        lower.contains("strict-transport-security: max-age=31536000"),
        "{response}"
    );
    assert!(
        lower.contains("x-content-type-options: nosniff"),
        "{response}"
    );
    assert!(
        lower.contains("content-security-policy: frame-ancestors *"),
        "{response}"
    );
    wss_config(https, &cert.der).await;
    // The session API over HTTPS too.
    let (mut stream, _) = tls_connect(https, &cert.der).await;
    let response = request(
        &mut stream,
        "GET /iceServers HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    token.cancel();
}

#[tokio::test]
async fn wss_on_the_streamer_and_sfu_ports() {
    let cert = Cert::new("ports");
    let mut config = config();
    config.streamer_tls = true;
    config.sfu_tls = true;
    cert.configure(&mut config);
    let server = TestServer::start(config).await;
    for addr in [server.streamer, server.sfu] {
        wss_config(addr, &cert.der).await;
        // Plain WebSocket on a TLS port is not a handshake.
        let plain = tokio::time::timeout(
            TIMEOUT,
            tokio_tungstenite::connect_async(format!("ws://{addr}/")),
        )
        .await
        .expect("an answer in time");
        assert!(plain.is_err(), "plain ws on a TLS port");
    }
    // The player port stays plain.
    let mut player = server.player().await;
    player.sync().await;
}

#[tokio::test]
async fn https_redirect_sends_plain_http_to_https_and_keeps_plain_upgrades() {
    let cert = Cert::new("redirect");
    let mut config = https_config(&cert);
    config.https_redirect = true;
    let server = TestServer::start(config).await;
    let mut tcp = TcpStream::connect(server.player).await.expect("connect");
    let response = request(
        &mut tcp,
        "GET /a/b?c=d HTTP/1.1\r\nHost: localhost:8080\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 308"), "{response}");
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("location: https://localhost:"), "{response}");
    assert!(lower.contains("/a/b?c=d\r\n"), "{response}");
    assert!(
        !lower.contains("strict-transport-security"),
        "no HSTS over plain HTTP: {response}"
    );
    let mut player = server.player().await;
    player.sync().await;
}

#[tokio::test]
async fn start_up_is_refused_for_each_bad_certificate() {
    let cert = Cert::new("bad");
    let other = Cert::new("bad-other");
    let missing = cert.dir.join("missing.pem");
    let garbage = cert.dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let cases: [(PathBuf, PathBuf, &str); 4] = [
        (missing.clone(), cert.key_path(), "missing.pem"),
        (cert.cert_path(), missing, "missing.pem"),
        (garbage, cert.key_path(), "garbage.pem"),
        (cert.cert_path(), other.key_path(), "does not match"),
    ];
    for (cert_path, key_path, expected) in cases {
        for which in ["https", "streamer"] {
            let mut config = config();
            if which == "https" {
                config.https = true;
                config.https_port = 0;
            } else {
                config.streamer_tls = true;
            }
            config.ssl_cert_path = cert_path.clone();
            config.ssl_key_path = key_path.clone();
            let error = Server::bind(config)
                .await
                .expect_err("a bad certificate stops start-up");
            let text = error.to_string();
            assert!(text.contains(expected), "{which}: {text}");
        }
    }
}

#[tokio::test]
async fn sighup_serves_a_renewed_certificate_to_new_connections_and_keeps_old_ones() {
    let first = Cert::new("renew-1");
    let second = Cert::new("renew-2");
    let cert = first.cert_path();
    let key = first.key_path();
    let (child, mut lines, _, _, seen) = start_logged(&[
        "--https",
        "--https_port",
        "0",
        "--https_redirect",
        "--ssl_cert_path",
        cert.to_str().expect("utf-8"),
        "--ssl_key_path",
        key.to_str().expect("utf-8"),
    ])
    .await;
    let https = seen
        .iter()
        .find_map(|l| listening_addr(l, "HTTPS"))
        .expect("the HTTPS port is logged");
    let (mut old, served) = tls_connect(https, &first.der).await;
    assert_eq!(served, first.der);
    // Renew: the second pair in the same files, then SIGHUP.
    second.write(&cert, &key);
    let pid = child.id().expect("pid").to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    loop {
        let line = next_line(&mut lines).await;
        if line.contains("reloaded") {
            break;
        }
    }
    let (_, served) = tls_connect(https, &second.der).await;
    assert_eq!(
        served, second.der,
        "a new connection gets the renewed certificate"
    );
    let response = request(
        &mut old,
        "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(
        response.starts_with("HTTP/1.1 200"),
        "the old connection still works: {response}"
    );
    // A bad renewal keeps the certificate in use.
    std::fs::write(&cert, "garbage\n").expect("write");
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .expect("kill")
            .success()
    );
    loop {
        let line = next_line(&mut lines).await;
        if line.contains("not reloaded") {
            break;
        }
    }
    let (_, served) = tls_connect(https, &second.der).await;
    assert_eq!(served, second.der);
    sigterm(&child);
}
