//! `precond report`'s I/O: fetches a metrics scrape (an `http://` URL, with the admin token when
//! given, or a file) and opens the log, then hands the text to the pure
//! [`Summary`].
//!
//! Invariants: every network wait is bounded (5 s), the scrape read is bounded (16 MiB); errors
//! are messages naming what failed, never a panic.

use std::io::{BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use crate::telemetry::report::Summary;

/// Longest scrape read.
const MAX_SCRAPE: u64 = 16 << 20;

/// `GET` of an `http://host:port/path` URL: the body of a 200.
fn fetch(url: &str, token: Option<&str>) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs (or a file) are read"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    let with_port = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    let addr = with_port
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let t = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&addr, t).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(t))
        .and_then(|()| s.set_write_timeout(Some(t)))
        .map_err(|e| format!("{url}: {e}"))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {authority}\r\n{auth}Connection: close\r\n\r\n"
    )
    .map_err(|e| format!("{url}: {e}"))?;
    let mut text = String::new();
    s.take(MAX_SCRAPE)
        .read_to_string(&mut text)
        .map_err(|e| format!("{url}: {e}"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{url}: not an HTTP response"))?;
    let status = head.split_whitespace().nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!(
            "{url}: answered {status} (is a token needed? --token-file)"
        ));
    }
    Ok(body.to_string())
}

/// The report of the scrape at `metrics` (a URL or a file) and, if given, the log at `log`.
pub fn report(
    metrics: &str,
    token_file: Option<&Path>,
    log: Option<&Path>,
) -> Result<String, String> {
    let token = token_file
        .map(|p| super::admin::read_token(p).map_err(|e| e.to_string()))
        .transpose()?
        .map(|t| String::from_utf8_lossy(&t).into_owned());
    let text = if metrics.starts_with("http://") {
        fetch(metrics, token.as_deref())?
    } else {
        std::fs::read_to_string(metrics).map_err(|e| format!("{metrics}: {e}"))?
    };
    let mut summary = Summary::from_metrics(&text);
    if let Some(path) = log {
        let f = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        summary.add_log(BufReader::new(f));
    }
    Ok(summary.render())
}
