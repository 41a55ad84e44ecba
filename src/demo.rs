//! A bundled legacy origin: a small in-memory JSON API for the quick start and the tests.
//!
//! Owns: [`DemoOrigin`], an HTTP/1.1 server (hyper) on its own thread, and its request counters.
//! It behaves like the APIs precond is put in front of: it **never checks a precondition**, and
//! sends validators as [`Tags`] says: strong `ETag`s and `Last-Modified`, weak ones (as Express,
//! Koa and Rails do by default, and nginx when it compresses: on every response, write responses
//! included), or none at all (a legacy API).
//!
//! Resources: any path. `GET`/`HEAD` read, `PUT` creates or replaces (201/200), `PATCH` merges a
//! JSON object into the stored one, `DELETE` removes (204), `POST` creates a child `{path}/{n}`
//! (201 with `Location`). Entity-tags are `"r<n>"` with `n` from one counter, so a tag is never
//! reused across versions or resources. Seeded with `{prefix}/items/1` and `{prefix}/items/2`.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::SystemTime;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Largest request body the demo accepts.
const MAX_BODY: usize = 1 << 20;

/// Counters of what reached the origin.
#[derive(Default, Debug)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Requests received (any method).
    pub requests: AtomicU64,
    /// Write requests received (PUT, PATCH, DELETE, POST).
    pub writes: AtomicU64,
}

/// Which validators the demo origin sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tags {
    /// None at all: a legacy API (`enforce`'s case).
    None,
    /// Strong `ETag` (`"r<n>"`) and `Last-Modified`.
    Strong,
    /// Weak `ETag` (`W/"r<n>"`) and `Last-Modified`.
    Weak,
}

#[derive(Clone)]
struct Item {
    body: Bytes,
    version: u64,
    modified: SystemTime,
}

struct State {
    tags: Tags,
    items: Mutex<HashMap<String, Item>>,
    versions: AtomicU64,
    children: AtomicU64,
    stats: Arc<Stats>,
}

impl State {
    fn next_version(&self) -> u64 {
        self.versions.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A running demo origin; dropping it stops the server.
pub struct DemoOrigin {
    /// Where it listens.
    pub addr: SocketAddr,
    /// What reached it.
    pub stats: Arc<Stats>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for DemoOrigin {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl DemoOrigin {
    /// Starts the origin on `addr` (port 0 picks a free port), sending the validators `tags`
    /// says; the seed resources are `{prefix}/items/1` and `{prefix}/items/2`.
    pub fn start(addr: SocketAddr, tags: Tags, prefix: &str) -> std::io::Result<DemoOrigin> {
        let std_listener = std::net::TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let stats = Arc::new(Stats::default());
        let state = Arc::new(State {
            tags,
            items: Mutex::new(HashMap::new()),
            versions: AtomicU64::new(0),
            children: AtomicU64::new(0),
            stats: stats.clone(),
        });
        for (path, body) in [
            ("/items/1", r#"{"id":1,"name":"widget","stock":10}"#),
            ("/items/2", r#"{"id":2,"name":"gadget","stock":3}"#),
        ] {
            let item = Item {
                body: Bytes::from_static(body.as_bytes()),
                version: state.next_version(),
                modified: SystemTime::now(),
            };
            state
                .items
                .lock()
                .expect("fresh lock")
                .insert(format!("{prefix}{path}"), item);
        }
        let (stop, mut stopped) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name("demo-origin".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    loop {
                        tokio::select! {
                            _ = &mut stopped => break,
                            accepted = listener.accept() => {
                                let Ok((stream, _)) = accepted else { continue };
                                state.stats.connections.fetch_add(1, Ordering::Relaxed);
                                let state = state.clone();
                                tokio::spawn(async move {
                                    let svc = service_fn(move |req| handle(state.clone(), req));
                                    let _ = http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), svc)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })?;
        Ok(DemoOrigin {
            addr,
            stats,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

fn json_response(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .expect("valid response parts")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message }).to_string();
    json_response(status, Bytes::from(body))
}

fn with_validators(
    state: &State,
    mut resp: Response<Full<Bytes>>,
    item: &Item,
) -> Response<Full<Bytes>> {
    if state.tags != Tags::None {
        let weak = if state.tags == Tags::Weak { "W/" } else { "" };
        let h = resp.headers_mut();
        h.insert(
            header::ETAG,
            format!("{weak}\"r{}\"", item.version)
                .parse()
                .expect("ascii"),
        );
        h.insert(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(item.modified)
                .parse()
                .expect("ascii"),
        );
    }
    resp
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let method = req.method().clone();
    if matches!(
        method,
        Method::PUT | Method::PATCH | Method::DELETE | Method::POST
    ) {
        state.stats.writes.fetch_add(1, Ordering::Relaxed);
    }
    let path = req.uri().path().to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body too large or broken",
            ))
        }
    };
    let mut items = state.items.lock().expect("demo lock never poisoned");
    let resp = match method {
        Method::GET | Method::HEAD => match items.get(&path) {
            Some(item) => {
                let body = if method == Method::HEAD {
                    Bytes::new()
                } else {
                    item.body.clone()
                };
                let mut r = json_response(StatusCode::OK, body);
                if method == Method::HEAD {
                    r.headers_mut()
                        .insert(header::CONTENT_LENGTH, item.body.len().into());
                }
                with_validators(&state, r, item)
            }
            None => error(StatusCode::NOT_FOUND, "no such resource"),
        },
        Method::PUT => {
            if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                error(StatusCode::BAD_REQUEST, "body must be JSON")
            } else {
                let item = Item {
                    body: body.clone(),
                    version: state.next_version(),
                    modified: SystemTime::now(),
                };
                let status = if items.insert(path, item.clone()).is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                with_validators(&state, json_response(status, body), &item)
            }
        }
        Method::PATCH => match (
            items.get(&path),
            serde_json::from_slice::<serde_json::Value>(&body),
        ) {
            (None, _) => error(StatusCode::NOT_FOUND, "no such resource"),
            (Some(_), Err(_)) => error(StatusCode::BAD_REQUEST, "body must be a JSON object"),
            (Some(old), Ok(patch)) => {
                let mut merged: serde_json::Value =
                    serde_json::from_slice(&old.body).unwrap_or_else(|_| serde_json::json!({}));
                match (merged.as_object_mut(), patch.as_object()) {
                    (Some(m), Some(p)) => {
                        for (k, v) in p {
                            m.insert(k.clone(), v.clone());
                        }
                        let item = Item {
                            body: Bytes::from(merged.to_string()),
                            version: state.next_version(),
                            modified: SystemTime::now(),
                        };
                        items.insert(path, item.clone());
                        with_validators(
                            &state,
                            json_response(StatusCode::OK, item.body.clone()),
                            &item,
                        )
                    }
                    _ => error(
                        StatusCode::BAD_REQUEST,
                        "PATCH merges a JSON object into a JSON object",
                    ),
                }
            }
        },
        Method::DELETE => match items.remove(&path) {
            Some(_) => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(Full::new(Bytes::new()))
                .expect("valid response parts"),
            None => error(StatusCode::NOT_FOUND, "no such resource"),
        },
        Method::POST => {
            let n = state.children.fetch_add(1, Ordering::Relaxed) + 1;
            let child = format!("{}/{n}", path.trim_end_matches('/'));
            let item = Item {
                body: body.clone(),
                version: state.next_version(),
                modified: SystemTime::now(),
            };
            items.insert(child.clone(), item);
            let mut r = json_response(StatusCode::CREATED, body);
            r.headers_mut().insert(
                header::LOCATION,
                child
                    .parse()
                    .unwrap_or(header::HeaderValue::from_static("/")),
            );
            r
        }
        _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not supported"),
    };
    Ok(resp)
}
