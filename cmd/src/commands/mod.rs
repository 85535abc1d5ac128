//! The CLI verbs: each turns parsed flags into API calls and prints Docker-shaped output.

mod auth;
mod container;
mod image;
mod node;
mod progress;
pub(crate) mod service;
mod service_opts;
mod service_progress;
mod swarm;
mod system;
mod volume;

use anyhow::Result;

use crate::cli::{Command, ContainerCmd, ImageCmd, NodeCmd, SwarmCmd, VolumeCmd};
use crate::client::Client;

/// An error that carries the process exit code it should end with (Docker's: 125 when the
/// daemon refused a `run`, 126/127 when the command could not be started).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Exit {
    pub code: u8,
    pub message: String,
}

/// The exit code for an error.
pub fn exit_code_of(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Exit>().map_or(1, |x| x.code)
}

/// The one-line message for an error (its context chain, joined).
pub fn describe(e: &anyhow::Error) -> String {
    if let Some(x) = e.downcast_ref::<Exit>() {
        return x.message.clone();
    }
    let mut parts: Vec<String> = Vec::new();
    for c in e.chain() {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ")
}

/// Runs one CLI command; returns the exit code.
pub async fn dispatch(host: Option<&str>, command: Command) -> Result<i32> {
    let c = Client::new(host)?;
    match command {
        Command::Version(a) => system::version(&c, a).await,
        Command::Info(a) => system::info(&c, a).await,
        Command::Login(a) => auth::login(&c, a).await,
        Command::Logout(a) => auth::logout(a),
        Command::Run(a) => container::run(&c, a, false).await,
        Command::Create(a) => container::run(&c, a, true).await,
        Command::Start(a) => container::start(&c, a).await,
        Command::Ps(a) => container::ls(&c, a).await,
        Command::Exec(a) => container::exec(&c, a).await,
        Command::Logs(a) => container::logs(&c, a).await,
        Command::Stop(a) => container::stop(&c, a).await,
        Command::Kill(a) => container::kill(&c, a).await,
        Command::Rm(a) => container::rm(&c, a).await,
        Command::Inspect(a) => system::inspect(&c, a).await,
        Command::Stats(a) => container::stats(&c, a).await,
        Command::Images(a) => image::ls(&c, a).await,
        Command::Pull(a) => image::pull(&c, a).await,
        Command::Rmi(a) => image::rm(&c, a).await,
        Command::Wait(a) => container::wait(&c, a).await,
        Command::Pause(a) => container::pause(&c, a, true).await,
        Command::Unpause(a) => container::pause(&c, a, false).await,
        Command::Container(cc) => match cc {
            ContainerCmd::Run(a) => container::run(&c, a, false).await,
            ContainerCmd::Create(a) => container::run(&c, a, true).await,
            ContainerCmd::Start(a) => container::start(&c, a).await,
            ContainerCmd::Ls(a) => container::ls(&c, a).await,
            ContainerCmd::Logs(a) => container::logs(&c, a).await,
            ContainerCmd::Stop(a) => container::stop(&c, a).await,
            ContainerCmd::Kill(a) => container::kill(&c, a).await,
            ContainerCmd::Rm(a) => container::rm(&c, a).await,
            ContainerCmd::Exec(a) => container::exec(&c, a).await,
            ContainerCmd::Inspect(a) => system::inspect_kind(&c, a, Some("container")).await,
            ContainerCmd::Stats(a) => container::stats(&c, a).await,
            ContainerCmd::Wait(a) => container::wait(&c, a).await,
            ContainerCmd::Pause(a) => container::pause(&c, a, true).await,
            ContainerCmd::Unpause(a) => container::pause(&c, a, false).await,
            ContainerCmd::Prune(a) => container::prune(&c, a).await,
        },
        Command::Image(ic) => match ic {
            ImageCmd::Pull(a) => image::pull(&c, a).await,
            ImageCmd::Import(a) => image::import(&c, a).await,
            ImageCmd::Export(a) => image::export(&c, a).await,
            ImageCmd::Ls(a) => image::ls(&c, a).await,
            ImageCmd::Inspect(a) => system::inspect_kind(&c, a, Some("image")).await,
            ImageCmd::Rm(a) => image::rm(&c, a).await,
            ImageCmd::Prune(a) => image::prune(&c, a).await,
            ImageCmd::Tag(a) => image::tag(&c, a).await,
        },
        Command::Volume(vc) => match vc {
            VolumeCmd::Create(a) => volume::create(&c, a).await,
            VolumeCmd::Ls(a) => volume::ls(&c, a).await,
            VolumeCmd::Inspect(a) => system::inspect_kind(&c, a, Some("volume")).await,
            VolumeCmd::Rm(a) => volume::rm(&c, a).await,
            VolumeCmd::Prune(a) => volume::prune(&c, a).await,
        },
        Command::Swarm(sc) => match sc {
            SwarmCmd::Init(a) => swarm::init(&c, a).await,
            SwarmCmd::Join(a) => swarm::join(&c, a).await,
            SwarmCmd::JoinToken(a) => swarm::join_token(&c, a).await,
            SwarmCmd::Leave(a) => swarm::leave(&c, a).await,
            SwarmCmd::Update(a) => swarm::update(&c, a).await,
            SwarmCmd::Unlock => swarm::unlock(&c).await,
            SwarmCmd::UnlockKey(a) => swarm::unlock_key(&c, a).await,
            SwarmCmd::Ca(a) => swarm::ca(&c, a).await,
        },
        Command::Node(nc) => match nc {
            NodeCmd::Ls(a) => node::ls(&c, a).await,
            NodeCmd::Inspect(a) => node::inspect(&c, a).await,
            NodeCmd::Update(a) => node::update(&c, a).await,
            NodeCmd::Promote(a) => node::set_role(&c, a, "manager").await,
            NodeCmd::Demote(a) => node::set_role(&c, a, "worker").await,
            NodeCmd::Rm(a) => node::rm(&c, a).await,
            NodeCmd::Ps(a) => node::ps(&c, a).await,
        },
        Command::Service(sc) => service::run(&c, sc).await,
        Command::Daemon(_) | Command::Shim(_) | Command::ShimExec(_) => {
            unreachable!("handled in main before the CLI runtime starts")
        }
    }
}

/// Prints a per-item error the way docker does and remembers that one failed.
fn report(failed: &mut bool, e: anyhow::Error) {
    *failed = true;
    eprintln!("{}", describe(&e));
}

/// `DELETE`s `<prefix>/<name>?<query>` for each name, printing each removed name and each
/// error as docker's `rm` verbs do; returns whether any failed.
async fn delete_each(c: &Client, prefix: &str, names: &[String], query: &str) -> bool {
    let mut failed = false;
    for n in names {
        let path = format!("{prefix}/{}?{query}", q(n));
        match c
            .request(http::Method::DELETE, &path, crate::client::empty(), &[])
            .await
        {
            Ok(_) => println!("{n}"),
            Err(e) => report(&mut failed, e),
        }
    }
    failed
}

/// Asks a yes/no question on the terminal (prune confirmations).
fn confirm(question: &str) -> bool {
    use std::io::{BufRead, Write};
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if std::io::stdin().lock().read_line(&mut line).is_err() {
        return false;
    }
    matches!(line.trim(), "y" | "Y" | "yes" | "Yes")
}

/// A Unix time as Go's `time.Time.String()` prints it in the local zone, which is what
/// docker's `CreatedAt` fields show: `2024-01-01 00:00:00 +0000 UTC` (the zone
/// abbreviation, not chrono's `+00:00`).
fn go_local_time(unix: i64) -> String {
    let t = unix as libc::time_t;
    // SAFETY: an all-zero `tm` is a valid value (integers and a null `tm_zone`).
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: `localtime_r` reads `t` and writes only into `tm`, both live locals.
    let converted = unsafe { !libc::localtime_r(&t, &mut tm).is_null() };
    if !converted {
        let utc = chrono::DateTime::from_timestamp(unix, 0).unwrap_or_default();
        return utc.format("%Y-%m-%d %H:%M:%S +0000 UTC").to_string();
    }
    let zone = if tm.tm_zone.is_null() {
        String::new()
    } else {
        // SAFETY: a non-null `tm_zone` from `localtime_r` points to a NUL-terminated
        // abbreviation in libc's static time zone data, valid for the process lifetime.
        unsafe { std::ffi::CStr::from_ptr(tm.tm_zone) }
            .to_string_lossy()
            .into_owned()
    };
    let off = tm.tm_gmtoff / 60;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}{:02}{:02} {zone}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        if off < 0 { '-' } else { '+' },
        off.abs() / 60,
        off.abs() % 60,
    )
}

/// Query-string escaping for values put in API paths.
fn q(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
