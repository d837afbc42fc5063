//! `--tls`: the client side of `wss://` (a rustls `ClientConfig` trusting only the `--tls-ca`
//! certificate) and `gen-cert`, the self-signed certificate `bench/run.sh` makes for each TLS run.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustls::ClientConfig;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

#[derive(clap::Args, Debug)]
pub(crate) struct GenCertArgs {
    /// Folder to write cert.pem and key.pem into (created if missing).
    #[arg(long)]
    dir: PathBuf,
}

/// A client config trusting every certificate in the PEM file at `ca` and nothing else.
pub(crate) fn client_config(ca: &Path) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("--tls-ca {}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-ca {}: not PEM", ca.display()))?;
    if certs.is_empty() {
        bail!("--tls-ca {}: no certificate in it", ca.display());
    }
    for cert in certs {
        roots
            .add(cert)
            .with_context(|| format!("--tls-ca {}", ca.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Writes a self-signed certificate for localhost, 127.0.0.1 and ::1 (a P-256 key) as
/// `dir/cert.pem` and `dir/key.pem`; the certificate is also the `--tls-ca` to trust.
pub(crate) fn gen_cert(args: &GenCertArgs) -> Result<()> {
    let names = ["localhost", "127.0.0.1", "::1"]
        .map(str::to_owned)
        .to_vec();
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(names)?.self_signed(&key)?;
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    for (name, pem) in [("cert.pem", cert.pem()), ("key.pem", key.serialize_pem())] {
        let path = args.dir.join(name);
        std::fs::write(&path, pem).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use futures_util::{SinkExt, StreamExt};
    use rustls::pki_types::PrivateKeyDer;
    use tokio::net::TcpListener;

    use super::*;
    use crate::util;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let dir = std::env::temp_dir().join(format!(
                "signalling-bench-tls-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            gen_cert(&GenCertArgs { dir: dir.clone() }).unwrap();
            Self(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A WebSocket echo server on 127.0.0.1, over TLS with `dir`'s pair when given. Serves one
    /// connection.
    async fn echo_server(dir: Option<&Path>) -> u16 {
        let acceptor = dir.map(|dir| {
            let chain = CertificateDer::pem_file_iter(dir.join("cert.pem"))
                .unwrap()
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_file(dir.join("key.pem")).unwrap();
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(chain, key)
                .unwrap();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            match acceptor {
                Some(acceptor) => {
                    let Ok(tls) = acceptor.accept(socket).await else {
                        return;
                    };
                    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
                    echo(tokio_tungstenite::accept_async(tls).await.unwrap()).await;
                }
                None => echo(tokio_tungstenite::accept_async(socket).await.unwrap()).await,
            }
        });
        port
    }

    async fn echo<S>(mut ws: tokio_tungstenite::WebSocketStream<S>)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        while let Some(Ok(message)) = ws.next().await {
            if message.is_text() && ws.send(message).await.is_err() {
                return;
            }
        }
    }

    async fn round_trip(ws: &mut util::Ws) {
        let value = serde_json::json!({"type": "ping", "time": 1});
        util::send_json(ws, &value).await.unwrap();
        assert_eq!(
            util::recv_json(ws, util::recv_timeout()).await.unwrap(),
            value
        );
    }

    #[tokio::test]
    async fn wss_connects_trusting_the_generated_certificate_and_exchanges_messages() {
        let dir = TempDir::new();
        let config = client_config(&dir.0.join("cert.pem")).unwrap();
        for host in ["127.0.0.1", "localhost"] {
            let port = echo_server(Some(&dir.0)).await;
            let url = format!("wss://{host}:{port}/");
            let mut ws = util::connect_with(&url, Some(&config)).await.unwrap();
            assert!(
                matches!(ws.get_ref(), tokio_tungstenite::MaybeTlsStream::Rustls(_)),
                "{host}"
            );
            round_trip(&mut ws).await;
        }
    }

    #[tokio::test]
    async fn ws_stays_plain() {
        let port = echo_server(None).await;
        let mut ws = util::connect_with(&format!("ws://127.0.0.1:{port}/"), None)
            .await
            .unwrap();
        assert!(matches!(
            ws.get_ref(),
            tokio_tungstenite::MaybeTlsStream::Plain(_)
        ));
        round_trip(&mut ws).await;
    }

    #[tokio::test]
    async fn a_certificate_not_in_tls_ca_is_refused() {
        let (served, trusted) = (TempDir::new(), TempDir::new());
        let config = client_config(&trusted.0.join("cert.pem")).unwrap();
        let port = echo_server(Some(&served.0)).await;
        let err = util::connect_with(&format!("wss://127.0.0.1:{port}/"), Some(&config))
            .await
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("invalid peer certificate"),
            "{err:#}"
        );
    }

    #[tokio::test]
    async fn wss_without_tls_ca_is_an_error_not_a_default_trust_store() {
        let err = util::connect_with("wss://127.0.0.1:1/", None)
            .await
            .unwrap_err();
        assert!(format!("{err:#}").contains("--tls"), "{err:#}");
    }

    #[test]
    fn tls_ca_must_hold_a_certificate() {
        let dir = TempDir::new();
        let err = client_config(&dir.0.join("key.pem")).unwrap_err();
        assert!(format!("{err:#}").contains("no certificate"), "{err:#}");
        let err = client_config(&dir.0.join("missing.pem")).unwrap_err();
        assert!(format!("{err:#}").contains("missing.pem"), "{err:#}");
    }
}
