//! Multi-manager replication over the in-process transport, on real redb files.

mod common;

use std::time::{Duration, Instant};

use common::*;
use shoal_store::model::{Node, Service};
use shoal_store::{Action, ApplyOutcome, EventAction, Object, Proposal, RaftRole, StoreError};
use tokio::sync::broadcast::error::RecvError;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_managers_elect_replicate_and_redirect() {
    let dir = tempdir();
    let net = Net::default();
    let started = Instant::now();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    eprintln!("3-manager cluster formed in {:?}", started.elapsed());
    let all = [&s[&1], &s[&2], &s[&3]];
    let l = leader(&all, Duration::from_secs(5)).await;
    assert_eq!(l, 1, "the bootstrapped manager leads");
    let st = s[&1].status();
    assert_eq!(st.state, RaftRole::Leader);
    assert_eq!(st.voters.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(st.voters[&2], addr(2));
    assert!(st.learners.is_empty());
    eventually(Duration::from_secs(3), "leader sees all reachable", || {
        let r = s[&1].status().reachable;
        r.len() == 3 && r.values().all(|v| *v)
    })
    .await;
    // Followers report no reachability view.
    assert!(s[&2].status().reachable.is_empty());

    // Write on the leader.
    let out = s[&1].propose(create("svc1", "web")).await.unwrap();
    let ApplyOutcome::Applied { index } = out else {
        panic!("not applied: {out:?}");
    };
    let got: Service = s[&1].get("svc1").unwrap().unwrap();
    assert_eq!(got.spec.name, "web");
    assert_eq!(got.meta.version, index);

    // Every follower applies it.
    for id in [2, 3] {
        eventually(Duration::from_secs(3), "replication", || {
            s[&id].get::<Service>("svc1").unwrap().is_some()
        })
        .await;
        let f: Service = s[&id].get("svc1").unwrap().unwrap();
        assert_eq!(
            f, got,
            "same object, same version, same times on every manager"
        );
    }

    // A follower refuses and names the leader.
    match s[&2].propose(create("svc2", "db")).await {
        Err(StoreError::NotLeader {
            leader: Some((1, a)),
        }) => assert_eq!(a, addr(1)),
        other => panic!("expected NotLeader(1), got {other:?}"),
    }
    assert!(s[&2].get::<Service>("svc2").unwrap().is_none());

    // list
    s[&1].propose(create("svc0", "api")).await.unwrap();
    let names: Vec<String> = s[&1]
        .list::<Service>()
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(names, vec!["svc0".to_owned(), "svc1".to_owned()]);
    assert!(s[&1].list::<Node>().unwrap().is_empty());

    // Bootstrap again is a no-op, and add_manager of an existing voter too.
    s[&1].bootstrap().await.unwrap();
    s[&1].add_manager(2, addr(2)).await.unwrap();
    assert_eq!(s[&1].status().voters.len(), 3);

    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimistic_concurrency_over_raft() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    let l = &s[&1];
    l.propose(create("svc", "v1")).await.unwrap();
    let base: Service = l.get("svc").unwrap().unwrap();

    // Two writers read the same version; the first update wins.
    let mut a = base.clone();
    a.spec.name = "from-a".into();
    let mut b = base.clone();
    b.spec.name = "from-b".into();
    let out_a = l.propose(update(a)).await.unwrap();
    let ApplyOutcome::Applied { index: ia } = out_a else {
        panic!("{out_a:?}")
    };
    let out_b = l.propose(update(b)).await.unwrap();
    assert_eq!(
        out_b,
        ApplyOutcome::Conflict {
            kind: shoal_store::model::ObjectKind::Service,
            id: "svc".into(),
            expected: base.meta.version,
            actual: Some(ia),
        }
    );
    let now: Service = l.get("svc").unwrap().unwrap();
    assert_eq!(now.spec.name, "from-a");
    assert_eq!(now.meta.version, ia);
    assert_eq!(now.meta.created_at, base.meta.created_at);

    // Creating an existing object, deleting a missing one.
    assert_eq!(
        l.propose(create("svc", "again")).await.unwrap(),
        ApplyOutcome::Exists {
            kind: shoal_store::model::ObjectKind::Service,
            id: "svc".into()
        }
    );
    let del = |id: &str, version| Proposal {
        actions: vec![Action::Delete {
            kind: shoal_store::model::ObjectKind::Service,
            id: id.into(),
            version,
        }],
        at: chrono::Utc::now(),
    };
    assert!(matches!(
        l.propose(del("nope", None)).await.unwrap(),
        ApplyOutcome::NotFound { .. }
    ));

    // A batch with a failing action leaves nothing behind, on every manager.
    let batch = Proposal {
        actions: vec![
            Action::Create(Object::Service(service("new1", "x"))),
            Action::Create(Object::Service(service("svc", "dup"))),
        ],
        at: chrono::Utc::now(),
    };
    assert!(matches!(
        l.propose(batch).await.unwrap(),
        ApplyOutcome::Exists { .. }
    ));
    // A later write is a barrier: once it shows on a follower, the batch was applied
    // there too (as nothing).
    l.propose(create("barrier", "b")).await.unwrap();
    for id in [1, 2, 3] {
        eventually(Duration::from_secs(3), "barrier", || {
            s[&id].get::<Service>("barrier").unwrap().is_some()
        })
        .await;
        assert!(s[&id].get::<Service>("new1").unwrap().is_none());
        assert_eq!(
            s[&id].get::<Service>("svc").unwrap().unwrap().spec.name,
            "from-a"
        );
    }

    // Versioned delete: stale refused, current accepted.
    assert!(matches!(
        l.propose(del("svc", Some(base.meta.version)))
            .await
            .unwrap(),
        ApplyOutcome::Conflict { .. }
    ));
    assert!(l.propose(del("svc", Some(ia))).await.unwrap().is_applied());
    assert!(l.get::<Service>("svc").unwrap().is_none());
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_deliver_changes_in_order_on_every_manager() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    let mut on_leader = s[&1].subscribe();
    let mut on_follower = s[&3].subscribe();

    let created = s[&1].propose(create("w", "one")).await.unwrap();
    let mut svc: Service = s[&1].get("w").unwrap().unwrap();
    svc.spec.name = "two".into();
    let updated = s[&1].propose(update(svc)).await.unwrap();
    let deleted = s[&1]
        .propose(Proposal {
            actions: vec![Action::Delete {
                kind: shoal_store::model::ObjectKind::Service,
                id: "w".into(),
                version: None,
            }],
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    let idx = |o: &ApplyOutcome| match o {
        ApplyOutcome::Applied { index } => *index,
        other => panic!("{other:?}"),
    };
    let want = vec![
        (EventAction::Created, idx(&created), "one"),
        (EventAction::Updated, idx(&updated), "two"),
        (EventAction::Deleted, idx(&deleted), "two"),
    ];
    for rx in [&mut on_leader, &mut on_follower] {
        let mut got = Vec::new();
        while got.len() < 3 {
            let e = tokio::time::timeout(Duration::from_secs(3), rx.recv())
                .await
                .expect("event in time")
                .expect("event");
            let Object::Service(o) = &e.object else {
                panic!("{e:?}")
            };
            assert_eq!(e.id, "w");
            got.push((e.action, e.version, o.spec.name.clone()));
        }
        let got: Vec<_> = got.iter().map(|(a, v, n)| (*a, *v, n.as_str())).collect();
        assert_eq!(got, want);
        // Nothing else.
        assert!(matches!(
            tokio::time::timeout(Duration::from_millis(200), rx.recv()).await,
            Err(_) | Ok(Err(RecvError::Lagged(_)))
        ));
    }
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_manager_keeps_its_objects_and_rejoins() {
    let dir = tempdir();
    let net = Net::default();
    let mut s = cluster(&net, dir.path(), 3, |_| {}).await;
    s[&1].propose(create("before", "x")).await.unwrap();
    eventually(Duration::from_secs(3), "replicated", || {
        s[&3].get::<Service>("before").unwrap().is_some()
    })
    .await;

    // Stop manager 3; the other two keep writing.
    stop(&net, &s[&3]).await;
    s[&1].propose(create("during", "y")).await.unwrap();

    // Reopen from disk: the objects are there before it talks to anyone.
    net.isolate(3);
    let again = start(&net, config(dir.path(), 3)).await;
    assert_eq!(
        again.get::<Service>("before").unwrap().unwrap().spec.name,
        "x"
    );
    assert!(again.get::<Service>("during").unwrap().is_none());
    let st = again.status();
    assert_eq!(st.voters.len(), 3, "membership survives the restart");
    assert!(st.last_applied > 0);

    // Back on the network: it catches up and follows the same leader.
    net.heal(3);
    eventually(Duration::from_secs(5), "catch up", || {
        again.get::<Service>("during").unwrap().is_some()
    })
    .await;
    let l = leader(&[&s[&1], &s[&2], &again], Duration::from_secs(5)).await;
    assert_ne!(l, 3);
    s.insert(3, again);
    s[&l].propose(create("after", "z")).await.unwrap();
    eventually(Duration::from_secs(3), "new writes", || {
        s[&3].get::<Service>("after").unwrap().is_some()
    })
    .await;
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_are_removed_but_never_the_last() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    // Only the leader changes membership.
    assert!(matches!(
        s[&2].remove_manager(3).await,
        Err(StoreError::NotLeader { .. })
    ));
    s[&1].remove_manager(3).await.unwrap();
    eventually(Duration::from_secs(3), "2 voters everywhere", || {
        s[&1].status().voters.len() == 2 && s[&2].status().voters.len() == 2
    })
    .await;
    assert!(!s[&1].status().voters.contains_key(&3));
    // Removing a non-member is a no-op.
    s[&1].remove_manager(3).await.unwrap();
    s[&1].remove_manager(2).await.unwrap();
    assert_eq!(
        s[&1].status().voters.keys().copied().collect::<Vec<_>>(),
        vec![1]
    );
    assert!(matches!(
        s[&1].remove_manager(1).await,
        Err(StoreError::LastVoter { raft_id: 1 })
    ));
    // Still writes alone.
    assert!(
        s[&1]
            .propose(create("solo", "x"))
            .await
            .unwrap()
            .is_applied()
    );
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removal_that_would_lose_quorum_is_refused() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |_| {}).await;
    // Manager 3 is down: removing 2 would leave 1 and 3 with only 1 reachable.
    stop(&net, &s[&3]).await;
    eventually(Duration::from_secs(5), "3 seen unreachable", || {
        s[&1].status().reachable.get(&3) == Some(&false)
    })
    .await;
    match s[&1].remove_manager(2).await {
        Err(StoreError::WouldLoseQuorum {
            raft_id: 2,
            reachable: 1,
            remaining: 2,
        }) => {}
        other => panic!("expected WouldLoseQuorum, got {other:?}"),
    }
    // Removing the unreachable one itself is fine (1 and 2 remain, both up).
    s[&1].remove_manager(3).await.unwrap();
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managers_join_one_at_a_time_up_to_five() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 5, |_| {}).await;
    let all: Vec<_> = s.values().collect();
    assert_eq!(leader(&all, Duration::from_secs(5)).await, 1);
    for st in s.values() {
        eventually(Duration::from_secs(3), "5 voters", || {
            st.status().voters.len() == 5
        })
        .await;
    }
    // Two managers down: 3 of 5 still commit.
    stop(&net, &s[&4]).await;
    stop(&net, &s[&5]).await;
    assert!(s[&1].propose(create("q", "x")).await.unwrap().is_applied());
    for st in s.values() {
        st.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_manager_gives_up_on_one_that_never_answers() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 1, |c| {
        c.catch_up_timeout = Duration::from_secs(2)
    })
    .await;
    // Manager 9 is not on the network at all.
    let t = Instant::now();
    match s[&1].add_manager(9, addr(9)).await {
        Err(StoreError::CatchUpTimeout { raft_id: 9, .. }) => {}
        other => panic!("expected CatchUpTimeout, got {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(10));
    // The learner was dropped again; the cluster still writes.
    eventually(Duration::from_secs(3), "learner removed", || {
        s[&1].status().learners.is_empty()
    })
    .await;
    assert!(s[&1].propose(create("x", "x")).await.unwrap().is_applied());
    s[&1].shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_outside_any_cluster_says_so_at_once() {
    let dir = tempdir();
    let net = Net::default();
    let lone = start(&net, config(dir.path(), 7)).await;
    let t = Instant::now();
    assert!(matches!(
        lone.propose(create("x", "x")).await,
        Err(StoreError::NotInCluster { raft_id: 7 })
    ));
    assert!(t.elapsed() < Duration::from_millis(500));
    assert!(matches!(
        lone.add_manager(8, addr(8)).await,
        Err(StoreError::NotInCluster { raft_id: 7 })
    ));
    let st = lone.status();
    assert!(st.voters.is_empty() && st.leader.is_none());
    lone.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_messages_get_error_answers() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 1, |_| {}).await;
    let answer: serde_json::Value =
        serde_json::from_slice(&s[&1].handle_message(b"not json".to_vec()).await).unwrap();
    assert_eq!(answer["v"], 1);
    assert_eq!(answer["error"]["code"], "bad_request");
    let answer: serde_json::Value = serde_json::from_slice(
        &s[&1]
            .handle_message(br#"{"v":2,"rpc":"teleport","body":{}}"#.to_vec())
            .await,
    )
    .unwrap();
    assert_eq!(answer["error"]["code"], "unsupported_version");
    // Still healthy.
    assert!(s[&1].propose(create("x", "x")).await.unwrap().is_applied());
    s[&1].shutdown().await;
    assert!(matches!(
        s[&1].propose(create("y", "y")).await,
        Err(StoreError::ShutDown { raft_id: 1 })
    ));
}
