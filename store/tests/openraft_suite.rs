//! openraft's own storage conformance suite against the redb log store and state machine.

#[test]
fn redb_storage_passes_the_openraft_suite() {
    let dir = tempfile::tempdir().unwrap();
    shoal_store::testing_support::run_openraft_suite(dir.path()).unwrap();
}
