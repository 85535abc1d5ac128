//! The CLI's HTTP client for the daemon's unix socket.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use http::{Method, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::net::UnixStream;

/// The default daemon socket.
pub const DEFAULT_SOCKET: &str = "/run/shoal/shoal.sock";

/// Unix socket paths longer than this are reached through `/proc/self/fd/N/<name>`.
const SUN_PATH_MAX: usize = 107;

/// A request body: empty, bytes, or a stream.
pub type Body = BoxBody<Bytes, std::io::Error>;

/// An empty body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// A JSON body.
pub fn json_body<T: Serialize>(v: &T) -> Result<Body> {
    Ok(Full::new(Bytes::from(serde_json::to_vec(v)?))
        .map_err(|never| match never {})
        .boxed())
}

/// A streamed body.
pub fn stream_body<S>(s: S) -> Body
where
    S: Stream<Item = std::io::Result<Bytes>> + Send + Sync + 'static,
{
    BodyExt::boxed(StreamBody::new(s.map_ok(Frame::data)))
}

/// Connects a unix stream socket, working around the 108-byte path limit.
pub async fn connect_unix(path: &Path) -> std::io::Result<UnixStream> {
    if path.as_os_str().len() <= SUN_PATH_MAX {
        return UnixStream::connect(path).await;
    }
    let (dir, name) = split(path)?;
    let d = std::fs::File::open(dir)?;
    UnixStream::connect(format!("/proc/self/fd/{}/{}", d.as_raw_fd(), name)).await
}

/// Splits a socket path into its directory and file name.
pub fn split(path: &Path) -> std::io::Result<(&Path, String)> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    let name = path
        .file_name()
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "socket path has no file name",
            )
        })?
        .to_string_lossy()
        .into_owned();
    Ok((dir, name))
}

/// Parses `-H`/`SHOAL_HOST` (`unix:///path` or a plain path).
pub fn socket_from_host(host: Option<&str>) -> Result<PathBuf> {
    match host {
        None | Some("") => Ok(PathBuf::from(DEFAULT_SOCKET)),
        Some(h) => {
            if let Some(p) = h.strip_prefix("unix://") {
                Ok(PathBuf::from(p))
            } else if h.starts_with('/') {
                Ok(PathBuf::from(h))
            } else {
                bail!("invalid host {h:?}: only unix:///path sockets are supported")
            }
        }
    }
}

/// A client of one daemon.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// A client for the socket named by `-H`/`SHOAL_HOST`.
    pub fn new(host: Option<&str>) -> Result<Client> {
        Ok(Client {
            socket: socket_from_host(host)?,
        })
    }

    /// The socket as a `unix://` URL.
    pub fn url(&self) -> String {
        format!("unix://{}", self.socket.display())
    }

    /// Sends a request; a status >= 400 becomes an error carrying the daemon's message.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Body,
        headers: &[(&str, String)],
    ) -> Result<hyper::Response<Incoming>> {
        let stream = connect_unix(&self.socket).await.map_err(|e| {
            anyhow!(
                "Cannot connect to the shoal daemon at {}. Is the shoal daemon running? ({e})",
                self.url()
            )
        })?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .context("HTTP handshake with the daemon failed")?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "shoal");
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = sender
            .send_request(req.body(body)?)
            .await
            .context("the daemon closed the connection")?;
        if resp.status().is_client_error() || resp.status().is_server_error() {
            let status = resp.status();
            let body = resp.into_body().collect().await?.to_bytes();
            return Err(ApiError::from_body(status, &body).into());
        }
        Ok(resp)
    }

    /// GET returning JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.request(Method::GET, path, empty(), &[]).await?;
        read_json(resp).await
    }

    /// POST with a JSON body, returning JSON (or `()` for an empty answer).
    pub async fn post<T: DeserializeOwned, B: Serialize>(&self, path: &str, body: &B) -> Result<T> {
        let resp = self
            .request(
                Method::POST,
                path,
                json_body(body)?,
                &[("content-type", "application/json".into())],
            )
            .await?;
        read_json(resp).await
    }

    /// POST without a body, ignoring the answer.
    pub async fn post_empty(&self, path: &str) -> Result<()> {
        let resp = self.request(Method::POST, path, empty(), &[]).await?;
        resp.into_body().collect().await?;
        Ok(())
    }

    /// DELETE returning JSON.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        let resp = self.request(Method::DELETE, path, empty(), &[]).await?;
        read_json(resp).await
    }
}

async fn read_json<T: DeserializeOwned>(resp: hyper::Response<Incoming>) -> Result<T> {
    let body = resp.into_body().collect().await?.to_bytes();
    let body = if body.is_empty() {
        Bytes::from_static(b"null")
    } else {
        body
    };
    serde_json::from_slice(&body).context("the daemon sent invalid JSON")
}

/// An error answer of the daemon.
#[derive(Debug, thiserror::Error)]
#[error("Error response from daemon: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn from_body(status: StatusCode, body: &[u8]) -> ApiError {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_owned());
        ApiError { status, message }
    }
}

/// Whether `e` is a daemon answer with this status.
pub fn is_status(e: &anyhow::Error, status: StatusCode) -> bool {
    e.downcast_ref::<ApiError>()
        .is_some_and(|a| a.status == status)
}

/// The body of a response as a stream of byte chunks.
pub fn body_stream(resp: hyper::Response<Incoming>) -> impl Stream<Item = Result<Bytes>> {
    resp.into_body()
        .into_data_stream()
        .map(|r| r.map_err(anyhow::Error::from))
}

/// Reads newline-delimited JSON values from a streamed body.
pub fn ndjson<T: DeserializeOwned + Send + 'static>(
    resp: hyper::Response<Incoming>,
) -> impl Stream<Item = Result<T>> {
    let mut buf: Vec<u8> = Vec::new();
    let mut body = Box::pin(body_stream(resp));
    async_stream(move |tx| async move {
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let v = serde_json::from_slice(&line).context("the daemon sent invalid JSON");
                if tx.send(v).is_err() {
                    return;
                }
            }
        }
    })
}

/// One frame of Docker's multiplexed stream: 1 stdout, 2 stderr, 3 system (exit status JSON).
#[derive(Debug)]
pub struct MuxFrame {
    pub stream: u8,
    pub data: Bytes,
}

/// Splits a multiplexed body into frames (8-byte header: stream, 0, 0, 0, big-endian size).
pub fn demux(resp: hyper::Response<Incoming>) -> impl Stream<Item = Result<MuxFrame>> {
    let mut body = Box::pin(body_stream(resp));
    let mut buf: Vec<u8> = Vec::new();
    async_stream(move |tx| async move {
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(c) => buf.extend_from_slice(&c),
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            }
            while buf.len() >= 8 {
                let size = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
                if buf.len() < 8 + size {
                    break;
                }
                let stream = buf[0];
                let data = Bytes::copy_from_slice(&buf[8..8 + size]);
                buf.drain(..8 + size);
                if tx.send(Ok(MuxFrame { stream, data })).is_err() {
                    return;
                }
            }
        }
    })
}

/// A tiny channel-backed stream generator.
fn async_stream<T, F, Fut>(f: F) -> impl Stream<Item = T>
where
    T: Send + 'static,
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(f(tx));
    tokio_stream_from(rx)
}

fn tokio_stream_from<T>(mut rx: tokio::sync::mpsc::UnboundedReceiver<T>) -> impl Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert_eq!(
            socket_from_host(None).unwrap(),
            PathBuf::from(DEFAULT_SOCKET)
        );
        assert_eq!(
            socket_from_host(Some("unix:///tmp/x.sock")).unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert!(socket_from_host(Some("tcp://1.2.3.4:2375")).is_err());
    }

    #[test]
    fn api_error_message() {
        let e = ApiError::from_body(
            StatusCode::NOT_FOUND,
            br#"{"message":"No such container: x"}"#,
        );
        assert_eq!(
            e.to_string(),
            "Error response from daemon: No such container: x"
        );
    }
}
