//! Writes a busybox image archive built from the host's busybox-static, for the README's
//! quick start and manual tries: `cargo run -p shoal-testkit --example busybox-image -- OUT.tar [NAME]`.

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let out = args.next().unwrap_or_else(|| "busybox.tar".to_owned());
    let name = args.next().unwrap_or_else(|| "busybox:latest".to_owned());
    let built = shoal_testkit::images::ImageBuilder::busybox().write_docker_archive(
        std::path::Path::new(&out),
        &[&name],
        false,
    )?;
    println!("{out}: {name} ({})", built.config_digest);
    Ok(())
}
