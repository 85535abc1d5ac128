//! shoal's container benchmark: create → start → wait → delete of `/bin/true` from the same
//! busybox rootfs, N runs each, for shoal's library path (libcontainer in this process),
//! `shoal container run --rm` (CLI → daemon → helper), `crun run` and `runc run`; medians,
//! p90s and the ratio to crun, the binary's size and the daemon's idle RSS.
//!
//! Run: `cargo build --release -p shoal -p shoal-bench && target/x86_64-unknown-linux-gnu/release/shoal-bench [--runs N] [--shoal PATH]`.
//! Needs root, busybox-static, and (for the references) Debian's crun and runc.

mod stats;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use oci_spec::runtime::{LinuxBuilder, RootBuilder, Spec};
use shoal_runtime::lifecycle;
use shoal_testkit::daemon::Daemon;
use shoal_testkit::images::{ImageBuilder, busybox_rootfs};
use stats::ms;

struct Args {
    runs: usize,
    shoal: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut runs = 50;
    let mut shoal = std::env::current_exe()?.with_file_name("shoal");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs needs a number")?.parse()?,
            "--shoal" => shoal = PathBuf::from(it.next().context("--shoal needs a path")?),
            "-h" | "--help" => {
                println!("usage: shoal-bench [--runs N] [--shoal PATH]");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(Args { runs, shoal })
}

/// Timings of one contender.
struct Series {
    name: String,
    samples: Vec<Duration>,
    note: String,
}

impl Series {
    fn percentile(&self, p: f64) -> Duration {
        stats::percentile(&self.samples, p)
    }
}

/// Writes an OCI bundle (runc's default spec) running `/bin/true` in `rootfs`.
fn write_bundle(dir: &Path, rootfs: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut spec = Spec::default();
    let mut process = spec
        .process()
        .clone()
        .context("default spec has a process")?;
    process.set_args(Some(vec!["/bin/true".into()]));
    process.set_terminal(Some(false));
    spec.set_process(Some(process));
    spec.set_root(Some(
        RootBuilder::default().path(rootfs).readonly(true).build()?,
    ));
    spec.set_hostname(Some("bench".into()));
    let linux = spec
        .linux()
        .clone()
        .unwrap_or_else(|| LinuxBuilder::default().build().unwrap_or_default());
    spec.set_linux(Some(linux));
    spec.save(dir.join("config.json"))?;
    Ok(())
}

/// Writes a bundle with exactly the spec `shoal run` gives a container (Docker's defaults:
/// capabilities, seccomp, masked paths, device rules, read-only cgroup mounts …), except
/// that the runtime creates the network namespace itself, as crun and runc do.
fn write_docker_bundle(dir: &Path, rootfs: &Path) -> Result<()> {
    use shoal_runtime::model::{Config, ContainerRecord, HostConfig, NetworkMode};
    std::fs::create_dir_all(dir)?;
    for f in ["hostname", "hosts", "resolv.conf"] {
        std::fs::write(dir.join(f), "")?;
    }
    let rec = ContainerRecord {
        id: "bench".into(),
        name: "bench".into(),
        created: chrono::Utc::now(),
        path: "/bin/true".into(),
        args: Vec::new(),
        config: Config {
            hostname: "bench".into(),
            ..Config::default()
        },
        host_config: HostConfig::default(),
        image_id: String::new(),
        layers: Vec::new(),
        user: shoal_runtime::user::resolve("", None, None)?,
        env: vec![shoal_runtime::manager::DEFAULT_PATH.into()],
        cwd: "/".into(),
        mounts: Vec::new(),
        network: NetworkMode::None,
        cgroups_path: "/shoal-bench/c".into(),
        capabilities: shoal_runtime::defaults::capabilities(&[], &[])?,
    };
    let paths = shoal_runtime::spec::SpecPaths {
        rootfs: rootfs.to_owned(),
        hostname: dir.join("hostname"),
        hosts: dir.join("hosts"),
        resolv_conf: dir.join("resolv.conf"),
        netns: PathBuf::new(),
    };
    let mut spec = shoal_runtime::spec::build(&rec, &paths)?;
    if let Some(ns) = spec
        .linux_mut()
        .as_mut()
        .and_then(|l| l.namespaces_mut().as_mut())
    {
        for n in ns.iter_mut() {
            n.set_path(None);
        }
    }
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(true));
    }
    spec.save(dir.join("config.json"))?;
    Ok(())
}

fn devnull() -> Result<OwnedFd> {
    Ok(OwnedFd::from(
        File::options().read(true).write(true).open("/dev/null")?,
    ))
}

/// shoal's library path: libcontainer driven from this (single-threaded) process.
fn bench_library(runs: usize, bundle: &Path, state: &Path) -> Result<Series> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let id = format!("shoal-bench-lib-{i}");
        let stdio = lifecycle::Stdio {
            stdin: devnull()?,
            stdout: devnull()?,
            stderr: devnull()?,
        };
        let t = Instant::now();
        let code = lifecycle::run_to_completion(&id, state, bundle, stdio)?;
        let d = t.elapsed();
        if code != 0 {
            bail!("/bin/true exited with {code} under the library path");
        }
        if i >= 3 {
            samples.push(d);
        }
    }
    Ok(Series {
        name: "shoal library".into(),
        samples,
        note: String::new(),
    })
}

fn time_command(mut c: Command) -> Result<Duration> {
    c.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let out = c.output()?;
    let d = t.elapsed();
    if !out.status.success() {
        bail!("{:?} failed: {}", c, String::from_utf8_lossy(&out.stderr));
    }
    Ok(d)
}

fn bench_command(
    name: &str,
    runs: usize,
    mut make: impl FnMut(usize) -> Command,
) -> Result<Series> {
    let mut samples = Vec::with_capacity(runs);
    for i in 0..runs + 3 {
        let d = time_command(make(i))?;
        if i >= 3 {
            samples.push(d);
        }
    }
    Ok(Series {
        name: name.into(),
        samples,
        note: String::new(),
    })
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

fn rss_kib(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn main() -> Result<()> {
    let args = parse_args()?;
    if !args.shoal.is_file() {
        bail!(
            "no shoal binary at {}: build it (cargo build --release -p shoal) or pass --shoal",
            args.shoal.display()
        );
    }
    let work = tempfile::Builder::new().prefix("shoal-bench-").tempdir()?;
    let rootfs = work.path().join("rootfs");
    busybox_rootfs(&rootfs)?;
    let minimal = work.path().join("bundle-minimal");
    write_bundle(&minimal, &rootfs)?;
    let docker = work.path().join("bundle-docker");
    write_docker_bundle(&docker, &rootfs)?;

    println!("shoal bench: create -> start -> wait -> delete of /bin/true from one busybox rootfs");
    println!("runs: {} per contender (after 3 warm-up runs)", args.runs);
    let size = std::fs::metadata(&args.shoal)?.len();
    println!(
        "binary: {} ({:.2} MB, {})",
        args.shoal.display(),
        size as f64 / 1e6,
        describe_binary(&args.shoal)
    );
    println!("specs: 'minimal' = runc's default spec (no seccomp, no device rules);");
    println!("       'docker'  = the spec shoal gives every container (Docker's defaults)");
    println!();

    // The library path first: this process must still be single-threaded.
    let mut series = Vec::new();
    for (label, bundle) in [("minimal", &minimal), ("docker", &docker)] {
        let mut s = bench_library(args.runs, bundle, &work.path().join(format!("lib-{label}")))?;
        s.name = format!("shoal library, {label} spec");
        series.push(s);
    }

    let mut crun_wrapper = None;
    for (label, bundle) in [("minimal", &minimal), ("docker", &docker)] {
        if let Some(crun) = which("crun") {
            // crun refuses hybrid cgroups: run it in a private mount namespace without the
            // unified mount, and time that wrapper alone to subtract it.
            let hybrid = Path::new("/sys/fs/cgroup/unified").exists();
            let root = work.path().join(format!("crun-{label}"));
            let wrap = |inner: String| {
                let mut c = Command::new("unshare");
                let script = if hybrid {
                    format!("umount /sys/fs/cgroup/unified && exec {inner}")
                } else {
                    format!("exec {inner}")
                };
                c.args(["-m", "sh", "-c", &script]);
                c
            };
            let wmed = match crun_wrapper {
                Some(w) => w,
                None => {
                    let w = bench_command("wrapper alone", args.runs, |_| wrap("true".into()))?;
                    let m = w.percentile(0.5);
                    crun_wrapper = Some(m);
                    m
                }
            };
            let mut s = bench_command(&format!("crun run, {label} spec"), args.runs, |i| {
                wrap(format!(
                    "{} --root {} run --bundle {} crun-bench-{i}",
                    crun.display(),
                    root.display(),
                    bundle.display()
                ))
            })?;
            for d in &mut s.samples {
                *d = d.saturating_sub(wmed);
            }
            s.note = "wrapper subtracted".into();
            series.push(s);
        } else if label == "minimal" {
            println!("crun not installed: skipping it (apt-get install crun)");
        }
        if let Some(runc) = which("runc") {
            let root = work.path().join(format!("runc-{label}"));
            series.push(bench_command(
                &format!("runc run, {label} spec"),
                args.runs,
                |i| {
                    let mut c = Command::new(&runc);
                    c.arg("--root")
                        .arg(&root)
                        .arg("run")
                        .arg("--bundle")
                        .arg(bundle)
                        .arg(format!("runc-bench-{i}"));
                    c
                },
            )?);
        } else if label == "minimal" {
            println!("runc not installed: skipping it (apt-get install runc)");
        }
    }

    // The full path through the CLI and the daemon (docker spec, overlay root, logs).
    let d = Daemon::start(&args.shoal)?;
    let archive = work.path().join("busybox.tar");
    ImageBuilder::busybox().write_docker_archive(&archive, &["busybox:latest"], false)?;
    d.ok(&["image", "import", archive.to_str().context("utf-8 path")?]);
    std::thread::sleep(Duration::from_secs(2));
    let idle_start = d.pid().and_then(rss_kib);
    series.push(bench_command(
        "shoal run --rm (CLI+daemon)",
        args.runs,
        |_| {
            let mut c = d.cli();
            c.args(["run", "--rm", "busybox", "/bin/true"]);
            c
        },
    )?);
    std::thread::sleep(Duration::from_secs(2));
    let idle_after = d.pid().and_then(rss_kib);

    println!(
        "{:<34} {:>10} {:>10} {:>13}",
        "", "median", "p90", "vs crun"
    );
    for s in &series {
        let med = s.percentile(0.5);
        let spec = if s.name.contains("minimal") {
            "minimal"
        } else {
            "docker"
        };
        let reference = series
            .iter()
            .find(|r| r.name == format!("crun run, {spec} spec"))
            .map(|r| r.percentile(0.5));
        let ratio = reference
            .filter(|c| !c.is_zero())
            .map(|c| format!("{:.2}x ({spec})", med.as_secs_f64() / c.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<34} {:>7.2} ms {:>7.2} ms {:>13}  {}",
            s.name,
            ms(med),
            ms(s.percentile(0.9)),
            ratio,
            s.note
        );
    }
    if let Some(w) = crun_wrapper {
        println!(
            "(crun's private-mount-namespace wrapper alone: {:.2} ms median, subtracted)",
            ms(w)
        );
    }
    println!();
    let mb = |k: Option<u64>| k.map_or("?".to_owned(), |k| format!("{:.1} MB", k as f64 / 1024.0));
    println!(
        "daemon idle RSS: {} after start + import, {} after the runs",
        mb(idle_start),
        mb(idle_after)
    );
    Ok(())
}

fn describe_binary(p: &Path) -> String {
    Command::new("file")
        .arg("-b")
        .arg(p)
        .output()
        .ok()
        .map(|o| {
            let t = String::from_utf8_lossy(&o.stdout);
            let static_ = if t.contains("static-pie") || t.contains("statically linked") {
                "static"
            } else {
                "dynamic"
            };
            let stripped = if t.contains("not stripped") {
                "not stripped"
            } else {
                "stripped"
            };
            format!("{static_}, {stripped}")
        })
        .unwrap_or_else(|| "file(1) missing".into())
}
