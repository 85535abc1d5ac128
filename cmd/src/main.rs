//! `shoal`: the CLI, the daemon, and the helper processes, in one binary.

mod api;
mod api_logs;
mod api_service;
mod api_swarm;
mod cli;
mod client;
mod commands;
mod daemon;
mod format;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        // The helpers must stay single-threaded until libcontainer has forked: no async
        // runtime, no threads, before this point.
        Command::Shim(a) => return helper_exit(run_shim(a)),
        Command::ShimExec(a) => return helper_exit(run_shim_exec(a)),
        _ => {}
    }
    let result = match cli.command {
        Command::Daemon(args) => {
            init_tracing(&args.log_level);
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .thread_name("shoal-worker")
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(daemon::run(args)).map(|()| 0))
        }
        command => {
            // Like other command-line tools, end quietly when the reader of our output goes
            // away (`shoal logs web | head`).
            // SAFETY: resetting a disposition to SIG_DFL installs no handler code.
            unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
            if cli.debug {
                init_tracing("debug");
            }
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(anyhow::Error::from)
                .and_then(|rt| rt.block_on(commands::dispatch(cli.host.as_deref(), command)))
        }
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("{}", commands::describe(&e));
            ExitCode::from(commands::exit_code_of(&e))
        }
    }
}

fn helper_exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},libcontainer=warn,libcgroups=warn"))
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// The helper logs to its own `shim.log` (its stderr when started). It writes through a
/// duplicate descriptor marked close-on-exec: libcontainer's container init is forked from
/// the helper and points fd 2 at the container's stderr, so logging to fd 2 would put the
/// runtime's messages into the container's output.
fn init_shim_tracing() {
    use std::os::fd::AsFd;
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return;
    };
    let file = std::sync::Arc::new(std::fs::File::from(fd));
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("SHOAL_SHIM_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("warn,libcontainer::seccomp=error,libcgroups=error")
        });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || FileWriter(file.clone()))
        .try_init();
}

struct FileWriter(std::sync::Arc<std::fs::File>);

impl std::io::Write for FileWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn run_shim(a: cli::ShimArgs) -> i32 {
    if let Err(e) = shoal_runtime::sealed::ensure_sealed() {
        eprintln!("shoal shim: {e}");
        return 1;
    }
    init_shim_tracing();
    shoal_runtime::shim::main(shoal_runtime::shim::ShimArgs {
        dir: a.dir,
        state_root: a.state_root,
        log: shoal_runtime::logs::LogConfig {
            max_size: a.log_max_size,
            max_files: a.log_max_files,
        },
    })
}

fn run_shim_exec(a: cli::ShimExecArgs) -> i32 {
    if let Err(e) = shoal_runtime::sealed::ensure_sealed() {
        eprintln!("shoal shim-exec: {e}");
        return shoal_runtime::exec::EXEC_FAILED;
    }
    shoal_runtime::exec::main(shoal_runtime::exec::ExecArgs {
        state_root: a.state_root,
        id: a.id,
        process: a.process,
    })
}
