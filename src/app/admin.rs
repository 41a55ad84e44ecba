//! The admin listener (`[admin] listen`), apart from the data port so that nothing precond
//! answers there can shadow the API: `GET /healthz` (the process is alive), `GET /readyz` (the
//! listeners are bound and serving, the configuration is loaded and every upstream has at least
//! one healthy server: what a balancer in front of several precond instances checks), `GET /metrics` (Prometheus text), and
//! `GET`/`DELETE /store?url=…` (what precond knows of one resource, and forgetting it:
//! [`super::inspect`]), and `POST /reload` (re-read the configuration file: [`super::reload`]).
//!
//! Owns: [`AdminApp`] and the bearer token check.
//!
//! Invariants: with `admin.token_file` set, `/metrics`, `/store` and `/reload` answer only a request
//! carrying `Authorization: Bearer <token>` (compared in constant time); `/healthz` and `/readyz` disclose
//! nothing but liveness and readiness and never need it. Every answer has a `Content-Length`;
//! anything else gets a 404 or 405 problem body.

use std::sync::Arc;

use async_trait::async_trait;
use http::{Method, Response};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::proxy::LiveConfig;
use crate::store::Store;
use crate::telemetry::{Metrics, UpstreamGauge};

use super::inspect::{describe, resource_of, url_param};
use super::listening::Listening;
use super::metrics_listener::store_gauges;
use super::reload::{Reloaded, Reloader};

/// Shortest admin token accepted, in bytes.
const MIN_TOKEN: usize = 16;

/// Serves the admin endpoints.
pub(super) struct AdminApp {
    /// The configuration in force.
    pub(super) live: Arc<LiveConfig>,
    /// `POST /reload`.
    pub(super) reloader: Arc<Reloader>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) store: Arc<Store>,
    /// Whether the listeners are bound and their services alive (not ready otherwise).
    pub(super) listening: Arc<Listening>,
    /// The bearer token `/metrics`, `/store` and `/reload` require, when configured.
    pub(super) token: Option<Vec<u8>>,
}

/// Reads the admin token (trailing newlines trimmed; at least [`MIN_TOKEN`] bytes).
pub(super) fn read_token(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut b = std::fs::read(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("[admin] token_file {}: {e}", path.display()),
        )
    })?;
    while b.last().is_some_and(|c| c.is_ascii_whitespace()) {
        b.pop();
    }
    if b.len() < MIN_TOKEN {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "[admin] token_file {}: the token must be at least {MIN_TOKEN} bytes",
                path.display()
            ),
        ));
    }
    Ok(b)
}

/// Equal, in a time that depends on the lengths only.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn answer(status: u16, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::builder()
        .status(status)
        .header("Content-Type", content_type)
        .header("Content-Length", body.len())
        .header("Cache-Control", "no-store");
    if status == 401 {
        r = r.header("WWW-Authenticate", "Bearer");
    }
    r.body(body).expect("static response parts are valid")
}

fn problem(status: u16, title: &str, detail: &str) -> Response<Vec<u8>> {
    let body = serde_json::json!({
        "type": "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
    });
    answer(
        status,
        "application/problem+json",
        serde_json::to_vec(&body).unwrap_or_default(),
    )
}

impl AdminApp {
    fn readiness(&self) -> Response<Vec<u8>> {
        let pools = self.live.upstreams();
        let upstreams: Vec<serde_json::Value> = pools
            .pools()
            .iter()
            .map(|p| {
                let (healthy, servers) = p.health();
                serde_json::json!({
                    "name": p.settings().name,
                    "healthy": healthy,
                    "servers": servers,
                })
            })
            .collect();
        let listening = self.listening.is_listening();
        let ready = listening && pools.ready();
        let status = self.reloader.status();
        let body = serde_json::json!({
            "ready": ready,
            "listening": listening,
            "upstreams": upstreams,
            // The reload's outcome, not its error text (which may repeat values from the file):
            // this endpoint needs no token; the error is in the log and in POST /reload's answer.
            "config": {
                "generation": status.generation,
                "last": status.last,
                "at": status.at,
            },
        });
        answer(
            if ready { 200 } else { 503 },
            "application/json",
            serde_json::to_vec(&body).unwrap_or_default(),
        )
    }

    /// `GET /store?url=…` (what is known of the resource) or `DELETE /store?url=…` (forget it).
    fn store(&self, url: Option<String>, delete: bool) -> Response<Vec<u8>> {
        let Some(url) = url else {
            return problem(
                400,
                "Bad Request",
                "Give the resource as ?url=http://host/path (percent-encoded).",
            );
        };
        let config = self.live.config();
        let (route, key) = match resource_of(&config, &url) {
            Ok(r) => r,
            Err(why) => return problem(400, "Bad Request", &why),
        };
        let key = key.as_key();
        if delete {
            let forgotten = self.store.forget(&key);
            let body = serde_json::json!({ "forgotten": forgotten });
            return answer(
                200,
                "application/json",
                serde_json::to_vec(&body).unwrap_or_default(),
            );
        }
        match self.store.record_of(&key) {
            Some(record) => answer(
                200,
                "application/json",
                serde_json::to_vec(&describe(route, &config, &record)).unwrap_or_default(),
            ),
            None => problem(
                404,
                "Not Found",
                "precond holds nothing about this resource (never learned, expired, evicted or forgotten).",
            ),
        }
    }

    /// `POST /reload`: re-read the configuration file (as `SIGHUP` does).
    fn reload(&self) -> Response<Vec<u8>> {
        match self.reloader.reload("POST /reload") {
            Ok(outcome) => {
                let status = self.reloader.status();
                let body = serde_json::json!({
                    "reloaded": outcome == Reloaded::Swapped,
                    "generation": status.generation,
                });
                answer(
                    200,
                    "application/json",
                    serde_json::to_vec(&body).unwrap_or_default(),
                )
            }
            Err(e) => problem(
                422,
                "Configuration Not Reloaded",
                &format!("{e}. The running configuration stays in force."),
            ),
        }
    }

    fn metrics(&self) -> Response<Vec<u8>> {
        let pools = self.live.upstreams();
        let health: Vec<(usize, usize)> = pools.pools().iter().map(|p| p.health()).collect();
        let upstreams: Vec<UpstreamGauge<'_>> = pools
            .pools()
            .iter()
            .zip(&health)
            .map(|(p, (healthy, servers))| UpstreamGauge {
                name: &p.settings().name,
                healthy: *healthy,
                servers: *servers,
            })
            .collect();
        let text = self.metrics.render(store_gauges(&self.store), &upstreams);
        answer(200, "text/plain; version=0.0.4", text.into_bytes())
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let req = session.req_header();
        let path = req.uri.path();
        let method = &req.method;
        let delete = method == Method::DELETE && path == "/store";
        let reload = path == "/reload";
        let allowed = if reload {
            method == Method::POST
        } else {
            method == Method::GET || method == Method::HEAD || delete
        };
        if !allowed {
            return problem(
                405,
                "Method Not Allowed",
                "The admin endpoints answer GET only (and DELETE /store, POST /reload).",
            );
        }
        let authorized = || {
            self.token.as_ref().is_none_or(|token| {
                req.headers
                    .get(http::header::AUTHORIZATION)
                    .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
                    .is_some_and(|g| same(g, token))
            })
        };
        let unauthorized = || {
            problem(
                401,
                "Unauthorized",
                "This endpoint requires Authorization: Bearer <the token in admin.token_file>.",
            )
        };
        match path {
            "/healthz" => answer(200, "text/plain", b"ok\n".to_vec()),
            "/readyz" => self.readiness(),
            "/metrics" if !authorized() => unauthorized(),
            "/metrics" => self.metrics(),
            "/store" if !authorized() => unauthorized(),
            "/store" => self.store(url_param(req.uri.query()), delete),
            "/reload" if !authorized() => unauthorized(),
            "/reload" => self.reload(),
            _ => problem(
                404,
                "Not Found",
                "The admin listener serves /healthz, /readyz, /metrics, /store?url=… and POST /reload.",
            ),
        }
    }
}
