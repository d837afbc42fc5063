//! TLS identities: a certificate chain and its key read from PEM files, served through one rustls
//! `ServerConfig` per identity, and reloaded on SIGHUP for new handshakes while established
//! connections keep theirs. It never accepts sockets: the accept path calls [`TlsIdentity::acceptor`].
//!
//! The crypto provider is `ring` (see the root Cargo.toml for why not aws-lc-rs); it signs with
//! RSA, ECDSA P-256 and P-384, and Ed25519 keys.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio::sync::watch;
use tracing::{error, info};

#[cfg(test)]
mod tests;

/// Where an identity's certificate chain and private key are read from. A relative path is
/// relative to the working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CertPaths {
    /// PEM: the leaf certificate first, then any intermediates.
    pub(crate) cert: PathBuf,
    /// PEM: one private key, PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1
    /// (`EC PRIVATE KEY`).
    pub(crate) key: PathBuf,
}

/// Why a certificate or key could not be used. Each message names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsError {
    #[error("{}: no such file", .path.display())]
    Missing { path: PathBuf },
    #[error("{}: cannot be read: {source}", .path.display())]
    Unreadable { path: PathBuf, source: io::Error },
    #[error("{}: not a PEM file ({detail})", .path.display())]
    NotPem { path: PathBuf, detail: String },
    #[error("{}: the certificate chain is empty (the file holds nothing)", .path.display())]
    EmptyChain { path: PathBuf },
    #[error("{}: no certificate in it (no -----BEGIN CERTIFICATE----- section{found})", .path.display())]
    NoCertificate { path: PathBuf, found: Found },
    #[error("{}: no private key in it (no -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY section{found})", .path.display())]
    NoPrivateKey { path: PathBuf, found: Found },
    #[error("{}: unsupported private key ({detail}); use an RSA, ECDSA P-256 or P-384, or Ed25519 key", .path.display())]
    UnsupportedKey { path: PathBuf, detail: String },
    #[error("{}: the first certificate is not a valid X.509 certificate ({detail})", .path.display())]
    BadCertificate { path: PathBuf, detail: String },
    #[error("{}: the private key does not match the certificate in {}", .key.display(), .cert.display())]
    KeyMismatch { key: PathBuf, cert: PathBuf },
    #[error("TLS set-up failed: {0}")]
    Setup(rustls::Error),
}

/// The PEM sections a file held instead of the one wanted, for [`TlsError`]'s messages.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Found(Vec<&'static str>);

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        write!(f, "; it holds {}", self.0.join(", "))
    }
}

/// A certificate chain and key, served to new TLS handshakes; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct TlsIdentity {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    paths: CertPaths,
    resolver: Arc<Resolver>,
    /// Built once: a reload swaps what the resolver hands out, not the config.
    config: Arc<ServerConfig>,
    /// Counts successful reloads, so a caller (a test) can wait for one.
    reloads: watch::Sender<u64>,
}

/// Hands every handshake the current certificate; [`TlsIdentity::reload`] swaps it.
#[derive(Debug)]
struct Resolver(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsIdentity {
    /// Reads and checks the certificate chain and key; the error names the file and the problem.
    pub(crate) fn load(paths: CertPaths) -> Result<Self, TlsError> {
        let provider = provider();
        let key = certified_key(&paths, &provider)?;
        let resolver = Arc::new(Resolver(ArcSwap::from_pointee(key)));
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(Arc::clone(&resolver) as Arc<dyn ResolvesServerCert>);
        // Every port speaks HTTP/1.1 (the WebSocket handshake and the player port's HTTP).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            inner: Arc::new(Inner {
                paths,
                resolver,
                config: Arc::new(config),
                reloads: watch::Sender::new(0),
            }),
        })
    }

    /// Reads the same files again and serves the new certificate to new handshakes; on error
    /// the one in use stays.
    #[cfg(test)]
    pub(crate) fn reload(&self) -> Result<(), TlsError> {
        let key = certified_key(&self.inner.paths, self.inner.config.crypto_provider())?;
        self.install(Arc::new(key));
        Ok(())
    }

    fn install(&self, key: Arc<CertifiedKey>) {
        self.inner.resolver.0.store(key);
        self.inner.reloads.send_modify(|n| *n += 1);
    }

    /// Wraps accepted sockets in TLS with this identity (ALPN `http/1.1`, no client
    /// certificates).
    pub(crate) fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(Arc::clone(&self.inner.config))
    }

    pub(crate) fn paths(&self) -> &CertPaths {
        &self.inner.paths
    }

    /// Changes each time a reload succeeds.
    #[cfg_attr(not(test), allow(dead_code))] // for the accept path's tests; unit tests use it
    pub(crate) fn reloads(&self) -> watch::Receiver<u64> {
        self.inner.reloads.subscribe()
    }
}

/// The file's bytes, or why there are none.
fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => TlsError::Missing {
            path: path.to_owned(),
        },
        _ => TlsError::Unreadable {
            path: path.to_owned(),
            source,
        },
    })
}

/// Every PEM section of `bytes` we know of (unknown labels are skipped).
fn sections(path: &Path, bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    let not_pem = |detail: String| TlsError::NotPem {
        path: path.to_owned(),
        detail,
    };
    let sections = <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| not_pem(e.to_string()))?;
    if sections.is_empty() && !contains(bytes, b"-----BEGIN ") {
        return Err(not_pem("no -----BEGIN ... ----- line".to_owned()));
    }
    Ok(sections)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn found(sections: &[(SectionKind, Vec<u8>)]) -> Found {
    Found(sections.iter().map(|(kind, _)| label(*kind)).collect())
}

fn label(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "CERTIFICATE",
        SectionKind::PublicKey => "PUBLIC KEY",
        SectionKind::RsaPrivateKey => "RSA PRIVATE KEY",
        SectionKind::PrivateKey => "PRIVATE KEY",
        SectionKind::EcPrivateKey => "EC PRIVATE KEY",
        SectionKind::Crl => "X509 CRL",
        SectionKind::Csr => "CERTIFICATE REQUEST",
        _ => "another section",
    }
}

fn chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path)?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(TlsError::EmptyChain {
            path: path.to_owned(),
        });
    }
    let sections = sections(path, &bytes)?;
    let chain: Vec<_> = sections
        .iter()
        .filter(|(kind, _)| *kind == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_owned(),
            found: found(&sections),
        });
    }
    Ok(chain)
}

fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path)?;
    let sections = sections(path, &bytes)?;
    let key = sections.iter().find_map(|(kind, der)| match kind {
        SectionKind::PrivateKey => Some(PrivatePkcs8KeyDer::from(der.clone()).into()),
        SectionKind::RsaPrivateKey => Some(PrivatePkcs1KeyDer::from(der.clone()).into()),
        SectionKind::EcPrivateKey => Some(PrivateSec1KeyDer::from(der.clone()).into()),
        _ => None,
    });
    if let Some(key) = key {
        return Ok(key);
    }
    // The PEM reader skips labels it does not know, such as this one.
    if contains(&bytes, b"-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        return Err(TlsError::UnsupportedKey {
            path: path.to_owned(),
            detail: "it is encrypted; give the key without a passphrase".to_owned(),
        });
    }
    Err(TlsError::NoPrivateKey {
        path: path.to_owned(),
        found: found(&sections),
    })
}

/// Reads both files and checks that the key signs for the chain's leaf.
fn certified_key(paths: &CertPaths, provider: &CryptoProvider) -> Result<CertifiedKey, TlsError> {
    let chain = chain(&paths.cert)?;
    let key = private_key(&paths.key)?;
    let signing_key =
        provider
            .key_provider
            .load_private_key(key)
            .map_err(|e| TlsError::UnsupportedKey {
                path: paths.key.clone(),
                detail: e.to_string(),
            })?;
    let certified = CertifiedKey::new(chain, signing_key);
    match certified.keys_match() {
        // ring's keys all give their public key; a provider key that cannot is taken on trust,
        // as rustls's own `CertifiedKey::from_der` does.
        Ok(()) | Err(rustls::Error::InconsistentKeys(InconsistentKeys::Unknown)) => Ok(certified),
        Err(rustls::Error::InconsistentKeys(_)) => Err(TlsError::KeyMismatch {
            key: paths.key.clone(),
            cert: paths.cert.clone(),
        }),
        Err(e) => Err(TlsError::BadCertificate {
            path: paths.cert.clone(),
            detail: e.to_string(),
        }),
    }
}

/// Reloads every identity (one read per distinct pair of paths), logging the outcome per port;
/// SIGHUP calls it ([`crate::reload`]).
pub(crate) fn reload_all(identities: &[(&'static str, TlsIdentity)]) {
    let mut loaded: Vec<(&CertPaths, Result<Arc<CertifiedKey>, String>)> = Vec::new();
    let mut done: Vec<&Arc<Inner>> = Vec::new();
    for (port, identity) in identities {
        let paths = identity.paths();
        let outcome = if let Some((_, outcome)) = loaded.iter().find(|(p, _)| *p == paths) {
            outcome.clone()
        } else {
            let provider = identity.inner.config.crypto_provider();
            let outcome = certified_key(paths, provider)
                .map(Arc::new)
                .map_err(|e| e.to_string());
            loaded.push((paths, outcome.clone()));
            outcome
        };
        match outcome {
            Ok(key) => {
                if !done.iter().any(|d| Arc::ptr_eq(d, &identity.inner)) {
                    identity.install(key);
                    done.push(&identity.inner);
                }
                info!(
                    "TLS certificate for the {port} port reloaded from {}",
                    paths.cert.display()
                );
            }
            Err(err) => error!(
                "TLS certificate for the {port} port not reloaded: {err}; the previous certificate stays in use"
            ),
        }
    }
}
