//! TLS for clients (rustls with the ring provider): the CA that signs the brokers' certificates, and
//! optionally this client's own certificate for mutual TLS (its common name is then the principal).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::TlsConnector;

use super::ClientError;

/// How a client connects over TLS. Cheap to clone.
#[derive(Clone)]
pub struct TlsSettings {
    connector: TlsConnector,
    /// The name checked against the broker's certificate; `None`: the host of the address dialled.
    pub server_name: Option<String>,
}

impl std::fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsSettings").field("server_name", &self.server_name).finish_non_exhaustive()
    }
}

impl TlsSettings {
    /// Trusts the CA certificates in `ca_file` (PEM); presents `cert_file`/`key_file` when both are given.
    pub fn from_pem_files(ca_file: &Path, client_cert: Option<(&Path, &Path)>) -> Result<TlsSettings, ClientError> {
        let config_error =
            |what: &str, path: &Path, error: String| ClientError::Config(format!("{what} {}: {error}", path.display()));
        let mut roots = rustls::RootCertStore::empty();
        for cert in
            CertificateDer::pem_file_iter(ca_file).map_err(|e| config_error("reading CA", ca_file, e.to_string()))?
        {
            let cert = cert.map_err(|e| config_error("reading CA", ca_file, e.to_string()))?;
            roots.add(cert).map_err(|e| config_error("adding CA", ca_file, e.to_string()))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let config = match client_cert {
            Some((cert_file, key_file)) => {
                let (chain, key) = read_cert_and_key(cert_file, key_file)?;
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| config_error("client certificate", cert_file, e.to_string()))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(TlsSettings { connector: TlsConnector::from(Arc::new(config)), server_name: None })
    }

    /// Runs the handshake on `stream`, checking the broker's certificate against `addr`'s host (or
    /// `server_name`).
    pub async fn connect(
        &self,
        addr: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
        let host = self.server_name.clone().unwrap_or_else(|| host_of(addr).to_string());
        let name = ServerName::try_from(host.clone())
            .map_err(|_| ClientError::Config(format!("'{host}' is not a valid TLS server name")))?;
        self.connector.connect(name, stream).await.map_err(|error| ClientError::Connect {
            addr: addr.to_string(),
            reason: format!("TLS handshake failed: {error}"),
        })
    }
}

/// A PEM certificate chain and its private key.
pub fn read_cert_and_key(
    cert_file: &Path,
    key_file: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), ClientError> {
    let chain = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| ClientError::Config(format!("reading certificate {}: {e}", cert_file.display())))?;
    if chain.is_empty() {
        return Err(ClientError::Config(format!("no certificate in {}", cert_file.display())));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| ClientError::Config(format!("reading private key {}: {e}", key_file.display())))?;
    Ok((chain, key))
}

/// `host` of `host:port` (`[v6]:port` too).
fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}
