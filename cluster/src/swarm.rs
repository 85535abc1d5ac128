//! This node's swarm membership: init, join, leave, unlock, restart.
//!
//! A node is *inactive* (a single node engine), *locked* (a manager whose Raft data key is
//! protected by an unlock key it does not have yet) or *active*. An active node has one QUIC
//! endpoint (the cluster port) with its certificate, an agent session with the leader's
//! dispatcher, and — on managers — the replicated store with the control services.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock, RwLock, Weak};
use std::time::Duration;

use chrono::Utc;
use futures::future::BoxFuture;
use shoal_store::crypto::{DataKey, KeyEncryptionKey, KeyStore};
use shoal_store::model::{
    self as m, Cluster, ClusterSpec, Membership, NodeDescription, NodeState as Health, Role,
};
use shoal_store::{Action, Object, Proposal, Store, StoreConfig};

use crate::SwarmError;
use crate::engine::Engine;
use crate::manager::Manager;
use crate::pki::{self, JoinToken, NodeKey, RootCa};
use crate::rpc::{self, JoinRequest, JoinResponse, LeaderOp, method};
use crate::state::{NodeState, SwarmPaths};
use crate::transport::{
    Endpoint, EndpointOptions, Handler, Peer, RemoteError, TlsMaterial, TransportError,
};

/// Options of `swarm init`.
#[derive(Clone, Debug, Default)]
pub struct InitOptions {
    pub listen_addr: String,
    pub advertise_addr: String,
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u32,
    pub spec: ClusterSpec,
    pub force_new_cluster: bool,
}

/// What `swarm init` reports.
#[derive(Clone, Debug)]
pub struct InitResult {
    pub node_id: String,
    /// Set when the managers are autolocked: the key `swarm unlock` will need.
    pub unlock_key: Option<String>,
}

/// Options of `swarm join`.
#[derive(Clone, Debug, Default)]
pub struct JoinOptions {
    pub remote_addrs: Vec<String>,
    pub token: String,
    pub listen_addr: String,
    pub advertise_addr: String,
}

/// The node's local view of its membership (for `info`).
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SwarmInfo {
    /// `inactive`, `locked`, `active`.
    pub local_node_state: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub node_addr: String,
    pub control_available: bool,
    pub error: String,
    pub remote_managers: Vec<String>,
    pub cluster: Option<ClusterInfo>,
}

/// The cluster part of `info` (managers only).
#[derive(Clone, Debug, Default, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ClusterInfo {
    #[serde(rename = "ID")]
    pub id: String,
    pub managers: usize,
    pub nodes: usize,
    pub spec: ClusterSpec,
    pub default_addr_pool: Vec<String>,
    pub subnet_size: u32,
    pub root_rotation_in_progress: bool,
    pub ca_expiry: Option<chrono::DateTime<Utc>>,
}

/// This node's swarm membership.
#[derive(Clone)]
pub struct Swarm {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    paths: SwarmPaths,
    engine: Engine,
    /// Serializes init/join/leave/unlock.
    transition: tokio::sync::Mutex<()>,
    phase: RwLock<Phase>,
}

enum Phase {
    Inactive,
    Locked(NodeState),
    Active(Arc<Member>),
}

/// An active member: endpoint, identity, agent, maybe a manager.
pub struct Member {
    pub(crate) swarm: Weak<Inner>,
    pub(crate) paths: SwarmPaths,
    pub(crate) engine: Engine,
    pub(crate) state: RwLock<NodeState>,
    pub(crate) endpoint: Endpoint,
    pub(crate) tls: RwLock<TlsPem>,
    pub(crate) manager: RwLock<Option<Arc<Manager>>>,
    /// The Raft data key while a manager.
    pub(crate) dek: RwLock<Option<DataKey>>,
    /// The key-encryption key while a manager (in memory even when autolocked).
    pub(crate) kek: RwLock<Option<KeyEncryptionKey>>,
    pub(crate) stop: tokio::sync::watch::Sender<bool>,
    /// Runs this node's tasks.
    pub(crate) worker: OnceLock<Arc<crate::worker::Worker>>,
    /// The other ready nodes, as the dispatcher last said (where task images can be
    /// fetched).
    pub(crate) peers: RwLock<Vec<crate::rpc::PeerNode>>,
}

/// The node's TLS material as PEM.
#[derive(Clone, Debug, Default)]
pub struct TlsPem {
    pub chain: String,
    pub roots: String,
    pub key: String,
}

impl TlsPem {
    pub(crate) fn material(&self) -> Result<TlsMaterial, SwarmError> {
        TlsMaterial::from_pem(&self.roots, &self.chain, &self.key).map_err(SwarmError::Transport)
    }
}

fn lock<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn lock_mut<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Routes the cluster port's calls to this member (set once the member exists).
struct Router {
    member: OnceLock<Weak<Member>>,
}

impl Handler for Router {
    fn handle(
        &self,
        peer: Peer,
        method: String,
        body: Vec<u8>,
    ) -> BoxFuture<'static, Result<Vec<u8>, RemoteError>> {
        let member = self.member.get().and_then(Weak::upgrade);
        Box::pin(async move {
            let Some(member) = member else {
                return Err(remote(
                    rpc::code::INTERNAL,
                    "this node is starting or stopping",
                ));
            };
            if crate::node_rpc::is_node_method(&method) {
                return crate::node_rpc::handle(&member, &peer, &method, body).await;
            }
            let manager = lock(&member.manager).clone();
            let Some(manager) = manager else {
                return Err(remote(
                    rpc::code::PERMISSION_DENIED,
                    "this node is not a swarm manager",
                ));
            };
            manager.handle(peer, &method, body).await
        })
    }
}

pub(crate) fn remote(code: &str, message: impl Into<String>) -> RemoteError {
    RemoteError {
        code: code.to_owned(),
        message: message.into(),
    }
}

/// The default cluster port.
pub const DEFAULT_PORT: u16 = 4242;

/// Normalizes `ip`, `ip:port` or `:port` into a socket address (default port 4242).
pub fn parse_addr(s: &str, default_ip: &str) -> Result<SocketAddr, SwarmError> {
    let bad = || SwarmError::InvalidArgument(format!("invalid address {s:?}: want ip[:port]"));
    let s = s.trim();
    let with_port = if s.starts_with(':') {
        format!("{default_ip}{s}")
    } else if s.parse::<std::net::IpAddr>().is_ok() {
        format!("{s}:{DEFAULT_PORT}")
    } else {
        s.to_owned()
    };
    with_port.parse().map_err(|_| bad())
}

impl Swarm {
    /// Opens the swarm state of a daemon: resumes its membership (or stays locked, waiting
    /// for `swarm unlock`).
    pub async fn open(data_dir: &Path, engine: Engine) -> Result<Swarm, SwarmError> {
        let paths = SwarmPaths::new(data_dir);
        let swarm = Swarm {
            inner: Arc::new(Inner {
                paths: paths.clone(),
                engine,
                transition: tokio::sync::Mutex::new(()),
                phase: RwLock::new(Phase::Inactive),
            }),
        };
        if let Some(state) = paths.load()? {
            if state.role == Role::Manager && KeyStore::is_locked(&paths.keys_dir()) {
                tracing::warn!(node = %state.node_id, "this manager is locked: run `shoal swarm unlock`");
                *lock_mut(&swarm.inner.phase) = Phase::Locked(state);
            } else {
                let dek = if state.role == Role::Manager {
                    Some(KeyStore::load(&paths.keys_dir(), None)?)
                } else {
                    None
                };
                let kek = if state.role == Role::Manager {
                    KeyStore::clear_kek(&paths.keys_dir())?
                } else {
                    None
                };
                let member = swarm.start_member(state, dek, kek, None).await?;
                *lock_mut(&swarm.inner.phase) = Phase::Active(member);
            }
        }
        Ok(swarm)
    }

    fn member(&self) -> Option<Arc<Member>> {
        match &*lock(&self.inner.phase) {
            Phase::Active(m) => Some(m.clone()),
            _ => None,
        }
    }

    /// The manager services of this node, or Docker's error for a worker / inactive node.
    pub fn manager(&self) -> Result<Arc<Manager>, SwarmError> {
        match &*lock(&self.inner.phase) {
            Phase::Inactive => Err(SwarmError::NotInSwarm),
            Phase::Locked(_) => Err(SwarmError::Locked),
            Phase::Active(m) => lock(&m.manager).clone().ok_or(SwarmError::NotManager),
        }
    }

    /// This node's ID in its swarm.
    pub fn node_id(&self) -> Option<String> {
        match &*lock(&self.inner.phase) {
            Phase::Active(m) => Some(lock(&m.state).node_id.clone()),
            Phase::Locked(s) => Some(s.node_id.clone()),
            Phase::Inactive => None,
        }
    }

    /// `swarm init`.
    pub async fn init(&self, opts: InitOptions) -> Result<InitResult, SwarmError> {
        let _t = self.inner.transition.lock().await;
        if opts.force_new_cluster {
            return self.force_new_cluster(opts).await;
        }
        if !matches!(&*lock(&self.inner.phase), Phase::Inactive) || self.inner.paths.exists() {
            return Err(SwarmError::AlreadyInSwarm);
        }
        crate::manager::validate_spec(&opts.spec)?;
        let listen = parse_addr(&opts.listen_addr, "0.0.0.0")?;
        let advertise = advertise_addr(&opts.advertise_addr, listen)?;
        let node_id = pki::new_node_id()?;
        let cluster_id = pki::new_node_id()?;
        let ca = RootCa::generate(&cluster_id)?;
        let digest = ca.digest();
        let key = NodeKey::generate()?;
        let expiry = opts.spec.ca_config.node_cert_expiry;
        let cert = ca.sign_csr(
            &key.csr(&node_id)?,
            &node_id,
            pki::Role::Manager,
            &cluster_id,
            expiry,
        )?;
        let tls = TlsPem {
            chain: format!("{cert}{}", ca.cert_pem()),
            roots: ca.cert_pem().to_owned(),
            key: key.to_pem(),
        };
        let paths = &self.inner.paths;
        let (dek, kek) = KeyStore::create(&paths.keys_dir())?;
        let autolock = opts.spec.encryption.auto_lock_managers;
        let unlock_key = autolock.then(|| kek.to_unlock_key());
        if autolock {
            KeyStore::lock(&paths.keys_dir(), &kek)?;
        }
        paths.save_tls(&tls.chain, &tls.roots, &tls.key, Some(&dek))?;
        let raft_id = new_raft_id();
        let state = NodeState {
            node_id: node_id.clone(),
            cluster_id: cluster_id.clone(),
            role: Role::Manager,
            raft_id,
            listen_addr: listen.to_string(),
            advertise_addr: advertise.to_string(),
            managers: vec![advertise.to_string()],
        };
        paths.save(&state)?;
        let member = match self
            .start_member_bootstrap(
                state,
                dek,
                kek,
                &opts,
                &ca,
                &cert,
                &digest,
                unlock_key.clone(),
            )
            .await
        {
            Ok(m) => m,
            Err(e) => {
                let _ = paths.wipe();
                return Err(e);
            }
        };
        *lock_mut(&self.inner.phase) = Phase::Active(member);
        Ok(InitResult {
            node_id,
            unlock_key,
        })
    }

    #[allow(clippy::too_many_arguments)]
    async fn start_member_bootstrap(
        &self,
        state: NodeState,
        dek: DataKey,
        kek: KeyEncryptionKey,
        opts: &InitOptions,
        ca: &RootCa,
        cert_pem: &str,
        digest: &str,
        unlock_key: Option<String>,
    ) -> Result<Arc<Member>, SwarmError> {
        let member = self
            .start_member(state.clone(), Some(dek), Some(kek), None)
            .await?;
        let manager = lock(&member.manager)
            .clone()
            .ok_or(SwarmError::NotManager)?;
        manager.store().bootstrap().await?;
        manager.wait_leader(Duration::from_secs(10)).await?;
        let now = Utc::now();
        let cluster = Cluster {
            id: state.cluster_id.clone(),
            spec: opts.spec.clone(),
            root_ca: m::RootCa {
                ca_cert_pem: ca.cert_pem().to_owned(),
                ca_key_pem: ca.key_pem().to_owned(),
                ca_cert_digest: digest.to_owned(),
                join_tokens: m::JoinTokens {
                    worker: JoinToken::generate(digest)?.to_string(),
                    manager: JoinToken::generate(digest)?.to_string(),
                },
                rotation: None,
            },
            default_addr_pool: if opts.default_addr_pool.is_empty() {
                vec!["10.80.0.0/12".to_owned()]
            } else {
                opts.default_addr_pool.clone()
            },
            subnet_size: if opts.subnet_size == 0 {
                24
            } else {
                opts.subnet_size
            },
            unlock_key: unlock_key.unwrap_or_default(),
            ..Cluster::default()
        };
        let node = m::Node {
            id: state.node_id.clone(),
            spec: m::NodeSpec {
                role: Role::Manager,
                membership: Membership::Accepted,
                availability: m::Availability::Active,
                ..Default::default()
            },
            description: describe(&self.inner.engine),
            status: m::NodeStatus {
                state: Health::Ready,
                message: String::new(),
                addr: host_of(&state.advertise_addr),
            },
            manager_status: Some(m::ManagerStatus {
                raft_id: state.raft_id,
                addr: state.advertise_addr.clone(),
                leader: true,
                reachability: m::Reachability::Reachable,
            }),
            certificate: m::NodeCertificate {
                role: Role::Manager,
                certificate_pem: cert_pem.to_owned(),
                expires_at: pki::identity_of_pem(cert_pem).ok().map(|i| i.not_after),
            },
            role: Role::Manager,
            ..Default::default()
        };
        manager
            .propose(Proposal {
                actions: vec![
                    Action::Create(Object::Cluster(cluster)),
                    Action::Create(Object::Node(node)),
                ],
                at: now,
            })
            .await?;
        Ok(member)
    }

    /// Starts the member for a stored identity: endpoint, store and manager (managers),
    /// agent.
    async fn start_member(
        &self,
        state: NodeState,
        dek: Option<DataKey>,
        kek: Option<KeyEncryptionKey>,
        prebound: Option<(Endpoint, Arc<Router>)>,
    ) -> Result<Arc<Member>, SwarmError> {
        let paths = self.inner.paths.clone();
        let (chain, roots, key) = paths.load_tls(dek.as_ref())?;
        let tls = TlsPem { chain, roots, key };
        let (endpoint, router) = match prebound {
            // The join endpoint already owns the port: give it its certificate.
            Some((endpoint, router)) => {
                endpoint
                    .set_tls(tls.material()?)
                    .map_err(SwarmError::from_transport)?;
                (endpoint, router)
            }
            None => {
                let router = Arc::new(Router {
                    member: OnceLock::new(),
                });
                let listen: SocketAddr = state.listen_addr.parse().map_err(|_| {
                    SwarmError::InvalidArgument(format!(
                        "invalid listen address {}",
                        state.listen_addr
                    ))
                })?;
                (
                    bind_endpoint(listen, || Ok(Some(tls.material()?)), router.clone(), None)
                        .await?,
                    router,
                )
            }
        };
        let (stop, _) = tokio::sync::watch::channel(false);
        let member = Arc::new(Member {
            swarm: Arc::downgrade(&self.inner),
            paths,
            engine: self.inner.engine.clone(),
            state: RwLock::new(state.clone()),
            endpoint,
            tls: RwLock::new(tls),
            manager: RwLock::new(None),
            dek: RwLock::new(dek.clone()),
            kek: RwLock::new(kek),
            stop,
            worker: OnceLock::new(),
            peers: RwLock::new(Vec::new()),
        });
        let _ = router.member.set(Arc::downgrade(&member));
        if state.role == Role::Manager {
            let dek = dek.ok_or(SwarmError::Locked)?;
            member.start_manager(dek).await?;
        }
        crate::agent::spawn(member.clone());
        let desc = describe(&self.inner.engine);
        let worker = crate::worker::Worker::start(
            self.inner.engine.clone(),
            Arc::new(crate::session::ClusterImages {
                engine: self.inner.engine.clone(),
                member: Arc::downgrade(&member),
            }),
            crate::worker::NodeFacts {
                node_id: state.node_id.clone(),
                hostname: desc.hostname,
                os: desc.platform.os,
                arch: desc.platform.architecture,
            },
        );
        let _ = member.worker.set(worker.clone());
        crate::session::spawn(member.clone(), worker);
        Ok(member)
    }

    /// `swarm join`.
    pub async fn join(&self, opts: JoinOptions) -> Result<(), SwarmError> {
        let _t = self.inner.transition.lock().await;
        if !matches!(&*lock(&self.inner.phase), Phase::Inactive) || self.inner.paths.exists() {
            return Err(SwarmError::AlreadyInSwarm);
        }
        let token: JoinToken = opts
            .token
            .parse()
            .map_err(|_| SwarmError::InvalidArgument("invalid join token".into()))?;
        let listen = parse_addr(&opts.listen_addr, "0.0.0.0")?;
        let key = NodeKey::generate()?;
        // The node's endpoint, bound before it has a certificate: it makes the pinned join
        // call, then gets its certificate and serves (one socket, so no rebind race).
        let router = Arc::new(Router {
            member: OnceLock::new(),
        });
        let seed = key.private_key_der().secret_der().to_vec();
        let tmp = bind_endpoint(listen, || Ok(None), router.clone(), Some(seed)).await?;
        let advertise_guess = advertise_addr(&opts.advertise_addr, listen)?;
        let req = JoinRequest {
            token: opts.token.clone(),
            csr: key.csr("joining")?,
            advertise_addr: advertise_guess.to_string(),
            description: describe(&self.inner.engine),
        };
        let body = serde_json::to_vec(&req).map_err(|e| SwarmError::Internal(e.to_string()))?;
        let mut last_err = None;
        let mut answer = None;
        for remote in &opts.remote_addrs {
            let addr = match parse_addr(remote, "127.0.0.1") {
                Ok(a) => a,
                Err(e) => {
                    last_err = Some(e);
                    continue;
                }
            };
            match tmp
                .call_pinned(addr, &token.ca_digest, method::JOIN, body.clone())
                .await
            {
                Ok((resp, _chain)) => {
                    answer = Some(resp);
                    break;
                }
                Err(e) => last_err = Some(SwarmError::from_transport(e)),
            }
        }
        let resp: JoinResponse = match answer {
            Some(b) => {
                serde_json::from_slice(&b).map_err(|e| SwarmError::Internal(e.to_string()))?
            }
            None => {
                tmp.shutdown().await;
                return Err(last_err.unwrap_or_else(|| {
                    SwarmError::InvalidArgument("no manager address given".into())
                }));
            }
        };
        let paths = &self.inner.paths;
        let state = NodeState {
            node_id: resp.node_id.clone(),
            cluster_id: resp.cluster_id.clone(),
            role: resp.role,
            raft_id: resp.raft_id,
            listen_addr: listen.to_string(),
            advertise_addr: advertise_guess.to_string(),
            managers: resp.managers.clone(),
        };
        let (dek, kek) = if resp.role == Role::Manager {
            let (d, k) = KeyStore::create(&paths.keys_dir())?;
            (Some(d), Some(k))
        } else {
            (None, None)
        };
        paths.save_tls(
            &resp.certificate_chain,
            &resp.roots,
            &key.to_pem(),
            dek.as_ref(),
        )?;
        paths.save(&state)?;
        let started = self
            .start_member(state, dek, kek, Some((tmp, router)))
            .await;
        let member = match started {
            Ok(m) => m,
            Err(e) => {
                let _ = paths.wipe();
                return Err(e);
            }
        };
        if resp.role == Role::Manager {
            // Become a Raft voter (the leader adds us as a learner, lets us catch up, then
            // promotes us). Only then is the join complete.
            let manager = lock(&member.manager)
                .clone()
                .ok_or(SwarmError::NotManager)?;
            let addr = lock(&member.state).advertise_addr.clone();
            if let Err(e) = manager
                .leader_op(LeaderOp::AddManager {
                    raft_id: resp.raft_id,
                    addr,
                })
                .await
            {
                member.shutdown().await;
                let _ = paths.wipe();
                return Err(e);
            }
        }
        *lock_mut(&self.inner.phase) = Phase::Active(member);
        Ok(())
    }

    /// `swarm leave`.
    pub async fn leave(&self, force: bool) -> Result<(), SwarmError> {
        let _t = self.inner.transition.lock().await;
        let member = match &*lock(&self.inner.phase) {
            Phase::Inactive => return Err(SwarmError::NotInSwarm),
            Phase::Locked(_) => None,
            Phase::Active(m) => Some(m.clone()),
        };
        let manager = member.as_ref().and_then(|m| lock(&m.manager).clone());
        if let (Some(member), Some(manager)) = (&member, manager) {
            let managers = manager.store().status().voters.len();
            if !force {
                return Err(SwarmError::ManagerLeave { managers });
            }
            if managers > 1 {
                let raft_id = lock(&member.state).raft_id;
                if let Err(e) = manager.leader_op(LeaderOp::RemoveManager { raft_id }).await {
                    tracing::warn!(error = %e, "cannot remove this manager from the Raft membership; leaving anyway");
                }
            }
        }
        if let Some(member) = member {
            member.shutdown().await;
        }
        crate::session::remove_task_containers(&self.inner.engine).await;
        self.inner.paths.wipe()?;
        *lock_mut(&self.inner.phase) = Phase::Inactive;
        Ok(())
    }

    /// `swarm unlock`.
    pub async fn unlock(&self, key: &str) -> Result<(), SwarmError> {
        let _t = self.inner.transition.lock().await;
        let state = match &*lock(&self.inner.phase) {
            Phase::Locked(s) => s.clone(),
            Phase::Inactive => return Err(SwarmError::NotInSwarm),
            Phase::Active(_) => return Err(SwarmError::NotLocked),
        };
        let kek = KeyEncryptionKey::parse_unlock_key(key.trim())
            .map_err(|_| SwarmError::InvalidArgument("invalid key".into()))?;
        let dek =
            KeyStore::load(&self.inner.paths.keys_dir(), Some(&kek)).map_err(|e| match e {
                shoal_store::crypto::CryptoError::WrongKey => SwarmError::InvalidArgument(
                    "swarm could not be unlocked: invalid key provided".into(),
                ),
                other => SwarmError::Crypto(other),
            })?;
        let member = self.start_member(state, Some(dek), Some(kek), None).await?;
        *lock_mut(&self.inner.phase) = Phase::Active(member);
        Ok(())
    }

    /// `swarm init --force-new-cluster` on a (former) manager: keeps the state, makes this
    /// manager the only voter.
    async fn force_new_cluster(&self, opts: InitOptions) -> Result<InitResult, SwarmError> {
        let paths = &self.inner.paths;
        let mut state = paths.load()?.ok_or(SwarmError::InvalidArgument(
            "--force-new-cluster needs the state of a former manager on this node".into(),
        ))?;
        if state.role != Role::Manager {
            return Err(SwarmError::InvalidArgument(
                "--force-new-cluster can only be used on a manager".into(),
            ));
        }
        // Stop whatever runs.
        let running = match &*lock(&self.inner.phase) {
            Phase::Active(m) => Some(m.clone()),
            _ => None,
        };
        if let Some(m) = running {
            m.shutdown().await;
            // Drop it, so its endpoint lets go of the port.
            *lock_mut(&self.inner.phase) = Phase::Inactive;
        }
        let kek = match KeyStore::clear_kek(&paths.keys_dir())? {
            Some(k) => k,
            None => return Err(SwarmError::Locked),
        };
        let dek = KeyStore::load(&paths.keys_dir(), Some(&kek))?;
        if !opts.listen_addr.is_empty() {
            let listen = parse_addr(&opts.listen_addr, "0.0.0.0")?;
            state.listen_addr = listen.to_string();
            state.advertise_addr = advertise_addr(&opts.advertise_addr, listen)?.to_string();
        }
        Store::force_new_cluster(&paths.raft(), &dek, state.raft_id, &state.advertise_addr)?;
        state.managers = vec![state.advertise_addr.clone()];
        paths.save(&state)?;
        let member = self
            .start_member(state.clone(), Some(dek), Some(kek), None)
            .await?;
        let manager = lock(&member.manager).clone();
        if let Some(manager) = manager {
            manager.wait_leader(Duration::from_secs(10)).await?;
            manager.after_force_new_cluster().await?;
        }
        *lock_mut(&self.inner.phase) = Phase::Active(member);
        Ok(InitResult {
            node_id: state.node_id,
            unlock_key: None,
        })
    }

    /// The local view for `info`.
    pub fn info(&self) -> SwarmInfo {
        match &*lock(&self.inner.phase) {
            Phase::Inactive => SwarmInfo {
                local_node_state: "inactive".into(),
                ..Default::default()
            },
            Phase::Locked(s) => SwarmInfo {
                local_node_state: "locked".into(),
                node_id: s.node_id.clone(),
                node_addr: host_of(&s.advertise_addr),
                remote_managers: s.managers.clone(),
                ..Default::default()
            },
            Phase::Active(member) => {
                let s = lock(&member.state).clone();
                let manager = lock(&member.manager).clone();
                SwarmInfo {
                    local_node_state: "active".into(),
                    node_id: s.node_id.clone(),
                    node_addr: host_of(&s.advertise_addr),
                    control_available: manager.is_some(),
                    error: String::new(),
                    remote_managers: s.managers.clone(),
                    cluster: manager.and_then(|m| m.cluster_info().ok()),
                }
            }
        }
    }

    /// Stops the endpoint, agent and store (daemon shutdown); containers keep running.
    pub async fn shutdown(&self) {
        if let Some(m) = self.member() {
            m.shutdown().await;
        }
    }
}

impl Member {
    /// The node ID.
    pub fn node_id(&self) -> String {
        lock(&self.state).node_id.clone()
    }

    /// The current TLS material.
    pub fn tls(&self) -> TlsPem {
        lock(&self.tls).clone()
    }

    /// Starts the store and the manager services.
    pub(crate) async fn start_manager(self: &Arc<Self>, dek: DataKey) -> Result<(), SwarmError> {
        let state = lock(&self.state).clone();
        let transport = Arc::new(crate::manager::RaftOverQuic {
            endpoint: self.endpoint.clone(),
        });
        let store = Store::open(
            StoreConfig {
                dir: self.paths.raft(),
                raft_id: state.raft_id,
                addr: state.advertise_addr.clone(),
                ..StoreConfig::default()
            },
            dek,
            transport,
        )
        .await?;
        let manager = Manager::start(Arc::downgrade(self), store, state);
        *lock_mut(&self.manager) = Some(manager);
        Ok(())
    }

    /// Stops the manager services (demotion, leave, shutdown).
    pub(crate) async fn stop_manager(&self) {
        let manager = lock_mut(&self.manager).take();
        if let Some(m) = manager {
            m.shutdown().await;
        }
    }

    /// Installs new TLS material (renewal, role change, CA rotation) on disk and on the
    /// endpoint.
    pub(crate) fn install_tls(&self, tls: TlsPem) -> Result<(), SwarmError> {
        let dek = lock(&self.dek).clone();
        self.paths
            .save_tls(&tls.chain, &tls.roots, &tls.key, dek.as_ref())?;
        self.endpoint.set_tls(tls.material()?)?;
        *lock_mut(&self.tls) = tls;
        Ok(())
    }

    /// Saves a changed identity.
    pub(crate) fn update_state(&self, f: impl FnOnce(&mut NodeState)) -> Result<(), SwarmError> {
        let mut s = lock_mut(&self.state);
        let before = s.clone();
        f(&mut s);
        if serde_json::to_value(&*s).ok() != serde_json::to_value(&before).ok() {
            self.paths.save(&s)?;
        }
        Ok(())
    }

    /// Stops everything this member runs.
    pub(crate) async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(w) = self.worker.get() {
            w.shutdown();
        }
        self.stop_manager().await;
        self.endpoint.close();
    }

    /// The cluster removed this node: forget the swarm (as Docker's node does).
    pub(crate) async fn removed(self: &Arc<Self>) {
        tracing::warn!(node = %self.node_id(), "this node was removed from the swarm");
        let Some(inner) = self.swarm.upgrade() else {
            return;
        };
        let _t = inner.transition.lock().await;
        self.shutdown().await;
        crate::session::remove_task_containers(&self.engine).await;
        let _ = inner.paths.wipe();
        *lock_mut(&inner.phase) = Phase::Inactive;
    }
}

/// Binds the node endpoint, waiting a little while the port is still held by an endpoint
/// of this process that is going away (leave then join, force-new-cluster): quinn releases
/// the socket once its last handle and connection are gone.
///
/// `reset_seed`: for an endpoint bound before it has its certificate (joining), the node
/// key's DER, so its stateless-reset key is the one every later start derives from the
/// same key (peers then recognise resets after a restart and redial at once).
async fn bind_endpoint(
    listen: SocketAddr,
    tls: impl Fn() -> Result<Option<TlsMaterial>, SwarmError>,
    router: Arc<Router>,
    reset_seed: Option<Vec<u8>>,
) -> Result<Endpoint, SwarmError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let options = EndpointOptions {
            reset_seed: reset_seed.clone(),
            ..EndpointOptions::default()
        };
        match Endpoint::bind_with_options(listen, tls()?, router.clone(), options) {
            Err(TransportError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => return Ok(other?),
        }
    }
}

/// A new random, non-zero Raft ID.
pub(crate) fn new_raft_id() -> u64 {
    let mut b = [0u8; 8];
    let _ = getrandom::fill(&mut b);
    u64::from_le_bytes(b).max(1)
}

/// The advertised address: the flag's, else the listen address when it is specific, else
/// the first non-loopback IPv4 address of the host.
fn advertise_addr(flag: &str, listen: SocketAddr) -> Result<SocketAddr, SwarmError> {
    if !flag.is_empty() {
        return parse_addr(flag, "0.0.0.0").map(|a| {
            if a.port() == 0 {
                SocketAddr::new(a.ip(), listen.port())
            } else {
                a
            }
        });
    }
    if !listen.ip().is_unspecified() {
        return Ok(listen);
    }
    match shoal_net::addrs::first_ipv4() {
        Some(ip) => Ok(SocketAddr::new(ip.into(), listen.port())),
        None => Err(SwarmError::InvalidArgument(
            "could not choose an IP address to advertise since this system has no suitable interface: use --advertise-addr".into(),
        )),
    }
}

/// The host part of `ip:port`.
pub(crate) fn host_of(addr: &str) -> String {
    addr.parse::<SocketAddr>()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|_| addr.to_owned())
}

/// This node's facts, as reported to the cluster.
pub(crate) fn describe(engine: &Engine) -> NodeDescription {
    let info = engine.info();
    NodeDescription {
        hostname: rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned(),
        platform: m::Platform {
            architecture: info.architecture.clone(),
            os: "linux".into(),
        },
        resources: m::Resources {
            nano_cpus: info.ncpu as i64 * 1_000_000_000,
            memory_bytes: info.mem_total as i64,
        },
        engine: m::Engine {
            engine_version: env!("CARGO_PKG_VERSION").into(),
            labels: engine.labels().clone(),
        },
    }
}

impl SwarmError {
    pub(crate) fn from_transport(e: TransportError) -> SwarmError {
        SwarmError::Transport(e)
    }
}

#[cfg(test)]
mod send_checks {
    use super::*;

    fn is_send<T: Send>(_: &T) {}

    #[allow(dead_code)]
    fn futures_are_send(s: Swarm) {
        is_send(&s.init(InitOptions::default()));
        is_send(&s.join(JoinOptions::default()));
    }
}
