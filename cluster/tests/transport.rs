//! The node-to-node transport over real UDP on 127.0.0.1 with real certificates.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use rustls::pki_types::CertificateDer;
use shoal_cluster::pki::{self, NodeKey, Role, RootCa, cert_der_from_pem, new_node_id};
use shoal_cluster::transport::{
    DEFAULT_CONNECT_TIMEOUT, Endpoint, EndpointOptions, MANAGER_SERVER_NAME, Peer, RemoteError,
    TlsMaterial, TransportError, handler_fn,
};

const CLUSTER: &str = "clusterid0000000000000001";
const DAY: Duration = Duration::from_secs(24 * 3600);

fn localhost() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A node certificate from `ca`: chain = leaf + CA, roots = the CA.
fn material(ca: &RootCa, node_id: &str, role: Role) -> TlsMaterial {
    material_with(ca, node_id, role, None)
}

fn material_with(
    ca: &RootCa,
    node_id: &str,
    role: Role,
    window: Option<(chrono::DateTime<Utc>, chrono::DateTime<Utc>)>,
) -> TlsMaterial {
    let key = NodeKey::generate().unwrap();
    let csr = key.csr(node_id).unwrap();
    let pem = match window {
        None => ca.sign_csr(&csr, node_id, role, CLUSTER, 90 * DAY).unwrap(),
        Some((from, to)) => ca
            .sign_csr_with_validity(&csr, node_id, role, CLUSTER, from, to)
            .unwrap(),
    };
    TlsMaterial {
        roots: vec![ca.cert_der().clone()],
        chain: vec![
            cert_der_from_pem(&pem, "leaf").unwrap(),
            ca.cert_der().clone(),
        ],
        key: key.private_key_der(),
    }
}

/// A handler that records who called and answers by method:
/// `echo` → the body, `whoami` → "<node id> <role> <cluster id>" or "anonymous",
/// `fail` → a remote error, `slow` → sleeps 2 s.
#[derive(Clone, Default)]
struct Recorder {
    peers: Arc<Mutex<Vec<Peer>>>,
    calls: Arc<AtomicUsize>,
}

impl Recorder {
    fn handler(&self) -> Arc<dyn shoal_cluster::transport::Handler> {
        let me = self.clone();
        handler_fn(move |peer: Peer, method: String, body: Vec<u8>| {
            let me = me.clone();
            async move {
                me.calls.fetch_add(1, Ordering::SeqCst);
                me.peers.lock().unwrap().push(peer.clone());
                match method.as_str() {
                    "echo" => Ok(body),
                    "whoami" => Ok(match peer.identity {
                        Some(id) => format!("{} {} {}", id.node_id, id.role, id.cluster_id),
                        None => "anonymous".to_owned(),
                    }
                    .into_bytes()),
                    "fail" => Err(RemoteError::new("denied", "workers cannot do that")),
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        Ok(b"late".to_vec())
                    }
                    other => Err(RemoteError::new("unknown_method", other.to_owned())),
                }
            }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

struct Node {
    id: String,
    endpoint: Endpoint,
    recorder: Recorder,
}

fn node(ca: &RootCa, role: Role) -> Node {
    let id = new_node_id().unwrap();
    let tls = material(ca, &id, role);
    node_with(id, Some(tls))
}

fn node_with(id: String, tls: Option<TlsMaterial>) -> Node {
    let recorder = Recorder::default();
    let endpoint = Endpoint::bind(localhost(), tls, recorder.handler()).unwrap();
    Node {
        id,
        endpoint,
        recorder,
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[tokio::test]
async fn mutual_tls_round_trip_passes_the_identity_to_the_handler() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    let client = node(&ca, Role::Manager);
    let addr = server.endpoint.local_addr();
    assert_ne!(addr.port(), 0);

    let answer = client
        .endpoint
        .call(addr, &server.id, "echo", b"hello".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"hello");
    let who = text(
        client
            .endpoint
            .call(addr, &server.id, "whoami", vec![])
            .await
            .unwrap(),
    );
    assert_eq!(who, format!("{} manager {CLUSTER}", client.id));
    let peers = server.recorder.peers.lock().unwrap().clone();
    let identity = peers[0].identity.clone().unwrap();
    assert_eq!(identity.node_id, client.id);
    assert_eq!(identity.role, Role::Manager);
    assert_eq!(identity.cluster_id, CLUSTER);
    assert!(identity.not_after > Utc::now() + chrono::Duration::days(89));
    assert_eq!(peers[0].addr, client.endpoint.local_addr());

    // "Any manager" reaches the same server.
    let answer = client
        .endpoint
        .call(addr, MANAGER_SERVER_NAME, "echo", b"any".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"any");

    // The server is verified by name: another node's ID is refused at the handshake.
    let other = new_node_id().unwrap();
    let err = client
        .endpoint
        .call(addr, &other, "echo", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert_eq!(server.recorder.calls(), 3);
}

#[tokio::test]
async fn a_worker_certificate_is_identified_as_worker() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let manager = node(&ca, Role::Manager);
    let worker = node(&ca, Role::Worker);
    let who = text(
        worker
            .endpoint
            .call(
                manager.endpoint.local_addr(),
                MANAGER_SERVER_NAME,
                "whoami",
                vec![],
            )
            .await
            .unwrap(),
    );
    assert_eq!(who, format!("{} worker {CLUSTER}", worker.id));
    // Workers serve too (every node listens), by node ID only: not as "any manager".
    let answer = manager
        .endpoint
        .call(worker.endpoint.local_addr(), &worker.id, "whoami", vec![])
        .await
        .unwrap();
    assert_eq!(text(answer), format!("{} manager {CLUSTER}", manager.id));
    let err = manager
        .endpoint
        .call(
            worker.endpoint.local_addr(),
            MANAGER_SERVER_NAME,
            "whoami",
            vec![],
        )
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert_eq!(worker.recorder.calls(), 1);
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_at_the_handshake() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let rogue_ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    // Same node ID and cluster ID, wrong CA: the client trusts our CA as well, so only the
    // server's client-certificate check can refuse it.
    let rogue_id = new_node_id().unwrap();
    let mut tls = material(&rogue_ca, &rogue_id, Role::Manager);
    tls.roots.push(ca.cert_der().clone());
    let rogue = node_with(rogue_id, Some(tls));
    let err = rogue
        .endpoint
        .call(server.endpoint.local_addr(), &server.id, "whoami", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert_eq!(server.recorder.calls(), 0, "the handler must not run");

    // And a client refuses a server from another CA.
    let honest = node(&ca, Role::Manager);
    let err = honest
        .endpoint
        .call(rogue.endpoint.local_addr(), &rogue.id, "whoami", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert_eq!(rogue.recorder.calls(), 0);
}

#[tokio::test]
async fn an_expired_client_certificate_is_refused_at_the_handshake() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    let id = new_node_id().unwrap();
    let now = Utc::now();
    let expired = material_with(
        &ca,
        &id,
        Role::Manager,
        Some((
            now - chrono::Duration::days(2),
            now - chrono::Duration::days(1),
        )),
    );
    let client = node_with(id, Some(expired));
    let err = client
        .endpoint
        .call(server.endpoint.local_addr(), &server.id, "whoami", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert_eq!(server.recorder.calls(), 0, "the handler must not run");
}

#[tokio::test]
async fn a_certificate_expiring_on_an_open_connection_is_refused_per_request() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    let id = new_node_id().unwrap();
    let now = Utc::now();
    let short = material_with(
        &ca,
        &id,
        Role::Worker,
        Some((
            now - chrono::Duration::minutes(1),
            now + chrono::Duration::seconds(2),
        )),
    );
    let client = node_with(id, Some(short));
    let addr = server.endpoint.local_addr();
    client
        .endpoint
        .call(addr, &server.id, "echo", vec![])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(3100)).await;
    // Same cached connection (keep-alives kept it open), certificate now expired.
    assert_eq!(client.endpoint.stats().cached_connections, 1);
    let err = client
        .endpoint
        .call(addr, &server.id, "echo", vec![])
        .await
        .unwrap_err();
    assert_eq!(err.remote().unwrap().code, "certificate_expired", "{err}");
    assert_eq!(server.recorder.calls(), 1);
    assert_eq!(server.endpoint.stats().accepted_connections, 1);
}

#[tokio::test]
async fn an_anonymous_pinned_call_reaches_the_handler_without_identity() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let manager = node(&ca, Role::Manager);
    // A joiner: no certificate yet.
    let joiner = node_with(new_node_id().unwrap(), None);
    assert!(!joiner.endpoint.has_tls());
    let (answer, chain) = joiner
        .endpoint
        .call_pinned(
            manager.endpoint.local_addr(),
            &ca.digest(),
            "whoami",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(text(answer), "anonymous");
    let peers = manager.recorder.peers.lock().unwrap().clone();
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].identity, None);
    // The joiner learns the CA certificate from the chain.
    assert_eq!(chain.len(), 2);
    assert_eq!(
        pki::find_by_digest(&chain, &ca.digest()),
        Some(ca.cert_der())
    );

    // Without certificates, mTLS calls are impossible and say why.
    let err = joiner
        .endpoint
        .call(manager.endpoint.local_addr(), &manager.id, "whoami", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::NoCertificate { .. }), "{err}");

    // Anonymous callers get a small body limit.
    let err = joiner
        .endpoint
        .call_pinned(
            manager.endpoint.local_addr(),
            &ca.digest(),
            "echo",
            vec![0; 2 * 1024 * 1024],
        )
        .await
        .unwrap_err();
    assert_eq!(err.remote().unwrap().code, "bad_request", "{err}");
    assert_eq!(manager.recorder.calls(), 1);
}

#[tokio::test]
async fn a_pinned_call_to_a_manager_of_another_ca_fails_with_ca_mismatch() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let manager = node(&ca, Role::Manager);
    let joiner = node_with(new_node_id().unwrap(), None);
    let wrong = RootCa::generate(CLUSTER).unwrap().digest();
    let err = joiner
        .endpoint
        .call_pinned(manager.endpoint.local_addr(), &wrong, "whoami", vec![])
        .await
        .unwrap_err();
    match &err {
        TransportError::CaMismatch {
            expected, actual, ..
        } => {
            assert_eq!(expected, &wrong);
            assert_eq!(actual, &ca.digest());
        }
        other => panic!("expected CaMismatch, got {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("the remote manager's CA does not match the join token"),
        "{message}"
    );
    assert_eq!(manager.recorder.calls(), 0);

    // A worker (no "swarm-manager" name) is not accepted as the manager to join.
    let worker = node(&ca, Role::Worker);
    let err = joiner
        .endpoint
        .call_pinned(worker.endpoint.local_addr(), &ca.digest(), "whoami", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    assert_eq!(worker.recorder.calls(), 0);
}

#[tokio::test]
async fn a_joiner_installs_its_certificates_without_rebinding() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let manager = node(&ca, Role::Manager);
    let id = new_node_id().unwrap();
    let joiner = node_with(id.clone(), None);
    let port = joiner.endpoint.local_addr();

    // Before certificates the joiner accepts no connections.
    let probe = Endpoint::bind_with_options(
        localhost(),
        Some(material(&ca, &new_node_id().unwrap(), Role::Manager)),
        Recorder::default().handler(),
        EndpointOptions {
            connect_timeout: Duration::from_millis(500),
            ..EndpointOptions::default()
        },
    )
    .unwrap();
    let err = probe.call(port, &id, "whoami", vec![]).await.unwrap_err();
    assert!(err.is_unreachable(), "{err}");

    joiner
        .endpoint
        .set_tls(material(&ca, &id, Role::Worker))
        .unwrap();
    assert!(joiner.endpoint.has_tls());
    assert_eq!(joiner.endpoint.local_addr(), port);
    let who = text(
        joiner
            .endpoint
            .call(
                manager.endpoint.local_addr(),
                MANAGER_SERVER_NAME,
                "whoami",
                vec![],
            )
            .await
            .unwrap(),
    );
    assert_eq!(who, format!("{id} worker {CLUSTER}"));
    let who = text(probe.call(port, &id, "whoami", vec![]).await.unwrap());
    assert!(who.ends_with(&format!("manager {CLUSTER}")), "{who}");
}

#[tokio::test]
async fn concurrent_calls_share_one_connection() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    let client = node(&ca, Role::Manager);
    let addr = server.endpoint.local_addr();
    let mut tasks = Vec::new();
    for i in 0..64u32 {
        let endpoint = client.endpoint.clone();
        let server_id = server.id.clone();
        tasks.push(tokio::spawn(async move {
            let body = i.to_be_bytes().repeat(100);
            let answer = endpoint.call(addr, &server_id, "echo", body.clone()).await;
            (body, answer)
        }));
    }
    for task in tasks {
        let (body, answer) = task.await.unwrap();
        assert_eq!(answer.unwrap(), body);
    }
    assert_eq!(server.recorder.calls(), 64);
    assert_eq!(server.endpoint.stats().accepted_connections, 1);
    assert_eq!(client.endpoint.stats().cached_connections, 1);
}

#[tokio::test]
async fn a_large_body_round_trips() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    let client = node(&ca, Role::Manager);
    let body: Vec<u8> = (0..20 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let started = Instant::now();
    let answer = client
        .endpoint
        .call_with_timeout(
            server.endpoint.local_addr(),
            &server.id,
            "echo",
            body.clone(),
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    eprintln!("20 MiB echo took {:?}", started.elapsed());
    assert_eq!(answer.len(), body.len());
    assert!(answer == body);
}

#[tokio::test]
async fn a_remote_error_reaches_the_caller() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    let client = node(&ca, Role::Worker);
    let err = client
        .endpoint
        .call(server.endpoint.local_addr(), &server.id, "fail", vec![])
        .await
        .unwrap_err();
    assert_eq!(
        err.remote(),
        Some(RemoteError::new("denied", "workers cannot do that"))
    );
    let message = err.to_string();
    assert!(message.contains("fail"), "{message}");
    assert!(message.contains("workers cannot do that"), "{message}");
    // The connection is still good afterwards.
    let answer = client
        .endpoint
        .call(
            server.endpoint.local_addr(),
            &server.id,
            "echo",
            b"ok".to_vec(),
        )
        .await
        .unwrap();
    assert_eq!(answer, b"ok");
    assert_eq!(server.endpoint.stats().accepted_connections, 1);
}

#[tokio::test]
async fn calling_a_dead_address_fails_within_the_connect_timeout() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let client = node(&ca, Role::Manager);
    let dead = {
        let socket = std::net::UdpSocket::bind(localhost()).unwrap();
        socket.local_addr().unwrap()
    };
    let started = Instant::now();
    let err = client
        .endpoint
        .call(dead, MANAGER_SERVER_NAME, "whoami", vec![])
        .await
        .unwrap_err();
    let elapsed = started.elapsed();
    match &err {
        TransportError::Timeout {
            phase, after, addr, ..
        } => {
            assert_eq!(*phase, "connect");
            assert_eq!(*after, DEFAULT_CONNECT_TIMEOUT);
            assert_eq!(*addr, dead);
        }
        other => panic!("expected a connect timeout, got {other}"),
    }
    assert!(err.is_unreachable());
    // The deadline is 3 s; the slack is for a loaded test machine.
    assert!(elapsed >= DEFAULT_CONNECT_TIMEOUT, "took {elapsed:?}");
    assert!(
        elapsed < DEFAULT_CONNECT_TIMEOUT + Duration::from_secs(7),
        "took {elapsed:?}"
    );
    assert!(err.to_string().contains(&dead.to_string()), "{err}");
}

#[tokio::test]
async fn a_slow_call_times_out_and_the_next_call_redials() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    let client = node(&ca, Role::Manager);
    let addr = server.endpoint.local_addr();
    let started = Instant::now();
    let err = client
        .endpoint
        .call_with_timeout(addr, &server.id, "slow", vec![], Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(
        matches!(err, TransportError::Timeout { phase: "call", .. }),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(1));
    let answer = client
        .endpoint
        .call(addr, &server.id, "echo", b"again".to_vec())
        .await
        .unwrap();
    assert_eq!(answer, b"again");
}

#[tokio::test]
async fn a_restarted_peer_is_redialled() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let id = new_node_id().unwrap();
    let tls = material(&ca, &id, Role::Manager);
    let server = node_with(id.clone(), Some(tls.clone()));
    let addr = server.endpoint.local_addr();
    let client = node(&ca, Role::Manager);
    client
        .endpoint
        .call(addr, &id, "echo", vec![1])
        .await
        .unwrap();

    server.endpoint.shutdown().await;
    drop(server);
    // The socket is released when the endpoint's driver task ends, just after.
    let recorder = Recorder::default();
    let deadline = Instant::now() + Duration::from_secs(5);
    let _restarted = loop {
        match Endpoint::bind(addr, Some(tls.clone()), recorder.handler()) {
            Ok(endpoint) => break endpoint,
            Err(e) if Instant::now() < deadline => {
                eprintln!("rebinding {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("cannot rebind {addr}: {e}"),
        }
    };
    let started = Instant::now();
    let answer = client
        .endpoint
        .call(addr, &id, "echo", vec![2])
        .await
        .unwrap();
    assert_eq!(answer, vec![2]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(recorder.calls(), 1);
}

/// Helper process for `a_killed_peer_is_redialled_after_its_stateless_reset`: serves
/// `pid` with the TLS material in $SHOAL_TRANSPORT_CHILD_DIR on $SHOAL_TRANSPORT_CHILD_ADDR
/// until killed.
#[test]
#[ignore = "helper process started by a_killed_peer_is_redialled_after_its_stateless_reset"]
fn child_server() {
    let (Ok(dir), Ok(addr)) = (
        std::env::var("SHOAL_TRANSPORT_CHILD_DIR"),
        std::env::var("SHOAL_TRANSPORT_CHILD_ADDR"),
    ) else {
        panic!("run only by a_killed_peer_is_redialled_after_its_stateless_reset");
    };
    let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).unwrap();
    let tls =
        TlsMaterial::from_pem(&read("roots.pem"), &read("chain.pem"), &read("key.pem")).unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async move {
        let handler = handler_fn(|_peer, method: String, _body| async move {
            match method.as_str() {
                "pid" => Ok(std::process::id().to_string().into_bytes()),
                _ => Err(RemoteError::new("unknown_method", method)),
            }
        });
        let addr: SocketAddr = addr.parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let endpoint = loop {
            match Endpoint::bind(addr, Some(tls.clone()), handler.clone()) {
                Ok(endpoint) => break endpoint,
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("{e}"),
            }
        };
        println!("LISTENING {}", endpoint.local_addr());
        std::future::pending::<()>().await;
    });
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_child(dir: &std::path::Path, addr: SocketAddr) -> (Child, SocketAddr) {
    use std::io::BufRead;
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--ignored", "--exact", "child_server", "--nocapture"])
        .env("SHOAL_TRANSPORT_CHILD_DIR", dir)
        .env("SHOAL_TRANSPORT_CHILD_ADDR", addr.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let child = Child(child);
    loop {
        let line = lines
            .next()
            .expect("the child exited before listening")
            .unwrap();
        if let Some(addr) = line.strip_prefix("LISTENING ") {
            return (child, addr.parse().unwrap());
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_peer_is_redialled_after_its_stateless_reset() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let id = new_node_id().unwrap();
    let key = NodeKey::generate().unwrap();
    let leaf = ca
        .sign_csr(&key.csr(&id).unwrap(), &id, Role::Manager, CLUSTER, DAY)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("roots.pem"), ca.cert_pem()).unwrap();
    std::fs::write(
        dir.path().join("chain.pem"),
        format!("{leaf}{}", ca.cert_pem()),
    )
    .unwrap();
    std::fs::write(dir.path().join("key.pem"), key.to_pem()).unwrap();

    let (first, addr) = spawn_child(dir.path(), localhost());
    let client = node(&ca, Role::Manager);
    let pid = text(
        client
            .endpoint
            .call(addr, &id, "pid", vec![])
            .await
            .unwrap(),
    );
    assert_eq!(pid, first.0.id().to_string());

    // kill -9: the peer cannot say goodbye; our cached connection does not know.
    drop(first);
    let (second, again) = spawn_child(dir.path(), addr);
    assert_eq!(again, addr);
    // The restarted peer (same key, so same stateless-reset key) resets the old connection
    // at once; the call is retried on a new one instead of waiting for the idle timeout.
    let started = Instant::now();
    let pid = text(
        client
            .endpoint
            .call(addr, &id, "pid", vec![])
            .await
            .unwrap(),
    );
    let elapsed = started.elapsed();
    assert_eq!(pid, second.0.id().to_string());
    assert!(
        elapsed < Duration::from_secs(3),
        "took {elapsed:?}: the dead connection was not detected by its reset"
    );
}

#[tokio::test]
async fn ca_rotation_with_a_cross_signed_chain_keeps_everyone_talking() {
    let old = RootCa::generate(CLUSTER).unwrap();
    let new = RootCa::generate(CLUSTER).unwrap();
    let cross = cert_der_from_pem(&old.cross_sign(&new).unwrap(), "cross").unwrap();

    // A is rotated first: a leaf from the new CA, presented with the cross-signed CA (for
    // peers that trust only the old root) and both roots (for pinned joins with either
    // token); A trusts both roots.
    let a = node(&old, Role::Manager);
    // B has not been updated: old leaf, trusts only the old root.
    let b = node(&old, Role::Manager);
    // C is already on the new CA with both roots trusted.
    let c_id = new_node_id().unwrap();
    let mut c_tls = material(&new, &c_id, Role::Worker);
    c_tls.roots.push(old.cert_der().clone());
    let c = node_with(c_id, Some(c_tls));

    // B calls A before the rotation: cached connection with A's old certificate.
    b.endpoint
        .call(a.endpoint.local_addr(), &a.id, "echo", vec![0])
        .await
        .unwrap();

    let mut a_tls = material(&new, &a.id, Role::Manager);
    a_tls.chain = vec![
        a_tls.chain[0].clone(),
        cross.clone(),
        old.cert_der().clone(),
        new.cert_der().clone(),
    ];
    a_tls.roots = vec![old.cert_der().clone(), new.cert_der().clone()];
    let cached_before = a.endpoint.stats().cached_connections;
    a.endpoint.set_tls(a_tls).unwrap();
    assert_eq!(a.endpoint.stats().cached_connections, 0);
    assert_eq!(cached_before, 0);

    let a_addr = a.endpoint.local_addr();
    // B (old root only) dials A anew and verifies leaf → cross-signed → old root.
    let fresh_b = node_with(b.id.clone(), Some(material(&old, &b.id, Role::Manager)));
    let who = text(
        fresh_b
            .endpoint
            .call(a_addr, &a.id, "whoami", vec![])
            .await
            .unwrap(),
    );
    assert_eq!(who, format!("{} manager {CLUSTER}", b.id));
    // A calls B: B's server verifies A's new client chain through the cross-signed CA,
    // and A (trusting both roots) verifies B's old leaf.
    let who = text(
        a.endpoint
            .call(fresh_b.endpoint.local_addr(), &b.id, "whoami", vec![])
            .await
            .unwrap(),
    );
    assert_eq!(who, format!("{} manager {CLUSTER}", a.id));
    // The cached pre-rotation connection of B keeps working.
    b.endpoint
        .call(a_addr, &a.id, "echo", vec![1])
        .await
        .unwrap();

    // C (new leaf, both roots) and A talk both ways.
    let who = text(
        c.endpoint
            .call(a_addr, MANAGER_SERVER_NAME, "whoami", vec![])
            .await
            .unwrap(),
    );
    assert_eq!(who, format!("{} worker {CLUSTER}", c.id));
    let who = text(
        a.endpoint
            .call(c.endpoint.local_addr(), &c.id, "whoami", vec![])
            .await
            .unwrap(),
    );
    assert_eq!(who, format!("{} manager {CLUSTER}", a.id));

    // A node that trusts only the new root cannot verify B's old leaf: why the rotation
    // re-issues every certificate before dropping the old root.
    let d_id = new_node_id().unwrap();
    let d = node_with(d_id.clone(), Some(material(&new, &d_id, Role::Manager)));
    let err = d
        .endpoint
        .call(fresh_b.endpoint.local_addr(), &b.id, "whoami", vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Tls { .. }), "{err}");
    d.endpoint
        .call(a_addr, &a.id, "whoami", vec![])
        .await
        .unwrap();

    // Joiners pinning either root's digest accept A during the rotation.
    let joiner = node_with(new_node_id().unwrap(), None);
    for digest in [old.digest(), new.digest()] {
        let (answer, chain) = joiner
            .endpoint
            .call_pinned(a_addr, &digest, "whoami", vec![])
            .await
            .unwrap();
        assert_eq!(text(answer), "anonymous");
        assert!(pki::find_by_digest(&chain, &digest).is_some());
    }
}

#[tokio::test]
async fn oversized_headers_are_refused_locally() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let server = node(&ca, Role::Manager);
    let client = node(&ca, Role::Manager);
    let method = "m".repeat(70 * 1024);
    let err = client
        .endpoint
        .call(server.endpoint.local_addr(), &server.id, &method, vec![])
        .await
        .unwrap_err();
    assert!(matches!(err, TransportError::Protocol { .. }), "{err}");
    assert_eq!(server.recorder.calls(), 0);
}

#[test]
fn tls_material_loads_from_pem() {
    let ca = RootCa::generate(CLUSTER).unwrap();
    let key = NodeKey::generate().unwrap();
    let id = new_node_id().unwrap();
    let leaf = ca
        .sign_csr(&key.csr(&id).unwrap(), &id, Role::Worker, CLUSTER, DAY)
        .unwrap();
    let chain = format!("{leaf}{}", ca.cert_pem());
    let tls = TlsMaterial::from_pem(ca.cert_pem(), &chain, &key.to_pem()).unwrap();
    assert_eq!(tls.roots, vec![ca.cert_der().clone()]);
    assert_eq!(tls.chain.len(), 2);
    assert_eq!(tls.identity().unwrap().node_id, id);
    let _: &[CertificateDer<'static>] = &tls.chain;
    assert!(TlsMaterial::from_pem(ca.cert_pem(), &chain, "nope").is_err());
}
