//! TLS on the broker's listener (rustls, ring provider): its certificate and key, and optionally the CA
//! whose client certificates it accepts (mutual TLS; a client certificate's common name becomes the
//! principal `User:<name>`). Brokers connect to each other with the same CA.

use std::sync::Arc;

use anyhow::Context as _;
use oxbow::client::{read_cert_and_key, TlsSettings};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;

use crate::config::SecurityConfig;

/// The listener's rustls configuration, when `security.tls_cert_file` is set.
pub fn server_config(security: &SecurityConfig) -> anyhow::Result<Option<Arc<rustls::ServerConfig>>> {
    let (Some(cert_file), Some(key_file)) = (&security.tls_cert_file, &security.tls_key_file) else {
        return Ok(None);
    };
    let (chain, key) = read_cert_and_key(cert_file, key_file).map_err(|e| anyhow::anyhow!("{e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
    let config = match security.tls_client_auth.as_str() {
        "none" => builder.with_no_client_auth().with_single_cert(chain, key)?,
        mode => {
            let ca_file = security
                .tls_ca_file
                .as_ref()
                .context("security.tls_client_auth needs security.tls_ca_file (the CA of client certificates)")?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in
                CertificateDer::pem_file_iter(ca_file).with_context(|| format!("reading {}", ca_file.display()))?
            {
                roots.add(cert?)?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if mode == "optional" { verifier.allow_unauthenticated() } else { verifier };
            builder.with_client_cert_verifier(verifier.build()?).with_single_cert(chain, key)?
        }
    };
    Ok(Some(Arc::new(config)))
}

/// How this broker connects to its peers when its listener uses TLS: trusting `tls_ca_file` and presenting
/// its own certificate (which peers requiring client certificates check).
pub fn peer_settings(security: &SecurityConfig) -> anyhow::Result<Option<TlsSettings>> {
    let (Some(cert_file), Some(key_file)) = (&security.tls_cert_file, &security.tls_key_file) else {
        return Ok(None);
    };
    let ca_file = security.tls_ca_file.as_ref().context("TLS between brokers needs security.tls_ca_file")?;
    let settings = TlsSettings::from_pem_files(ca_file, Some((cert_file.as_path(), key_file.as_path())))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Some(settings))
}

/// The user a verified client certificate names: its first common name, if it is a valid user name (and not
/// a broker's, which only the cluster secret proves).
pub fn certificate_user(certificate: &[u8]) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate).ok()?;
    let name = parsed.subject().iter_common_name().next()?.as_str().ok()?.to_string();
    let valid =
        oxbow::auth::scram::validate_user_name(&name).is_ok() && !name.starts_with(oxbow::auth::BROKER_USER_PREFIX);
    valid.then_some(name)
}
