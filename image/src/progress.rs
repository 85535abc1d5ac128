//! Docker-style progress messages for pulls and imports.
//!
//! Events have the shape of Docker's `JSONMessage`
//! (`{"status":…,"id":…,"progressDetail":{"current":…,"total":…}}`) so a CLI can draw the
//! familiar per-layer display. They go through an unbounded channel so the store never
//! waits on a slow reader.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::UnboundedSender;

/// One progress line: a status for the whole operation (`id` = None) or for one layer
/// (`id` = its short digest, 12 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "JsonMessage", from = "JsonMessage")]
pub struct ProgressEvent {
    /// Short digest of the layer, or the tag for "Pulling from …".
    pub id: Option<String>,
    /// Docker's wording: "Downloading", "Pull complete", "Digest: sha256:…", …
    pub status: String,
    /// Bytes done so far, for statuses with a progress bar.
    pub current: Option<u64>,
    /// Bytes in total, when known.
    pub total: Option<u64>,
}

impl ProgressEvent {
    /// A status line without a progress bar.
    pub fn status(id: Option<&str>, status: impl Into<String>) -> Self {
        ProgressEvent {
            id: id.map(str::to_string),
            status: status.into(),
            current: None,
            total: None,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct JsonMessage {
    status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<String>,
    #[serde(
        default,
        rename = "progressDetail",
        skip_serializing_if = "Option::is_none"
    )]
    progress_detail: Option<ProgressDetail>,
}

#[derive(Serialize, Deserialize)]
struct ProgressDetail {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    current: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    total: Option<u64>,
}

impl From<ProgressEvent> for JsonMessage {
    fn from(e: ProgressEvent) -> Self {
        let progress_detail =
            (e.current.is_some() || e.total.is_some()).then_some(ProgressDetail {
                current: e.current,
                total: e.total,
            });
        JsonMessage {
            status: e.status,
            id: e.id,
            progress_detail,
        }
    }
}

impl From<JsonMessage> for ProgressEvent {
    fn from(m: JsonMessage) -> Self {
        let (current, total) = m
            .progress_detail
            .map_or((None, None), |d| (d.current, d.total));
        ProgressEvent {
            id: m.id,
            status: m.status,
            current,
            total,
        }
    }
}

/// Where progress goes: a channel, or nowhere. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ProgressSink(Option<UnboundedSender<ProgressEvent>>);

impl ProgressSink {
    /// Discards all progress.
    pub fn none() -> Self {
        ProgressSink(None)
    }

    /// Sends progress to `tx`; a closed receiver is ignored (the operation goes on).
    pub fn new(tx: UnboundedSender<ProgressEvent>) -> Self {
        ProgressSink(Some(tx))
    }

    /// Sends one event.
    pub fn send(&self, event: ProgressEvent) {
        if let Some(tx) = &self.0 {
            let _ = tx.send(event);
        }
    }

    /// Sends a status without progress bar.
    pub(crate) fn status(&self, id: Option<&str>, status: impl Into<String>) {
        self.send(ProgressEvent::status(id, status));
    }

    /// A throttled reporter of `status` with current/total for one layer.
    pub(crate) fn bar(&self, id: &str, status: &'static str, total: Option<u64>) -> ProgressBar {
        ProgressBar {
            sink: self.clone(),
            id: id.to_string(),
            status,
            total,
            last: None,
        }
    }
}

/// Reports byte progress for one layer at most ~10 times a second.
#[derive(Debug)]
pub(crate) struct ProgressBar {
    sink: ProgressSink,
    id: String,
    status: &'static str,
    total: Option<u64>,
    last: Option<Instant>,
}

const BAR_INTERVAL: Duration = Duration::from_millis(100);

impl ProgressBar {
    /// Reports `current` bytes unless the last report was less than 100 ms ago; the
    /// final value (`current == total`) is always reported.
    pub(crate) fn update(&mut self, current: u64) {
        if self.sink.0.is_none() {
            return;
        }
        let now = Instant::now();
        let done = Some(current) == self.total;
        if !done
            && self
                .last
                .is_some_and(|t| now.duration_since(t) < BAR_INTERVAL)
        {
            return;
        }
        self.last = Some(now);
        self.sink.send(ProgressEvent {
            id: Some(self.id.clone()),
            status: self.status.to_string(),
            current: Some(current),
            total: self.total,
        });
    }
}

/// The 12-hex short form of a digest (`sha256:0123456789abcdef…` → `0123456789ab`).
pub fn short_id(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, h)| h);
    hex.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_like_docker_json_message() {
        let e = ProgressEvent {
            id: Some("abc".into()),
            status: "Downloading".into(),
            current: Some(5),
            total: Some(10),
        };
        let json = serde_json::to_string(&e).unwrap();
        assert_eq!(
            json,
            r#"{"status":"Downloading","id":"abc","progressDetail":{"current":5,"total":10}}"#
        );
        assert_eq!(serde_json::from_str::<ProgressEvent>(&json).unwrap(), e);
        let plain = ProgressEvent::status(None, "Digest: sha256:00");
        assert_eq!(
            serde_json::to_string(&plain).unwrap(),
            r#"{"status":"Digest: sha256:00"}"#
        );
    }

    #[test]
    fn bar_is_throttled_but_reports_completion() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let sink = ProgressSink::new(tx);
        let mut bar = sink.bar("id", "Downloading", Some(100));
        for i in 0..=100 {
            bar.update(i);
        }
        let mut got = Vec::new();
        while let Ok(e) = rx.try_recv() {
            got.push(e.current.unwrap());
        }
        assert_eq!(got.first(), Some(&0));
        assert_eq!(got.last(), Some(&100));
        assert!(got.len() <= 3, "throttled: {got:?}");
    }

    #[test]
    fn short_ids() {
        assert_eq!(short_id("sha256:0123456789abcdef"), "0123456789ab");
        assert_eq!(short_id("0123456789abcdef"), "0123456789ab");
    }
}
