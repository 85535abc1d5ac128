//! Debian's `docker-registry` (distribution 2.8) on 127.0.0.1 for tests, pushes with
//! `skopeo`, a counting/stalling TCP proxy, and a tiny blocking HTTP/1.1 client.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// Where Debian installs the registry binary.
pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";

/// The registry's `auth: token:` settings (see [`crate::token::TokenIssuer::token_registry_config`]).
#[derive(Clone, Debug)]
pub struct TokenAuthConfig {
    /// URL clients fetch tokens from (the Bearer challenge's `realm`).
    pub realm: String,
    /// Service name; tokens must carry it as `aud`.
    pub service: String,
    /// Issuer name; tokens must carry it as `iss`.
    pub issuer: String,
    /// PEM bundle of the certificates token signatures must chain to.
    pub root_cert_bundle_path: PathBuf,
}

/// How to start a [`Registry`]. `Default` is plain HTTP, no auth, private storage.
#[derive(Clone, Debug, Default)]
pub struct RegistryOptions {
    /// Storage root; give several instances the same one to serve the same content.
    pub storage_dir: Option<PathBuf>,
    /// Serve HTTPS with this `(certificate, key)` PEM pair.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Require bearer tokens.
    pub token: Option<TokenAuthConfig>,
    /// Require HTTP Basic with this `(user, password)`.
    pub htpasswd: Option<(String, String)>,
}

/// Manifest format for [`Registry::push_layout`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushFormat {
    /// Keep the OCI manifest byte for byte (`--preserve-digests`).
    Oci,
    /// Convert to Docker schema 2 (`--format v2s2`): the manifest (and its digest) changes;
    /// gzip layer blobs and the config blob are kept, uncompressed layers are gzipped by
    /// skopeo (new layer digests, same diff ids) and zstd layers make the push fail.
    DockerV2S2,
}

/// A running `docker-registry`, killed on drop.
pub struct Registry {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The storage root in use.
    pub storage_dir: PathBuf,
    /// Where the registry's stdout and stderr go.
    pub log_path: PathBuf,
    tls: bool,
    basic: Option<(String, String)>,
    child: Child,
    _dir: tempfile::TempDir,
}

fn yaml_str(s: &str) -> String {
    // A JSON string is a valid YAML double-quoted scalar.
    serde_json::Value::String(s.to_string()).to_string()
}

fn path_str(p: &Path) -> String {
    yaml_str(&p.to_string_lossy())
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl Registry {
    /// Start a registry: writes a temp config, picks a free port, logs to a file in its temp
    /// dir and waits (up to 20 s) until `/v2/` answers with any HTTP status. Errors if
    /// `/usr/bin/docker-registry` is missing (tests should skip loudly on that).
    pub fn start(opts: RegistryOptions) -> Result<Registry> {
        if !Path::new(REGISTRY_BIN).exists() {
            bail!("{REGISTRY_BIN} is missing: install the Debian package docker-registry");
        }
        if opts.token.is_some() && opts.htpasswd.is_some() {
            bail!("docker-registry supports one auth method: choose token or htpasswd");
        }
        let dir = tempfile::tempdir()?;
        let storage_dir = opts
            .storage_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("storage"));
        fs::create_dir_all(&storage_dir)?;
        let mut auth = String::new();
        if let Some(t) = &opts.token {
            auth = format!(
                "auth:\n  token:\n    realm: {}\n    service: {}\n    issuer: {}\n    rootcertbundle: {}\n",
                yaml_str(&t.realm),
                yaml_str(&t.service),
                yaml_str(&t.issuer),
                path_str(&t.root_cert_bundle_path)
            );
        }
        if let Some((user, pass)) = &opts.htpasswd {
            // The registry only accepts bcrypt; cost 4 keeps tests fast.
            let hash = bcrypt::hash(pass, 4).map_err(|e| anyhow!("bcrypt: {e}"))?;
            let p = dir.path().join("htpasswd");
            fs::write(&p, format!("{user}:{hash}\n"))?;
            auth = format!(
                "auth:\n  htpasswd:\n    realm: testkit\n    path: {}\n",
                path_str(&p)
            );
        }
        let tls = match &opts.tls {
            Some((c, k)) => format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                path_str(c),
                path_str(k)
            ),
            None => String::new(),
        };
        let log_path = dir.path().join("registry.log");
        let cfg_path = dir.path().join("config.yml");
        for _attempt in 0..10 {
            let addr = format!("127.0.0.1:{}", free_port()?);
            let config = format!(
                "version: 0.1\nlog:\n  level: info\n  formatter: text\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\n  delete:\n    enabled: true\n  maintenance:\n    uploadpurging:\n      \
                 enabled: false\nhttp:\n  addr: {}\n  secret: shoal-testkit\n{tls}{auth}",
                path_str(&storage_dir),
                yaml_str(&addr),
            );
            fs::write(&cfg_path, config)?;
            let log = fs::File::create(&log_path)?;
            let mut child = Command::new(REGISTRY_BIN)
                .arg("serve")
                .arg(&cfg_path)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("spawn {REGISTRY_BIN}"))?;
            if let Err(e) = wait_ready(&mut child, &addr, Duration::from_secs(20)) {
                let _ = child.kill();
                let _ = child.wait();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                if log.contains("address already in use") {
                    continue; // lost the race for the port: try another
                }
                bail!("{e}; registry log:\n{log}");
            }
            return Ok(Registry {
                addr,
                storage_dir,
                log_path,
                tls: opts.tls.is_some(),
                basic: opts.htpasswd,
                child,
                _dir: dir,
            });
        }
        bail!("docker-registry found no free port in 10 attempts")
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!(
            "{}://{}",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// Push the only image of an OCI layout to `ADDR/dest` (`repo:tag`) with skopeo. Push to
    /// a no-auth (or htpasswd) instance, then serve its storage from TLS/token ones; see
    /// [`Registry::push_layout_ref`].
    pub fn push_layout(
        &self,
        layout_dir: &Path,
        dest: &str,
        format: PushFormat,
        all_platforms: bool,
    ) -> Result<()> {
        self.push_layout_ref(layout_dir, None, dest, format, all_platforms)
    }

    /// Push the layout entry named `ref_name` (needed when the layout holds several) with
    /// `skopeo copy --dest-tls-verify=false`. [`PushFormat::Oci`] adds `--preserve-digests`,
    /// so manifests and layer blobs (including uncompressed and zstd ones) arrive unchanged;
    /// `all_platforms` adds `--all` to copy every image of an index.
    pub fn push_layout_ref(
        &self,
        layout_dir: &Path,
        ref_name: Option<&str>,
        dest: &str,
        format: PushFormat,
        all_platforms: bool,
    ) -> Result<()> {
        let mut cmd = Command::new("skopeo");
        cmd.args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ]);
        match format {
            PushFormat::Oci => cmd.args(["--format", "oci", "--preserve-digests"]),
            PushFormat::DockerV2S2 => cmd.args(["--format", "v2s2"]),
        };
        if all_platforms {
            cmd.arg("--all");
        }
        if let Some((u, p)) = &self.basic {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        let src = match ref_name {
            Some(r) => format!("oci:{}:{r}", layout_dir.display()),
            None => format!("oci:{}", layout_dir.display()),
        };
        cmd.arg(src).arg(format!("docker://{}/{dest}", self.addr));
        let out = cmd.output().context("run skopeo (Debian package skopeo)")?;
        if !out.status.success() {
            bail!(
                "skopeo copy to {dest} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }
}

fn wait_ready(child: &mut Child, addr: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        // Over TLS, Go answers a plain-HTTP request with `400 Bad Request`: still an answer.
        if http_get(&format!("http://{addr}/v2/"), &[]).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("docker-registry exited early: {status}");
        }
        if Instant::now() > deadline {
            bail!("docker-registry did not answer on {addr} within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(25));
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP response from [`http_get`] / [`http_request`].
#[derive(Clone, Debug)]
pub struct HttpResponse {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// Body, de-chunked.
    pub body: Vec<u8>,
}

impl HttpResponse {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// `GET url` over plain HTTP/1.1 with extra `headers`; see [`http_request`].
pub fn http_get(url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    http_request("GET", url, headers)
}

/// A bodiless request over plain HTTP/1.1 (`http://host:port/path`, no TLS) with
/// `Connection: close`; reads the whole response (30 s timeout).
pub fn http_request(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<HttpResponse> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("only http:// URLs: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let mut s = TcpStream::connect(host).with_context(|| format!("connect {host}"))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let end = find(&raw, b"\r\n\r\n").ok_or_else(|| anyhow!("no HTTP header from {url}"))?;
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("bad status line from {url}: {status_line}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut resp = HttpResponse {
        status,
        headers,
        body: raw[end + 4..].to_vec(),
    };
    if method == "HEAD" {
        resp.body.clear();
    } else if resp
        .header("transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        resp.body = dechunk(&resp.body)?;
    } else if let Some(len) = resp
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        resp.body.truncate(len);
    }
    Ok(resp)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(data, b"\r\n").ok_or_else(|| anyhow!("truncated chunk size"))?;
        let size_str = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_str.split(';').next().unwrap_or("").trim(), 16)?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

/// One request seen by a [`CountingProxy`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedRequest {
    /// `GET`, `HEAD`, …
    pub method: String,
    /// Request target (path and query).
    pub path: String,
    /// The `Range` header, if any.
    pub range: Option<String>,
}

#[derive(Default)]
struct StallState {
    /// `(path substring, body bytes to let through)`.
    rule: Option<(String, u64)>,
    /// Responses currently held.
    held: usize,
}

struct ProxyShared {
    upstream: String,
    requests: Mutex<Vec<RecordedRequest>>,
    stall: Mutex<StallState>,
    cv: Condvar,
    stop: AtomicBool,
    conns: Mutex<HashMap<u64, [TcpStream; 2]>>,
    next_id: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking proxy thread must not hide the data from the test.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A TCP proxy in front of a registry that records every HTTP request and can hold a
/// response mid-body.
///
/// Each client connection gets one upstream connection. The proxy rewrites the first
/// request's `Connection` header to `Connection: close`, so the server answers one request
/// per connection and clients reconnect for the next; only the first request of a
/// connection is parsed and recorded, everything after it is forwarded untouched (a client
/// that pipelines despite `close` would go unrecorded). Dropping the proxy releases stalls
/// and shuts every connection.
pub struct CountingProxy {
    /// `127.0.0.1:PORT` clients connect to.
    pub addr: String,
    shared: Arc<ProxyShared>,
    accept: Option<JoinHandle<()>>,
}

impl CountingProxy {
    /// Listen on 127.0.0.1:random and forward to `upstream` (`host:port`).
    pub fn start(upstream: &str) -> Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let shared = Arc::new(ProxyShared {
            upstream: upstream.to_string(),
            requests: Mutex::new(Vec::new()),
            stall: Mutex::new(StallState::default()),
            cv: Condvar::new(),
            stop: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        });
        let sh = shared.clone();
        let accept = thread::spawn(move || {
            for client in listener.incoming() {
                if sh.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let sh = sh.clone();
                thread::spawn(move || {
                    let _ = proxy_conn(&sh, client);
                });
            }
        });
        Ok(CountingProxy {
            addr,
            shared,
            accept: Some(accept),
        })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request recorded so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.shared.requests).clone()
    }

    /// How many recorded requests have this method and a path containing `path_contains`.
    pub fn count(&self, method: &str, path_contains: &str) -> usize {
        lock(&self.shared.requests)
            .iter()
            .filter(|r| r.method == method && r.path.contains(path_contains))
            .count()
    }

    /// Forget the recorded requests.
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
    }

    /// From now on, hold every response whose request path contains `path_contains` after
    /// `n` bytes of its body were forwarded: the connection stays open, silent, until
    /// [`CountingProxy::release`].
    pub fn stall_after(&self, path_contains: &str, n: u64) {
        lock(&self.shared.stall).rule = Some((path_contains.to_string(), n));
    }

    /// Clear the stall rule and let held responses continue.
    pub fn release(&self) {
        lock(&self.shared.stall).rule = None;
        self.shared.cv.notify_all();
    }

    /// Number of responses currently held by the stall rule.
    pub fn held(&self) -> usize {
        lock(&self.shared.stall).held
    }

    /// Wait until at least one response is held; false on timeout.
    pub fn wait_stalled(&self, timeout: Duration) -> bool {
        let g = lock(&self.shared.stall);
        let (g, _) = self
            .shared
            .cv
            .wait_timeout_while(g, timeout, |s| s.held == 0)
            .unwrap_or_else(|e| e.into_inner());
        g.held > 0
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.release();
        let _ = TcpStream::connect(&self.addr);
        for [a, b] in lock(&self.shared.conns).values() {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn proxy_conn(sh: &Arc<ProxyShared>, mut client: TcpStream) -> Result<()> {
    let mut upstream = TcpStream::connect(&sh.upstream)?;
    let id = sh.next_id.fetch_add(1, Ordering::SeqCst);
    lock(&sh.conns).insert(id, [client.try_clone()?, upstream.try_clone()?]);
    let result = (|| -> Result<()> {
        // Read the request head.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i;
            }
            let n = client.read(&mut chunk)?;
            if n == 0 || buf.len() > 1 << 20 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut parts = lines.next().unwrap_or_default().split(' ');
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut range = None;
        let mut out = format!("{}\r\n", head.split("\r\n").next().unwrap_or_default());
        for l in lines {
            let name = l
                .split(':')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase();
            match name.as_str() {
                "connection" | "keep-alive" | "proxy-connection" => continue,
                "range" => range = l.split_once(':').map(|(_, v)| v.trim().to_string()),
                _ => {}
            }
            out.push_str(l);
            out.push_str("\r\n");
        }
        out.push_str("Connection: close\r\n\r\n");
        lock(&sh.requests).push(RecordedRequest {
            method,
            path: path.clone(),
            range,
        });
        upstream.write_all(out.as_bytes())?;
        upstream.write_all(&buf[end + 4..])?;

        // Request body (if any) client -> upstream, on its own thread.
        let (mut c2, mut u2) = (client.try_clone()?, upstream.try_clone()?);
        let uplink = thread::spawn(move || {
            let _ = std::io::copy(&mut c2, &mut u2);
            let _ = u2.shutdown(Shutdown::Write);
        });
        // Response upstream -> client, counting body bytes for the stall rule.
        let mut head_done = Vec::new();
        let mut in_body = false;
        let mut body_sent: u64 = 0;
        loop {
            let n = upstream.read(&mut chunk)?;
            if n == 0 {
                break;
            }
            let mut data = &chunk[..n];
            if !in_body {
                head_done.extend_from_slice(data);
                if let Some(i) = find(&head_done, b"\r\n\r\n") {
                    let body_len = head_done.len() - (i + 4);
                    let head_len = data.len() - body_len;
                    client.write_all(&data[..head_len])?;
                    data = &data[head_len..];
                    in_body = true;
                } else {
                    client.write_all(data)?;
                    continue;
                }
            }
            while !data.is_empty() {
                let allowed = {
                    let mut st = lock(&sh.stall);
                    let mut counted = false;
                    let allowed = loop {
                        let limit = match &st.rule {
                            Some((pat, n))
                                if path.contains(pat.as_str())
                                    && !sh.stop.load(Ordering::SeqCst) =>
                            {
                                Some(*n)
                            }
                            _ => None,
                        };
                        match limit {
                            Some(n) if body_sent >= n => {
                                if !counted {
                                    st.held += 1;
                                    counted = true;
                                    sh.cv.notify_all();
                                }
                                st = sh.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                            }
                            Some(n) => break n - body_sent,
                            None => break data.len() as u64,
                        }
                    };
                    if counted {
                        st.held -= 1;
                    }
                    allowed
                };
                let take = (allowed.min(data.len() as u64)) as usize;
                client.write_all(&data[..take])?;
                body_sent += take as u64;
                data = &data[take..];
            }
        }
        // Whole response forwarded: end the client side too, which also ends the uplink.
        let _ = client.shutdown(Shutdown::Both);
        let _ = uplink.join();
        Ok(())
    })();
    lock(&sh.conns).remove(&id);
    let _ = client.shutdown(Shutdown::Both);
    let _ = upstream.shutdown(Shutdown::Both);
    result
}
