//! Node-to-node transport: QUIC (quinn) with mutual TLS (rustls on ring).
//!
//! Every node, managers and workers, runs one [`Endpoint`]: a single UDP socket that both
//! serves calls (to a [`Handler`]) and makes them. A call is one bidirectional QUIC stream:
//!
//! ```text
//! request:  u32 BE header length | JSON header {"method": …} | u32 BE body length | body
//! response: status byte (0 ok, 1 error) | u32 BE body length | body
//!           (error body = JSON RemoteError {code, message})
//! ```
//!
//! Limits: header ≤ 64 KiB, body ≤ 256 MiB (snapshots travel this way), 1 MiB for callers
//! without a certificate (joiners). ALPN `shoal/1`.
//!
//! Identity: the server asks for a client certificate but does not require one
//! (`allow_unauthenticated`), so a joiner without certificates can call the join method.
//! A presented certificate must chain to the endpoint's roots and be within its validity
//! (webpki checks, at the handshake); the handler then receives the [`NodeIdentity`] it
//! names. Each request is checked against the certificate's expiry again, so a long-lived
//! connection cannot outlive its certificate. Authorisation (roles, removed nodes) is the
//! handler's job.
//!
//! Before a node has certificates ([`Endpoint::bind`] with `tls = None`) the endpoint does
//! not accept connections at all (nothing can be authenticated, so there is nothing to
//! serve) and can only make pinned calls ([`Endpoint::call_pinned`], the join).
//! [`Endpoint::set_tls`] installs certificates later without re-binding the socket.
//!
//! Session resumption is disabled on both sides: every connection runs a full handshake,
//! so certificate validity and the current roots are always checked. Connections are long
//! lived (cached per address and server name), so this costs little.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures_util::future::BoxFuture;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use quinn::{ConnectionError, IdleTimeout, TransportConfig, TransportErrorCode, VarInt};
use rustls::RootCertStore;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::pki::{self, NodeIdentity};

/// ALPN protocol of shoal's node-to-node calls.
pub const ALPN: &[u8] = b"shoal/1";
/// Largest request header.
pub const MAX_HEADER_LEN: usize = 64 * 1024;
/// Largest request or response body.
pub const MAX_BODY_LEN: usize = 256 * 1024 * 1024;
/// Largest request body from a caller without a certificate (join requests are small).
pub const MAX_ANONYMOUS_BODY_LEN: usize = 1024 * 1024;
/// Default port of the node-to-node endpoint.
pub const DEFAULT_PORT: u16 = 4242;
/// TLS server name every manager certificate carries: dial it to reach "any manager".
pub const MANAGER_SERVER_NAME: &str = pki::MANAGER_SERVER_NAME;
/// Default handshake deadline.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default deadline of one call (request sent, answer received).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);

const STATUS_OK: u8 = 0;
const STATUS_ERROR: u8 = 1;
/// Application close codes.
const CLOSE_DONE: u32 = 0;
const CLOSE_BAD_IDENTITY: u32 = 2;
const CLOSE_SHUTDOWN: u32 = 3;
/// Reads of large bodies grow the buffer by this much at a time, so memory follows the
/// bytes that actually arrived rather than the length a peer announced.
const READ_CHUNK: usize = 1024 * 1024;

/// Errors of the transport, each naming the peer address and the method.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot bind the node endpoint on {addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TLS material: {reason}")]
    Config { reason: String },
    #[error(
        "this node has no certificate yet: cannot call {method} on {addr} (join a swarm first)"
    )]
    NoCertificate { addr: SocketAddr, method: String },
    #[error("cannot connect to {addr} ({server}) for {method}: {reason}")]
    Connect {
        addr: SocketAddr,
        server: String,
        method: String,
        reason: String,
    },
    #[error("{method} on {addr} timed out after {after:?} ({phase})")]
    Timeout {
        addr: SocketAddr,
        method: String,
        phase: &'static str,
        after: Duration,
    },
    #[error("TLS handshake with {addr} for {method} failed: {reason}")]
    Tls {
        addr: SocketAddr,
        method: String,
        reason: String,
    },
    #[error(
        "the remote manager's CA does not match the join token: expected {expected}, got {actual} (manager at {addr})"
    )]
    CaMismatch {
        addr: SocketAddr,
        expected: String,
        actual: String,
    },
    #[error("{method} on {addr} failed: {message} ({code})")]
    Remote {
        addr: SocketAddr,
        method: String,
        code: String,
        message: String,
    },
    #[error("protocol error with {addr} during {method}: {reason}")]
    Protocol {
        addr: SocketAddr,
        method: String,
        reason: String,
    },
    #[error("connection to {addr} lost during {method}: {reason}")]
    Lost {
        addr: SocketAddr,
        method: String,
        reason: String,
    },
}

impl TransportError {
    /// The error a remote handler returned, if this is one.
    pub fn remote(&self) -> Option<RemoteError> {
        match self {
            TransportError::Remote { code, message, .. } => Some(RemoteError {
                code: code.clone(),
                message: message.clone(),
            }),
            _ => None,
        }
    }

    /// Whether the call failed for want of a working connection (dial failed, timed out, or
    /// the connection died): callers try another manager. The peer may or may not have
    /// processed a request that timed out or was lost.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            TransportError::Connect { .. }
                | TransportError::Timeout { .. }
                | TransportError::Lost { .. }
        )
    }
}

/// What a handler answers on failure; travels back to the caller as
/// [`TransportError::Remote`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message} ({code})")]
pub struct RemoteError {
    /// Machine-readable reason, e.g. `permission_denied`, `not_leader`, `bad_request`,
    /// `certificate_expired` (the last two are the transport's own).
    pub code: String,
    /// For humans.
    pub message: String,
}

impl RemoteError {
    /// A remote error with a machine-readable `code` and a human message.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> RemoteError {
        RemoteError {
            code: code.into(),
            message: message.into(),
        }
    }
}

/// The caller of a request, as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The caller's UDP address (its endpoint's socket, so its listen port).
    pub addr: SocketAddr,
    /// From the verified client certificate; `None` for callers without one (joiners).
    pub identity: Option<NodeIdentity>,
}

/// Serves requests. One call per request; calls run concurrently.
pub trait Handler: Send + Sync + 'static {
    /// Answers `method` with `body` from `peer`; authorisation (role, removed nodes) is
    /// decided here from `peer.identity`.
    fn handle(
        &self,
        peer: Peer,
        method: String,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>>;
}

struct FnHandler<F>(F);

impl<F, Fut> Handler for FnHandler<F>
where
    F: Fn(Peer, String, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, RemoteError>> + Send + 'static,
{
    fn handle(
        &self,
        peer: Peer,
        method: String,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
        Box::pin((self.0)(peer, method, body))
    }
}

/// A [`Handler`] from an async closure.
pub fn handler_fn<F, Fut>(f: F) -> Arc<dyn Handler>
where
    F: Fn(Peer, String, Vec<u8>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, RemoteError>> + Send + 'static,
{
    Arc::new(FnHandler(f))
}

/// A node's TLS identity and trust.
pub struct TlsMaterial {
    /// Trusted root CAs (two during a CA rotation).
    pub roots: Vec<CertificateDer<'static>>,
    /// Our certificate chain, leaf first. Include the CA certificate(s) after the leaf:
    /// joiners pin the CA by digest and must find it in the chain (during a rotation:
    /// leaf, cross-signed new CA, old root — and the new root if tokens already pin it).
    pub chain: Vec<CertificateDer<'static>>,
    /// Our private key.
    pub key: PrivateKeyDer<'static>,
}

impl Clone for TlsMaterial {
    fn clone(&self) -> Self {
        TlsMaterial {
            roots: self.roots.clone(),
            chain: self.chain.clone(),
            key: self.key.clone_key(),
        }
    }
}

impl fmt::Debug for TlsMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsMaterial")
            .field("roots", &self.roots.len())
            .field("chain", &self.chain.len())
            .finish_non_exhaustive()
    }
}

impl TlsMaterial {
    /// From PEM texts: `roots_pem` and `chain_pem` may hold several certificates.
    pub fn from_pem(
        roots_pem: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<Self, TransportError> {
        use rustls::pki_types::pem::PemObject;
        let config = |e: pki::PkiError| TransportError::Config {
            reason: e.to_string(),
        };
        let roots = pki::certs_from_pem(roots_pem, "root certificates").map_err(config)?;
        let chain = pki::certs_from_pem(chain_pem, "certificate chain").map_err(config)?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| {
            TransportError::Config {
                reason: format!("private key: {e}"),
            }
        })?;
        Ok(TlsMaterial { roots, chain, key })
    }

    /// The identity our own leaf certificate names.
    pub fn identity(&self) -> Result<NodeIdentity, TransportError> {
        let leaf = self.chain.first().ok_or_else(|| TransportError::Config {
            reason: "empty certificate chain".to_owned(),
        })?;
        pki::identity_of(leaf).map_err(|e| TransportError::Config {
            reason: e.to_string(),
        })
    }
}

/// Timeouts and QUIC settings of an endpoint.
#[derive(Debug, Clone)]
pub struct EndpointOptions {
    /// Deadline of a QUIC + TLS handshake.
    pub connect_timeout: Duration,
    /// Default deadline of a call once connected ([`Endpoint::call_with_timeout`] overrides).
    pub call_timeout: Duration,
    /// A connection without any packet from the peer for this long is dead.
    pub idle_timeout: Duration,
    /// Keep-alive period on idle connections (below `idle_timeout`).
    pub keep_alive: Duration,
    /// Concurrent calls per connection.
    pub max_concurrent_calls: u32,
    /// Secret the stateless-reset key is derived from. It must survive restarts for peers
    /// to notice at once that a connection to our previous incarnation is dead. `None`:
    /// derived from the TLS private key given to `bind` (random if there is none).
    pub reset_seed: Option<Vec<u8>>,
}

impl Default for EndpointOptions {
    fn default() -> Self {
        EndpointOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(3),
            max_concurrent_calls: 512,
            reset_seed: None,
        }
    }
}

/// Counters of an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointStats {
    /// Incoming connections that completed the handshake since bind.
    pub accepted_connections: u64,
    /// Live outgoing connections in the cache (dials in progress count too).
    pub cached_connections: usize,
}

/// The node's QUIC endpoint: serves [`Handler`] calls and makes calls. Clone is cheap.
#[derive(Clone)]
pub struct Endpoint {
    inner: Arc<Inner>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("local_addr", &self.inner.local_addr)
            .finish_non_exhaustive()
    }
}

type CacheKey = (SocketAddr, String);
type Slot = Arc<tokio::sync::Mutex<Option<quinn::Connection>>>;

struct ClientTls {
    config: quinn::ClientConfig,
    generation: u64,
}

struct Inner {
    endpoint: quinn::Endpoint,
    local_addr: SocketAddr,
    options: EndpointOptions,
    transport: Arc<TransportConfig>,
    provider: Arc<CryptoProvider>,
    client: RwLock<Option<ClientTls>>,
    generation: AtomicU64,
    cache: Mutex<HashMap<CacheKey, Slot>>,
    accepted: Arc<AtomicU64>,
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"endpoint closed");
        if let Ok(mut task) = self.accept_task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }
}

enum Attempt {
    /// Nothing reached the server: safe to redial and resend.
    Retryable(TransportError),
    Fatal(TransportError),
}

impl Endpoint {
    /// Binds the endpoint on `listen` (UDP) with default options. Must run inside a tokio
    /// runtime. With `tls = None` the endpoint accepts no connections until
    /// [`Endpoint::set_tls`], and only [`Endpoint::call_pinned`] works.
    pub fn bind(
        listen: SocketAddr,
        tls: Option<TlsMaterial>,
        handler: Arc<dyn Handler>,
    ) -> Result<Endpoint, TransportError> {
        Self::bind_with_options(listen, tls, handler, EndpointOptions::default())
    }

    /// As [`Endpoint::bind`] with explicit timeouts.
    pub fn bind_with_options(
        listen: SocketAddr,
        tls: Option<TlsMaterial>,
        handler: Arc<dyn Handler>,
        options: EndpointOptions,
    ) -> Result<Endpoint, TransportError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let transport = Arc::new(transport_config(&options)?);
        // The stateless-reset key is derived from the node's private key, which survives
        // restarts: a peer still holding a connection to our previous incarnation gets a
        // reset it recognises and redials at once instead of waiting for the idle timeout.
        // Connection IDs are plain random (quinn's default keyed IDs would make the
        // restarted endpoint drop, rather than reset, packets of the old connections).
        let seed = match (&options.reset_seed, &tls) {
            (Some(seed), _) => Some(seed.as_slice()),
            (None, Some(tls)) => Some(tls.key.secret_der()),
            (None, None) => None,
        };
        let mut endpoint_config = match seed {
            Some(seed) => {
                let key = ring::digest::digest(
                    &ring::digest::SHA256,
                    &[b"shoal stateless reset v1".as_slice(), seed].concat(),
                );
                quinn::EndpointConfig::new(Arc::new(ring::hmac::Key::new(
                    ring::hmac::HMAC_SHA256,
                    key.as_ref(),
                )))
            }
            None => quinn::EndpointConfig::default(),
        };
        endpoint_config.cid_generator(|| Box::new(RandomCids));
        let (server_config, client) = match &tls {
            Some(tls) => (
                Some(server_config(tls, &provider, &transport)?),
                Some(ClientTls {
                    config: client_config(tls, &provider, &transport)?,
                    generation: 0,
                }),
            ),
            None => (None, None),
        };
        let socket = std::net::UdpSocket::bind(listen).map_err(|source| TransportError::Io {
            addr: listen,
            source,
        })?;
        let endpoint = quinn::Endpoint::new(
            endpoint_config,
            server_config,
            socket,
            Arc::new(quinn::TokioRuntime),
        )
        .map_err(|source| TransportError::Io {
            addr: listen,
            source,
        })?;
        let local_addr = endpoint.local_addr().map_err(|source| TransportError::Io {
            addr: listen,
            source,
        })?;
        let accepted = Arc::new(AtomicU64::new(0));
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), handler, accepted.clone()));
        info!(%local_addr, with_certificate = tls.is_some(), "node endpoint listening");
        Ok(Endpoint {
            inner: Arc::new(Inner {
                endpoint,
                local_addr,
                options,
                transport,
                provider,
                client: RwLock::new(client),
                generation: AtomicU64::new(0),
                cache: Mutex::new(HashMap::new()),
                accepted,
                accept_task: Mutex::new(Some(accept_task)),
            }),
        })
    }

    /// Installs new certificates (renewal, role change, CA rotation): new incoming
    /// connections present them and are verified against the new roots, new calls dial
    /// with them. Cached outgoing connections are dropped (calls in flight finish on them).
    pub fn set_tls(&self, tls: TlsMaterial) -> Result<(), TransportError> {
        let inner = &self.inner;
        let server = server_config(&tls, &inner.provider, &inner.transport)?;
        let client = client_config(&tls, &inner.provider, &inner.transport)?;
        let generation = inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        inner.endpoint.set_server_config(Some(server));
        match inner.client.write() {
            Ok(mut guard) => {
                *guard = Some(ClientTls {
                    config: client,
                    generation,
                })
            }
            Err(poisoned) => {
                *poisoned.into_inner() = Some(ClientTls {
                    config: client,
                    generation,
                })
            }
        }
        self.drop_cache();
        info!(generation, "node endpoint certificates replaced");
        Ok(())
    }

    /// The bound address (the real port when bound on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// Whether the endpoint has certificates (mTLS calls and serving work).
    pub fn has_tls(&self) -> bool {
        self.client_tls().is_some()
    }

    /// Counters (tests, `shoal info`).
    pub fn stats(&self) -> EndpointStats {
        let slots: Vec<Slot> = self.cache().values().cloned().collect();
        let cached_connections = slots
            .iter()
            .filter(|slot| {
                slot.try_lock()
                    .map(|guard| guard.as_ref().is_some_and(|c| c.close_reason().is_none()))
                    .unwrap_or(true)
            })
            .count();
        EndpointStats {
            accepted_connections: self.inner.accepted.load(Ordering::Relaxed),
            cached_connections,
        }
    }

    /// Closes like [`Endpoint::close`], then waits (briefly) until the peers have been told,
    /// so a restart can bind the same port once every clone of the endpoint is dropped.
    pub async fn shutdown(&self) {
        self.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.endpoint.wait_idle()).await;
    }

    /// Closes every connection and stops serving. Calls fail afterwards. Dropping the last
    /// clone does the same, but a handler that holds a clone keeps the endpoint alive:
    /// daemons call this (or [`Endpoint::shutdown`]) explicitly.
    pub fn close(&self) {
        self.drop_cache();
        self.inner
            .endpoint
            .close(VarInt::from_u32(CLOSE_SHUTDOWN), b"endpoint closed");
        if let Ok(mut task) = self.inner.accept_task.lock()
            && let Some(task) = task.take()
        {
            task.abort();
        }
    }

    /// Calls `method` on the node at `addr` whose certificate names `server` (a node ID, or
    /// [`MANAGER_SERVER_NAME`] for any manager), with mutual TLS and the default call
    /// timeout. Connections are cached per (addr, server); a cached connection found dead
    /// before the request reached the peer is re-dialled once.
    pub async fn call(
        &self,
        addr: SocketAddr,
        server: &str,
        method: &str,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, TransportError> {
        self.call_with_timeout(addr, server, method, body, self.inner.options.call_timeout)
            .await
    }

    /// As [`Endpoint::call`] with an explicit deadline for the exchange (longer for large
    /// snapshots, shorter for heartbeats); a deadline below the connect timeout bounds the
    /// dial too.
    pub async fn call_with_timeout(
        &self,
        addr: SocketAddr,
        server: &str,
        method: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, TransportError> {
        let key: CacheKey = (addr, server.to_owned());
        // A short call deadline also bounds dialling (a dead peer must not hold the caller
        // for the whole connect timeout).
        let connect_timeout = timeout.min(self.inner.options.connect_timeout);
        let (conn, cached) = self.connection(&key, method, connect_timeout).await?;
        match self.attempt(&conn, addr, method, &body, timeout).await {
            Ok(answer) => Ok(answer),
            Err(Attempt::Retryable(e)) if cached => {
                debug!(%addr, server, method, error = %e, "cached connection dead, redialling");
                self.forget(&key, &conn);
                let (conn, _) = self.connection(&key, method, connect_timeout).await?;
                match self.attempt(&conn, addr, method, &body, timeout).await {
                    Ok(answer) => Ok(answer),
                    Err(Attempt::Retryable(e) | Attempt::Fatal(e)) => {
                        self.forget_if_broken(&key, &conn, &e);
                        Err(e)
                    }
                }
            }
            Err(Attempt::Retryable(e) | Attempt::Fatal(e)) => {
                self.forget_if_broken(&key, &conn, &e);
                Err(e)
            }
        }
    }

    /// Calls `method` on the manager at `addr` without a client certificate, trusting the
    /// server only if its chain holds a CA certificate whose digest is `ca_digest` (from a
    /// join token) and its leaf, valid for [`MANAGER_SERVER_NAME`], verifies against that
    /// CA. Returns the answer and the server's chain (leaf first), from which the joiner
    /// takes the CA certificate ([`pki::find_by_digest`]). Not cached.
    pub async fn call_pinned(
        &self,
        addr: SocketAddr,
        ca_digest: &str,
        method: &str,
        body: Vec<u8>,
    ) -> Result<(Vec<u8>, Vec<CertificateDer<'static>>), TransportError> {
        let verifier = Arc::new(PinnedCaVerifier {
            expected: ca_digest.to_owned(),
            provider: self.inner.provider.clone(),
            mismatch: Mutex::new(None),
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TransportError::Config {
                reason: e.to_string(),
            })?
            .dangerous()
            .with_custom_certificate_verifier(verifier.clone())
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        tls.resumption = rustls::client::Resumption::disabled();
        let mut config = quinn::ClientConfig::new(Arc::new(quic_client(tls)?));
        config.transport_config(self.inner.transport.clone());

        let connect_timeout = self.inner.options.connect_timeout;
        let conn = match self
            .dial(&config, addr, MANAGER_SERVER_NAME, method, connect_timeout)
            .await
        {
            Ok(conn) => conn,
            Err(e) => return Err(verifier.explain(addr, e)),
        };
        let chain = peer_chain(&conn).unwrap_or_default();
        let result = self
            .attempt(&conn, addr, method, &body, self.inner.options.call_timeout)
            .await;
        conn.close(VarInt::from_u32(CLOSE_DONE), b"done");
        match result {
            Ok(answer) => Ok((answer, chain)),
            Err(Attempt::Retryable(e) | Attempt::Fatal(e)) => Err(verifier.explain(addr, e)),
        }
    }

    fn client_tls(&self) -> Option<(quinn::ClientConfig, u64)> {
        let guard = match self.inner.client.read() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.as_ref().map(|c| (c.config.clone(), c.generation))
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<CacheKey, Slot>> {
        match self.inner.cache.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn drop_cache(&self) {
        self.cache().clear();
    }

    /// A live connection for `key`: the cached one, or a new dial (one dial at a time per
    /// key; concurrent callers wait for it). Returns whether it came from the cache.
    async fn connection(
        &self,
        key: &CacheKey,
        method: &str,
        connect_timeout: Duration,
    ) -> Result<(quinn::Connection, bool), TransportError> {
        let (config, generation) =
            self.client_tls()
                .ok_or_else(|| TransportError::NoCertificate {
                    addr: key.0,
                    method: method.to_owned(),
                })?;
        let slot = self.cache().entry(key.clone()).or_default().clone();
        let mut guard = slot.lock().await;
        if let Some(conn) = guard.as_ref() {
            if conn.close_reason().is_none() {
                return Ok((conn.clone(), true));
            }
            *guard = None;
        }
        let conn = self
            .dial(&config, key.0, &key.1, method, connect_timeout)
            .await?;
        // Certificates replaced while dialling: use this connection once, don't cache it.
        if self.inner.generation.load(Ordering::SeqCst) == generation {
            *guard = Some(conn.clone());
        }
        Ok((conn, false))
    }

    fn forget(&self, key: &CacheKey, conn: &quinn::Connection) {
        let slot = self.cache().get(key).cloned();
        // A busy slot is being re-dialled or checked by another call, which sees the dead
        // connection's close reason itself.
        if let Some(slot) = slot
            && let Ok(mut guard) = slot.try_lock()
            && guard
                .as_ref()
                .is_some_and(|c| c.stable_id() == conn.stable_id())
        {
            *guard = None;
        }
    }

    /// Evicts a cached connection after a failure that says it is unusable: closed, or
    /// silent past the deadline (the peer may be gone without a reset we recognise, e.g.
    /// restarted with another key). Calls still in flight on it finish or fail on their
    /// own; quinn closes it when the last handle is dropped.
    fn forget_if_broken(&self, key: &CacheKey, conn: &quinn::Connection, error: &TransportError) {
        if conn.close_reason().is_some() || matches!(error, TransportError::Timeout { .. }) {
            self.forget(key, conn);
        }
    }

    async fn dial(
        &self,
        config: &quinn::ClientConfig,
        addr: SocketAddr,
        server: &str,
        method: &str,
        timeout: Duration,
    ) -> Result<quinn::Connection, TransportError> {
        let connecting = self
            .inner
            .endpoint
            .connect_with(config.clone(), addr, server)
            .map_err(|e| TransportError::Connect {
                addr,
                server: server.to_owned(),
                method: method.to_owned(),
                reason: e.to_string(),
            })?;
        match tokio::time::timeout(timeout, connecting).await {
            Err(_) => Err(TransportError::Timeout {
                addr,
                method: method.to_owned(),
                phase: "connect",
                after: timeout,
            }),
            Ok(Err(e)) => Err(match classify(&e) {
                Class::Tls(reason) => TransportError::Tls {
                    addr,
                    method: method.to_owned(),
                    reason,
                },
                _ => TransportError::Connect {
                    addr,
                    server: server.to_owned(),
                    method: method.to_owned(),
                    reason: e.to_string(),
                },
            }),
            Ok(Ok(conn)) => {
                debug!(%addr, server, "connected");
                Ok(conn)
            }
        }
    }

    async fn attempt(
        &self,
        conn: &quinn::Connection,
        addr: SocketAddr,
        method: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Vec<u8>, Attempt> {
        match tokio::time::timeout(timeout, exchange(conn, addr, method, body)).await {
            Err(_) => Err(Attempt::Fatal(TransportError::Timeout {
                addr,
                method: method.to_owned(),
                phase: "call",
                after: timeout,
            })),
            Ok(result) => result,
        }
    }
}

/// Random 8-byte connection IDs that any incarnation of the endpoint accepts as "ours",
/// so packets of a connection from before a restart get a stateless reset.
struct RandomCids;

impl quinn::ConnectionIdGenerator for RandomCids {
    fn generate_cid(&mut self) -> quinn::ConnectionId {
        static FALLBACK: AtomicU64 = AtomicU64::new(0);
        let mut id = [0u8; 8];
        if getrandom::fill(&mut id).is_err() {
            // No system randomness (never seen on Linux): still unpredictable enough to
            // not collide, from a counter and the clock through SHA-256.
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let seed = [
                FALLBACK
                    .fetch_add(1, Ordering::Relaxed)
                    .to_le_bytes()
                    .as_slice(),
                &nanos.to_le_bytes(),
            ]
            .concat();
            let hash = ring::digest::digest(&ring::digest::SHA256, &seed);
            id.copy_from_slice(&hash.as_ref()[..8]);
        }
        quinn::ConnectionId::new(&id)
    }

    fn cid_len(&self) -> usize {
        8
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// One request/response on a new stream of `conn`.
async fn exchange(
    conn: &quinn::Connection,
    addr: SocketAddr,
    method: &str,
    body: &[u8],
) -> Result<Vec<u8>, Attempt> {
    let lost = |e: ConnectionError, retryable: bool| {
        let error = match classify(&e) {
            Class::Tls(reason) => TransportError::Tls {
                addr,
                method: method.to_owned(),
                reason,
            },
            Class::Lost => TransportError::Lost {
                addr,
                method: method.to_owned(),
                reason: e.to_string(),
            },
        };
        // A reset means the peer had no state for the connection (it restarted): the
        // request was not processed.
        if retryable || matches!(e, ConnectionError::Reset) {
            Attempt::Retryable(error)
        } else {
            Attempt::Fatal(error)
        }
    };
    let protocol = |reason: String| {
        Attempt::Fatal(TransportError::Protocol {
            addr,
            method: method.to_owned(),
            reason,
        })
    };
    if body.len() > MAX_BODY_LEN {
        return Err(protocol(format!(
            "request body of {} bytes exceeds the limit of {MAX_BODY_LEN}",
            body.len()
        )));
    }
    let header = serde_json::to_vec(&RequestHeader {
        method: method.to_owned(),
    })
    .map_err(|e| protocol(format!("cannot encode the request header: {e}")))?;
    if header.len() > MAX_HEADER_LEN {
        return Err(protocol(format!(
            "request header of {} bytes exceeds the limit of {MAX_HEADER_LEN}",
            header.len()
        )));
    }

    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(e, true))?;
    let mut prefix = Vec::with_capacity(8 + header.len());
    prefix.extend_from_slice(&len_u32(header.len()).to_be_bytes());
    prefix.extend_from_slice(&header);
    prefix.extend_from_slice(&len_u32(body.len()).to_be_bytes());
    // If the server stops reading (it refused the request early, e.g. too large), its
    // answer explains why: read it rather than reporting the write failure.
    let mut written = send.write_all(&prefix).await;
    if written.is_ok() {
        written = send.write_all(body).await;
    }
    match written {
        Ok(()) => {
            let _ = send.finish();
        }
        Err(quinn::WriteError::Stopped(_)) => {}
        Err(quinn::WriteError::ConnectionLost(c)) => return Err(lost(c, false)),
        Err(other) => return Err(protocol(format!("request stream refused: {other}"))),
    }

    let read_error = |e: quinn::ReadExactError| match e {
        quinn::ReadExactError::ReadError(quinn::ReadError::ConnectionLost(c)) => lost(c, false),
        other => protocol(format!("cannot read the answer: {other}")),
    };
    let mut head = [0u8; 5];
    recv.read_exact(&mut head).await.map_err(read_error)?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_BODY_LEN {
        return Err(protocol(format!(
            "answer of {len} bytes exceeds the limit of {MAX_BODY_LEN}"
        )));
    }
    let answer = read_body(&mut recv, len).await.map_err(read_error)?;
    match head[0] {
        STATUS_OK => Ok(answer),
        STATUS_ERROR => {
            let remote: RemoteError = serde_json::from_slice(&answer)
                .map_err(|e| protocol(format!("undecodable error answer: {e}")))?;
            Err(Attempt::Fatal(TransportError::Remote {
                addr,
                method: method.to_owned(),
                code: remote.code,
                message: remote.message,
            }))
        }
        other => Err(protocol(format!("unknown answer status {other}"))),
    }
}

#[derive(Serialize, Deserialize)]
struct RequestHeader {
    method: String,
}

/// Lengths are checked against limits far below `u32::MAX` before this is called.
fn len_u32(len: usize) -> u32 {
    u32::try_from(len).unwrap_or(u32::MAX)
}

async fn read_body(
    recv: &mut quinn::RecvStream,
    len: usize,
) -> Result<Vec<u8>, quinn::ReadExactError> {
    let mut buf = Vec::with_capacity(len.min(READ_CHUNK));
    while buf.len() < len {
        let start = buf.len();
        let end = (start + READ_CHUNK).min(len);
        buf.resize(end, 0);
        recv.read_exact(&mut buf[start..end]).await?;
    }
    Ok(buf)
}

enum Class {
    Tls(String),
    Lost,
}

/// TLS failures travel as QUIC CRYPTO_ERROR codes (0x100 + TLS alert).
fn classify(e: &ConnectionError) -> Class {
    let crypto = |code: TransportErrorCode| (0x100..0x200).contains(&u64::from(code));
    match e {
        ConnectionError::TransportError(t) if crypto(t.code) => Class::Tls(t.to_string()),
        ConnectionError::ConnectionClosed(c) if crypto(c.error_code) => Class::Tls(c.to_string()),
        _ => Class::Lost,
    }
}

fn transport_config(options: &EndpointOptions) -> Result<TransportConfig, TransportError> {
    let mut t = TransportConfig::default();
    let idle = IdleTimeout::try_from(options.idle_timeout).map_err(|e| TransportError::Config {
        reason: format!("idle timeout {:?}: {e}", options.idle_timeout),
    })?;
    t.max_idle_timeout(Some(idle));
    t.keep_alive_interval(Some(options.keep_alive));
    t.max_concurrent_bidi_streams(VarInt::from_u32(options.max_concurrent_calls));
    t.max_concurrent_uni_streams(VarInt::from_u32(0));
    // Room for snapshots on fast links: 8 MiB per stream, 32 MiB per connection.
    t.stream_receive_window(VarInt::from_u32(8 * 1024 * 1024));
    t.receive_window(VarInt::from_u32(32 * 1024 * 1024));
    t.send_window(32 * 1024 * 1024);
    Ok(t)
}

fn root_store(tls: &TlsMaterial) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    for root in &tls.roots {
        roots
            .add(root.clone())
            .map_err(|e| TransportError::Config {
                reason: format!("root certificate: {e}"),
            })?;
    }
    if roots.is_empty() {
        return Err(TransportError::Config {
            reason: "no root certificate".to_owned(),
        });
    }
    Ok(Arc::new(roots))
}

fn server_config(
    tls: &TlsMaterial,
    provider: &Arc<CryptoProvider>,
    transport: &Arc<TransportConfig>,
) -> Result<quinn::ServerConfig, TransportError> {
    let config_error = |e: &dyn fmt::Display| TransportError::Config {
        reason: e.to_string(),
    };
    let verifier = WebPkiClientVerifier::builder_with_provider(root_store(tls)?, provider.clone())
        .allow_unauthenticated()
        .build()
        .map_err(|e| config_error(&e))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| config_error(&e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    let quic = QuicServerConfig::try_from(config).map_err(|e| config_error(&e))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(quic));
    server.transport_config(transport.clone());
    Ok(server)
}

fn client_config(
    tls: &TlsMaterial,
    provider: &Arc<CryptoProvider>,
    transport: &Arc<TransportConfig>,
) -> Result<quinn::ClientConfig, TransportError> {
    let config_error = |e: &dyn fmt::Display| TransportError::Config {
        reason: e.to_string(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| config_error(&e))?
        .with_root_certificates(root_store(tls)?)
        .with_client_auth_cert(tls.chain.clone(), tls.key.clone_key())
        .map_err(|e| config_error(&e))?;
    config.alpn_protocols = vec![ALPN.to_vec()];
    config.resumption = rustls::client::Resumption::disabled();
    let mut client = quinn::ClientConfig::new(Arc::new(quic_client(config)?));
    client.transport_config(transport.clone());
    Ok(client)
}

fn quic_client(config: rustls::ClientConfig) -> Result<QuicClientConfig, TransportError> {
    QuicClientConfig::try_from(config).map_err(|e| TransportError::Config {
        reason: e.to_string(),
    })
}

fn peer_chain(conn: &quinn::Connection) -> Option<Vec<CertificateDer<'static>>> {
    conn.peer_identity()?
        .downcast::<Vec<CertificateDer<'static>>>()
        .ok()
        .map(|chain| *chain)
}

/// Verifies a server by the CA digest of a join token instead of by configured roots.
#[derive(Debug)]
struct PinnedCaVerifier {
    expected: String,
    provider: Arc<CryptoProvider>,
    /// Digest of the CA the server presented, when it did not match.
    mismatch: Mutex<Option<String>>,
}

impl PinnedCaVerifier {
    /// Turns a handshake failure caused by a CA mismatch into [`TransportError::CaMismatch`].
    fn explain(&self, addr: SocketAddr, error: TransportError) -> TransportError {
        let actual = match self.mismatch.lock() {
            Ok(mut guard) => guard.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        match actual {
            Some(actual) => TransportError::CaMismatch {
                addr,
                expected: self.expected.clone(),
                actual,
            },
            None => error,
        }
    }
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let candidates: Vec<usize> = (0..intermediates.len())
            .filter(|&i| pki::digest_of(&intermediates[i]) == self.expected)
            .collect();
        if candidates.is_empty() {
            let presented = intermediates.last().unwrap_or(end_entity);
            let actual = pki::digest_of(presented);
            warn!(expected = %self.expected, %actual, "remote CA does not match the join token");
            if let Ok(mut guard) = self.mismatch.lock() {
                *guard = Some(actual);
            }
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ));
        }
        let mut last = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        for i in candidates {
            let mut roots = RootCertStore::empty();
            roots.add(intermediates[i].clone())?;
            let others: Vec<CertificateDer<'_>> = intermediates
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, c)| c.clone())
                .collect();
            let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                self.provider.clone(),
            )
            .build()
            .map_err(|e| rustls::Error::General(e.to_string()))?;
            match verifier.verify_server_cert(end_entity, &others, server_name, ocsp_response, now)
            {
                Ok(verified) => return Ok(verified),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

async fn accept_loop(
    endpoint: quinn::Endpoint,
    handler: Arc<dyn Handler>,
    accepted: Arc<AtomicU64>,
) {
    while let Some(incoming) = endpoint.accept().await {
        tokio::spawn(serve_connection(
            incoming,
            handler.clone(),
            accepted.clone(),
        ));
    }
    debug!("node endpoint stopped accepting");
}

async fn serve_connection(
    incoming: quinn::Incoming,
    handler: Arc<dyn Handler>,
    accepted: Arc<AtomicU64>,
) {
    let addr = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            // Refused certificates (expired, unknown CA) end here.
            info!(%addr, error = %e, "incoming connection refused");
            return;
        }
    };
    accepted.fetch_add(1, Ordering::Relaxed);
    let identity = match peer_chain(&conn) {
        Some(chain) if !chain.is_empty() => match pki::identity_of(&chain[0]) {
            Ok(identity) => Some(identity),
            Err(e) => {
                warn!(%addr, error = %e, "verified certificate names no node identity");
                conn.close(
                    VarInt::from_u32(CLOSE_BAD_IDENTITY),
                    b"certificate names no node",
                );
                return;
            }
        },
        _ => None,
    };
    debug!(
        %addr,
        node_id = identity.as_ref().map(|i| i.node_id.as_str()),
        role = identity.as_ref().map(|i| i.role.to_string()),
        "connection accepted"
    );
    let peer = Peer { addr, identity };
    loop {
        match conn.accept_bi().await {
            Ok((send, recv)) => {
                tokio::spawn(serve_stream(send, recv, peer.clone(), handler.clone()));
            }
            Err(e) => {
                debug!(%addr, reason = %e, "connection ended");
                return;
            }
        }
    }
}

async fn serve_stream(
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    peer: Peer,
    handler: Arc<dyn Handler>,
) {
    let addr = peer.addr;
    let limit = if peer.identity.is_some() {
        MAX_BODY_LEN
    } else {
        MAX_ANONYMOUS_BODY_LEN
    };
    let answer = match read_request(&mut recv, limit).await {
        Err(RequestError::Stream(reason)) => {
            debug!(%addr, %reason, "request stream failed");
            return;
        }
        Err(RequestError::Bad(message)) => {
            warn!(%addr, %message, "bad request");
            Err(RemoteError::new("bad_request", message))
        }
        Ok((method, body)) => match &peer.identity {
            Some(identity) if identity.not_after <= chrono::Utc::now() => {
                info!(%addr, node_id = %identity.node_id, %method, "refused: certificate expired");
                Err(RemoteError::new(
                    "certificate_expired",
                    format!(
                        "the certificate of node {} expired at {}",
                        identity.node_id, identity.not_after
                    ),
                ))
            }
            _ => handler.handle(peer, method, body).await,
        },
    };
    let (status, body) = match answer {
        Ok(body) if body.len() <= MAX_BODY_LEN => (STATUS_OK, body),
        Ok(body) => (
            STATUS_ERROR,
            error_body(&RemoteError::new(
                "answer_too_large",
                format!(
                    "answer of {} bytes exceeds the limit of {MAX_BODY_LEN}",
                    body.len()
                ),
            )),
        ),
        Err(e) => (STATUS_ERROR, error_body(&e)),
    };
    let mut head = [0u8; 5];
    head[0] = status;
    head[1..].copy_from_slice(&len_u32(body.len()).to_be_bytes());
    if let Err(e) = send.write_all(&head).await {
        debug!(%addr, error = %e, "cannot send the answer");
        return;
    }
    if let Err(e) = send.write_all(&body).await {
        debug!(%addr, error = %e, "cannot send the answer");
        return;
    }
    // Dropping the stream after `finish` still delivers the answer.
    let _ = send.finish();
}

fn error_body(e: &RemoteError) -> Vec<u8> {
    // A struct of two strings always serialises.
    serde_json::to_vec(e).unwrap_or_default()
}

enum RequestError {
    /// The stream broke: nobody to answer.
    Stream(String),
    /// Malformed or oversized request: answered with `bad_request`.
    Bad(String),
}

async fn read_request(
    recv: &mut quinn::RecvStream,
    body_limit: usize,
) -> Result<(String, Vec<u8>), RequestError> {
    let stream = |e: quinn::ReadExactError| RequestError::Stream(e.to_string());
    let mut len = [0u8; 4];
    recv.read_exact(&mut len).await.map_err(stream)?;
    let header_len = u32::from_be_bytes(len) as usize;
    if header_len > MAX_HEADER_LEN {
        return Err(RequestError::Bad(format!(
            "request header of {header_len} bytes exceeds the limit of {MAX_HEADER_LEN}"
        )));
    }
    let header = read_body(recv, header_len).await.map_err(stream)?;
    let header: RequestHeader = serde_json::from_slice(&header)
        .map_err(|e| RequestError::Bad(format!("undecodable request header: {e}")))?;
    recv.read_exact(&mut len).await.map_err(stream)?;
    let body_len = u32::from_be_bytes(len) as usize;
    if body_len > body_limit {
        return Err(RequestError::Bad(format!(
            "request body of {body_len} bytes exceeds the limit of {body_limit}"
        )));
    }
    let body = read_body(recv, body_len).await.map_err(stream)?;
    Ok((header.method, body))
}
