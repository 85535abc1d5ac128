//! A throw-away certificate authority and a server certificate it signed, for HTTPS
//! registries in tests.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A self-signed CA plus a P-256 server certificate (and its key) signed by it, all PEM.
#[derive(Clone, Debug)]
pub struct TestCa {
    /// The CA certificate: what clients must trust.
    pub ca_pem: String,
    /// The server certificate.
    pub cert_pem: String,
    /// The server's private key (PKCS#8).
    pub key_pem: String,
}

impl TestCa {
    /// A new CA and server certificate whose subject alternative names are `127.0.0.1`,
    /// `localhost` and `sans` (IP addresses become IP SANs, the rest DNS names).
    pub fn new(sans: &[&str]) -> Result<TestCa> {
        let ca_key = KeyPair::generate().context("generate CA key")?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "shoal testkit CA");
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).context("self-sign CA")?;
        let issuer = Issuer::new(ca_params, &ca_key);

        let mut names = vec!["127.0.0.1".to_string(), "localhost".to_string()];
        for s in sans {
            if !names.iter().any(|n| n == s) {
                names.push(s.to_string());
            }
        }
        let key = KeyPair::generate().context("generate server key")?;
        let mut params = CertificateParams::new(names)?;
        params
            .distinguished_name
            .push(DnType::CommonName, "shoal testkit server");
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .context("sign server cert")?;
        Ok(TestCa {
            ca_pem: ca_cert.pem(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }

    /// Write `ca.crt`, `server.crt` and `server.key` into `dir`; returns their paths in
    /// that order. (`ca.crt` alone in a directory is what `skopeo --cert-dir` expects.)
    pub fn write_to(&self, dir: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let paths = (
            dir.join("ca.crt"),
            dir.join("server.crt"),
            dir.join("server.key"),
        );
        for (p, text) in [
            (&paths.0, &self.ca_pem),
            (&paths.1, &self.cert_pem),
            (&paths.2, &self.key_pem),
        ] {
            fs::write(p, text).with_context(|| format!("write {}", p.display()))?;
        }
        Ok(paths)
    }
}
