//! The admin listener's `/store`: what precond knows of one resource (`GET /store?url=…`, every
//! caller partition) and forgetting it (`DELETE /store?url=…`), for an operator facing an
//! unexplained 412.
//!
//! Owns: [`resource_of`] (the resource an absolute URL names, keyed exactly as a request for it
//! on the data port would be: the same route choice, canonical host and path, query) and
//! [`describe`] (a record as JSON).
//!
//! Invariants: no secret is shown (callers appear as their keyed hash, never a credential); an
//! ambiguous target (what `strict_targets` refuses) is refused here too rather than guessed;
//! `url` is bounded by the admin request's own size limits.

use crate::config::{Config, Mode};
use crate::identity::{canonical_host, canonical_path, canonical_query, OwnedKey};
use crate::precondition::Existence;
use crate::store::Record;

/// The `url` parameter of a `/store` query, percent-decoded.
pub(super) fn url_param(query: Option<&str>) -> Option<String> {
    form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "url")
        .map(|(_, v)| v.into_owned())
}

/// The route index and key of the resource `url` (`http://host[:port]/path[?query]`) names.
pub(super) fn resource_of(config: &Config, url: &str) -> Result<(usize, OwnedKey), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("url {url:?} is not a URL: {e}"))?;
    let host = uri.host().ok_or_else(|| {
        format!("url {url:?} has no host: give an absolute URL (http://host/path)")
    })?;
    let host = canonical_host(host);
    let (path, ambiguous) = canonical_path(uri.path());
    if let Some(why) = ambiguous {
        return Err(format!(
            "url {url:?}: the target is ambiguous ({})",
            why.explain()
        ));
    }
    let (idx, route) = config
        .route_for(Some(&host), &path)
        .ok_or_else(|| format!("url {url:?} matches no route"))?;
    if route.mode == Mode::Pass {
        return Err(format!(
            "url {url:?} is on a pass route: precond learns nothing there"
        ));
    }
    let query = uri.query().map(canonical_query);
    Ok((idx, OwnedKey::new(route.id, &host, &path, query.as_deref())))
}

fn existence(e: Existence) -> &'static str {
    match e {
        Existence::Exists => "exists",
        Existence::Absent => "absent",
        Existence::Unknown => "unknown",
    }
}

/// A record as JSON: every partition's validators, as the edge decides on them.
pub(super) fn describe(route: usize, config: &Config, record: &Record) -> serde_json::Value {
    let tags = |v: &[crate::store::Tag]| -> Vec<String> {
        v.iter().map(|t| t.as_ref().to_display()).collect()
    };
    let date = |t: Option<i64>| {
        t.and_then(|t| u64::try_from(t).ok()).map(|s| {
            httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s))
        })
    };
    let parts: Vec<serde_json::Value> = record
        .parts
        .parts
        .iter()
        .map(|p| {
            let e = &p.entry;
            serde_json::json!({
                "caller": format!("{:016x}", p.principal.0),
                "existence": existence(e.existence),
                "current": e.current.as_deref().map(tags),
                "replaced": tags(&e.replaced),
                "last_modified": date(e.last_modified),
                "synthetic": e.synthetic,
                "vary": e.vary,
                "recurs": e.recurs,
            })
        })
        .collect();
    let r = &config.routes[route];
    serde_json::json!({
        "route": { "path_prefix": r.path_prefix, "host": r.host, "mode": format!("{:?}", r.mode).to_lowercase() },
        "private": record.parts.private,
        "age_seconds": record.age().as_secs(),
        "partitions": parts,
    })
}
