//! Snapshots and log compaction: a new or lagging manager catches up by snapshot install.

mod common;

use std::time::Duration;

use common::*;
use shoal_store::model::Service;
use shoal_store::{EventAction, StoreConfig};

fn small_snapshots(c: &mut StoreConfig) {
    c.snapshot_interval = 50;
    c.log_entries_for_slow_followers = 10;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_manager_catches_up_by_snapshot_after_compaction() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, small_snapshots).await;
    // Three snapshots' worth of entries.
    for i in 0..160 {
        assert!(
            s[&1]
                .propose(create(&format!("obj-{i:03}"), "x"))
                .await
                .unwrap()
                .is_applied()
        );
    }
    eventually(Duration::from_secs(10), "leader snapshot and purge", || {
        let st = s[&1].status();
        st.snapshot_index >= 140 && st.purged_index > 100
    })
    .await;
    let before = s[&1].status();
    eprintln!(
        "leader before the join: last log {}, snapshot {}, purged {}",
        before.last_log_index, before.snapshot_index, before.purged_index
    );
    // Followers compact too.
    eventually(Duration::from_secs(10), "follower snapshots", || {
        s[&2].status().snapshot_index >= 140
    })
    .await;

    // Manager 4 joins: the entries up to `purged` no longer exist anywhere but in the
    // snapshot, so only an install can give it obj-000.
    let mut cfg4 = config(dir.path(), 4);
    small_snapshots(&mut cfg4);
    let m4 = start(&net, cfg4).await;
    let mut events = m4.subscribe();
    s[&1].add_manager(4, addr(4)).await.unwrap();
    // The leader returns once the membership change is committed; the new manager learns
    // of it a moment later.
    eventually(Duration::from_secs(5), "m4 sees itself as a voter", || {
        m4.status().voters.contains_key(&4)
    })
    .await;
    let st4 = m4.status();
    assert!(
        st4.snapshot_index >= before.snapshot_index,
        "m4 snapshot {} < leader's {}",
        st4.snapshot_index,
        before.snapshot_index
    );
    // It never held the purged entries: its own log starts after the snapshot.
    assert!(st4.purged_index >= before.purged_index, "{st4:?}");
    eventually(Duration::from_secs(5), "all objects", || {
        m4.list::<Service>().unwrap().len() == 160
    })
    .await;
    let first: Service = m4.get("obj-000").unwrap().unwrap();
    let on_leader: Service = s[&1].get("obj-000").unwrap().unwrap();
    assert_eq!(first, on_leader);
    // The install told watchers what appeared.
    let e = events.try_recv().unwrap();
    assert_eq!(e.action, EventAction::Created);
    // And it takes part in writes from now on.
    s[&1].propose(create("after-join", "y")).await.unwrap();
    eventually(Duration::from_secs(3), "new write", || {
        m4.get::<Service>("after-join").unwrap().is_some()
    })
    .await;
    for st in s.values() {
        st.shutdown().await;
    }
    m4.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_restarted_after_compaction_catches_up_by_snapshot() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, small_snapshots).await;
    s[&1].propose(create("early", "x")).await.unwrap();
    eventually(Duration::from_secs(3), "replicated", || {
        s[&3].get::<Service>("early").unwrap().is_some()
    })
    .await;
    stop(&net, &s[&3]).await;
    let behind = s[&3].status().last_log_index;

    for i in 0..120 {
        s[&1].propose(create(&format!("o{i}"), "x")).await.unwrap();
    }
    // Delete one it had, so the install has to remove it too.
    s[&1]
        .propose(shoal_store::Proposal {
            actions: vec![shoal_store::Action::Delete {
                kind: shoal_store::model::ObjectKind::Service,
                id: "early".into(),
                version: None,
            }],
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    eventually(
        Duration::from_secs(10),
        "compaction past the stopped manager",
        || s[&1].status().purged_index > behind,
    )
    .await;

    let mut cfg = config(dir.path(), 3);
    small_snapshots(&mut cfg);
    let back = start(&net, cfg).await;
    let mut events = back.subscribe();
    eventually(Duration::from_secs(10), "caught up", || {
        back.list::<Service>().unwrap().len() == 120
    })
    .await;
    assert!(back.get::<Service>("early").unwrap().is_none());
    assert!(back.status().snapshot_index > behind);
    // The watcher saw the deletion of what the snapshot no longer has.
    let mut saw_delete = false;
    while let Ok(e) = events.try_recv() {
        if e.id == "early" && e.action == EventAction::Deleted {
            saw_delete = true;
        }
    }
    assert!(saw_delete);
    for st in s.values() {
        st.shutdown().await;
    }
    back.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshot_now_and_reopen_from_snapshot_and_log() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 1, |c| {
        c.log_entries_for_slow_followers = 0
    })
    .await;
    for i in 0..20 {
        s[&1].propose(create(&format!("a{i}"), "x")).await.unwrap();
    }
    s[&1].snapshot_now().await.unwrap();
    let st = s[&1].status();
    assert_eq!(st.snapshot_index, st.last_applied);
    for i in 0..5 {
        s[&1].propose(create(&format!("b{i}"), "x")).await.unwrap();
    }
    stop(&net, &s[&1]).await;
    let again = start(&net, config(dir.path(), 1)).await;
    assert_eq!(again.list::<Service>().unwrap().len(), 25);
    eventually(Duration::from_secs(5), "leads again", || {
        again.status().leader == Some(1)
    })
    .await;
    assert!(again.propose(create("c", "x")).await.unwrap().is_applied());
    assert_eq!(again.status().snapshot_index, st.snapshot_index);
    again.shutdown().await;
}
