//! The agent: this node's session with the leader's dispatcher.
//!
//! It heartbeats to a manager (the leader when known, else any), follows redirects to the
//! leader, moves to another manager when one is unreachable (leader changes, edge links
//! dropping), and acts on what the dispatcher says: renew the certificate (before expiry,
//! after a role change, during a CA rotation), become a manager (promotion: new certificate,
//! then its own store, then a Raft voter) or stop being one (demotion). A node cut off from
//! every manager keeps running what it runs and keeps trying.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use shoal_store::crypto::KeyStore;
use shoal_store::model::Role;

use crate::SwarmError;
use crate::pki::{self, NodeKey};
use crate::rpc::{
    HeartbeatRequest, HeartbeatResponse, LeaderOp, RenewRequest, RenewResponse, code, method,
};
use crate::swarm::{Member, TlsPem, describe};
use crate::transport::TransportError;

/// Starts the agent of a member; it ends when the member stops.
pub(crate) fn spawn(member: Arc<Member>) {
    tokio::spawn(run(member));
}

async fn run(member: Arc<Member>) {
    let mut stop = member.stop.subscribe();
    let mut next = 0usize;
    let mut preferred: Option<String> = None;
    let mut wait = Duration::from_millis(10);
    // The dispatcher's period, as last heard (the default until then).
    let mut period = Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
        let managers = member
            .state
            .read()
            .map(|s| s.managers.clone())
            .unwrap_or_default();
        let target = preferred
            .take()
            .or_else(|| (!managers.is_empty()).then(|| managers[next % managers.len()].clone()));
        let Some(target) = target else {
            wait = Duration::from_secs(1);
            continue;
        };
        // A dead manager answers nothing: give up on it well within the three periods
        // after which the (new) leader would mark this node Down.
        let timeout = period.clamp(Duration::from_millis(500), Duration::from_secs(2));
        match beat(&member, &target, timeout).await {
            Ok(resp) => {
                period = Duration::from_millis(resp.period_ms.max(100));
                wait = period;
                if let Err(e) = act(&member, &resp).await {
                    tracing::warn!(error = %e, "cannot apply the dispatcher's instructions");
                    wait = wait.min(Duration::from_secs(1));
                }
                // Keep talking to the same manager (the leader).
                preferred = Some(target);
            }
            Err(SwarmError::Transport(TransportError::Remote {
                code: c, message, ..
            })) if c == code::NOT_LEADER => {
                preferred = (!message.is_empty()).then_some(message);
                wait = Duration::from_millis(if preferred.is_some() { 10 } else { 300 });
            }
            Err(SwarmError::Transport(TransportError::Remote { code: c, .. }))
                if c == code::REMOVED =>
            {
                member.removed().await;
                return;
            }
            Err(e) => {
                tracing::debug!(manager = %target, error = %e, "heartbeat failed; trying another manager");
                next = next.wrapping_add(1);
                wait = Duration::from_millis(100);
            }
        }
    }
}

async fn beat(
    member: &Arc<Member>,
    target: &str,
    timeout: Duration,
) -> Result<HeartbeatResponse, SwarmError> {
    let state = member.state.read().map(|s| s.clone()).unwrap_or_default();
    let tls = member.tls();
    let req = HeartbeatRequest {
        node_id: state.node_id.clone(),
        description: describe(&member.engine),
        role: state.role,
        addr: state.advertise_addr.clone(),
        roots_digest: pki::bundle_digest(&tls.roots),
    };
    let addr: SocketAddr = target
        .parse()
        .map_err(|_| SwarmError::InvalidArgument(format!("invalid manager address {target}")))?;
    let body = serde_json::to_vec(&req).map_err(|e| SwarmError::Internal(e.to_string()))?;
    // The deadline bounds dialling too (a new connection to a dead manager).
    let out = member
        .endpoint
        .call_with_timeout(
            addr,
            pki::MANAGER_SERVER_NAME,
            method::HEARTBEAT,
            body,
            timeout,
        )
        .await
        .map_err(SwarmError::Transport)?;
    serde_json::from_slice(&out).map_err(|e| SwarmError::Internal(e.to_string()))
}

/// Applies a heartbeat answer.
async fn act(member: &Arc<Member>, resp: &HeartbeatResponse) -> Result<(), SwarmError> {
    if !resp.managers.is_empty() {
        let managers = resp.managers.clone();
        member.update_state(|s| s.managers = managers)?;
    }
    if let Some(roots) = &resp.roots {
        // New trust (CA rotation): trust it before anything presents it.
        let mut tls = member.tls();
        if &tls.roots != roots {
            tls.roots = roots.clone();
            member.install_tls(tls)?;
        }
    }
    let role = member.state.read().map(|s| s.role).unwrap_or_default();
    if resp.desired_role != role {
        return change_role(member, resp).await;
    }
    if resp.renew || renewal_due(&member.tls().chain) {
        renew(member).await?;
    }
    Ok(())
}

/// Whether the certificate has passed its renewal point: a point between 50 % and 80 % of
/// its lifetime, as Swarm renews, fixed per certificate (drawn from its digest) so nodes do
/// not all renew at once and one node's answer does not change from beat to beat. An
/// unreadable certificate is due.
fn renewal_due(chain_pem: &str) -> bool {
    let Ok((not_before, not_after)) = pki::validity_of_pem(chain_pem) else {
        return true;
    };
    Utc::now() >= renewal_point(not_before, not_after, renewal_fraction(chain_pem))
}

/// Where in its lifetime a certificate is renewed, 0.5..=0.8, from its digest.
fn renewal_fraction(chain_pem: &str) -> f64 {
    let d = ring::digest::digest(&ring::digest::SHA256, chain_pem.as_bytes());
    0.5 + 0.3 * (f64::from(d.as_ref()[0]) / 255.0)
}

/// The instant `fraction` of the way through a validity window.
fn renewal_point(
    not_before: chrono::DateTime<Utc>,
    not_after: chrono::DateTime<Utc>,
    fraction: f64,
) -> chrono::DateTime<Utc> {
    let life = (not_after - not_before).num_seconds().max(1);
    not_before + chrono::Duration::seconds((life as f64 * fraction) as i64)
}

/// Gets a new certificate for this node (its current cluster role) and installs it.
pub(crate) async fn renew(member: &Arc<Member>) -> Result<RenewResponse, SwarmError> {
    let node_id = member.node_id();
    let key = NodeKey::generate()?;
    let req = RenewRequest {
        csr: key.csr(&node_id)?,
    };
    let body = serde_json::to_vec(&req).map_err(|e| SwarmError::Internal(e.to_string()))?;
    let managers = member
        .state
        .read()
        .map(|s| s.managers.clone())
        .unwrap_or_default();
    let mut last = SwarmError::NoQuorum;
    for target in managers {
        let Ok(addr) = target.parse::<SocketAddr>() else {
            continue;
        };
        match member
            .endpoint
            .call(addr, pki::MANAGER_SERVER_NAME, method::RENEW, body.clone())
            .await
        {
            Ok(out) => {
                let resp: RenewResponse = serde_json::from_slice(&out)
                    .map_err(|e| SwarmError::Internal(e.to_string()))?;
                member.install_tls(TlsPem {
                    chain: resp.certificate_chain.clone(),
                    roots: resp.roots.clone(),
                    key: key.to_pem(),
                })?;
                tracing::info!(node = %node_id, role = ?resp.role, "certificate renewed");
                return Ok(resp);
            }
            Err(e) => last = SwarmError::Transport(e),
        }
    }
    Err(last)
}

/// Promotion or demotion of this node.
async fn change_role(member: &Arc<Member>, resp: &HeartbeatResponse) -> Result<(), SwarmError> {
    match resp.desired_role {
        Role::Manager => {
            if resp.raft_id == 0 {
                return Ok(());
            }
            // 1. A manager certificate (the renew handler signs the cluster's role).
            let renewed = renew(member).await?;
            if renewed.role != Role::Manager {
                return Ok(());
            }
            // 2. Our own key store and (empty) store.
            let dir = member.paths.keys_dir();
            let (dek, kek) = KeyStore::create(&dir)?;
            *member
                .dek
                .write()
                .map_err(|_| SwarmError::Internal("poisoned".into()))? = Some(dek.clone());
            *member
                .kek
                .write()
                .map_err(|_| SwarmError::Internal("poisoned".into()))? = Some(kek);
            member.install_tls(member.tls())?; // re-save the key sealed with the new data key
            let raft_id = resp.raft_id;
            member.update_state(|s| {
                s.role = Role::Manager;
                s.raft_id = raft_id;
            })?;
            member.start_manager(dek).await?;
            // 3. Become a Raft voter.
            let addr = member
                .state
                .read()
                .map(|s| s.advertise_addr.clone())
                .unwrap_or_default();
            let manager = member
                .manager
                .read()
                .ok()
                .and_then(|m| m.clone())
                .ok_or(SwarmError::NotManager)?;
            manager
                .leader_op(LeaderOp::AddManager { raft_id, addr })
                .await?;
            tracing::info!(node = %member.node_id(), "promoted to manager");
            Ok(())
        }
        Role::Worker => {
            // The leader has already removed us from the Raft membership.
            member.stop_manager().await;
            let _ = std::fs::remove_dir_all(member.paths.raft());
            *member
                .dek
                .write()
                .map_err(|_| SwarmError::Internal("poisoned".into()))? = None;
            *member
                .kek
                .write()
                .map_err(|_| SwarmError::Internal("poisoned".into()))? = None;
            let _ = std::fs::remove_file(member.paths.keys_dir().join("keys.json"));
            member.update_state(|s| {
                s.role = Role::Worker;
                s.raft_id = 0;
            })?;
            renew(member).await?;
            tracing::info!(node = %member.node_id(), "demoted to worker");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Role as CertRole, RootCa};

    #[test]
    fn renewal_point_is_the_fraction_of_the_lifetime() {
        let nb = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let na = nb + chrono::Duration::days(90);
        assert_eq!(renewal_point(nb, na, 0.5), nb + chrono::Duration::days(45));
        assert_eq!(renewal_point(nb, na, 0.8), nb + chrono::Duration::days(72));
    }

    #[test]
    fn renewal_fraction_is_stable_and_in_range() {
        let a = renewal_fraction("certificate a");
        assert_eq!(a, renewal_fraction("certificate a"));
        let spread: Vec<f64> = (0..50)
            .map(|i| renewal_fraction(&format!("cert {i}")))
            .collect();
        assert!(spread.iter().all(|f| (0.5..=0.8).contains(f)), "{spread:?}");
        assert!(
            spread.iter().any(|f| *f != spread[0]),
            "every certificate renews at the same point"
        );
    }

    #[test]
    fn fresh_certificates_are_not_due_and_old_ones_are() {
        let cluster = pki::new_node_id().unwrap();
        let node = pki::new_node_id().unwrap();
        let ca = RootCa::generate(&cluster).unwrap();
        let key = pki::NodeKey::generate().unwrap();
        let csr = key.csr(&node).unwrap();
        let fresh = ca
            .sign_csr(
                &csr,
                &node,
                CertRole::Worker,
                &cluster,
                Duration::from_secs(90 * 86400),
            )
            .unwrap();
        assert!(!renewal_due(&fresh));
        // Issued 81 days ago for 90 days: past any renewal point (at most 80 %).
        let now = Utc::now();
        let old = ca
            .sign_csr_with_validity(
                &csr,
                &node,
                CertRole::Worker,
                &cluster,
                now - chrono::Duration::days(81),
                now + chrono::Duration::days(9),
            )
            .unwrap();
        assert!(renewal_due(&old));
        assert!(renewal_due("not a certificate"));
    }
}
