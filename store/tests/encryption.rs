//! Encryption at rest: nothing in state.redb is readable without the data key.

mod common;

use std::time::Duration;

use common::*;
use shoal_store::model::{Secret, Service};
use shoal_store::{Action, DbError, Object, Proposal, Store, StoreError};

const MARKER: &str = "PLAINTEXT-MARKER-5c1d7e";

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_in_the_database_is_readable_without_the_key() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 3, |c| c.snapshot_interval = 20).await;
    // The marker goes into values of every kind of record: log entries (proposals),
    // objects, snapshots.
    let mut secret = Secret {
        id: "sec1".into(),
        ..Default::default()
    };
    secret.spec.name = MARKER.into();
    secret.spec.labels.insert("data".into(), MARKER.into());
    s[&1]
        .propose(Proposal {
            actions: vec![Action::Create(Object::Secret(secret))],
            at: chrono::Utc::now(),
        })
        .await
        .unwrap();
    for i in 0..30 {
        s[&1]
            .propose(create(&format!("svc{i}"), MARKER))
            .await
            .unwrap();
    }
    for st in s.values() {
        eventually(Duration::from_secs(5), "replicated", || {
            st.list::<Service>().unwrap().len() == 30
        })
        .await;
        st.snapshot_now().await.unwrap();
        assert!(st.status().snapshot_index > 0);
    }
    for st in s.values() {
        st.shutdown().await;
    }
    // shutdown() returns once the database is closed.

    for id in 1..=3 {
        let bytes = std::fs::read(db_path(dir.path(), id)).unwrap();
        // Control: the file is a readable redb file and the search works (table names
        // are in clear).
        assert!(
            contains(&bytes, b"objects_secret"),
            "manager {id}: control string missing"
        );
        assert!(contains(&bytes, b"raft_log"));
        assert!(
            !contains(&bytes, MARKER.as_bytes()),
            "manager {id}: the marker is readable in state.redb"
        );
        // Nor the JSON field names of objects or entries.
        assert!(
            !contains(&bytes, b"\"spec\""),
            "manager {id}: JSON in clear"
        );
        assert!(
            !contains(&bytes, b"\"actions\""),
            "manager {id}: a proposal in clear"
        );
        // Owner-only.
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(db_path(dir.path(), id))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
    }

    // The right key reads it all back.
    let again = start(&net, config(dir.path(), 2)).await;
    let sec: Secret = again.get("sec1").unwrap().unwrap();
    assert_eq!(sec.spec.name, MARKER);
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_with_a_wrong_data_key_fails_clearly() {
    let dir = tempdir();
    let net = Net::default();
    let s = cluster(&net, dir.path(), 1, |_| {}).await;
    s[&1].propose(create("x", "y")).await.unwrap();
    stop(&net, &s[&1]).await;

    let wrong = dek(99);
    let err = match Store::open(config(dir.path(), 1), wrong.clone(), net.link(1)).await {
        Ok(_) => panic!("opened with a wrong key"),
        Err(e) => e,
    };
    assert!(
        matches!(err, StoreError::Db(DbError::WrongDataKey { .. })),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("state.redb") && msg.contains("another data key"),
        "{msg}"
    );
    // force-new-cluster refuses too.
    assert!(matches!(
        Store::force_new_cluster(&dir.path().join("m1"), &wrong, 1, &addr(1)),
        Err(StoreError::Db(DbError::WrongDataKey { .. }))
    ));
    // The right key still opens it, intact.
    let again = start(&net, config(dir.path(), 1)).await;
    assert_eq!(again.get::<Service>("x").unwrap().unwrap().spec.name, "y");
    again.shutdown().await;
}
