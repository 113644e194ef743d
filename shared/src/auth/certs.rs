//! A development certificate authority (rcgen, ring): a CA, a server certificate for the brokers (for the
//! host names and addresses they are reached at) and client certificates whose common name is the user.
//! For `oxbow certs create`, `oxbow-local` and the tests; production deployments bring their own PKI.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

pub struct DevCa {
    certificate: rcgen::Certificate,
    key: KeyPair,
}

/// How long issued certificates are valid.
#[derive(Debug, Clone, Copy)]
pub enum Validity {
    /// From an hour ago for this many days.
    Days(i64),
    /// Expired a year ago (for tests of expiry).
    Expired,
}

impl DevCa {
    pub fn new(name: &str) -> Result<DevCa, rcgen::Error> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name = distinguished_name(name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        set_validity(&mut params, Validity::Days(3650));
        let key = KeyPair::generate()?;
        let certificate = params.self_signed(&key)?;
        Ok(DevCa { certificate, key })
    }

    pub fn certificate_pem(&self) -> String {
        self.certificate.pem()
    }

    /// A certificate for `common_name`, valid for the `hosts` (DNS names or IP addresses) when given, usable
    /// as a server and as a client; returns (certificate PEM, key PEM).
    pub fn issue(
        &self,
        common_name: &str,
        hosts: &[String],
        validity: Validity,
    ) -> Result<(String, String), rcgen::Error> {
        let mut params = CertificateParams::new(hosts.to_vec())?;
        params.distinguished_name = distinguished_name(common_name);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        set_validity(&mut params, validity);
        let key = KeyPair::generate()?;
        let certificate = params.signed_by(&key, &self.certificate, &self.key)?;
        Ok((certificate.pem(), key.serialize_pem()))
    }

    /// Writes `ca.pem`, `<name>.pem` and `<name>.key` for a server named `server` valid for `hosts`, and a
    /// client certificate per user; returns the files written. Keys are written mode 0600.
    pub fn write_set(
        &self,
        dir: &Path,
        server: &str,
        hosts: &[String],
        users: &[String],
    ) -> std::io::Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut written = vec![write(dir, "ca.pem", &self.certificate_pem(), false)?];
        for (name, subject_hosts) in std::iter::once((server, hosts)).chain(users.iter().map(|u| (u.as_str(), &[][..])))
        {
            let (certificate, key) =
                self.issue(name, subject_hosts, Validity::Days(825)).map_err(std::io::Error::other)?;
            written.push(write(dir, &format!("{name}.pem"), &certificate, false)?);
            written.push(write(dir, &format!("{name}.key"), &key, true)?);
        }
        Ok(written)
    }
}

fn distinguished_name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let now = time::OffsetDateTime::now_utc();
    let (from, until) = match validity {
        Validity::Days(days) => (now - time::Duration::hours(1), now + time::Duration::days(days)),
        Validity::Expired => (now - time::Duration::days(730), now - time::Duration::days(365)),
    };
    params.not_before = from;
    params.not_after = until;
}

fn write(dir: &Path, name: &str, contents: &str, secret: bool) -> std::io::Result<PathBuf> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = dir.join(name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&path)?;
    file.write_all(contents.as_bytes())?;
    Ok(path)
}
