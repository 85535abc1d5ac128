mod common;
#[test]
fn scratch() {
    shoal_testkit::images::ImageBuilder::busybox().write_docker_archive(std::path::Path::new("/tmp/exp/busybox.tar"), &["busybox:latest"], false).unwrap();
}
