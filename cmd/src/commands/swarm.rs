//! `swarm init|join|join-token|leave|update|unlock|unlock-key|ca`.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use crate::cli::{
    JoinTokenArgs, SwarmCaArgs, SwarmInitArgs, SwarmJoinArgs, SwarmLeaveArgs, SwarmUpdateArgs,
    UnlockKeyArgs,
};
use crate::client::Client;

/// Go-style durations (`5s`, `2160h`, `1h30m`, `500ms`) in nanoseconds.
pub fn parse_duration_ns(flag: &str, v: &str) -> Result<i64> {
    let d = humantime::parse_duration(v)
        .map_err(|e| anyhow!("invalid argument {v:?} for \"--{flag}\" flag: {e}"))?;
    Ok(d.as_nanos().min(i64::MAX as u128) as i64)
}

fn unlock_text(key: &str) -> String {
    format!(
        "To unlock a swarm manager after it restarts, run the `shoal swarm unlock`\ncommand and provide the following key:\n\n    {key}\n\nPlease remember to store this key in a password manager, since without it you\nwill not be able to restart the manager.\n"
    )
}

/// The join instructions for a role.
async fn join_instructions(c: &Client, role: &str) -> Result<String> {
    let sw: Value = c.get("/swarm").await?;
    let token = match role {
        "worker" => sw["JoinTokens"]["Worker"].as_str(),
        "manager" => sw["JoinTokens"]["Manager"].as_str(),
        _ => None,
    }
    .unwrap_or_default()
    .to_owned();
    let info: Value = c.get("/info").await?;
    let addr = info["Swarm"]["RemoteManagers"]
        .as_array()
        .and_then(|a| a.first())
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Ok(format!(
        "To add a {role} to this swarm, run the following command:\n\n    shoal swarm join --token {token} {addr}\n"
    ))
}

/// `swarm init`.
pub async fn init(c: &Client, a: SwarmInitArgs) -> Result<i32> {
    let spec = json!({
        "Orchestration": { "TaskHistoryRetentionLimit": a.task_history_limit },
        "Raft": { "SnapshotInterval": a.snapshot_interval, "KeepOldSnapshots": a.max_snapshots },
        "Dispatcher": { "HeartbeatPeriod": parse_duration_ns("dispatcher-heartbeat", &a.dispatcher_heartbeat)? },
        "CAConfig": { "NodeCertExpiry": parse_duration_ns("cert-expiry", &a.cert_expiry)? },
        "EncryptionConfig": { "AutoLockManagers": a.autolock },
    });
    let r: Value = c
        .post(
            "/swarm/init",
            &json!({
                "ListenAddr": a.listen_addr,
                "AdvertiseAddr": a.advertise_addr.unwrap_or_default(),
                "DefaultAddrPool": a.default_addr_pool,
                "SubnetSize": a.default_addr_pool_mask_length,
                "ForceNewCluster": a.force_new_cluster,
                "Spec": spec,
            }),
        )
        .await?;
    let node_id = r["NodeID"].as_str().unwrap_or_default();
    println!("Swarm initialized: current node ({node_id}) is now a manager.\n");
    println!("{}", join_instructions(c, "worker").await?);
    println!(
        "To add a manager to this swarm, run 'shoal swarm join-token manager' and follow the instructions.\n"
    );
    if let Some(k) = r["UnlockKey"].as_str().filter(|k| !k.is_empty()) {
        println!("{}", unlock_text(k));
    }
    Ok(0)
}

/// `swarm join`.
pub async fn join(c: &Client, a: SwarmJoinArgs) -> Result<i32> {
    c.post::<Value, _>(
        "/swarm/join",
        &json!({
            "ListenAddr": a.listen_addr,
            "AdvertiseAddr": a.advertise_addr.unwrap_or_default(),
            "RemoteAddrs": [a.remote],
            "JoinToken": a.token,
        }),
    )
    .await?;
    let info: Value = c.get("/info").await?;
    let role = if info["Swarm"]["ControlAvailable"].as_bool() == Some(true) {
        "manager"
    } else {
        "worker"
    };
    println!("This node joined a swarm as a {role}.");
    Ok(0)
}

/// `swarm join-token`.
pub async fn join_token(c: &Client, a: JoinTokenArgs) -> Result<i32> {
    if a.role != "worker" && a.role != "manager" {
        bail!("unknown role {}", a.role);
    }
    if a.rotate {
        let sw: Value = c.get("/swarm").await?;
        let version = sw["Version"]["Index"].as_u64().unwrap_or(0);
        let flag = if a.role == "worker" {
            "rotateWorkerToken"
        } else {
            "rotateManagerToken"
        };
        c.post::<Value, _>(
            &format!("/swarm/update?version={version}&{flag}=true"),
            &Value::Null,
        )
        .await?;
        if !a.quiet {
            println!("Successfully rotated {} join token.\n", a.role);
        }
    }
    if a.quiet {
        let sw: Value = c.get("/swarm").await?;
        let key = if a.role == "worker" {
            "Worker"
        } else {
            "Manager"
        };
        println!("{}", sw["JoinTokens"][key].as_str().unwrap_or_default());
    } else {
        println!("{}", join_instructions(c, &a.role).await?);
    }
    Ok(0)
}

/// `swarm leave`.
pub async fn leave(c: &Client, a: SwarmLeaveArgs) -> Result<i32> {
    c.post::<Value, _>(
        &format!("/swarm/leave?force={}", u8::from(a.force)),
        &Value::Null,
    )
    .await?;
    println!("Node left the swarm.");
    Ok(0)
}

/// `swarm update`.
pub async fn update(c: &Client, a: SwarmUpdateArgs) -> Result<i32> {
    let sw: Value = c.get("/swarm").await?;
    let version = sw["Version"]["Index"].as_u64().unwrap_or(0);
    let mut spec = sw["Spec"].clone();
    if let Some(v) = a.autolock {
        spec["EncryptionConfig"]["AutoLockManagers"] = json!(v);
    }
    if let Some(v) = &a.cert_expiry {
        spec["CAConfig"]["NodeCertExpiry"] = json!(parse_duration_ns("cert-expiry", v)?);
    }
    if let Some(v) = &a.dispatcher_heartbeat {
        spec["Dispatcher"]["HeartbeatPeriod"] =
            json!(parse_duration_ns("dispatcher-heartbeat", v)?);
    }
    if let Some(v) = a.task_history_limit {
        spec["Orchestration"]["TaskHistoryRetentionLimit"] = json!(v);
    }
    if let Some(v) = a.snapshot_interval {
        spec["Raft"]["SnapshotInterval"] = json!(v);
    }
    if let Some(v) = a.max_snapshots {
        spec["Raft"]["KeepOldSnapshots"] = json!(v);
    }
    let r: Value = c
        .post(&format!("/swarm/update?version={version}"), &spec)
        .await?;
    println!("Swarm updated.");
    if let Some(k) = r["UnlockKey"].as_str().filter(|k| !k.is_empty()) {
        println!("{}", unlock_text(k));
    }
    Ok(0)
}

/// `swarm unlock`: reads the key from the terminal (or stdin).
pub async fn unlock(c: &Client) -> Result<i32> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Please enter unlock key: ");
        std::io::stderr().flush()?;
    }
    let mut key = String::new();
    stdin.lock().read_line(&mut key)?;
    c.post::<Value, _>("/swarm/unlock", &json!({ "UnlockKey": key.trim() }))
        .await?;
    Ok(0)
}

/// `swarm unlock-key`.
pub async fn unlock_key(c: &Client, a: UnlockKeyArgs) -> Result<i32> {
    if a.rotate {
        let sw: Value = c.get("/swarm").await?;
        let version = sw["Version"]["Index"].as_u64().unwrap_or(0);
        c.post::<Value, _>(
            &format!("/swarm/update?version={version}&rotateManagerUnlockKey=true"),
            &Value::Null,
        )
        .await?;
        if !a.quiet {
            println!("Successfully rotated manager unlock key.\n");
        }
    }
    let r: Value = c.get("/swarm/unlockkey").await?;
    let key = r["UnlockKey"].as_str().unwrap_or_default();
    if a.quiet {
        println!("{key}");
    } else {
        println!("{}", unlock_text(key));
    }
    Ok(0)
}

/// `swarm ca`: prints the root CA; with `--rotate` starts a rotation and (unless `-d`)
/// waits until every node has a certificate of the new root.
pub async fn ca(c: &Client, a: SwarmCaArgs) -> Result<i32> {
    if a.rotate {
        c.post::<Value, _>("/swarm/ca/rotate", &Value::Null).await?;
        if !a.detach {
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            loop {
                let r: Value = c.get("/swarm/ca").await?;
                if r["RotationInProgress"].as_bool() != Some(true) {
                    break;
                }
                if std::time::Instant::now() > deadline {
                    bail!(
                        "the root rotation did not converge in 5 minutes (it continues in the background)"
                    );
                }
                if !a.quiet {
                    eprint!("\rrotating CA: waiting for every node to get a new certificate…");
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            if !a.quiet {
                eprintln!("\rrotating CA: done{}", " ".repeat(50));
            }
        }
    }
    let r: Value = c.get("/swarm/ca").await?;
    print!("{}", r["RootCA"].as_str().unwrap_or_default());
    Ok(0)
}
