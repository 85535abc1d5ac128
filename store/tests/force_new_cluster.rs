//! `swarm init --force-new-cluster`: a surviving manager becomes a one-manager cluster
//! with all its state.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_store::model::Service;
use shoal_store::{DbError, RaftRole, Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_surviving_manager_recovers_the_cluster_alone() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    for i in 0..10 {
        s[&1]
            .propose(create(&format!("svc{i}"), "x"))
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(3), "replicated", || {
        s[&3].list::<Service>().unwrap().len() == 10
    })
    .await;
    let before: Vec<Service> = s[&3].list().unwrap();
    let term_before = s[&3].status().term;

    // Managers 1 and 2 are lost for good; 3 alone has no quorum.
    stop(&net, &s[&1]).await;
    stop(&net, &s[&2]).await;
    eventually(Duration::from_secs(5), "leader lost", || {
        s[&3].status().leader.is_none()
    })
    .await;
    assert!(matches!(
        s[&3].propose(create("no", "no")).await,
        Err(StoreError::NoQuorum)
    ));
    stop(&net, &s[&3]).await;

    // Offline recovery, possibly with a new address.
    let m3 = dir.path().join("m3");
    Store::force_new_cluster(&m3, &dek(3), 3, "10.9.9.9:4242").unwrap();
    let t = Instant::now();
    let mut cfg = config(dir.path(), 3);
    cfg.addr = "10.9.9.9:4242".into();
    let again = start(&net, cfg).await;
    eventually(Duration::from_secs(3), "leads", || {
        again.status().state == RaftRole::Leader
    })
    .await;
    eprintln!("forced manager leads {:?} after open", t.elapsed());
    let st = again.status();
    assert_eq!(st.voters.keys().copied().collect::<Vec<_>>(), vec![3]);
    assert_eq!(st.voters[&3], "10.9.9.9:4242");
    assert!(st.term > term_before);
    assert_eq!(again.list::<Service>().unwrap(), before, "objects intact");
    assert!(
        again
            .propose(create("recovered", "y"))
            .await
            .unwrap()
            .is_applied()
    );
    let svc: Service = again.get("svc0").unwrap().unwrap();
    let mut upd = svc.clone();
    upd.spec.name = "updated".into();
    assert!(again.propose(update(upd)).await.unwrap().is_applied());

    // It can grow again: a fresh manager joins.
    let m4 = start(&net, config(dir.path(), 4)).await;
    again.add_manager(4, addr(4)).await.unwrap();
    eventually(Duration::from_secs(5), "new manager has everything", || {
        m4.list::<Service>().unwrap().len() == 11
    })
    .await;

    // And the forced state survives another restart.
    stop(&net, &again).await;
    stop(&net, &m4).await;
    let third = start(&net, config(dir.path(), 3)).await;
    assert_eq!(third.list::<Service>().unwrap().len(), 11);
    third.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn force_new_cluster_needs_raft_state() {
    let dir = tempdir();
    let err =
        Store::force_new_cluster(&dir.path().join("empty"), &dek(1), 1, &addr(1)).unwrap_err();
    assert!(
        matches!(err, StoreError::Db(DbError::NotInitialized { .. })),
        "{err:?}"
    );
}
