//! A tiny HTTP/1.1 client over a daemon's unix socket (shoal's or dockerd's: both answer
//! Docker's API), shared by the benchmark binaries.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

/// A response: status and body.
#[derive(Debug, PartialEq)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "not JSON (status {}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Docker's `{"message": …}`, or the raw body.
    pub fn message(&self) -> String {
        serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// One request on a fresh connection (`Connection: close`, read to the end), with an
/// optional JSON body.
pub fn request(
    sock: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> Result<Reply> {
    let mut s = UnixStream::connect(sock)
        .with_context(|| format!("cannot connect to {}", sock.display()))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let payload = match body {
        Some(v) => serde_json::to_vec(v)?,
        None => Vec::new(),
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\nContent-Length: {}\r\n",
        payload.len()
    );
    if body.is_some() {
        req.push_str("Content-Type: application/json\r\n");
    }
    req.push_str("\r\n");
    let mut msg = req.into_bytes();
    msg.extend_from_slice(&payload);
    s.write_all(&msg)
        .with_context(|| format!("{method} {path}: cannot send"))?;
    let mut raw = Vec::with_capacity(16384);
    s.read_to_end(&mut raw)
        .with_context(|| format!("{method} {path}: cannot read the reply"))?;
    parse_response(&raw).with_context(|| format!("{method} {path}: bad reply"))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Parses a whole HTTP/1.1 response (Content-Length, chunked, or up to the end).
pub fn parse_response(raw: &[u8]) -> Result<Reply> {
    let end = find(raw, b"\r\n\r\n").context("no end of headers")?;
    let head = std::str::from_utf8(&raw[..end]).context("headers are not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    ensure!(
        status_line.starts_with("HTTP/1."),
        "not an HTTP/1 status line: {status_line:?}"
    );
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .context("no status code")?
        .parse()
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let mut chunked = false;
    let mut length = None;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            if k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked") {
                chunked = true;
            } else if k == "content-length" {
                length = Some(v.parse::<usize>().context("bad Content-Length")?);
            }
        }
    }
    let rest = &raw[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .with_context(|| format!("body shorter than Content-Length {n}"))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Reply { status, body })
}

/// Decodes a chunked body.
fn dechunk(mut b: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = find(b, b"\r\n").context("chunk size line not terminated")?;
        let line = std::str::from_utf8(&b[..eol]).context("chunk size not UTF-8")?;
        let hex = line.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(hex, 16).with_context(|| format!("bad chunk size {line:?}"))?;
        b = &b[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(b.get(..size).context("chunk shorter than announced")?);
        b = b.get(size + 2..).context("chunk not terminated")?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_a_response_with_content_length() {
        let raw = b"HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\n\
                    content-length: 17\r\n\r\n{\"message\":\"old\"}";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 409);
        assert_eq!(r.body, b"{\"message\":\"old\"}");
        assert_eq!(r.message(), "old");
    }

    #[test]
    fn parses_a_chunked_response() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                    4\r\n[1,2\r\n3;ext=1\r\n,3]\r\n0\r\n\r\n";
        let r = parse_response(raw).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"[1,2,3]");
        assert_eq!(r.json().unwrap(), json!([1, 2, 3]));
    }

    #[test]
    fn parses_a_body_up_to_the_end_and_an_empty_one() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\n\r\nOK").unwrap();
        assert_eq!(r.body, b"OK");
        let r = parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").unwrap();
        assert_eq!(
            r,
            Reply {
                status: 200,
                body: Vec::new()
            }
        );
    }

    #[test]
    fn refuses_truncated_or_garbled_responses() {
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nab").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
        assert!(
            parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
                .is_err()
        );
    }

    #[test]
    fn refuses_bad_chunk_sizes() {
        assert!(dechunk(b"zz\r\n").is_err());
    }
}
