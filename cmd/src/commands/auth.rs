//! Registry credentials on the client side, in Docker's `config.json` format (`auths` →
//! base64 `user:password`), stored 0600 in `$SHOAL_CONFIG/config.json` (default
//! `~/.shoal/config.json`). Docker's own `~/.docker/config.json` is read as a fallback.

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::cli::{LoginArgs, LogoutArgs};
use crate::client::Client;

/// Docker Hub's key in `auths`.
const HUB_KEY: &str = "https://index.docker.io/v1/";

fn config_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOAL_CONFIG") {
        return PathBuf::from(d);
    }
    home().join(".shoal")
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

fn docker_config() -> PathBuf {
    std::env::var_os("DOCKER_CONFIG")
        .map_or_else(|| home().join(".docker"), PathBuf::from)
        .join("config.json")
}

/// The `auths` key of a registry (`docker.io` and friends map to Docker Hub's).
pub fn registry_key(registry: &str) -> String {
    let r = registry
        .trim_start_matches("https://")
        .trim_start_matches("http://");
    let r = r
        .trim_end_matches('/')
        .trim_end_matches("/v1")
        .trim_end_matches("/v2");
    match r {
        "" | "docker.io" | "index.docker.io" | "registry-1.docker.io" => HUB_KEY.to_owned(),
        other => other.to_owned(),
    }
}

fn read(path: &PathBuf) -> Value {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| json!({}))
}

/// Stored credentials for a registry: ours first, then Docker's.
pub fn lookup(registry: &str) -> Option<(String, String)> {
    let key = registry_key(registry);
    for path in [config_dir().join("config.json"), docker_config()] {
        let cfg = read(&path);
        let Some(entry) = cfg["auths"].get(&key) else {
            continue;
        };
        if let Some(a) = entry["auth"].as_str() {
            let raw = base64::engine::general_purpose::STANDARD.decode(a).ok()?;
            let text = String::from_utf8(raw).ok()?;
            let (u, p) = text.split_once(':')?;
            return Some((u.to_owned(), p.to_owned()));
        }
        if let (Some(u), Some(p)) = (entry["username"].as_str(), entry["password"].as_str()) {
            return Some((u.to_owned(), p.to_owned()));
        }
    }
    None
}

/// The `X-Registry-Auth` header value for a registry, when credentials are stored.
pub fn header_for(registry: &str) -> Option<String> {
    let (u, p) = lookup(registry)?;
    let v = json!({ "username": u, "password": p, "serveraddress": registry });
    Some(base64::engine::general_purpose::URL_SAFE.encode(v.to_string()))
}

fn store(registry: &str, user: &str, password: &str) -> Result<PathBuf> {
    let dir = config_dir();
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("config.json");
    let mut cfg = read(&path);
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    if !cfg["auths"].is_object() {
        cfg["auths"] = json!({});
    }
    cfg["auths"][registry_key(registry)] = json!({ "auth": auth });
    write_private(&path, &serde_json::to_vec_pretty(&cfg)?)?;
    Ok(path)
}

fn write_private(path: &PathBuf, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// `login`.
pub async fn login(c: &Client, a: LoginArgs) -> Result<i32> {
    let server = a.server.clone().unwrap_or_else(|| "docker.io".to_owned());
    let stdin = std::io::stdin();
    let username = match a.username {
        Some(u) => u,
        None => {
            if !stdin.is_terminal() && !a.password_stdin {
                bail!("Cannot perform an interactive login from a non TTY device");
            }
            eprint!("Username: ");
            std::io::stderr().flush()?;
            let mut u = String::new();
            stdin.lock().read_line(&mut u)?;
            u.trim().to_owned()
        }
    };
    let password = if a.password_stdin {
        if a.password.is_some() {
            bail!("--password and --password-stdin are mutually exclusive");
        }
        let mut p = String::new();
        stdin.lock().read_line(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_owned()
    } else if let Some(p) = a.password {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
        p
    } else {
        eprint!("Password: ");
        std::io::stderr().flush()?;
        let mut p = String::new();
        stdin.lock().read_line(&mut p)?;
        p.trim_end_matches(['\n', '\r']).to_owned()
    };
    if username.is_empty() {
        bail!("Username is required");
    }
    if password.is_empty() {
        bail!("Password is required");
    }
    let _: Value = c
        .post(
            "/auth",
            &json!({ "username": username, "password": password, "serveraddress": server }),
        )
        .await?;
    let path = store(&server, &username, &password)
        .map_err(|e| anyhow!("cannot save credentials: {e}"))?;
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        path.display()
    );
    println!("Login Succeeded");
    Ok(0)
}

/// `logout`.
pub fn logout(a: LogoutArgs) -> Result<i32> {
    let server = a.server.unwrap_or_else(|| "docker.io".to_owned());
    let path = config_dir().join("config.json");
    let mut cfg = read(&path);
    let key = registry_key(&server);
    let removed = cfg["auths"]
        .as_object_mut()
        .and_then(|m| m.remove(&key))
        .is_some();
    if !removed {
        println!("Not logged in to {server}");
        return Ok(0);
    }
    write_private(&path, &serde_json::to_vec_pretty(&cfg)?)?;
    println!("Removing login credentials for {key}");
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(registry_key("docker.io"), HUB_KEY);
        assert_eq!(registry_key("https://index.docker.io/v1/"), HUB_KEY);
        assert_eq!(registry_key("127.0.0.1:5000"), "127.0.0.1:5000");
        assert_eq!(registry_key("https://r.example:443/"), "r.example:443");
    }
}
