//! A first end-to-end check: import an image, run a container in the foreground.

use std::path::Path;

use shoal_testkit::daemon::Daemon;
use shoal_testkit::images::ImageBuilder;

#[test]
fn import_and_run() {
    let d = Daemon::start(Path::new(env!("CARGO_BIN_EXE_shoal"))).unwrap();
    let archive = d.root.path().join("busybox.tar");
    ImageBuilder::busybox()
        .write_docker_archive(&archive, &["busybox:latest"], false)
        .unwrap();
    let out = d.ok(&["image", "import", archive.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: busybox:latest");
    let o = d.run(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "out\n");
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n");
    assert_eq!(
        d.ok(&["ps", "-aq"]),
        "",
        "--rm removed the container before run returned"
    );
    assert_eq!(d.decoy_log(), "", "no external runtime was called");
}
