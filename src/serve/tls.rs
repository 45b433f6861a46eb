//! TLS for `gocacher serve` (`--tls-cert`, `--tls-key`): rustls with the
//! aws-lc-rs provider, HTTP/1.1 only, handshakes run concurrently by
//! tls-listener so that a client that stalls in its handshake holds up no
//! one else.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use tls_listener::rustls::rustls::{
    self,
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
};
use tls_listener::rustls::TlsAcceptor;
use tls_listener::TlsListener;
use tokio::net::TcpListener;

/// A client gets this long to finish its handshake, then it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's certificate chain and key, read from PEM files.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("--tls-cert {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("--tls-cert {}: not PEM certificates", cert.display()))?;
    if chain.is_empty() {
        bail!(
            "--tls-cert {}: no certificate in it (expected PEM \"BEGIN CERTIFICATE\" blocks, the server's first)",
            cert.display()
        );
    }
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "--tls-key {}: no private key in it (expected a PEM PKCS#8, RSA or EC key)",
            key.display()
        )
    })?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .with_context(|| {
            format!(
                "--tls-cert {} and --tls-key {} do not go together",
                cert.display(),
                key.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// The listener that hands axum connections whose handshake is done.
pub(crate) fn listener(
    acceptor: TlsAcceptor,
    tcp: TcpListener,
) -> TlsListener<TcpListener, TlsAcceptor> {
    tls_listener::builder(acceptor)
        .handshake_timeout(HANDSHAKE_TIMEOUT)
        .listen(tcp)
}
