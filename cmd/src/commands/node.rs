//! `node ls|inspect|update|promote|demote|rm`.

use anyhow::{Result, anyhow};
use http::StatusCode;
use serde_json::{Value, json};

use super::{delete_each, q, report};
use crate::cli::{NodeInspectArgs, NodeLsArgs, NodeRmArgs, NodeUpdateArgs, NodesArgs};
use crate::client::{Client, is_status};
use crate::format::{self, Template};

const NODE_HEADERS: &[(&str, &str)] = &[
    ("ID", "ID"),
    ("Self", "SELF"),
    ("Hostname", "HOSTNAME"),
    ("Status", "STATUS"),
    ("Availability", "AVAILABILITY"),
    ("ManagerStatus", "MANAGER STATUS"),
    ("EngineVersion", "ENGINE VERSION"),
    ("TLSStatus", "TLS STATUS"),
];

const NODE_TABLE: &str = "table {{.ID}}\t{{.Hostname}}\t{{.Status}}\t{{.Availability}}\t{{.ManagerStatus}}\t{{.EngineVersion}}";

fn title(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// Docker's `node ls` row fields.
fn row(n: &Value) -> Value {
    let is_self = n["Self"].as_bool() == Some(true);
    let id = n["ID"].as_str().unwrap_or_default();
    json!({
        "ID": if is_self { format!("{id} *") } else { id.to_owned() },
        "Self": is_self,
        "Hostname": n["Description"]["Hostname"],
        "Status": title(n["Status"]["State"].as_str().unwrap_or_default()),
        "Availability": title(n["Spec"]["Availability"].as_str().unwrap_or_default()),
        "ManagerStatus": n["ManagerStatusText"],
        "EngineVersion": n["Description"]["Engine"]["EngineVersion"],
        "TLSStatus": "Ready",
    })
}

fn matches(n: &Value, f: &str) -> Result<bool> {
    let (k, v) = f
        .split_once('=')
        .ok_or_else(|| anyhow!("bad format of filter (expected name=value)"))?;
    Ok(match k {
        "id" => n["ID"].as_str().is_some_and(|i| i.starts_with(v)),
        "name" => n["Description"]["Hostname"]
            .as_str()
            .is_some_and(|h| h.contains(v)),
        "role" => n["Spec"]["Role"].as_str() == Some(v),
        "membership" => v == "accepted",
        other => return Err(anyhow!("invalid filter '{other}'")),
    })
}

/// `node ls`.
pub async fn ls(c: &Client, a: NodeLsArgs) -> Result<i32> {
    let mut nodes: Vec<Value> = c.get("/nodes").await?;
    for f in &a.filter {
        let mut kept = Vec::new();
        for n in nodes {
            if matches(&n, f)? {
                kept.push(n);
            }
        }
        nodes = kept;
    }
    if a.quiet {
        for n in &nodes {
            println!("{}", n["ID"].as_str().unwrap_or_default());
        }
        return Ok(0);
    }
    let rows: Vec<Value> = nodes.iter().map(row).collect();
    super::container::print_rows(a.format.as_deref(), &rows, NODE_HEADERS, NODE_TABLE)
}

fn pretty(n: &Value) -> String {
    let mut o = String::new();
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    o.push_str(&format!("ID:\t\t\t{}\n", s(&n["ID"])));
    if let Some(l) = n["Spec"]["Labels"].as_object().filter(|l| !l.is_empty()) {
        o.push_str("Labels:\n");
        for (k, v) in l {
            o.push_str(&format!(" - {k}={}\n", v.as_str().unwrap_or_default()));
        }
    }
    o.push_str(&format!(
        "Hostname:\t\t{}\n",
        s(&n["Description"]["Hostname"])
    ));
    o.push_str(&format!("Joined at:\t\t{}\n", s(&n["CreatedAt"])));
    o.push_str("Status:\n");
    o.push_str(&format!(
        " State:\t\t\t{}\n",
        title(&s(&n["Status"]["State"]))
    ));
    if let Some(m) = n["Status"]["Message"].as_str().filter(|m| !m.is_empty()) {
        o.push_str(&format!(" Message:\t\t{m}\n"));
    }
    o.push_str(&format!(
        " Availability:\t\t{}\n",
        title(&s(&n["Spec"]["Availability"]))
    ));
    o.push_str(&format!(" Address:\t\t{}\n", s(&n["Status"]["Addr"])));
    if n["ManagerStatus"].is_object() {
        o.push_str("Manager Status:\n");
        o.push_str(&format!(
            " Address:\t\t{}\n",
            s(&n["ManagerStatus"]["Addr"])
        ));
        o.push_str(&format!(
            " Raft Status:\t\t{}\n",
            title(&s(&n["ManagerStatus"]["Reachability"]))
        ));
        let leader = if n["ManagerStatus"]["Leader"].as_bool() == Some(true) {
            "Yes"
        } else {
            "No"
        };
        o.push_str(&format!(" Leader:\t\t{leader}\n"));
    }
    o.push_str("Platform:\n");
    o.push_str(&format!(
        " Operating System:\t{}\n",
        s(&n["Description"]["Platform"]["OS"])
    ));
    o.push_str(&format!(
        " Architecture:\t\t{}\n",
        s(&n["Description"]["Platform"]["Architecture"])
    ));
    o.push_str("Resources:\n");
    let cpus = n["Description"]["Resources"]["NanoCPUs"]
        .as_f64()
        .unwrap_or(0.0)
        / 1e9;
    o.push_str(&format!(" CPUs:\t\t\t{cpus}\n"));
    let mem = n["Description"]["Resources"]["MemoryBytes"]
        .as_f64()
        .unwrap_or(0.0);
    o.push_str(&format!(" Memory:\t\t{}\n", format::bytes_size(mem)));
    o.push_str(&format!(
        "Engine Version:\t\t{}\n",
        s(&n["Description"]["Engine"]["EngineVersion"])
    ));
    if let Some(t) = n["Description"]["TLSInfo"]["CertExpiry"].as_str() {
        o.push_str(&format!("TLS Info:\n Certificate Expiry:\t{t}\n"));
    }
    o
}

/// `node inspect`.
pub async fn inspect(c: &Client, a: NodeInspectArgs) -> Result<i32> {
    let mut values = Vec::new();
    let mut failed = false;
    for n in &a.nodes {
        match c.get::<Value>(&format!("/nodes/{}", q(n))).await {
            Ok(mut v) => {
                if let Some(o) = v.as_object_mut() {
                    o.remove("Self");
                    o.remove("ManagerStatusText");
                }
                values.push(v);
            }
            Err(e) => report(&mut failed, e),
        }
    }
    if a.pretty {
        let texts: Vec<String> = values.iter().map(pretty).collect();
        print!("{}", texts.join("\n"));
    } else if let Some(f) = a.format.as_deref() {
        let t = Template::parse(&format::preprocess_format(f))
            .map_err(|e| anyhow!("{e}"))?
            .missing_key_error();
        for v in &values {
            println!("{}", t.render(v).map_err(|e| anyhow!("{e}"))?);
        }
    } else {
        print!("{}", format::inspect_json(&values));
    }
    Ok(i32::from(failed))
}

async fn update_spec(c: &Client, node: &str, f: impl Fn(&mut Value) -> Result<()>) -> Result<()> {
    // The node object also changes under us (its heartbeats record status and
    // description): a write refused as out of sequence is made again on the fresh object,
    // a few times.
    let mut attempt = 0;
    loop {
        let n: Value = c.get(&format!("/nodes/{}", q(node))).await?;
        let version = n["Version"]["Index"].as_u64().unwrap_or(0);
        let mut spec = n["Spec"].clone();
        f(&mut spec)?;
        let id = n["ID"].as_str().unwrap_or(node).to_owned();
        match c
            .post::<Value, _>(
                &format!("/nodes/{}/update?version={version}", q(&id)),
                &spec,
            )
            .await
        {
            Err(e) if attempt < 4 && is_status(&e, StatusCode::CONFLICT) => attempt += 1,
            other => return other.map(|_| ()),
        }
    }
}

/// `node update`.
pub async fn update(c: &Client, a: NodeUpdateArgs) -> Result<i32> {
    update_spec(c, &a.node, |spec| {
        if let Some(av) = &a.availability {
            if !["active", "pause", "drain"].contains(&av.as_str()) {
                return Err(anyhow!(
                    "invalid availability {av:?}: want active, pause or drain"
                ));
            }
            spec["Availability"] = json!(av);
        }
        if let Some(r) = &a.role {
            if !["worker", "manager"].contains(&r.as_str()) {
                return Err(anyhow!("invalid role {r:?}: want worker or manager"));
            }
            spec["Role"] = json!(r);
        }
        if !spec["Labels"].is_object() {
            spec["Labels"] = json!({});
        }
        for l in &a.label_add {
            let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
            spec["Labels"][k] = json!(v);
        }
        for k in &a.label_rm {
            // Labels was made an object above.
            if let Some(o) = spec["Labels"].as_object_mut()
                && o.remove(k).is_none()
            {
                return Err(anyhow!("key {k} doesn't exist in node's labels"));
            }
        }
        Ok(())
    })
    .await?;
    println!("{}", a.node);
    Ok(0)
}

/// `node promote` / `node demote`.
pub async fn set_role(c: &Client, a: NodesArgs, role: &str) -> Result<i32> {
    let mut failed = false;
    for n in &a.nodes {
        let node: Value = match c.get(&format!("/nodes/{}", q(n))).await {
            Ok(v) => v,
            Err(e) => {
                report(&mut failed, e);
                continue;
            }
        };
        if node["Spec"]["Role"].as_str() == Some(role) {
            if role == "manager" {
                println!("Node {n} is already a manager.");
            } else {
                println!("Node {n} is already a worker.");
            }
            continue;
        }
        match update_spec(c, n, |spec| {
            spec["Role"] = json!(role);
            Ok(())
        })
        .await
        {
            Ok(()) if role == "manager" => println!("Node {n} promoted to a manager in the swarm."),
            Ok(()) => println!("Manager {n} demoted in the swarm."),
            Err(e) => report(&mut failed, e),
        }
    }
    Ok(i32::from(failed))
}

/// `node ps [NODE...]`: the tasks of nodes (this one by default), as `service ps` shows
/// them.
pub async fn ps(c: &Client, a: super::service::NodePsArgs) -> Result<i32> {
    super::service::node_ps(c, a).await
}

/// `node rm`.
pub async fn rm(c: &Client, a: NodeRmArgs) -> Result<i32> {
    let query = format!("force={}", u8::from(a.force));
    Ok(i32::from(delete_each(c, "/nodes", &a.nodes, &query).await))
}
