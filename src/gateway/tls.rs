//! TLS for the HTTP receiver (the gRPC receiver uses tonic's own TLS with the same PEM files).
use anyhow::{Context, Result};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Reads both PEM files; errors name the variable.
pub fn load_pem(cert_path: &str, key_path: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    let cert = std::fs::read(cert_path).with_context(|| format!("CNFLOW_GATEWAY_TLS_CERT: cannot read {cert_path}"))?;
    let key = std::fs::read(key_path).with_context(|| format!("CNFLOW_GATEWAY_TLS_KEY: cannot read {key_path}"))?;
    Ok((cert, key))
}

pub fn acceptor(cert: &[u8], key: &[u8]) -> Result<TlsAcceptor> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<_, _>>()
        .context("CNFLOW_GATEWAY_TLS_CERT: invalid PEM certificate")?;
    if certs.is_empty() {
        anyhow::bail!("CNFLOW_GATEWAY_TLS_CERT: no certificate in the PEM file");
    }
    let key = PrivateKeyDer::from_pem_slice(key).context("CNFLOW_GATEWAY_TLS_KEY: invalid PEM private key")?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut cfg = tokio_rustls::rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
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
