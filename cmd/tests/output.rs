#[test]
fn generate() {
    use shoal_testkit::images::*;
    let d = std::path::Path::new("/tmp/pg");
    ImageBuilder::busybox().write_docker_archive(&d.join("bb.tar"), &["busybox:latest"], false).unwrap();
    ImageBuilder::busybox().write_oci_archive(&d.join("bb-oci.tar.gz"), Some("1"), None, true).unwrap();
    ImageBuilder::busybox().label("a","b").write_oci_archive(&d.join("bb-oci-named.tar"), Some("docker.io/library/foo:v1"), Some("docker.io/library/bar:v2"), false).unwrap();
}
