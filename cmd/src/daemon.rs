//! `shoal daemon`: wires the engine to the API socket.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use rustix::fs::FlockOperation;
use shoal_cluster::{Engine, EngineOptions};
use shoal_runtime::logs::LogConfig;
use shoal_runtime::sealed::SealedExe;
use tokio::net::UnixListener;

use crate::cli::DaemonArgs;
use crate::client::{connect_unix, split};
use crate::{api, format};

/// Runs the daemon until SIGINT or SIGTERM. Containers keep running after it exits.
pub async fn run(args: DaemonArgs) -> Result<()> {
    // TLS for registries uses rustls with the ring provider, process-wide.
    let _ = rustls::crypto::ring::default_provider().install_default();

    let data_dir = absolute(&args.data_dir)?;
    let run_dir = absolute(&args.run_dir)?;
    for d in [&data_dir, &run_dir] {
        fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    fs::set_permissions(&data_dir, fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot set permissions of {}", data_dir.display()))?;
    // One daemon per data dir.
    let lock_path = data_dir.join("shoal.lock");
    let lock =
        File::create(&lock_path).with_context(|| format!("cannot open {}", lock_path.display()))?;
    if rustix::fs::flock(&lock, FlockOperation::NonBlockingLockExclusive).is_err() {
        bail!(
            "another shoal daemon is using the data directory {}",
            data_dir.display()
        );
    }

    let socket = match &args.socket {
        Some(s) => absolute(s)?,
        None => run_dir.join("shoal.sock"),
    };
    let log_max_size = format::parse_bytes(&args.log_max_size)
        .map_err(|e| anyhow::anyhow!("invalid --log-max-size {:?}: {e}", args.log_max_size))?;
    if args.log_max_files == 0 {
        bail!("invalid --log-max-files 0: at least one file is kept");
    }
    let mut labels = std::collections::BTreeMap::new();
    for l in &args.label {
        match l.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                labels.insert(k.to_owned(), v.to_owned());
            }
            _ => bail!("bad attribute format: {l} (--label wants key=value)"),
        }
    }
    let cgroup_parent = args.cgroup_parent.clone().unwrap_or_else(|| {
        shoal_runtime::cgroups::default_parent(&data_dir, Path::new("/var/lib/shoal"))
    });

    // Claim the socket first: a live daemon on it means this one must not touch anything.
    let listener = bind(&socket).await?;
    let exe = Arc::new(SealedExe::create().context("cannot make the sealed helper binary")?);
    let engine = Engine::open(EngineOptions {
        data_dir: data_dir.clone(),
        run_dir: run_dir.clone(),
        cgroup_parent,
        labels,
        log: LogConfig {
            max_size: log_max_size,
            max_files: args.log_max_files,
        },
        registry: shoal_image::RegistryOptions {
            insecure: args.insecure_registry.clone(),
            certs_dir: Some(args.registry_certs_dir.clone()),
            platform: shoal_image::Platform::host(),
        },
        exe,
    })
    .await
    .context("cannot open the node engine");
    let engine = match engine {
        Ok(e) => e,
        Err(e) => {
            let _ = fs::remove_file(&socket);
            return Err(e);
        }
    };

    tracing::info!(socket = %socket.display(), data_dir = %data_dir.display(), version = env!("CARGO_PKG_VERSION"), "shoal daemon ready");
    // The ready line tests and init scripts wait for.
    eprintln!("shoal daemon ready on unix://{}", socket.display());

    let swarm = shoal_cluster::Swarm::open(&data_dir, engine.clone())
        .await
        .context("cannot resume this node's swarm membership")?;
    let app = api::router(api::AppState::new(engine.clone(), swarm.clone()));
    let shutdown = async {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
        tracing::info!("shutting down; containers keep running");
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("API server failed")?;
    let _ = fs::remove_file(&socket);
    swarm.shutdown().await;
    engine.runtime.release_cgroup_parent();
    drop(lock);
    Ok(())
}

fn absolute(p: &Path) -> Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_owned())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// Binds the API socket (mode 0660). A socket left by a killed daemon is replaced; one a
/// live daemon answers on is an error. Long paths are bound through the directory's fd.
async fn bind(socket: &Path) -> Result<UnixListener> {
    if let Some(dir) = socket.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if socket.exists() {
        if connect_unix(socket).await.is_ok() {
            bail!(
                "another shoal daemon is listening on unix://{}",
                socket.display()
            );
        }
        fs::remove_file(socket)
            .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
    }
    let listener = if socket.as_os_str().len() <= 107 {
        UnixListener::bind(socket)
    } else {
        let (dir, name) = split(socket)?;
        let d = File::open(dir).with_context(|| format!("cannot open {}", dir.display()))?;
        UnixListener::bind(format!("/proc/self/fd/{}/{}", d.as_raw_fd(), name))
    }
    .with_context(|| format!("cannot listen on unix://{}", socket.display()))?;
    fs::set_permissions(socket, fs::Permissions::from_mode(0o660))
        .with_context(|| format!("cannot set permissions of {}", socket.display()))?;
    Ok(listener)
}
