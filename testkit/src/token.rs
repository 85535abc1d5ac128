//! A bearer-token issuer for `docker-registry`'s `auth: token` mode.
//!
//! Tokens are ES256 JWTs whose header carries the signing certificate in `x5c`; the registry
//! (distribution 2.8, `registry/auth/token/token.go`) checks `iss`, `aud` (a string),
//! `exp`/`nbf` (±60 s leeway), verifies the `x5c` leaf against its `rootcertbundle` (here
//! the leaf is the self-signed root itself) and the signature as raw `r‖s` over
//! `base64url(header).base64url(claims)`, then grants what `access` lists.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::{Value, json};

use crate::registry::TokenAuthConfig;

/// Lifetime of issued tokens, seconds.
pub const TOKEN_TTL: u64 = 300;

struct Shared {
    users: Vec<(String, String)>,
    service: String,
    issuer: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    x5c: String,
    issued: Mutex<Vec<(Option<String>, String)>>,
    serial: AtomicU64,
    stop: AtomicBool,
}

/// A token server on 127.0.0.1:random serving `GET /token?service=…&scope=…`.
///
/// Anonymous requests get `pull` on repositories named `public/…` and nothing else; valid
/// HTTP Basic credentials get every requested action on every requested scope; wrong
/// credentials get 401. Stops on drop.
pub struct TokenIssuer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    shared: Arc<Shared>,
    cert_path: PathBuf,
    accept: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TokenIssuer {
    /// Generate a P-256 key and a self-signed certificate for it (written as PEM to
    /// [`TokenIssuer::root_cert_bundle_path`]) and start serving. `users` are
    /// `(name, password)` pairs; `service` and `issuer` become each token's `aud` and `iss`.
    pub fn start(users: &[(&str, &str)], service: &str, issuer: &str) -> Result<TokenIssuer> {
        let rng = SystemRandom::new();
        let alg = &ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 =
            EcdsaKeyPair::generate_pkcs8(alg, &rng).map_err(|_| anyhow!("generate P-256 key"))?;
        let key = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng)
            .map_err(|_| anyhow!("load P-256 key"))?;
        let rc_key = rcgen::KeyPair::try_from(pkcs8.as_ref()).context("P-256 key for rcgen")?;
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, issuer);
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::DigitalSignature,
            rcgen::KeyUsagePurpose::KeyCertSign,
        ];
        let cert = params
            .self_signed(&rc_key)
            .context("self-sign token certificate")?;

        let dir = tempfile::tempdir()?;
        let cert_path = dir.path().join("token-root.pem");
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("write {}", cert_path.display()))?;

        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(Shared {
            users: users
                .iter()
                .map(|(u, p)| (u.to_string(), p.to_string()))
                .collect(),
            service: service.to_string(),
            issuer: issuer.to_string(),
            key,
            rng,
            x5c: STANDARD.encode(cert.der()),
            issued: Mutex::new(Vec::new()),
            serial: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            for conn in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let sh = sh.clone();
                thread::spawn(move || {
                    let _ = serve(&sh, conn);
                });
            }
        });
        Ok(TokenIssuer {
            addr,
            shared,
            cert_path,
            accept: Some(accept),
            _dir: dir,
        })
    }

    /// The token endpoint, `http://ADDR/token`.
    pub fn realm(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// PEM file with the signing certificate (the registry's `rootcertbundle`).
    pub fn root_cert_bundle_path(&self) -> &Path {
        &self.cert_path
    }

    /// The registry settings that trust this issuer.
    pub fn token_registry_config(&self) -> TokenAuthConfig {
        TokenAuthConfig {
            realm: self.realm(),
            service: self.shared.service.clone(),
            issuer: self.shared.issuer.clone(),
            root_cert_bundle_path: self.cert_path.clone(),
        }
    }

    /// Tokens issued over HTTP so far (refused requests and [`TokenIssuer::mint`] are not
    /// recorded): `(user, or None for anonymous; requested scopes joined by ' ')`.
    pub fn issued(&self) -> Vec<(Option<String>, String)> {
        self.shared
            .issued
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Mint a token directly (no HTTP): `access` as `(type, name, actions)`, valid from
    /// now for `ttl`. For tests of expiry and scope handling.
    pub fn mint(
        &self,
        subject: &str,
        access: &[(&str, &str, &[&str])],
        ttl: Duration,
    ) -> Result<String> {
        let access: Vec<Value> = access
            .iter()
            .map(|(t, n, a)| json!({"type": t, "name": n, "actions": a}))
            .collect();
        sign(&self.shared, subject, access, ttl.as_secs())
    }
}

impl Drop for TokenIssuer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sign(sh: &Shared, subject: &str, access: Vec<Value>, ttl: u64) -> Result<String> {
    let now = now();
    let header = json!({"typ": "JWT", "alg": "ES256", "x5c": [sh.x5c]});
    let claims = json!({
        "iss": sh.issuer,
        "sub": subject,
        "aud": sh.service,
        "exp": now + ttl,
        "nbf": now,
        "iat": now,
        "jti": format!("testkit-{now}-{}", sh.serial.fetch_add(1, Ordering::SeqCst)),
        "access": access,
    });
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?),
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims)?)
    );
    let sig = sh
        .key
        .sign(&sh.rng, input.as_bytes())
        .map_err(|_| anyhow!("ES256 signing"))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Grant for one `type:name:actions` scope, or None when nothing is granted.
fn grant(scope: &str, authenticated: bool) -> Option<Value> {
    let (typ, rest) = scope.split_once(':')?;
    let (name, actions) = rest.rsplit_once(':')?;
    let actions: Vec<&str> = actions.split(',').filter(|a| !a.is_empty()).collect();
    let granted: Vec<&str> = if authenticated {
        actions
    } else if typ == "repository" && name.starts_with("public/") && actions.contains(&"pull") {
        vec!["pull"]
    } else {
        return None;
    };
    Some(json!({"type": typ, "name": name, "actions": granted}))
}

fn respond(conn: &mut TcpStream, status: &str, extra: &str, body: &str) -> Result<()> {
    let msg = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(msg.as_bytes())?;
    Ok(())
}

fn serve(sh: &Shared, mut conn: TcpStream) -> Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut chunk)?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (method, target) = (
        request_line.next().unwrap_or_default(),
        request_line.next().unwrap_or_default(),
    );
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if method != "GET" || path != "/token" {
        return respond(&mut conn, "404 Not Found", "", r#"{"error":"not found"}"#);
    }
    let auth = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.trim().to_string());
    let user = match auth {
        None => None,
        Some(a) => {
            let creds = a
                .strip_prefix("Basic ")
                .and_then(|b| STANDARD.decode(b.trim()).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            let ok = creds
                .as_deref()
                .and_then(|c| c.split_once(':'))
                .and_then(|(u, p)| {
                    sh.users
                        .iter()
                        .any(|(uu, pp)| uu == u && pp == p)
                        .then(|| u.to_string())
                });
            match ok {
                Some(u) => Some(u),
                None => {
                    let chal = "WWW-Authenticate: Basic realm=\"shoal-testkit\"\r\n";
                    return respond(
                        &mut conn,
                        "401 Unauthorized",
                        chal,
                        r#"{"error":"bad credentials"}"#,
                    );
                }
            }
        }
    };
    let mut scopes = Vec::new();
    for pair in query.split('&') {
        if let Some(("scope", v)) = pair.split_once('=') {
            scopes.extend(
                percent_decode(v)
                    .split(' ')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string),
            );
        }
    }
    let access: Vec<Value> = scopes
        .iter()
        .filter_map(|s| grant(s, user.is_some()))
        .collect();
    let token = sign(sh, user.as_deref().unwrap_or(""), access, TOKEN_TTL)?;
    sh.issued
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((user, scopes.join(" ")));
    let issued_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let body = json!({"token": token, "access_token": token, "expires_in": TOKEN_TTL, "issued_at": issued_at});
    respond(&mut conn, "200 OK", "", &body.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants() {
        assert_eq!(
            grant("repository:public/busybox:pull,push", false),
            Some(json!({"type": "repository", "name": "public/busybox", "actions": ["pull"]}))
        );
        assert_eq!(grant("repository:private/x:pull", false), None);
        assert_eq!(grant("repository:public/x:push", false), None);
        assert_eq!(
            grant("repository:private/x:pull,push", true),
            Some(json!({"type": "repository", "name": "private/x", "actions": ["pull", "push"]}))
        );
        assert_eq!(grant("nonsense", true), None);
    }

    #[test]
    fn percent() {
        assert_eq!(
            percent_decode("repository%3Apublic%2Fa%3Apull+x%"),
            "repository:public/a:pull x%"
        );
        assert_eq!(percent_decode("%zz%41"), "%zzA");
    }

    /// The JWT verifies with the certificate's key and carries the claims the registry checks.
    #[test]
    fn jwt_shape_and_signature() {
        let t = TokenIssuer::start(&[("u", "p")], "svc", "iss").unwrap();
        let jwt = t
            .mint(
                "u",
                &[("repository", "a/b", &["pull"])],
                Duration::from_secs(60),
            )
            .unwrap();
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            (header["alg"].as_str(), header["typ"].as_str()),
            (Some("ES256"), Some("JWT"))
        );
        assert_eq!(
            (claims["iss"].as_str(), claims["aud"].as_str()),
            (Some("iss"), Some("svc"))
        );
        assert_eq!(
            claims["access"],
            json!([{"type": "repository", "name": "a/b", "actions": ["pull"]}])
        );
        let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        assert_eq!(sig.len(), 64);
        let pem = std::fs::read_to_string(t.root_cert_bundle_path()).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        let pubkey = ring::signature::KeyPair::public_key(&t.shared.key)
            .as_ref()
            .to_vec();
        let v = ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P256_SHA256_FIXED,
            pubkey,
        );
        v.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
    }
}
