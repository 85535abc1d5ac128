//! Registry access: which protocol and trust roots per registry, and turning the
//! registry client's errors into [`ImageError`]s a user understands.
//!
//! `oci-client` is pre-1.0; its types stay inside this crate.

use std::path::PathBuf;

use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

use crate::ImageError;
use crate::platform::Platform;
use crate::reference::familiar_repository;

/// How registries are reached.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// `host[:port]` of registries reached over plain HTTP; all others use HTTPS.
    pub insecure: Vec<String>,
    /// Docker-style `certs.d`: `<dir>/<host[:port]>/*.crt` are extra trusted roots for
    /// that registry.
    pub certs_dir: Option<PathBuf>,
    /// Platform chosen from manifest lists.
    pub platform: Platform,
}

/// Registry credentials (basic auth, also used to obtain bearer tokens).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or access token.
    pub password: String,
}

impl Credentials {
    /// Reads Docker's `X-Registry-Auth` value (base64url JSON with `username` and
    /// `password`; padded or not). None when absent, unreadable or without a user name.
    pub fn from_registry_auth(raw: &str) -> Option<Credentials> {
        use base64::Engine as _;
        let raw = raw.trim();
        let bytes = base64::engine::general_purpose::URL_SAFE
            .decode(raw)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(raw))
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let username = v.get("username")?.as_str()?.to_owned();
        let password = v.get("password")?.as_str()?.to_owned();
        (!username.is_empty()).then_some(Credentials { username, password })
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub(crate) fn registry_auth(creds: Option<&Credentials>) -> RegistryAuth {
    match creds {
        Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
        None => RegistryAuth::Anonymous,
    }
}

/// A client for one registry: HTTPS unless listed insecure, extra roots from
/// `certs_dir/<registry>/*.crt`, no platform resolver (we choose ourselves). A fresh
/// client per operation, since the library caches credentials per registry.
pub(crate) fn client_for(opts: &RegistryOptions, registry: &str) -> Result<Client, ImageError> {
    let mut extra_root_certificates = Vec::new();
    if let Some(dir) = &opts.certs_dir {
        let dir = dir.join(registry);
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                let mut paths: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                    .collect();
                paths.sort();
                for path in paths {
                    let data = std::fs::read(&path).map_err(ImageError::io("read", &path))?;
                    extra_root_certificates.push(Certificate {
                        encoding: CertificateEncoding::Pem,
                        data,
                    });
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(ImageError::io("read directory", &dir)(e)),
        }
    }
    let config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(opts.insecure.clone()),
        extra_root_certificates,
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(30)),
        read_timeout: Some(std::time::Duration::from_secs(120)),
        ..ClientConfig::default()
    };
    Client::try_from(config).map_err(|e| ImageError::Registry {
        registry: registry.to_string(),
        source: Box::new(e),
    })
}

/// Maps a registry client error for an operation on `reference`.
pub(crate) fn map_error(reference: &Reference, err: OciDistributionError) -> ImageError {
    let registry = reference.registry().to_string();
    let repository = familiar_repository(&format!(
        "{}/{}",
        reference.registry(),
        reference.repository()
    ));
    match err {
        OciDistributionError::UnauthorizedError { .. } => {
            ImageError::PullAccessDenied { repository }
        }
        OciDistributionError::AuthenticationFailure(reason) => ImageError::Unauthorized {
            registry,
            reason: reason.trim().to_string(),
        },
        OciDistributionError::RegistryError { envelope, url } => {
            let codes: Vec<&OciErrorCode> = envelope.errors.iter().map(|e| &e.code).collect();
            if codes.iter().any(|c| {
                matches!(
                    c,
                    OciErrorCode::Unauthorized | OciErrorCode::Denied | OciErrorCode::NameUnknown
                )
            }) {
                ImageError::PullAccessDenied { repository }
            } else if codes
                .iter()
                .any(|c| matches!(c, OciErrorCode::ManifestUnknown | OciErrorCode::NotFound))
                && url.contains("/manifests/")
            {
                ImageError::ManifestUnknown {
                    reference: crate::reference::familiar(&reference.whole()),
                }
            } else {
                ImageError::Registry {
                    registry,
                    source: Box::new(OciDistributionError::RegistryError { envelope, url }),
                }
            }
        }
        OciDistributionError::DigestError(oci_client::errors::DigestError::VerificationError {
            expected,
            actual,
        }) => ImageError::DigestMismatch {
            what: format!("content of {}", reference.whole()),
            expected,
            actual,
        },
        OciDistributionError::RequestError(e) => transport_error(&registry, Box::new(e)),
        other => ImageError::Registry {
            registry,
            source: Box::new(other),
        },
    }
}

/// Recognizes TLS failures in a transport error and words them like Docker does.
fn transport_error(registry: &str, err: Box<dyn std::error::Error + Send + Sync>) -> ImageError {
    let mut chain = Vec::new();
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    while let Some(e) = cur {
        chain.push(e.to_string());
        cur = e.source();
    }
    let chain = chain.join(": ");
    let tls = |reason: String| ImageError::Tls {
        registry: registry.to_string(),
        reason,
    };
    if chain.contains("UnknownIssuer") || chain.contains("unknown issuer") {
        tls(format!(
            "x509: certificate signed by unknown authority (add the registry's CA as \
             certs.d/{registry}/ca.crt) [{chain}]"
        ))
    } else if chain.contains("InvalidContentType") || chain.contains("corrupt message") {
        tls(format!(
            "http: server gave HTTP response to HTTPS client (list the registry as insecure \
             to use plain HTTP) [{chain}]"
        ))
    } else if chain.contains("invalid peer certificate") {
        tls(format!("x509: {chain}"))
    } else {
        ImageError::Registry {
            registry: registry.to_string(),
            source: err,
        }
    }
}

/// Maps an I/O error from a blob stream (which wraps transport and digest errors).
pub(crate) fn map_stream_error(reference: &Reference, err: std::io::Error) -> ImageError {
    let registry = reference.registry().to_string();
    if err.get_ref().is_none() {
        return ImageError::Registry {
            registry,
            source: Box::new(err),
        };
    }
    match err
        .into_inner()
        .map(|inner| inner.downcast::<OciDistributionError>())
    {
        Some(Ok(e)) => map_error(reference, *e),
        Some(Err(inner)) => transport_error(&registry, inner),
        None => ImageError::Registry {
            registry,
            source: Box::new(std::io::Error::other("blob stream failed")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_registry_errors() {
        let r: Reference = "localhost:5000/a/b:1".parse().unwrap();
        let e = map_error(
            &r,
            OciDistributionError::UnauthorizedError { url: "u".into() },
        );
        assert_eq!(
            e.to_string(),
            "pull access denied for localhost:5000/a/b, repository does not exist or may require authorization"
        );
        let envelope = serde_json::from_str(
            r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#,
        )
        .unwrap();
        let e = map_error(
            &r,
            OciDistributionError::RegistryError {
                envelope,
                url: "http://localhost:5000/v2/a/b/manifests/1".into(),
            },
        );
        assert_eq!(
            e.to_string(),
            "manifest for localhost:5000/a/b:1 not found: manifest unknown"
        );
        let e = map_error(
            &r,
            OciDistributionError::AuthenticationFailure("bad password\n".into()),
        );
        assert!(
            matches!(e, ImageError::Unauthorized { ref registry, .. } if registry == "localhost:5000")
        );
    }
}
