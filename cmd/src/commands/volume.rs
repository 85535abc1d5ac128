//! `volume create|ls|rm|prune`.

use anyhow::{Result, bail};
use serde_json::{Value, json};

use super::{confirm, delete_each};
use crate::cli::{VolumeCreateArgs, VolumeLsArgs, VolumePruneArgs, VolumeRmArgs};
use crate::client::Client;
use crate::format;

/// `volume create`.
pub async fn create(c: &Client, a: VolumeCreateArgs) -> Result<i32> {
    if a.name.is_some() && a.name_flag.is_some() && a.name != a.name_flag {
        bail!("conflicting options: either specify --name or provide positional arg, not both");
    }
    let labels: serde_json::Map<String, Value> = a
        .label
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_owned(), json!(v)),
            None => (l.clone(), json!("")),
        })
        .collect();
    let v: Value = c
        .post(
            "/volumes/create",
            &json!({ "Name": a.name.or(a.name_flag), "Driver": a.driver, "Labels": labels }),
        )
        .await?;
    println!("{}", v["Name"].as_str().unwrap_or_default());
    Ok(0)
}

/// `volume ls`.
pub async fn ls(c: &Client, a: VolumeLsArgs) -> Result<i32> {
    let r: Value = c.get("/volumes").await?;
    let vols = r["Volumes"].as_array().cloned().unwrap_or_default();
    if a.quiet {
        for v in &vols {
            println!("{}", v["Name"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let rows: Vec<Value> = vols
        .iter()
        .map(|v| {
            json!({
                "Driver": v["Driver"],
                "Name": v["Name"],
                "Mountpoint": v["Mountpoint"],
                "Scope": v["Scope"],
                "Labels": v["Labels"].as_object().map(|m| m.iter().map(|(k, x)| format!("{k}={}", x.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")).unwrap_or_default(),
                // Docker's usage data (absent unless asked for) and cluster-volume fields.
                "Links": v["UsageData"]["RefCount"].as_i64().map_or_else(|| "N/A".to_owned(), |n| n.to_string()),
                "Size": v["UsageData"]["Size"].as_f64().map_or_else(|| "N/A".to_owned(), |n| format::human_size_with_precision(n, 4)),
                "Group": "N/A",
                "Availability": "N/A",
                "Status": "N/A",
            })
        })
        .collect();
    super::container::print_rows(
        a.format.as_deref(),
        &rows,
        &[
            ("Driver", "DRIVER"),
            ("Name", "VOLUME NAME"),
            ("Mountpoint", "MOUNTPOINT"),
            ("Scope", "SCOPE"),
            ("Labels", "LABELS"),
            ("Links", "LINKS"),
            ("Size", "SIZE"),
            ("Group", "GROUP"),
            ("Availability", "AVAILABILITY"),
            ("Status", "STATUS"),
        ],
        "table {{.Driver}}\t{{.Name}}",
    )
}

/// `volume rm`.
pub async fn rm(c: &Client, a: VolumeRmArgs) -> Result<i32> {
    let query = format!("force={}", u8::from(a.force));
    Ok(i32::from(
        delete_each(c, "/volumes", &a.volumes, &query).await,
    ))
}

/// `volume prune`.
pub async fn prune(c: &Client, a: VolumePruneArgs) -> Result<i32> {
    let warning = if a.all {
        "WARNING! This will remove all local volumes not used by at least one container.\nAre you sure you want to continue?"
    } else {
        "WARNING! This will remove anonymous local volumes not used by at least one container.\nAre you sure you want to continue?"
    };
    if !a.force && !confirm(warning) {
        return Ok(0);
    }
    let r: Value = c
        .post(
            &format!("/volumes/prune?all={}", u8::from(a.all)),
            &json!({}),
        )
        .await?;
    if let Some(d) = r["VolumesDeleted"].as_array().filter(|d| !d.is_empty()) {
        println!("Deleted Volumes:");
        for v in d {
            println!("{}", v.as_str().unwrap_or_default());
        }
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        format::human_size(r["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(0)
}
