//! `run`, `create`, `start`, `ps`, `logs`, `exec`, `stop`, `kill`, `rm`, `stats`, `wait`,
//! `pause`, `unpause`, `container prune`.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, anyhow, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use http::{Method, StatusCode};
use serde_json::{Value, json};
use shoal_runtime::model::{Config, HealthConfig, HostConfig};

use super::{Exit, confirm, delete_each, describe, image, q, report};
use crate::cli::{
    ExecArgs, KillArgs, LogsArgs, NamesArgs, PruneArgs, PsArgs, RmArgs, RunArgs, StartArgs,
    StatsArgs, StopArgs,
};
use crate::client::{self, Client, demux};
use crate::format::{self, OutputFormat};

/// Reads `--env-file` files (KEY=VALUE lines, `#` comments, bare KEY taken from our env).
fn env_files(files: &[std::path::PathBuf]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f).with_context(|| format!("open {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_start();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line
                .split('=')
                .next()
                .is_some_and(|k| k.contains(char::is_whitespace))
            {
                bail!(
                    "{}: line {}: variable '{}' contains whitespaces",
                    f.display(),
                    n + 1,
                    line
                );
            }
            out.push(env_value(line));
        }
    }
    Ok(out)
}

/// `-e KEY` takes KEY's value from the CLI's environment, as docker does.
fn env_value(kv: &str) -> String {
    if kv.contains('=') {
        kv.to_owned()
    } else {
        match std::env::var(kv) {
            Ok(v) => format!("{kv}={v}"),
            Err(_) => kv.to_owned(),
        }
    }
}

fn labels(list: &[String]) -> BTreeMap<String, String> {
    list.iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (l.clone(), String::new()),
        })
        .collect()
}

/// A `--health-*` duration in nanoseconds; negative ones are refused as docker does.
fn health_duration(flag: &str, v: &Option<String>) -> Result<i64> {
    match v.as_deref().map(str::trim) {
        None | Some("0") => Ok(0),
        Some(d) if d.starts_with('-') => bail!("--{flag} cannot be negative"),
        Some(d) => super::swarm::parse_duration_ns(flag, d),
    }
}

/// The health check from `--health-*` / `--no-healthcheck` (docker's rules): `None` leaves
/// the image's; an empty test with timings keeps the image's test.
fn health_config(a: &RunArgs) -> Result<Option<HealthConfig>> {
    let interval = health_duration("health-interval", &a.health_interval)?;
    let timeout = health_duration("health-timeout", &a.health_timeout)?;
    let start_period = health_duration("health-start-period", &a.health_start_period)?;
    let start_interval = health_duration("health-start-interval", &a.health_start_interval)?;
    let retries = a.health_retries.unwrap_or(0);
    let cmd = a.health_cmd.clone().unwrap_or_default();
    let any = !cmd.is_empty()
        || interval != 0
        || timeout != 0
        || start_period != 0
        || start_interval != 0
        || retries != 0;
    if a.no_healthcheck {
        if any {
            bail!("--no-healthcheck conflicts with --health-* options");
        }
        return Ok(Some(HealthConfig {
            test: vec!["NONE".to_owned()],
            ..HealthConfig::default()
        }));
    }
    if !any {
        return Ok(None);
    }
    if retries < 0 {
        bail!("--health-retries cannot be negative");
    }
    Ok(Some(HealthConfig {
        test: if cmd.is_empty() {
            Vec::new()
        } else {
            vec!["CMD-SHELL".to_owned(), cmd]
        },
        interval,
        timeout,
        start_period,
        start_interval,
        retries,
    }))
}

/// Builds the create request body from `run`/`create` flags.
fn create_body(a: &RunArgs) -> Result<(String, Value)> {
    let mut it = a.image_and_command.iter();
    let image = it
        .next()
        .cloned()
        .ok_or_else(|| anyhow!("\"run\" requires at least 1 argument"))?;
    let cmd: Vec<String> = it.cloned().collect();
    let mut env = env_files(&a.env_file)?;
    env.extend(a.env.iter().map(|e| env_value(e)));
    let config = Config {
        hostname: a.hostname.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        env,
        cmd: (!cmd.is_empty()).then_some(cmd),
        image: image.clone(),
        working_dir: a.workdir.clone().unwrap_or_default(),
        entrypoint: a.entrypoint.as_ref().map(|e| {
            if e.is_empty() {
                Vec::new()
            } else {
                vec![e.clone()]
            }
        }),
        labels: labels(&a.label),
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        healthcheck: health_config(a)?,
        attach_stdout: !a.detach,
        attach_stderr: !a.detach,
        ..Config::default()
    };
    let mut tmpfs = BTreeMap::new();
    for t in &a.tmpfs {
        let (target, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
        tmpfs.insert(target.to_owned(), opts.to_owned());
    }
    let memory = match &a.memory {
        Some(m) => format::parse_bytes(m)
            .map_err(|e| anyhow!("invalid argument {m:?} for \"-m, --memory\" flag: {e}"))?
            as i64,
        None => 0,
    };
    if memory != 0 && memory < 6 * 1024 * 1024 {
        bail!("Minimum memory limit allowed is 6MB");
    }
    let nano_cpus = match a.cpus {
        Some(c) if c < 0.0 => bail!(
            "invalid argument \"{c}\" for \"--cpus\" flag: range of CPUs is from 0.01 to the number of CPUs"
        ),
        Some(c) => (c * 1e9) as i64,
        None => 0,
    };
    let host = HostConfig {
        binds: a.volume.clone(),
        tmpfs,
        network_mode: a.network.clone(),
        auto_remove: a.rm,
        readonly_rootfs: a.read_only,
        cap_add: a.cap_add.clone(),
        cap_drop: a.cap_drop.clone(),
        memory,
        nano_cpus,
        pids_limit: a.pids_limit,
        ..HostConfig::default()
    };
    let mut body = serde_json::to_value(&config)?;
    if let Some(o) = body.as_object_mut() {
        o.insert("HostConfig".into(), serde_json::to_value(&host)?);
    }
    Ok((image, body))
}

/// `run` and `create`.
pub async fn run(c: &Client, a: RunArgs, create_only: bool) -> Result<i32> {
    let (image, body) = create_body(&a).map_err(|e| Exit {
        code: 125,
        message: format!("shoal: {}", describe(&e)),
    })?;
    let path = match &a.name {
        Some(n) => format!("/containers/create?name={}", q(n)),
        None => "/containers/create".to_owned(),
    };
    let created: Value = match c.post(&path, &body).await {
        Ok(v) => v,
        Err(e)
            if client::is_status(&e, StatusCode::NOT_FOUND)
                && describe(&e).contains("No such image") =>
        {
            eprintln!("Unable to find image '{image}' locally");
            image::pull_quietly_to_stderr(c, &image, a.quiet)
                .await
                .map_err(|e| Exit {
                    code: 125,
                    message: format!("shoal: {}", describe(&e)),
                })?;
            c.post(&path, &body).await.map_err(|e| Exit {
                code: 125,
                message: format!("shoal: {}", describe(&e)),
            })?
        }
        Err(e) => {
            return Err(Exit {
                code: 125,
                message: format!("shoal: {}", describe(&e)),
            }
            .into());
        }
    };
    let id = created["Id"].as_str().unwrap_or_default().to_owned();
    if create_only {
        println!("{id}");
        return Ok(0);
    }
    if a.detach {
        c.post_empty(&format!("/containers/{id}/start"))
            .await
            .map_err(start_error)?;
        println!("{id}");
        return Ok(0);
    }
    attach_start(c, &id).await
}

/// Maps a failed start to Docker's exit codes.
fn start_error(e: anyhow::Error) -> anyhow::Error {
    let msg = describe(&e);
    let code = if msg.contains("not found") || msg.contains("No such file") {
        127
    } else if msg.contains("permission") || msg.contains("Permission denied") {
        126
    } else {
        125
    };
    Exit {
        code,
        message: format!("shoal: {msg}"),
    }
    .into()
}

/// Starts a container attached: streams its output, forwards signals, returns its exit code.
async fn attach_start(c: &Client, id: &str) -> Result<i32> {
    let resp = c
        .request(
            Method::POST,
            &format!("/containers/{id}/start?attach=1"),
            client::empty(),
            &[],
        )
        .await
        .map_err(start_error)?;
    let proxy = tokio::spawn(proxy_signals(c.clone(), id.to_owned()));
    let code = copy_frames(resp).await;
    proxy.abort();
    code
}

/// Forwards the CLI's SIGINT/SIGTERM/SIGHUP/SIGQUIT/SIGUSR1/SIGUSR2 to the container
/// (docker run's `--sig-proxy`).
async fn proxy_signals(c: Client, id: String) {
    use tokio::signal::unix::{SignalKind, signal};
    let kinds = [
        (SignalKind::interrupt(), "SIGINT"),
        (SignalKind::terminate(), "SIGTERM"),
        (SignalKind::hangup(), "SIGHUP"),
        (SignalKind::quit(), "SIGQUIT"),
        (SignalKind::user_defined1(), "SIGUSR1"),
        (SignalKind::user_defined2(), "SIGUSR2"),
    ];
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    for (kind, name) in kinds {
        if let Ok(mut s) = signal(kind) {
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(name).is_err() {
                        break;
                    }
                }
            });
        }
    }
    while let Some(name) = rx.recv().await {
        let _ = c
            .post_empty(&format!("/containers/{id}/kill?signal={name}"))
            .await;
    }
}

/// Copies a multiplexed stream to stdout/stderr; returns the exit code of its status frame.
async fn copy_frames(resp: hyper::Response<hyper::body::Incoming>) -> Result<i32> {
    let mut frames = Box::pin(demux(resp));
    let mut code = None;
    while let Some(f) = frames.next().await {
        let f = f?;
        match f.stream {
            1 => {
                let mut o = std::io::stdout().lock();
                o.write_all(&f.data)?;
                o.flush()?;
            }
            2 => {
                let mut e = std::io::stderr().lock();
                e.write_all(&f.data)?;
                e.flush()?;
            }
            3 => {
                let v: Value = serde_json::from_slice(&f.data).unwrap_or(Value::Null);
                let err = v["Error"].as_str().unwrap_or_default();
                if !err.is_empty() && v["StatusCode"].as_i64() == Some(125) {
                    return Err(Exit {
                        code: 125,
                        message: format!("shoal: {err}"),
                    }
                    .into());
                }
                code = v["StatusCode"].as_i64();
            }
            _ => {}
        }
    }
    code.map(|c| c as i32)
        .ok_or_else(|| anyhow!("the daemon ended the stream without an exit status"))
}

/// `start`.
pub async fn start(c: &Client, a: StartArgs) -> Result<i32> {
    if a.attach {
        if a.containers.len() > 1 {
            bail!("you cannot start and attach multiple containers at once");
        }
        return attach_start(c, &a.containers[0]).await;
    }
    let mut failed = false;
    for n in &a.containers {
        match c.post_empty(&format!("/containers/{}/start", q(n))).await {
            Ok(()) => println!("{n}"),
            Err(e) => report(&mut failed, e),
        }
    }
    if failed { bail_quiet() } else { Ok(0) }
}

/// Returns exit code 1 after per-item errors were already printed.
fn bail_quiet() -> Result<i32> {
    Ok(1)
}

const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Ports", "PORTS"),
    ("State", "STATE"),
    ("Status", "STATUS"),
    ("Size", "SIZE"),
    ("Names", "NAMES"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Networks", "NETWORKS"),
];

const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";

/// Docker's `ps --format` fields of a container summary.
fn ps_row(s: &Value, trunc: bool, now: DateTime<Utc>) -> Value {
    let id = s["Id"].as_str().unwrap_or_default();
    let created = DateTime::from_timestamp(s["Created"].as_i64().unwrap_or(0), 0).unwrap_or(now);
    let command = s["Command"].as_str().unwrap_or_default();
    let labels = s["Labels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let mounts = s["Mounts"]
        .as_array()
        .map(|m| {
            m.iter()
                .map(|x| {
                    x["Name"]
                        .as_str()
                        .or(x["Source"].as_str())
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    // Every shoal volume uses the "local" driver.
    let local_volumes = s["Mounts"].as_array().map_or(0, |m| {
        m.iter()
            .filter(|x| x["Type"] == "volume" || x["Driver"] == "local")
            .count()
    });
    let names: Vec<String> = s["Names"]
        .as_array()
        .map(|n| {
            n.iter()
                .filter_map(|x| x.as_str())
                .map(|x| x.trim_start_matches('/').to_owned())
                .collect()
        })
        .unwrap_or_default();
    json!({
        "ID": if trunc { format::short_id(id) } else { id.to_owned() },
        "Image": s["Image"],
        "Command": format::quote_command(command, &[], trunc),
        "CreatedAt": super::go_local_time(created.timestamp()),
        "RunningFor": format::ago(created, now),
        "Ports": "",
        "State": s["State"],
        "Status": s["Status"],
        "Size": "0B",
        "Names": names.join(","),
        "Labels": labels,
        "Mounts": mounts,
        "LocalVolumes": local_volumes.to_string(),
        "Networks": s["HostConfig"]["NetworkMode"],
    })
}

fn matches_filter(s: &Value, f: &str) -> Result<bool> {
    let (k, v) = f
        .split_once('=')
        .ok_or_else(|| anyhow!("bad format of filter (expected name=value)"))?;
    Ok(match k {
        "id" => s["Id"].as_str().is_some_and(|id| id.starts_with(v)),
        "name" => s["Names"].as_array().is_some_and(|n| {
            n.iter()
                .filter_map(|x| x.as_str())
                .any(|x| x.trim_start_matches('/').contains(v))
        }),
        "status" => s["State"].as_str() == Some(v),
        "label" => match v.split_once('=') {
            Some((lk, lv)) => s["Labels"][lk].as_str() == Some(lv),
            None => s["Labels"].get(v).is_some(),
        },
        "ancestor" => {
            s["Image"].as_str() == Some(v)
                || s["ImageID"].as_str().is_some_and(|i| {
                    i.trim_start_matches("sha256:")
                        .starts_with(v.trim_start_matches("sha256:"))
                })
        }
        "exited" => {
            s["State"].as_str() == Some("exited")
                && s["Status"]
                    .as_str()
                    .is_some_and(|st| st.contains(&format!("({v})")))
        }
        other => bail!("invalid filter '{other}'"),
    })
}

/// `ps` / `container ls`.
pub async fn ls(c: &Client, a: PsArgs) -> Result<i32> {
    let all = a.all || a.last.is_some() || a.latest;
    let mut list: Vec<Value> = c
        .get(&format!("/containers/json?all={}", u8::from(all)))
        .await?;
    for f in &a.filter {
        let mut kept = Vec::new();
        for s in list {
            if matches_filter(&s, f)? {
                kept.push(s);
            }
        }
        list = kept;
    }
    if a.latest {
        list.truncate(1);
    } else if let Some(n) = a.last.filter(|n| *n >= 0) {
        list.truncate(n as usize);
    }
    let trunc = !a.no_trunc;
    if a.quiet {
        for s in &list {
            let id = s["Id"].as_str().unwrap_or_default();
            println!(
                "{}",
                if trunc {
                    format::short_id(id)
                } else {
                    id.to_owned()
                }
            );
        }
        return Ok(0);
    }
    let now = Utc::now();
    let rows: Vec<Value> = list.iter().map(|s| ps_row(s, trunc, now)).collect();
    print_rows(a.format.as_deref(), &rows, PS_HEADERS, PS_TABLE)
}

/// Renders rows with `--format` (or the default table).
pub fn print_rows(
    fmt: Option<&str>,
    rows: &[Value],
    headers: &[(&str, &str)],
    table: &str,
) -> Result<i32> {
    let f = OutputFormat::parse(fmt).map_err(|e| anyhow!("{e}"))?;
    let out = f.render(rows, headers, table).map_err(|e| anyhow!("{e}"))?;
    print!("{out}");
    Ok(0)
}

/// `logs`.
pub async fn logs(c: &Client, a: LogsArgs) -> Result<i32> {
    let mut path = format!(
        "/containers/{}/logs?stdout=1&stderr=1&tail={}",
        q(&a.container),
        q(&a.tail)
    );
    if a.follow {
        path.push_str("&follow=1");
    }
    if a.timestamps {
        path.push_str("&timestamps=1");
    }
    if let Some(s) = &a.since {
        path.push_str(&format!("&since={}", q(s)));
    }
    if let Some(u) = &a.until {
        path.push_str(&format!("&until={}", q(u)));
    }
    let resp = c.request(Method::GET, &path, client::empty(), &[]).await?;
    let mut frames = Box::pin(demux(resp));
    while let Some(f) = frames.next().await {
        let f = f?;
        if f.stream == 2 {
            let mut e = std::io::stderr().lock();
            e.write_all(&f.data)?;
            e.flush()?;
        } else {
            let mut o = std::io::stdout().lock();
            o.write_all(&f.data)?;
            o.flush()?;
        }
    }
    Ok(0)
}

/// `exec`: streams the process's output and exits with its code.
pub async fn exec(c: &Client, a: ExecArgs) -> Result<i32> {
    let mut it = a.container_and_command.into_iter();
    let container = it.next().unwrap_or_default();
    let cmd: Vec<String> = it.collect();
    let mut env = env_files(&a.env_file)?;
    env.extend(a.env.iter().map(|e| env_value(e)));
    let body = json!({
        "Cmd": cmd,
        "Env": env,
        "User": a.user,
        "WorkingDir": a.workdir,
        "Detach": a.detach,
    });
    let resp = c
        .request(
            Method::POST,
            &format!("/containers/{}/exec", q(&container)),
            client::json_body(&body)?,
            &[("content-type", "application/json".into())],
        )
        .await?;
    if a.detach {
        return Ok(0);
    }
    copy_frames(resp).await
}

/// `stop`.
pub async fn stop(c: &Client, a: StopArgs) -> Result<i32> {
    let mut failed = false;
    for n in &a.containers {
        let mut path = format!("/containers/{}/stop?", q(n));
        if let Some(t) = a.time {
            path.push_str(&format!("t={t}&"));
        }
        if let Some(s) = &a.signal {
            path.push_str(&format!("signal={}", q(s)));
        }
        match c.post_empty(&path).await {
            Ok(()) => println!("{n}"),
            Err(e) => report(&mut failed, e),
        }
    }
    if failed { bail_quiet() } else { Ok(0) }
}

/// `kill`.
pub async fn kill(c: &Client, a: KillArgs) -> Result<i32> {
    let mut failed = false;
    for n in &a.containers {
        match c
            .post_empty(&format!(
                "/containers/{}/kill?signal={}",
                q(n),
                q(&a.signal)
            ))
            .await
        {
            Ok(()) => println!("{n}"),
            Err(e) => report(&mut failed, e),
        }
    }
    if failed { bail_quiet() } else { Ok(0) }
}

/// `rm`.
pub async fn rm(c: &Client, a: RmArgs) -> Result<i32> {
    let query = format!("force={}&v={}", u8::from(a.force), u8::from(a.volumes));
    if delete_each(c, "/containers", &a.containers, &query).await {
        bail_quiet()
    } else {
        Ok(0)
    }
}

/// `wait`: prints each container's exit code.
pub async fn wait(c: &Client, a: NamesArgs) -> Result<i32> {
    let mut failed = false;
    for n in &a.containers {
        match c
            .post::<Value, _>(&format!("/containers/{}/wait", q(n)), &json!({}))
            .await
        {
            Ok(v) => println!("{}", v["StatusCode"].as_i64().unwrap_or(-1)),
            Err(e) => report(&mut failed, e),
        }
    }
    if failed { bail_quiet() } else { Ok(0) }
}

/// `pause` / `unpause`.
pub async fn pause(c: &Client, a: NamesArgs, on: bool) -> Result<i32> {
    let verb = if on { "pause" } else { "unpause" };
    let mut failed = false;
    for n in &a.containers {
        match c.post_empty(&format!("/containers/{}/{verb}", q(n))).await {
            Ok(()) => println!("{n}"),
            Err(e) => report(&mut failed, e),
        }
    }
    if failed { bail_quiet() } else { Ok(0) }
}

/// `container prune`.
pub async fn prune(c: &Client, a: PruneArgs) -> Result<i32> {
    if !a.force
        && !confirm(
            "WARNING! This will remove all stopped containers.\nAre you sure you want to continue?",
        )
    {
        return Ok(0);
    }
    let r: Value = c.post("/containers/prune", &json!({})).await?;
    let deleted: Vec<&str> = r["ContainersDeleted"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    if !deleted.is_empty() {
        println!("Deleted Containers:");
        for d in deleted {
            println!("{d}");
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        format::human_size(r["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(0)
}

const STATS_HEADERS: &[(&str, &str)] = &[
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

const STATS_TABLE: &str = "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

/// Docker's stats row from one stats object.
fn stats_row(s: &Value, trunc: bool) -> Value {
    let cpu = s["cpu_stats"]["cpu_usage"]["total_usage"]
        .as_f64()
        .unwrap_or(0.0);
    let pcpu = s["precpu_stats"]["cpu_usage"]["total_usage"]
        .as_f64()
        .unwrap_or(0.0);
    let sys = s["cpu_stats"]["system_cpu_usage"].as_f64().unwrap_or(0.0);
    let psys = s["precpu_stats"]["system_cpu_usage"]
        .as_f64()
        .unwrap_or(0.0);
    let ncpu = s["cpu_stats"]["online_cpus"].as_f64().unwrap_or(1.0);
    let cpu_pct = if sys > psys && cpu >= pcpu {
        (cpu - pcpu) / (sys - psys) * ncpu * 100.0
    } else {
        0.0
    };
    let mem = s["memory_stats"]["usage"].as_f64().unwrap_or(0.0);
    let limit = s["memory_stats"]["limit"].as_f64().unwrap_or(0.0);
    let mem_pct = if limit > 0.0 {
        mem / limit * 100.0
    } else {
        0.0
    };
    let id = s["id"].as_str().unwrap_or_default();
    json!({
        "Container": if trunc { format::short_id(id) } else { id.to_owned() },
        "ID": if trunc { format::short_id(id) } else { id.to_owned() },
        "Name": s["name"].as_str().unwrap_or_default().trim_start_matches('/'),
        "CPUPerc": format!("{cpu_pct:.2}%"),
        "MemUsage": format!("{} / {}", format::bytes_size(mem), format::bytes_size(limit)),
        "MemPerc": format!("{mem_pct:.2}%"),
        "NetIO": "0B / 0B",
        "BlockIO": format!(
            "{} / {}",
            format::human_size(s["blkio_stats"]["read"].as_f64().unwrap_or(0.0)),
            format::human_size(s["blkio_stats"]["write"].as_f64().unwrap_or(0.0))
        ),
        "PIDs": s["pids_stats"]["current"].as_u64().unwrap_or(0).to_string(),
    })
}

/// `stats`: one sample per container (`--no-stream`), or a refreshing table.
pub async fn stats(c: &Client, a: StatsArgs) -> Result<i32> {
    loop {
        let names: Vec<String> = if a.containers.is_empty() {
            let list: Vec<Value> = c
                .get(&format!("/containers/json?all={}", u8::from(a.all)))
                .await?;
            list.iter()
                .filter_map(|s| s["Id"].as_str().map(str::to_owned))
                .collect()
        } else {
            a.containers.clone()
        };
        let paths: Vec<String> = names
            .iter()
            .map(|n| format!("/containers/{}/stats?stream=0", q(n)))
            .collect();
        let mut samples =
            futures_util::future::join_all(paths.iter().map(|p| c.get::<Value>(p))).await;
        let mut rows = Vec::new();
        let mut failed = false;
        for (n, s) in names.iter().zip(samples.drain(..)) {
            match s {
                Ok(v) => rows.push(stats_row(&v, !a.no_trunc)),
                Err(e) if !a.containers.is_empty() => {
                    failed = true;
                    eprintln!(
                        "{}",
                        describe(&e.context(format!("cannot get stats of {n}")))
                    );
                }
                Err(_) => {}
            }
        }
        if !a.no_stream {
            // Clear the screen and redraw, as docker stats does.
            print!("\x1b[2J\x1b[H");
        }
        print_rows(a.format.as_deref(), &rows, STATS_HEADERS, STATS_TABLE)?;
        if a.no_stream {
            return Ok(i32::from(failed));
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_args(v: &[&str]) -> RunArgs {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(v).unwrap();
        match cli.command {
            crate::cli::Command::Run(r) => r,
            _ => panic!(),
        }
    }

    #[test]
    fn create_body_from_flags() {
        let a = run_args(&[
            "shoal",
            "run",
            "--name",
            "w",
            "-e",
            "A=1",
            "-m",
            "32m",
            "--cpus",
            "1.5",
            "--pids-limit",
            "20",
            "--read-only",
            "--tmpfs",
            "/run:size=1m",
            "-v",
            "data:/d:ro",
            "--entrypoint",
            "/bin/sh",
            "--stop-signal",
            "SIGUSR1",
            "--stop-timeout",
            "3",
            "--cap-drop",
            "ALL",
            "busybox",
            "-c",
            "true",
        ]);
        let (image, b) = create_body(&a).unwrap();
        assert_eq!(image, "busybox");
        assert_eq!(b["Image"], "busybox");
        assert_eq!(b["Cmd"], json!(["-c", "true"]));
        assert_eq!(b["Entrypoint"], json!(["/bin/sh"]));
        assert_eq!(b["Env"], json!(["A=1"]));
        assert_eq!(b["StopSignal"], "SIGUSR1");
        assert_eq!(b["StopTimeout"], 3);
        let h = &b["HostConfig"];
        assert_eq!(h["Memory"], 32 * 1024 * 1024);
        assert_eq!(h["NanoCpus"], 1_500_000_000i64);
        assert_eq!(h["PidsLimit"], 20);
        assert_eq!(h["ReadonlyRootfs"], true);
        assert_eq!(h["Tmpfs"]["/run"], "size=1m");
        assert_eq!(h["Binds"], json!(["data:/d:ro"]));
        assert_eq!(h["CapDrop"], json!(["ALL"]));
        assert_eq!(h["NetworkMode"], "none");
    }

    #[test]
    fn health_flags() {
        let a = run_args(&[
            "shoal",
            "run",
            "--health-cmd",
            "test -f /ok",
            "--health-interval",
            "200ms",
            "--health-timeout",
            "1s",
            "--health-retries",
            "5",
            "--health-start-period",
            "1m30s",
            "--health-start-interval",
            "100ms",
            "busybox",
        ]);
        let (_, b) = create_body(&a).unwrap();
        assert_eq!(
            b["Healthcheck"],
            json!({"Test": ["CMD-SHELL", "test -f /ok"], "Interval": 200_000_000i64,
                   "Timeout": 1_000_000_000i64, "StartPeriod": 90_000_000_000i64,
                   "StartInterval": 100_000_000i64, "Retries": 5})
        );
        // Timings alone keep the image's test.
        let a = run_args(&["shoal", "run", "--health-retries", "2", "busybox"]);
        let (_, b) = create_body(&a).unwrap();
        assert_eq!(b["Healthcheck"], json!({"Test": [], "Retries": 2}));
        // No flags: no health check in the request.
        let (_, b) = create_body(&run_args(&["shoal", "run", "busybox"])).unwrap();
        assert!(b.get("Healthcheck").is_none(), "{b}");
        let (_, b) =
            create_body(&run_args(&["shoal", "run", "--no-healthcheck", "busybox"])).unwrap();
        assert_eq!(b["Healthcheck"], json!({"Test": ["NONE"]}));
        let err = |v: &[&str]| create_body(&run_args(v)).unwrap_err().to_string();
        assert_eq!(
            err(&[
                "shoal",
                "run",
                "--no-healthcheck",
                "--health-cmd",
                "true",
                "busybox"
            ]),
            "--no-healthcheck conflicts with --health-* options"
        );
        assert_eq!(
            err(&["shoal", "run", "--health-interval", "-1s", "busybox"]),
            "--health-interval cannot be negative"
        );
        assert_eq!(
            err(&["shoal", "run", "--health-retries", "-1", "busybox"]),
            "--health-retries cannot be negative"
        );
        assert!(
            err(&["shoal", "run", "--health-timeout", "soon", "busybox"])
                .contains("invalid argument \"soon\" for \"--health-timeout\" flag"),
        );
    }

    #[test]
    fn tiny_memory_is_refused() {
        let a = run_args(&["shoal", "run", "-m", "1k", "busybox"]);
        assert!(
            create_body(&a)
                .unwrap_err()
                .to_string()
                .contains("Minimum memory")
        );
    }

    #[test]
    fn stats_percentages() {
        let s = json!({
            "id": "0123456789abcdef", "name": "/web",
            "cpu_stats": {"cpu_usage": {"total_usage": 2.0e9}, "system_cpu_usage": 10.0e9, "online_cpus": 2},
            "precpu_stats": {"cpu_usage": {"total_usage": 1.0e9}, "system_cpu_usage": 8.0e9},
            "memory_stats": {"usage": 1048576.0, "limit": 4194304.0},
            "pids_stats": {"current": 3}, "blkio_stats": {"read": 0, "write": 0}
        });
        let r = stats_row(&s, true);
        assert_eq!(r["CPUPerc"], "100.00%");
        assert_eq!(r["MemPerc"], "25.00%");
        assert_eq!(r["MemUsage"], "1MiB / 4MiB");
        assert_eq!(r["Name"], "web");
        assert_eq!(r["PIDs"], "3");
    }

    #[test]
    fn filters() {
        let s = json!({"Id": "abc123", "Names": ["/web"], "State": "exited", "Status": "Exited (3) 1 second ago", "Labels": {"a": "b"}, "Image": "busybox"});
        assert!(matches_filter(&s, "status=exited").unwrap());
        assert!(matches_filter(&s, "name=we").unwrap());
        assert!(matches_filter(&s, "label=a=b").unwrap());
        assert!(matches_filter(&s, "exited=3").unwrap());
        assert!(!matches_filter(&s, "id=zz").unwrap());
        assert!(matches_filter(&s, "bogus=1").is_err());
    }
}
