//! Cluster PKI: the root CA of a swarm, node keys and certificates, join tokens.
//!
//! Shapes follow Docker Swarm (SwarmKit) so operators see familiar values:
//! - the root CA is an ECDSA P-256 self-signed certificate (CN `swarm-ca`) valid 20 years;
//! - node certificates carry the node ID (CN and DNS SAN), the role (OU `swarm-manager` /
//!   `swarm-worker`) and the cluster ID (O); managers also get the DNS SAN `swarm-manager`
//!   so a client can dial "any manager" and verify it;
//! - join tokens are `SWMTKN-1-<CA digest, 50 base36>-<secret, 25 base36>`;
//! - node IDs are 25 random base36 characters.
//!
//! The CA digest here is the SHA-256 of the CA certificate's DER (SwarmKit hashes the PEM
//! text; DER is independent of PEM line wrapping), written in base36 and zero-padded to 50
//! characters.
//!
//! CA rotation (`swarm ca --rotate`) is a cross-signed transition: [`RootCa::cross_sign`]
//! re-signs the new root's certificate with the old root's key, so a node that trusts only
//! the old root verifies the chain leaf → cross-signed new CA → old root.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, DnValue, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::time::ASN1Time;

/// Common name of every root CA, as Swarm.
pub const CA_COMMON_NAME: &str = "swarm-ca";
/// DNS SAN (and TLS server name) every manager certificate carries: "any manager".
pub const MANAGER_SERVER_NAME: &str = "swarm-manager";
/// Organizational unit of a manager certificate.
pub const MANAGER_OU: &str = "swarm-manager";
/// Organizational unit of a worker certificate.
pub const WORKER_OU: &str = "swarm-worker";
/// Validity of a root CA: 20 years, as Swarm.
pub const CA_VALIDITY: Duration = Duration::from_secs(20 * 365 * 24 * 3600);
/// Default validity of node certificates: 90 days, as Swarm (`--cert-expiry`).
pub const DEFAULT_NODE_CERT_VALIDITY: Duration = Duration::from_secs(90 * 24 * 3600);
/// Backdating of `not_before`, so small clock differences between nodes do not make a
/// fresh certificate "not yet valid".
pub const CLOCK_SKEW: Duration = Duration::from_secs(60);
/// Length of a CA digest in base36.
pub const DIGEST_LEN: usize = 50;
/// Length of a join-token secret and of a node ID in base36 (128 random bits).
pub const SECRET_LEN: usize = 25;
/// Prefix and version of join tokens.
pub const TOKEN_PREFIX: &str = "SWMTKN-1-";

const BASE36: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";

/// Errors of the PKI module.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("cannot generate {what}: {source}")]
    Generate {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot parse {what}: {reason}")]
    Parse { what: &'static str, reason: String },
    #[error("{what} is not a CA certificate")]
    NotCa { what: &'static str },
    #[error("the CA key does not match the CA certificate")]
    KeyMismatch,
    #[error("cannot sign a certificate for node {node_id}: {source}")]
    Sign {
        node_id: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("cannot cross-sign the new root CA: {reason}")]
    CrossSign { reason: String },
    #[error("invalid node ID {node_id:?}: must be a DNS label of [0-9a-z]")]
    InvalidNodeId { node_id: String },
    #[error("invalid certificate validity: {reason}")]
    Validity { reason: String },
    #[error("certificate has no {field}: not a node certificate")]
    MissingField { field: &'static str },
    #[error("certificate has an unknown role {ou:?}")]
    UnknownRole { ou: String },
    #[error("invalid join token: {reason}")]
    InvalidJoinToken { reason: &'static str },
    #[error("no system randomness: {reason}")]
    Random { reason: String },
}

/// The role a certificate grants. `shoal_store::model::Role` is the stored one; the
/// certificate's role is what authorises calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Worker,
    Manager,
}

impl Role {
    /// The certificate OU for this role (`swarm-manager` / `swarm-worker`).
    pub fn ou(self) -> &'static str {
        match self {
            Role::Manager => MANAGER_OU,
            Role::Worker => WORKER_OU,
        }
    }

    /// The role of a certificate OU.
    pub fn from_ou(ou: &str) -> Option<Role> {
        match ou {
            MANAGER_OU => Some(Role::Manager),
            WORKER_OU => Some(Role::Worker),
            _ => None,
        }
    }
}

impl From<shoal_store::model::Role> for Role {
    fn from(role: shoal_store::model::Role) -> Role {
        match role {
            shoal_store::model::Role::Worker => Role::Worker,
            shoal_store::model::Role::Manager => Role::Manager,
        }
    }
}

impl From<Role> for shoal_store::model::Role {
    fn from(role: Role) -> shoal_store::model::Role {
        match role {
            Role::Worker => shoal_store::model::Role::Worker,
            Role::Manager => shoal_store::model::Role::Manager,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Manager => "manager",
            Role::Worker => "worker",
        })
    }
}

/// Who a node certificate names: parsed from a certificate that TLS already verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub node_id: String,
    pub role: Role,
    pub cluster_id: String,
    pub not_after: DateTime<Utc>,
}

/// A cluster root CA: certificate and private key (managers only hold the key).
#[derive(Clone)]
pub struct RootCa {
    cert_pem: String,
    key_pem: String,
    cert_der: CertificateDer<'static>,
}

impl fmt::Debug for RootCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RootCa")
            .field("digest", &self.digest())
            .finish_non_exhaustive()
    }
}

impl RootCa {
    /// Creates a new root CA for the cluster `cluster_id` (subject CN=swarm-ca,
    /// O=`<cluster id>`), valid from one minute ago for 20 years.
    pub fn generate(cluster_id: &str) -> Result<RootCa, PkiError> {
        let now = Utc::now();
        Self::generate_with_validity(
            cluster_id,
            now - chrono_duration(CLOCK_SKEW)?,
            now + chrono_duration(CA_VALIDITY)?,
        )
    }

    /// As [`RootCa::generate`] with an explicit validity window (tests of expiry).
    pub fn generate_with_validity(
        cluster_id: &str,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<RootCa, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: "CA key",
                source,
            }
        })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, CA_COMMON_NAME);
        if !cluster_id.is_empty() {
            dn.push(DnType::OrganizationName, cluster_id);
        }
        let mut params = ca_params(dn)?;
        set_validity(&mut params, not_before, not_after)?;
        let cert = params
            .self_signed(&key)
            .map_err(|source| PkiError::Generate {
                what: "CA certificate",
                source,
            })?;
        Ok(RootCa {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        })
    }

    /// Loads a root CA from its PEM certificate and PEM (PKCS#8) key, checking that the
    /// certificate is a CA and that the key matches it.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<RootCa, PkiError> {
        let cert_der = cert_der_from_pem(cert_pem, "CA certificate")?;
        let (_, x509) = X509Certificate::from_der(&cert_der).map_err(|e| PkiError::Parse {
            what: "CA certificate",
            reason: e.to_string(),
        })?;
        if !x509.is_ca() {
            return Err(PkiError::NotCa {
                what: "the root certificate",
            });
        }
        let key = KeyPair::from_pem(key_pem).map_err(|e| PkiError::Parse {
            what: "CA key",
            reason: e.to_string(),
        })?;
        if x509.public_key().subject_public_key.data.as_ref() != key.public_key_raw() {
            return Err(PkiError::KeyMismatch);
        }
        Ok(RootCa {
            cert_pem: cert_pem.to_owned(),
            key_pem: key_pem.to_owned(),
            cert_der,
        })
    }

    /// The CA certificate, PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The CA private key, PEM (PKCS#8). Secret: store encrypted.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The CA certificate, DER.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// The CA digest that join tokens pin (base36 SHA-256 of the DER, 50 characters).
    pub fn digest(&self) -> String {
        digest_of(&self.cert_der)
    }

    /// When the CA certificate expires (`shoal info` shows it).
    pub fn not_after(&self) -> Result<DateTime<Utc>, PkiError> {
        not_after_of(&self.cert_der)
    }

    fn issuer(&self) -> Result<Issuer<'static, KeyPair>, PkiError> {
        let key = KeyPair::from_pem(&self.key_pem).map_err(|e| PkiError::Parse {
            what: "CA key",
            reason: e.to_string(),
        })?;
        Issuer::from_ca_cert_der(&self.cert_der, key).map_err(|e| PkiError::Parse {
            what: "CA certificate",
            reason: e.to_string(),
        })
    }

    /// Issues a node certificate for the key in `csr_pem`, valid from one minute ago for
    /// `validity`. The CSR's own subject and extensions are ignored: node ID, role and
    /// cluster ID come from the arguments (the manager decides).
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        validity: Duration,
    ) -> Result<String, PkiError> {
        let now = Utc::now();
        self.sign_csr_with_validity(
            csr_pem,
            node_id,
            role,
            cluster_id,
            now - chrono_duration(CLOCK_SKEW)?,
            now + chrono_duration(validity)?,
        )
    }

    /// As [`RootCa::sign_csr`] with an explicit validity window (tests issue expired or
    /// not-yet-valid certificates with it).
    pub fn sign_csr_with_validity(
        &self,
        csr_pem: &str,
        node_id: &str,
        role: Role,
        cluster_id: &str,
        not_before: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> Result<String, PkiError> {
        validate_node_id(node_id)?;
        if not_after <= not_before {
            return Err(PkiError::Validity {
                reason: format!("not_after {not_after} is not after not_before {not_before}"),
            });
        }
        let csr =
            CertificateSigningRequestParams::from_pem(csr_pem).map_err(|e| PkiError::Parse {
                what: "certificate signing request",
                reason: e.to_string(),
            })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        dn.push(DnType::OrganizationalUnitName, role.ou());
        dn.push(DnType::OrganizationName, cluster_id);
        let mut sans = vec![SanType::DnsName(node_id.try_into().map_err(|_| {
            PkiError::InvalidNodeId {
                node_id: node_id.to_owned(),
            }
        })?)];
        if role == Role::Manager {
            sans.push(SanType::DnsName(MANAGER_SERVER_NAME.try_into().map_err(
                |source| PkiError::Sign {
                    node_id: node_id.to_owned(),
                    source,
                },
            )?));
        }
        let mut params = CertificateParams::default();
        params.distinguished_name = dn;
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial()?);
        set_validity(&mut params, not_before, not_after)?;
        let cert = params
            .signed_by(&csr.public_key, &self.issuer()?)
            .map_err(|source| PkiError::Sign {
                node_id: node_id.to_owned(),
                source,
            })?;
        Ok(cert.pem())
    }

    /// Returns `new`'s certificate re-signed by this (old) CA: same subject, public key and
    /// validity as the new root, issuer = this CA. Nodes that trust only the old root verify
    /// leaf → cross-signed new CA → old root while the rotation is in progress.
    pub fn cross_sign(&self, new: &RootCa) -> Result<String, PkiError> {
        let (_, x509) = X509Certificate::from_der(&new.cert_der).map_err(|e| PkiError::Parse {
            what: "new CA certificate",
            reason: e.to_string(),
        })?;
        let dn = distinguished_name_of(&x509)?;
        let not_before = x509.validity().not_before.to_datetime();
        let not_after = x509.validity().not_after.to_datetime();
        let mut params = ca_params(dn)?;
        params.not_before = not_before;
        params.not_after = not_after;
        let new_key = KeyPair::from_pem(&new.key_pem).map_err(|e| PkiError::Parse {
            what: "new CA key",
            reason: e.to_string(),
        })?;
        let cert =
            params
                .signed_by(&new_key, &self.issuer()?)
                .map_err(|e| PkiError::CrossSign {
                    reason: e.to_string(),
                })?;
        // Chains are built by exact subject bytes: make sure the copy is exact.
        let (_, crossed) =
            X509Certificate::from_der(cert.der()).map_err(|e| PkiError::CrossSign {
                reason: e.to_string(),
            })?;
        if crossed.subject().as_raw() != x509.subject().as_raw() {
            return Err(PkiError::CrossSign {
                reason: "the new CA's subject cannot be reproduced exactly".to_owned(),
            });
        }
        Ok(cert.pem())
    }
}

/// Parameters of a root CA certificate (validity left to the caller).
fn ca_params(dn: DistinguishedName) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.serial_number = Some(random_serial()?);
    Ok(params)
}

/// Copies a certificate subject into an rcgen name, keeping each value's string type so
/// the encoding is byte-identical.
fn distinguished_name_of(x509: &X509Certificate<'_>) -> Result<DistinguishedName, PkiError> {
    use x509_parser::der_parser::asn1_rs::Tag;
    let mut dn = DistinguishedName::new();
    for rdn in x509.subject().iter() {
        for attr in rdn.iter() {
            let oid: Vec<u64> = attr
                .attr_type()
                .iter()
                .ok_or_else(|| PkiError::CrossSign {
                    reason: "subject attribute with an oversized OID".to_owned(),
                })?
                .collect();
            let ty = match oid.as_slice() {
                [2, 5, 4, 3] => DnType::CommonName,
                [2, 5, 4, 10] => DnType::OrganizationName,
                [2, 5, 4, 11] => DnType::OrganizationalUnitName,
                [2, 5, 4, 6] => DnType::CountryName,
                [2, 5, 4, 7] => DnType::LocalityName,
                [2, 5, 4, 8] => DnType::StateOrProvinceName,
                _ => DnType::CustomDnType(oid.clone()),
            };
            let text = attr.as_str().map_err(|e| PkiError::CrossSign {
                reason: format!("subject attribute is not text: {e}"),
            })?;
            let value = match attr.attr_value().tag() {
                Tag::Utf8String => DnValue::Utf8String(text.to_owned()),
                Tag::PrintableString => {
                    DnValue::PrintableString(text.try_into().map_err(|e: rcgen::Error| {
                        PkiError::CrossSign {
                            reason: e.to_string(),
                        }
                    })?)
                }
                other => {
                    return Err(PkiError::CrossSign {
                        reason: format!("unsupported subject string type {other:?}"),
                    });
                }
            };
            dn.push(ty, value);
        }
    }
    Ok(dn)
}

/// A node's private key (ECDSA P-256); it never leaves the node, only its CSR does.
pub struct NodeKey {
    key: KeyPair,
}

impl fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeKey").finish_non_exhaustive()
    }
}

impl NodeKey {
    /// A fresh P-256 key.
    pub fn generate() -> Result<NodeKey, PkiError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| {
            PkiError::Generate {
                what: "node key",
                source,
            }
        })?;
        Ok(NodeKey { key })
    }

    /// Loads a PEM (PKCS#8) key.
    pub fn from_pem(pem: &str) -> Result<NodeKey, PkiError> {
        let key = KeyPair::from_pem(pem).map_err(|e| PkiError::Parse {
            what: "node key",
            reason: e.to_string(),
        })?;
        Ok(NodeKey { key })
    }

    /// The key as PEM (PKCS#8). Secret: store encrypted.
    pub fn to_pem(&self) -> String {
        self.key.serialize_pem()
    }

    /// The key in the form rustls takes.
    pub fn private_key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }

    /// A certificate signing request (PEM) with CN=`<node id>`. The CA ignores the subject
    /// and decides the identity itself; the CSR proves possession of the key.
    pub fn csr(&self, node_id: &str) -> Result<String, PkiError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, node_id);
        params.distinguished_name = dn;
        let csr = params
            .serialize_request(&self.key)
            .map_err(|source| PkiError::Generate {
                what: "certificate signing request",
                source,
            })?;
        csr.pem().map_err(|source| PkiError::Generate {
            what: "certificate signing request PEM",
            source,
        })
    }
}

/// Parses the identity a node certificate carries (node ID from CN, role from OU, cluster
/// ID from O, expiry). Does not verify the certificate: TLS has done that.
pub fn identity_of(cert_der: &[u8]) -> Result<NodeIdentity, PkiError> {
    let (_, x509) = X509Certificate::from_der(cert_der).map_err(|e| PkiError::Parse {
        what: "node certificate",
        reason: e.to_string(),
    })?;
    let subject = x509.subject();
    let first = |iter: &mut dyn Iterator<Item = &x509_parser::x509::AttributeTypeAndValue<'_>>,
                 field: &'static str|
     -> Result<String, PkiError> {
        let attr = iter.next().ok_or(PkiError::MissingField { field })?;
        attr.as_str()
            .map(str::to_owned)
            .map_err(|_| PkiError::MissingField { field })
    };
    let node_id = first(&mut subject.iter_common_name(), "common name (node ID)")?;
    let ou = first(
        &mut subject.iter_organizational_unit(),
        "organizational unit (role)",
    )?;
    let cluster_id = first(
        &mut subject.iter_organization(),
        "organization (cluster ID)",
    )?;
    let role = Role::from_ou(&ou).ok_or(PkiError::UnknownRole { ou })?;
    Ok(NodeIdentity {
        node_id,
        role,
        cluster_id,
        not_after: timestamp(x509.validity().not_after.timestamp())?,
    })
}

/// When a certificate expires.
pub fn not_after_of(cert_der: &[u8]) -> Result<DateTime<Utc>, PkiError> {
    let (_, x509) = X509Certificate::from_der(cert_der).map_err(|e| PkiError::Parse {
        what: "certificate",
        reason: e.to_string(),
    })?;
    timestamp(x509.validity().not_after.timestamp())
}

/// The digest join tokens pin, of any certificate (DER): base36 SHA-256, 50 characters.
pub fn digest_of(cert_der: &[u8]) -> String {
    let hash = ring::digest::digest(&ring::digest::SHA256, cert_der);
    base36(hash.as_ref(), DIGEST_LEN)
}

/// Finds, in a chain a server presented, the CA certificate whose digest is `ca_digest`
/// (the joiner learns its root CA this way).
pub fn find_by_digest<'a>(
    chain: &'a [CertificateDer<'static>],
    ca_digest: &str,
) -> Option<&'a CertificateDer<'static>> {
    chain.iter().find(|c| digest_of(c) == ca_digest)
}

/// Parses the first certificate of a PEM text.
pub fn cert_der_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<CertificateDer<'static>, PkiError> {
    certs_from_pem(pem, what)?
        .into_iter()
        .next()
        .ok_or_else(|| PkiError::Parse {
            what,
            reason: "no CERTIFICATE block".to_owned(),
        })
}

/// Parses every certificate of a PEM text (a chain or a bundle of roots).
pub fn certs_from_pem(
    pem: &str,
    what: &'static str,
) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PkiError::Parse {
            what,
            reason: e.to_string(),
        })
}

/// Encodes a DER certificate as PEM.
pub fn cert_pem_of(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::with_capacity(b64.len() + b64.len() / 64 + 60);
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    let mut rest = b64.as_str();
    while !rest.is_empty() {
        // base64 is ASCII: any byte index is a char boundary.
        let (line, tail) = rest.split_at(rest.len().min(64));
        out.push_str(line);
        out.push('\n');
        rest = tail;
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

/// A join token: pins the cluster's root CA by digest and carries the role secret.
/// `Display`/`FromStr` use Swarm's `SWMTKN-1-<digest>-<secret>`. `Debug` hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    pub ca_digest: String,
    pub secret: String,
}

impl fmt::Debug for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("ca_digest", &self.ca_digest)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl JoinToken {
    /// A new token for the CA with digest `ca_digest`, with a fresh 128-bit secret.
    pub fn generate(ca_digest: &str) -> Result<JoinToken, PkiError> {
        Ok(JoinToken {
            ca_digest: ca_digest.to_owned(),
            secret: random_base36()?,
        })
    }

    /// Compares the secret of this (expected) token with a presented one in constant time.
    pub fn matches_secret(&self, presented: &JoinToken) -> bool {
        constant_time_eq(self.secret.as_bytes(), presented.secret.as_bytes())
    }
}

impl fmt::Display for JoinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}{}-{}", self.ca_digest, self.secret)
    }
}

impl FromStr for JoinToken {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<JoinToken, PkiError> {
        let s = s.trim();
        let parts: Vec<&str> = s.split('-').collect();
        if parts.len() != 4 || parts[0] != "SWMTKN" {
            return Err(PkiError::InvalidJoinToken {
                reason: "expected SWMTKN-1-<CA digest>-<secret>",
            });
        }
        if parts[1] != "1" {
            return Err(PkiError::InvalidJoinToken {
                reason: "unsupported token version (expected 1)",
            });
        }
        let (digest, secret) = (parts[2], parts[3]);
        if digest.len() != DIGEST_LEN || !is_base36(digest) {
            return Err(PkiError::InvalidJoinToken {
                reason: "the CA digest must be 50 characters of [0-9a-z]",
            });
        }
        if secret.len() != SECRET_LEN || !is_base36(secret) {
            return Err(PkiError::InvalidJoinToken {
                reason: "the secret must be 25 characters of [0-9a-z]",
            });
        }
        Ok(JoinToken {
            ca_digest: digest.to_owned(),
            secret: secret.to_owned(),
        })
    }
}

/// A new node ID: 25 random base36 characters (128 bits), as SwarmKit. Always a valid
/// DNS name, since it is also the node certificate's SAN and TLS server name.
pub fn new_node_id() -> Result<String, PkiError> {
    loop {
        let id = random_base36()?;
        if validate_node_id(&id).is_ok() {
            return Ok(id);
        }
    }
}

fn validate_node_id(node_id: &str) -> Result<(), PkiError> {
    let invalid = || PkiError::InvalidNodeId {
        node_id: node_id.to_owned(),
    };
    if node_id.is_empty() || node_id.len() > 63 || !is_base36(node_id) {
        return Err(invalid());
    }
    // rustls refuses all-numeric (or 0x-hex) final labels as server names.
    rustls::pki_types::DnsName::try_from(node_id).map_err(|_| invalid())?;
    Ok(())
}

fn is_base36(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
}

fn random_base36() -> Result<String, PkiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PkiError::Random {
        reason: e.to_string(),
    })?;
    Ok(base36(&bytes, SECRET_LEN))
}

fn random_serial() -> Result<SerialNumber, PkiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| PkiError::Random {
        reason: e.to_string(),
    })?;
    // Positive and non-zero leading byte: a DER INTEGER of exactly 16 bytes.
    bytes[0] = (bytes[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

/// Big-endian bytes as a base36 number, zero-padded on the left to `width`.
pub fn base36(bytes: &[u8], width: usize) -> String {
    let mut num = bytes.to_vec();
    let mut digits = Vec::new();
    while num.iter().any(|&b| b != 0) {
        let mut rem: u32 = 0;
        for b in num.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            // acc < 36 * 256, so the quotient fits a byte.
            *b = (acc / 36) as u8;
            rem = acc % 36;
        }
        digits.push(BASE36[rem as usize]);
    }
    while digits.len() < width {
        digits.push(b'0');
    }
    digits.iter().rev().map(|&d| char::from(d)).collect()
}

/// Equality of two byte strings in time independent of where they differ (the length is
/// not secret: every secret has the same length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

fn chrono_duration(d: Duration) -> Result<chrono::Duration, PkiError> {
    chrono::Duration::from_std(d).map_err(|e| PkiError::Validity {
        reason: e.to_string(),
    })
}

fn timestamp(secs: i64) -> Result<DateTime<Utc>, PkiError> {
    Utc.timestamp_opt(secs, 0)
        .single()
        .ok_or_else(|| PkiError::Validity {
            reason: format!("timestamp {secs} out of range"),
        })
}

/// Sets a certificate's validity from chrono times (converted through x509-parser's
/// `ASN1Time`, which yields the `time` type rcgen takes: no direct `time` dependency).
fn set_validity(
    params: &mut CertificateParams,
    not_before: DateTime<Utc>,
    not_after: DateTime<Utc>,
) -> Result<(), PkiError> {
    let convert = |t: DateTime<Utc>| {
        ASN1Time::from_timestamp(t.timestamp())
            .map(|a| a.to_datetime())
            .map_err(|e| PkiError::Validity {
                reason: format!("{t}: {e}"),
            })
    };
    params.not_before = convert(not_before)?;
    params.not_after = convert(not_after)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36_matches_big_integer_text() {
        assert_eq!(base36(&[1, 0], 4), "0074");
        assert_eq!(base36(&[0xff; 16], 25), "f5lxx1zz5pnorynqglhzmsp33");
        assert_eq!(
            base36(&[0xff; 32], 50),
            "6dp5qcb22im238nr3wvp0ic7q99w035jmy2iw7i6n43d37jtof"
        );
        let h = ring::digest::digest(&ring::digest::SHA256, b"abc");
        assert_eq!(
            base36(h.as_ref(), 50),
            "4nb7oofka9ml8nasnokxxc1unhmtpr1wxsuwhpd9km3vt5as31"
        );
        assert_eq!(base36(&[0; 4], 3), "000");
    }
}

/// The identity of the first certificate of a PEM chain.
pub fn identity_of_pem(pem: &str) -> Result<NodeIdentity, PkiError> {
    identity_of(&cert_der_from_pem(pem, "certificate")?)
}

/// `not_before` and `not_after` of the first certificate of a PEM chain.
pub fn validity_of_pem(pem: &str) -> Result<(DateTime<Utc>, DateTime<Utc>), PkiError> {
    let der = cert_der_from_pem(pem, "certificate")?;
    let (_, x509) = X509Certificate::from_der(&der).map_err(|e| PkiError::Parse {
        what: "certificate",
        reason: e.to_string(),
    })?;
    Ok((
        timestamp(x509.validity().not_before.timestamp())?,
        timestamp(x509.validity().not_after.timestamp())?,
    ))
}

/// A digest of a bundle of root certificates (order-independent), to tell whether a
/// node's trust matches the cluster's.
pub fn bundle_digest(roots_pem: &str) -> String {
    let mut digests: Vec<String> = certs_from_pem(roots_pem, "root certificates")
        .map(|certs| certs.iter().map(|c| digest_of(c)).collect())
        .unwrap_or_default();
    digests.sort();
    digest_of(digests.join(",").as_bytes())
}

/// Whether the first certificate of `cert_pem` is signed by the CA of `ca_pem` (false on
/// any parse error).
pub fn issued_by(cert_pem: &str, ca_pem: &str) -> bool {
    let (Ok(leaf), Ok(ca)) = (
        cert_der_from_pem(cert_pem, "certificate"),
        cert_der_from_pem(ca_pem, "CA certificate"),
    ) else {
        return false;
    };
    let (Ok((_, leaf)), Ok((_, ca))) = (
        X509Certificate::from_der(&leaf),
        X509Certificate::from_der(&ca),
    ) else {
        return false;
    };
    leaf.verify_signature(Some(ca.public_key())).is_ok()
}

impl JoinToken {
    /// Parses a stored token, `None` when it is malformed.
    pub fn parse_lossy(s: &str) -> Option<JoinToken> {
        s.parse().ok()
    }

    /// The token text with the same secret bound to another CA digest (after a root
    /// rotation, tokens pin the new root).
    pub fn with_digest(token: &str, ca_digest: &str) -> String {
        match token.parse::<JoinToken>() {
            Ok(t) => JoinToken {
                ca_digest: ca_digest.to_owned(),
                secret: t.secret,
            }
            .to_string(),
            Err(_) => token.to_owned(),
        }
    }

    /// Whether `presented` is this token: same CA digest and (constant-time) same secret.
    pub fn same_as(&self, presented: &JoinToken) -> bool {
        self.ca_digest == presented.ca_digest && self.matches_secret(presented)
    }
}

#[cfg(test)]
mod helper_tests {
    use super::*;

    #[test]
    fn issued_by_and_bundles() {
        let a = RootCa::generate("c1").unwrap();
        let b = RootCa::generate("c1").unwrap();
        let key = NodeKey::generate().unwrap();
        let id = new_node_id().unwrap();
        let cert = a
            .sign_csr(
                &key.csr(&id).unwrap(),
                &id,
                Role::Worker,
                "c1",
                DEFAULT_NODE_CERT_VALIDITY,
            )
            .unwrap();
        assert!(issued_by(&cert, a.cert_pem()));
        assert!(!issued_by(&cert, b.cert_pem()));
        assert_eq!(identity_of_pem(&cert).unwrap().node_id, id);
        let (nb, na) = validity_of_pem(&cert).unwrap();
        assert!(na > nb);
        let ab = format!("{}{}", a.cert_pem(), b.cert_pem());
        let ba = format!("{}{}", b.cert_pem(), a.cert_pem());
        assert_eq!(bundle_digest(&ab), bundle_digest(&ba));
        assert_ne!(bundle_digest(&ab), bundle_digest(a.cert_pem()));
        let t = JoinToken::generate(&a.digest()).unwrap();
        let moved = JoinToken::with_digest(&t.to_string(), &b.digest());
        let m: JoinToken = moved.parse().unwrap();
        assert_eq!(m.ca_digest, b.digest());
        assert!(t.matches_secret(&m));
        assert!(!t.same_as(&m));
        assert!(t.same_as(&t.to_string().parse().unwrap()));
    }
}
