//! `login`: checks credentials against a registry without storing anything.

use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};

use crate::registry::{client_for, map_error};
use crate::{Credentials, ImageError, ImageStore};

impl ImageStore {
    /// Verifies `creds` against `registry` (`host[:port]`, or `docker.io`): with a
    /// bearer-token registry the token service must accept them; with a basic-auth
    /// registry an authenticated request must succeed. Stores nothing.
    pub async fn login(&self, registry: &str, creds: &Credentials) -> Result<(), ImageError> {
        let registry = match registry {
            "index.docker.io" | "registry-1.docker.io" => "docker.io",
            other => other,
        };
        // A probe repository: the token service scopes tokens to one, and the
        // authenticated request below needs one. It does not have to exist.
        let probe = Reference::with_tag(
            registry.to_string(),
            "library/shoal-login-probe".to_string(),
            "latest".to_string(),
        );
        let unauthorized = |reason: &str| ImageError::Unauthorized {
            registry: registry.to_string(),
            reason: reason.to_string(),
        };
        let client = client_for(&self.inner.registry, registry)?;
        let auth = RegistryAuth::Basic(creds.username.clone(), creds.password.clone());
        match client.auth(&probe, &auth, RegistryOperation::Pull).await {
            // The token service accepted the credentials.
            Ok(Some(_)) => return Ok(()),
            Ok(None) => {}
            Err(e) => {
                return Err(match map_error(&probe, e) {
                    ImageError::PullAccessDenied { .. } => {
                        unauthorized("incorrect username or password")
                    }
                    other => other,
                });
            }
        }
        // Basic auth (or no auth at all): an authenticated request decides. A missing
        // repository (404) still proves the credentials were accepted.
        match client.list_tags(&probe, &auth, Some(1), None).await {
            Ok(_) => Ok(()),
            Err(OciDistributionError::UnauthorizedError { .. }) => {
                Err(unauthorized("incorrect username or password"))
            }
            Err(OciDistributionError::RegistryError { envelope, .. })
                if envelope.errors.iter().all(|e| {
                    matches!(e.code, OciErrorCode::NameUnknown | OciErrorCode::NotFound)
                }) =>
            {
                Ok(())
            }
            Err(OciDistributionError::RegistryError { envelope, .. })
                if envelope.errors.iter().any(|e| {
                    matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)
                }) =>
            {
                Err(unauthorized("incorrect username or password"))
            }
            Err(e) => Err(map_error(&probe, e)),
        }
    }
}
