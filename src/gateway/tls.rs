//! TLS for the HTTP receiver (the gRPC receiver uses tonic's own TLS with the
//! same PEM files), optionally mutual: with CNFLOW_GATEWAY_TLS_CLIENT_CA the
//! handshake fails for a client without a certificate chaining to that CA.
use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// The receivers' PEM material, read once at start.
#[derive(Clone)]
pub struct TlsPem {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
    /// CA(s) client certificates must chain to (mutual TLS).
    pub client_ca: Option<Vec<u8>>,
}

fn read(var: &str, path: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("{var}: cannot read {path}"))
}

/// Reads the PEM files; errors name the variable.
pub fn load_pem(cert_path: &str, key_path: &str, client_ca_path: Option<&str>) -> Result<TlsPem> {
    let cert = read("CNFLOW_GATEWAY_TLS_CERT", cert_path)?;
    let key = read("CNFLOW_GATEWAY_TLS_KEY", key_path)?;
    let client_ca = client_ca_path.map(|p| read("CNFLOW_GATEWAY_TLS_CLIENT_CA", p)).transpose()?;
    Ok(TlsPem { cert, key, client_ca })
}

pub fn acceptor(pem: &TlsPem) -> Result<TlsAcceptor> {
    let (cert, key) = (&pem.cert[..], &pem.key[..]);
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .context("CNFLOW_GATEWAY_TLS_CERT: invalid PEM certificate")?;
    if certs.is_empty() {
        anyhow::bail!("CNFLOW_GATEWAY_TLS_CERT: no certificate in the PEM file");
    }
    let key = PrivateKeyDer::from_pem_slice(key).context("CNFLOW_GATEWAY_TLS_KEY: invalid PEM private key")?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let builder = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &pem.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = tokio_rustls::rustls::RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(ca) {
                roots
                    .add(c.context("CNFLOW_GATEWAY_TLS_CLIENT_CA: invalid PEM certificate")?)
                    .context("CNFLOW_GATEWAY_TLS_CLIENT_CA: a certificate is not usable as a trust anchor")?;
            }
            if roots.is_empty() {
                anyhow::bail!("CNFLOW_GATEWAY_TLS_CLIENT_CA: no certificate in the PEM file");
            }
            let verifier =
                tokio_rustls::rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .context("CNFLOW_GATEWAY_TLS_CLIENT_CA: client verifier")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .context("CNFLOW_GATEWAY_TLS_CERT/CNFLOW_GATEWAY_TLS_KEY do not form a usable certificate")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

pub struct TlsListener {
    pub inner: TcpListener,
    pub acceptor: TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.inner.accept().await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!("accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            super::accepted(&tcp);
            // A slow or failed handshake must not block other clients for long.
            match tokio::time::timeout(std::time::Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => return (tls, addr),
                Ok(Err(e)) => tracing::debug!(%addr, "TLS handshake failed: {e}"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}
