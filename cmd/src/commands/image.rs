//! `pull`, `image import|export|ls|rm|prune|tag`.

use std::io::IsTerminal;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use http::Method;
use serde_json::{Value, json};

use super::progress::{self, Target};
use super::{auth, confirm, q, report};
use crate::cli::{
    ExportArgs, ImagePruneArgs, ImageRmArgs, ImagesArgs, ImportArgs, PullArgs, TagArgs,
};
use crate::client::{self, Client, ndjson};
use crate::format;

/// The registry part of a reference, for choosing stored credentials.
fn registry_of(reference: &str) -> String {
    shoal_image::reference::parse(reference)
        .map(|r| r.registry().to_owned())
        .unwrap_or_else(|_| "docker.io".to_owned())
}

async fn pull_stream(
    c: &Client,
    reference: &str,
) -> Result<hyper::Response<hyper::body::Incoming>> {
    let mut headers = Vec::new();
    if let Some(h) = auth::header_for(&registry_of(reference)) {
        headers.push(("x-registry-auth", h));
    }
    c.request(
        Method::POST,
        &format!("/images/create?fromImage={}", q(reference)),
        client::empty(),
        &headers,
    )
    .await
}

/// `pull`: docker's output (progress on stdout, then the full reference).
pub async fn pull(c: &Client, a: PullArgs) -> Result<i32> {
    let full = shoal_image::reference::normalize(&a.image)?;
    // A tag is a `:` in the last path component (a registry port is not a tag).
    let last = a.image.rsplit('/').next().unwrap_or(&a.image);
    if !last.contains(':') && !a.image.contains('@') && !a.quiet {
        println!("Using default tag: latest");
    }
    let resp = pull_stream(c, &a.image).await?;
    progress::render(ndjson::<Value>(resp), Target::Stdout, a.quiet).await?;
    println!("{full}");
    Ok(0)
}

/// The implicit pull of `run`/`create`: progress on stderr, stdout untouched.
pub async fn pull_quietly_to_stderr(c: &Client, reference: &str, quiet: bool) -> Result<()> {
    let resp = pull_stream(c, reference).await?;
    progress::render(ndjson::<Value>(resp), Target::Stderr, quiet).await?;
    Ok(())
}

/// `image import` / `load`: a docker-save or OCI archive from a file or stdin.
pub async fn import(c: &Client, a: ImportArgs) -> Result<i32> {
    let src = a
        .input
        .clone()
        .or(a.file.clone())
        .unwrap_or_else(|| "-".to_owned());
    let body = if src == "-" {
        if std::io::stdin().is_terminal() {
            bail!("requested load from stdin, but stdin is empty");
        }
        let stdin = tokio::io::stdin();
        client::stream_body(tokio_util::io::ReaderStream::new(stdin))
    } else {
        let f = tokio::fs::File::open(&src)
            .await
            .with_context(|| format!("open {src}"))?;
        client::stream_body(tokio_util::io::ReaderStream::new(f))
    };
    let mut path = "/images/load".to_owned();
    if let Some(t) = &a.tag {
        path.push_str(&format!("?tag={}", q(t)));
    }
    let resp = c
        .request(
            Method::POST,
            &path,
            body,
            &[("content-type", "application/x-tar".into())],
        )
        .await?;
    let statuses = progress::render(ndjson::<Value>(resp), Target::Stderr, true).await?;
    for s in statuses {
        println!("{s}");
    }
    Ok(0)
}

/// `image export` / `save`: an OCI archive to a file or stdout.
pub async fn export(c: &Client, a: ExportArgs) -> Result<i32> {
    if a.output.is_none() && std::io::stdout().is_terminal() {
        bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
    }
    let names: Vec<String> = a.images.iter().map(|n| format!("names={}", q(n))).collect();
    let resp = c
        .request(
            Method::GET,
            &format!("/images/get?{}", names.join("&")),
            client::empty(),
            &[],
        )
        .await?;
    let mut body = Box::pin(client::body_stream(resp));
    let mut out: Box<dyn tokio::io::AsyncWrite + Unpin> = match &a.output {
        Some(p) => {
            let tmp = p.with_extension("partial");
            Box::new(
                tokio::fs::File::create(&tmp)
                    .await
                    .with_context(|| format!("create {}", tmp.display()))?,
            )
        }
        None => Box::new(tokio::io::stdout()),
    };
    use tokio::io::AsyncWriteExt;
    let mut total = 0u64;
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        total += chunk.len() as u64;
        out.write_all(&chunk).await?;
    }
    out.flush().await?;
    drop(out);
    if total == 0 {
        bail!("the daemon sent an empty archive");
    }
    if let Some(p) = &a.output {
        std::fs::rename(p.with_extension("partial"), p)
            .with_context(|| format!("write {}", p.display()))?;
    }
    Ok(0)
}

const IMAGE_HEADERS: &[(&str, &str)] = &[
    ("Repository", "REPOSITORY"),
    ("Tag", "TAG"),
    ("Digest", "DIGEST"),
    ("ID", "IMAGE ID"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("Size", "SIZE"),
    ("Containers", "CONTAINERS"),
    ("VirtualSize", "SIZE"),
    ("SharedSize", "SHARED SIZE"),
    ("UniqueSize", "UNIQUE SIZE"),
];

/// `images` / `image ls`.
pub async fn ls(c: &Client, a: ImagesArgs) -> Result<i32> {
    let mut list: Vec<Value> = c.get("/images/json").await?;
    list.sort_by_key(|i| std::cmp::Reverse(i["Created"].as_i64().unwrap_or(0)));
    let now = Utc::now();
    let trunc = !a.no_trunc;
    let mut rows = Vec::new();
    for i in &list {
        let id = i["Id"].as_str().unwrap_or_default();
        let size = i["Size"].as_f64().unwrap_or(0.0);
        // -1: not computed ("N/A"), as the Engine API reports it.
        let shared = i["SharedSize"].as_f64().filter(|s| *s >= 0.0);
        let created =
            DateTime::from_timestamp(i["Created"].as_i64().unwrap_or(0), 0).unwrap_or(now);
        let digest = i["RepoDigests"]
            .as_array()
            .and_then(|d| d.first())
            .and_then(Value::as_str)
            .and_then(|d| d.split_once('@').map(|(_, h)| h.to_owned()))
            .unwrap_or_else(|| "<none>".to_owned());
        let tags: Vec<String> = i["RepoTags"]
            .as_array()
            .map(|t| {
                t.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let pairs: Vec<(String, String)> = if tags.is_empty() {
            vec![("<none>".into(), "<none>".into())]
        } else {
            tags.iter()
                .map(|t| {
                    let repo = shoal_image::reference::familiar_repository(t);
                    let tag = shoal_image::reference::tag(t).unwrap_or_else(|| "<none>".into());
                    (repo, tag)
                })
                .collect()
        };
        for (repo, tag) in pairs {
            if let Some(filter) = &a.reference {
                let (fr, ft) = match filter.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
                    Some((r, t)) => (r, Some(t)),
                    None => (filter.as_str(), None),
                };
                if repo != fr || ft.is_some_and(|t| t != tag) {
                    continue;
                }
            }
            rows.push(json!({
                "Repository": repo,
                "Tag": tag,
                "Digest": digest,
                "ID": if trunc { format::short_id(id) } else { id.to_owned() },
                "CreatedSince": format::ago(created, now),
                "CreatedAt": super::go_local_time(created.timestamp()),
                "Size": format::human_size(size),
                // Deprecated in docker, equal to Size, with go-units' default precision.
                "VirtualSize": format::human_size_with_precision(size, 4),
                "SharedSize": shared.map_or_else(|| "N/A".to_owned(), |s| format::human_size_with_precision(s, 4)),
                "UniqueSize": shared.map_or_else(|| "N/A".to_owned(), |s| format::human_size_with_precision(size - s, 4)),
                "Containers": i["Containers"].as_u64().unwrap_or(0).to_string(),
            }));
        }
    }
    if a.quiet {
        let mut seen = Vec::new();
        for r in &rows {
            let id = r["ID"].as_str().unwrap_or_default().to_owned();
            if !seen.contains(&id) {
                println!("{id}");
                seen.push(id);
            }
        }
        return Ok(0);
    }
    let table = if a.digests {
        "table {{.Repository}}\t{{.Tag}}\t{{.Digest}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    } else {
        "table {{.Repository}}\t{{.Tag}}\t{{.ID}}\t{{.CreatedSince}}\t{{.Size}}"
    };
    super::container::print_rows(a.format.as_deref(), &rows, IMAGE_HEADERS, table)
}

/// `rmi` / `image rm`.
pub async fn rm(c: &Client, a: ImageRmArgs) -> Result<i32> {
    let mut failed = false;
    for n in &a.images {
        match c
            .delete::<Vec<Value>>(&format!("/images/{}?force={}", q(n), u8::from(a.force)))
            .await
        {
            Ok(events) => print_events(&events),
            Err(e) => report(&mut failed, e),
        }
    }
    Ok(i32::from(failed))
}

fn print_events(events: &[Value]) {
    for e in events {
        if let Some(t) = e["Untagged"].as_str() {
            println!("Untagged: {t}");
        }
        if let Some(d) = e["Deleted"].as_str() {
            println!("Deleted: {d}");
        }
    }
}

/// `image prune`.
pub async fn prune(c: &Client, a: ImagePruneArgs) -> Result<i32> {
    let warning = if a.all {
        "WARNING! This will remove all images without at least one container associated to them.\nAre you sure you want to continue?"
    } else {
        "WARNING! This will remove all dangling images.\nAre you sure you want to continue?"
    };
    if !a.force && !confirm(warning) {
        return Ok(0);
    }
    let r: Value = c
        .post(
            &format!("/images/prune?all={}", u8::from(a.all)),
            &json!({}),
        )
        .await?;
    if let Some(events) = r["ImagesDeleted"].as_array().filter(|e| !e.is_empty()) {
        println!("Deleted Images:");
        print_events(events);
        println!();
    }
    println!(
        "Total reclaimed space: {}",
        format::human_size(r["SpaceReclaimed"].as_f64().unwrap_or(0.0))
    );
    Ok(0)
}

/// `image tag`.
pub async fn tag(c: &Client, a: TagArgs) -> Result<i32> {
    let (repo, tag) = match a.target.rsplit_once(':').filter(|(_, t)| !t.contains('/')) {
        Some((r, t)) => (r.to_owned(), t.to_owned()),
        None => (a.target.clone(), "latest".to_owned()),
    };
    c.request(
        Method::POST,
        &format!(
            "/images/{}/tag?repo={}&tag={}",
            q(&a.source),
            q(&repo),
            q(&tag)
        ),
        client::empty(),
        &[],
    )
    .await?;
    Ok(0)
}
