//! `version`, `info`, `inspect`.

use anyhow::{Result, anyhow};
use serde_json::{Value, json};

use super::{describe, q};
use crate::cli::{FormatArgs, InspectArgs};
use crate::client::{self, Client};
use crate::format::{self, Template};

fn client_version() -> Value {
    json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": "1.0",
        "Os": "linux",
        "Arch": crate::api::go_arch(),
    })
}

/// `version`: client and daemon versions; fails (after printing the client part) when the
/// daemon cannot be reached.
pub async fn version(c: &Client, a: FormatArgs) -> Result<i32> {
    let server = c.get::<Value>("/version").await;
    let data = json!({
        "Client": client_version(),
        "Server": server.as_ref().ok(),
    });
    match a.format.as_deref() {
        Some("json") => println!("{data}"),
        Some(t) => {
            let t = Template::parse(&format::preprocess_format(t)).map_err(|e| anyhow!("{e}"))?;
            println!("{}", t.render(&data).map_err(|e| anyhow!("{e}"))?);
        }
        None => {
            let cv = &data["Client"];
            println!("Client:");
            println!(
                " Version:           {}",
                cv["Version"].as_str().unwrap_or_default()
            );
            println!(
                " API version:       {}",
                cv["ApiVersion"].as_str().unwrap_or_default()
            );
            println!(
                " OS/Arch:           linux/{}",
                cv["Arch"].as_str().unwrap_or_default()
            );
            if let Ok(s) = &server {
                println!();
                println!("Server: shoal");
                println!(" Engine:");
                println!(
                    "  Version:          {}",
                    s["Version"].as_str().unwrap_or_default()
                );
                println!(
                    "  API version:      {}",
                    s["ApiVersion"].as_str().unwrap_or_default()
                );
                println!(
                    "  OS/Arch:          linux/{}",
                    s["Arch"].as_str().unwrap_or_default()
                );
                println!(
                    "  Kernel Version:   {}",
                    s["KernelVersion"].as_str().unwrap_or_default()
                );
                println!(" libcontainer:");
                println!("  Version:          0.7.0");
            }
        }
    }
    match server {
        Ok(_) => Ok(0),
        Err(e) => Err(e),
    }
}

/// `info`.
pub async fn info(c: &Client, a: FormatArgs) -> Result<i32> {
    let i: Value = c.get("/info").await?;
    if let Some(f) = a.format.as_deref() {
        if f == "json" {
            println!("{i}");
        } else {
            let t = Template::parse(&format::preprocess_format(f)).map_err(|e| anyhow!("{e}"))?;
            println!("{}", t.render(&i).map_err(|e| anyhow!("{e}"))?);
        }
        return Ok(0);
    }
    let s = |k: &str| match &i[k] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    println!("Client:");
    println!(" Version:    {}", env!("CARGO_PKG_VERSION"));
    println!(" Context:    default ({})", c.url());
    println!();
    println!("Server:");
    println!(" Containers: {}", s("Containers"));
    println!("  Running: {}", s("ContainersRunning"));
    println!("  Paused: {}", s("ContainersPaused"));
    println!("  Stopped: {}", s("ContainersStopped"));
    println!(" Images: {}", s("Images"));
    println!(" Server Version: {}", s("ServerVersion"));
    println!(" Storage Driver: {}", s("Driver"));
    println!(" Logging Driver: {}", s("LoggingDriver"));
    println!(
        " Log Options: max-size={} max-file={}",
        format::bytes_size(i["LogMaxSize"].as_f64().unwrap_or(0.0)),
        s("LogMaxFiles")
    );
    println!(" Cgroup Driver: {}", s("CgroupDriver"));
    println!(" Cgroup Version: {}", s("CgroupVersion"));
    println!(" Cgroup Parent: {}", s("CgroupParent"));
    println!(" Runtime: libcontainer (in-process, no runc/crun)");
    print_swarm(&i["Swarm"]);
    println!(" WireGuard: {}", s("WireGuard"));
    println!(" Kernel Version: {}", s("KernelVersion"));
    println!(" Operating System: {}", s("OperatingSystem"));
    println!(" OSType: {}", s("OSType"));
    println!(" Architecture: {}", s("Architecture"));
    println!(" CPUs: {}", s("NCPU"));
    println!(
        " Total Memory: {}",
        format::bytes_size(i["MemTotal"].as_f64().unwrap_or(0.0))
    );
    println!(" Name: {}", s("Name"));
    println!(" Shoal Root Dir: {}", s("RootDir"));
    println!(" Run Dir: {}", s("RunDir"));
    println!(
        " Storage Used: {}",
        format::human_size(i["StorageUsed"].as_f64().unwrap_or(0.0))
    );
    let insecure: Vec<String> = i["InsecureRegistries"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    if let Some(labels) = i["Labels"].as_array().filter(|a| !a.is_empty()) {
        println!(" Labels:");
        for l in labels.iter().filter_map(Value::as_str) {
            println!("  {l}");
        }
    }
    if !insecure.is_empty() {
        println!(" Insecure Registries:");
        for r in insecure {
            println!("  {r}");
        }
    }
    Ok(0)
}

/// `inspect` of any object type.
pub async fn inspect(c: &Client, a: InspectArgs) -> Result<i32> {
    let kind = a.kind.clone();
    inspect_kind(c, a, kind.as_deref()).await
}

/// `inspect`, restricted to a type when `kind` is given (`container inspect` etc.).
pub async fn inspect_kind(c: &Client, a: InspectArgs, kind: Option<&str>) -> Result<i32> {
    let mut values = Vec::new();
    let mut failed = false;
    for n in &a.names {
        match find(c, n, kind).await {
            Ok(v) => values.push(v),
            Err(e) => {
                failed = true;
                eprintln!("{}", describe(&e));
            }
        }
    }
    match a.format.as_deref() {
        None | Some("") => print!("{}", format::inspect_json(&values)),
        Some("json") => print!("{}", format::inspect_json_compact(&values)),
        Some(f) => {
            let t = Template::parse(&format::preprocess_format(f))
                .map_err(|e| anyhow!("{e}"))?
                .missing_key_error();
            for v in &values {
                println!("{}", t.render(v).map_err(|e| anyhow!("{e}"))?);
            }
        }
    }
    Ok(i32::from(failed))
}

async fn find(c: &Client, name: &str, kind: Option<&str>) -> Result<Value> {
    let tries: &[&str] = match kind {
        Some("container") => &["container"],
        Some("image") => &["image"],
        Some("volume") => &["volume"],
        Some(other) => return Err(anyhow!("\"{other}\" is not a valid value for --type")),
        None => &["container", "image", "volume"],
    };
    for k in tries {
        let path = match *k {
            "container" => format!("/containers/{}/json", q(name)),
            "image" => format!("/images/{}/json", q(name)),
            _ => format!("/volumes/{}", q(name)),
        };
        match c.get::<Value>(&path).await {
            Ok(v) => return Ok(v),
            Err(e) if client::is_status(&e, http::StatusCode::NOT_FOUND) => continue,
            Err(e) => return Err(e),
        }
    }
    let what = match kind {
        Some("container") => "container",
        Some("image") => "image",
        Some("volume") => "volume",
        _ => "object",
    };
    Err(anyhow!("Error: No such {what}: {name}"))
}

/// Docker's Swarm section of `info`.
fn print_swarm(sw: &Value) {
    let state = sw["LocalNodeState"].as_str().unwrap_or("inactive");
    println!(" Swarm: {state}");
    if state == "inactive" {
        return;
    }
    let s = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    };
    println!("  NodeID: {}", s(&sw["NodeID"]));
    if state == "locked" {
        println!("  Error: the manager is locked: run `shoal swarm unlock`");
        return;
    }
    let manager = sw["ControlAvailable"].as_bool() == Some(true);
    println!("  Is Manager: {manager}");
    let c = &sw["Cluster"];
    if manager && c.is_object() {
        println!("  ClusterID: {}", s(&c["ID"]));
        println!("  Managers: {}", s(&sw["Managers"]));
        println!("  Nodes: {}", s(&sw["Nodes"]));
        let pools: Vec<String> = c["DefaultAddrPool"]
            .as_array()
            .map(|a| a.iter().map(&s).collect())
            .unwrap_or_default();
        println!("  Default Address Pool: {}", pools.join(" "));
        println!("  SubnetSize: {}", s(&c["SubnetSize"]));
        let spec = &c["Spec"];
        println!("  Orchestration:");
        println!(
            "   Task History Retention Limit: {}",
            s(&spec["Orchestration"]["TaskHistoryRetentionLimit"])
        );
        println!("  Raft:");
        println!(
            "   Snapshot Interval: {}",
            s(&spec["Raft"]["SnapshotInterval"])
        );
        println!(
            "   Number of Old Snapshots to Retain: {}",
            s(&spec["Raft"]["KeepOldSnapshots"])
        );
        println!("   Heartbeat Tick: {}", s(&spec["Raft"]["HeartbeatTick"]));
        println!("   Election Tick: {}", s(&spec["Raft"]["ElectionTick"]));
        let dur = |v: &Value| {
            let ns = v.as_i64().unwrap_or(0);
            format::human_duration(chrono::TimeDelta::nanoseconds(ns))
        };
        println!("  Dispatcher:");
        println!(
            "   Heartbeat Period: {}",
            dur(&spec["Dispatcher"]["HeartbeatPeriod"])
        );
        println!("  CA Configuration:");
        println!(
            "   Expiry Duration: {}",
            dur(&spec["CAConfig"]["NodeCertExpiry"])
        );
        if let Some(e) = c["CAExpiry"].as_str() {
            println!("   Root CA Expiry: {e}");
        }
        println!(
            "  Autolock Managers: {}",
            spec["EncryptionConfig"]["AutoLockManagers"]
                .as_bool()
                .unwrap_or(false)
        );
        println!(
            "  Root Rotation In Progress: {}",
            c["RootRotationInProgress"].as_bool().unwrap_or(false)
        );
    }
    println!("  Node Address: {}", s(&sw["NodeAddr"]));
    if let Some(m) = sw["RemoteManagers"].as_array() {
        println!("  Manager Addresses:");
        for a in m {
            println!("   {}", s(a));
        }
    }
}
