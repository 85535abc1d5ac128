//! Leader failure and partitions: how fast writes come back, and that a minority refuses
//! them quickly. Timings are printed (the target: < 2 s from leader loss to an
//! accepted write).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use shoal_store::model::Service;
use shoal_store::{RaftRole, Store, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_accepts_writes_within_two_seconds_of_losing_the_old() {
    let dir = tempdir();
    let net = Net::default();
    let mut s: BTreeMap<u64, Store> = cluster(&net, dir.path(), 3, |_| {}).await;
    let mut elections = Vec::new();
    let mut writes = Vec::new();
    for round in 0..3 {
        let all: Vec<&Store> = s.values().collect();
        let old = leader(&all, Duration::from_secs(5)).await;
        s[&old]
            .propose(create(&format!("before-{round}"), "x"))
            .await
            .unwrap();
        // Make sure everyone has it, so any new leader can be elected.
        for st in s.values() {
            eventually(Duration::from_secs(3), "replicated", || {
                st.get::<Service>(&format!("before-{round}"))
                    .unwrap()
                    .is_some()
            })
            .await;
        }

        let killed = Instant::now();
        stop(&net, &s[&old]).await;
        let rest: Vec<&Store> = s
            .iter()
            .filter(|(id, _)| **id != old)
            .map(|(_, st)| st)
            .collect();
        let new = leader(&rest, Duration::from_secs(5)).await;
        let elected = killed.elapsed();
        let (out, at) = propose_until_accepted(
            &rest,
            create(&format!("after-{round}"), "y"),
            Duration::from_secs(5),
        )
        .await;
        assert!(out.is_applied());
        let write = at - killed;
        eprintln!(
            "round {round}: leader {old} lost; {new} elected after {elected:?}, first write accepted after {write:?}"
        );
        assert_ne!(new, old);
        assert!(write < Duration::from_secs(2), "failover took {write:?}");
        elections.push(elected);
        writes.push(write);

        // The old leader comes back from disk as a follower and catches up.
        let back = start(&net, config(dir.path(), old)).await;
        eventually(Duration::from_secs(5), "old leader catches up", || {
            back.get::<Service>(&format!("after-{round}"))
                .unwrap()
                .is_some()
        })
        .await;
        assert_ne!(back.status().state, RaftRole::Leader);
        s.insert(old, back);
    }
    elections.sort();
    writes.sort();
    eprintln!(
        "failover over 3 rounds: election min {:?} max {:?}; first accepted write min {:?} max {:?}",
        elections[0], elections[2], writes[0], writes[2]
    );
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_refuses_writes_quickly_and_catches_up_after_healing() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    s[&1].propose(create("base", "x")).await.unwrap();
    for st in s.values() {
        eventually(Duration::from_secs(3), "replicated", || {
            st.get::<Service>("base").unwrap().is_some()
        })
        .await;
    }

    net.isolate(1);
    let t = Instant::now();
    match s[&1].propose(create("lost", "never")).await {
        Err(StoreError::NoQuorum) => {
            eprintln!("isolated leader refused after {:?}", t.elapsed());
        }
        other => panic!("expected NoQuorum, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "refusal took {:?}",
        t.elapsed()
    );
    assert!(s[&1].get::<Service>("lost").unwrap().is_none());

    // The majority elects a leader and goes on.
    let new = leader(&[&s[&2], &s[&3]], Duration::from_secs(5)).await;
    assert_ne!(new, 1);
    assert!(
        s[&new]
            .propose(create("majority", "y"))
            .await
            .unwrap()
            .is_applied()
    );

    // Healed: the old leader steps down, drops its uncommitted entry, catches up.
    net.heal(1);
    eventually(Duration::from_secs(5), "catch up", || {
        s[&1].get::<Service>("majority").unwrap().is_some()
    })
    .await;
    let l = leader(&[&s[&1], &s[&2], &s[&3]], Duration::from_secs(5)).await;
    let (out, _) =
        propose_until_accepted(&[&s[&l]], create("later", "z"), Duration::from_secs(5)).await;
    assert!(out.is_applied());
    for st in s.values() {
        eventually(Duration::from_secs(3), "converged", || {
            st.get::<Service>("later").unwrap().is_some()
        })
        .await;
        assert!(
            st.get::<Service>("lost").unwrap().is_none(),
            "an uncommitted write survived"
        );
    }
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_isolated_follower_refuses_writes_and_catches_up() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    net.isolate(3);
    // Once it has lost the leader (election timeout), it has nobody to forward to.
    eventually(Duration::from_secs(5), "follower lost the leader", || {
        s[&3].status().leader.is_none()
    })
    .await;
    let t = Instant::now();
    match s[&3].propose(create("no", "no")).await {
        Err(StoreError::NoQuorum) => {}
        other => panic!("expected NoQuorum, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "refusal took {:?}",
        t.elapsed()
    );

    // The majority keeps writing.
    let l = leader(&[&s[&1], &s[&2]], Duration::from_secs(5)).await;
    let (out, _) =
        propose_until_accepted(&[&s[&l]], create("yes", "yes"), Duration::from_secs(5)).await;
    assert!(out.is_applied());
    assert!(s[&3].get::<Service>("yes").unwrap().is_none());

    net.heal(3);
    eventually(Duration::from_secs(5), "catch up", || {
        s[&3].get::<Service>("yes").unwrap().is_some()
    })
    .await;
    let all = [&s[&1], &s[&2], &s[&3]];
    let l = leader(&all, Duration::from_secs(5)).await;
    let (out, _) =
        propose_until_accepted(&[&s[&l]], create("after", "x"), Duration::from_secs(5)).await;
    assert!(out.is_applied());
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_leader_writes_fail_fast_not_hang() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    // Two of three managers gone for good.
    stop(&net, &s[&1]).await;
    stop(&net, &s[&2]).await;
    eventually(Duration::from_secs(5), "leader lost", || {
        s[&3].status().leader.is_none()
    })
    .await;
    for _ in 0..2 {
        let t = Instant::now();
        let err = s[&3].propose(create("x", "x")).await.unwrap_err();
        assert!(matches!(err, StoreError::NoQuorum), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(4));
        let msg = err.to_string();
        assert!(
            msg.contains("quorum") && msg.contains("--force-new-cluster"),
            "{msg}"
        );
    }
    s[&3].shutdown().await;
}
