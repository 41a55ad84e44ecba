//! Per-request state carried between Pingora's phases.
//!
//! Owns: [`Ctx`]. Invariant: `key` is set only on `guard` and `enforce` routes (the store learns
//! only there), and `ticket` whenever `key` is.

use std::sync::Arc;

use crate::config::Route;
use crate::identity::{OwnedKey, Principal};
use crate::precondition::Method;
use crate::store::redis::Lease;
use crate::store::Ticket;

use super::guard::fence::Hold;
use super::locks::KeyGuard;
use super::shared::{GenerationWrite, Routes};

/// Per-request state.
pub struct Ctx {
    /// The configuration the request started under (kept to its end: `route` indexes it).
    pub(crate) live: Arc<Routes>,
    /// A write, counted in `live`'s generation until the request ends.
    pub(crate) generation_write: Option<GenerationWrite>,
    /// The resource's hash for the generations' write counts (canonical host and path).
    pub(crate) resource: u64,
    /// Index of the matched route in the configuration.
    pub(crate) route: Option<usize>,
    pub(crate) method: Method,
    /// Resource key, set on `guard` and `enforce` routes (the store learns only there).
    pub(crate) key: Option<OwnedKey>,
    pub(crate) ticket: Option<Ticket>,
    /// `guard` with a shared store: the write's ticket there (stamps what its answer proves).
    pub(crate) shared_ticket: Option<u64>,
    /// Whose partition the request reads and teaches.
    pub(crate) principal: Principal,
    pub(crate) forwarded: bool,
    /// `enforce`: a read precond fetched from the origin itself and relayed.
    pub(crate) relayed: bool,
    pub(crate) learned: bool,
    /// `enforce`: the per-resource write lock, held until the origin's answer is learned.
    pub(crate) write_lock: Option<KeyGuard<OwnedKey>>,
    /// `enforce` with a shared store: the resource's lease there, held like `write_lock`.
    pub(crate) lease: Option<Lease>,
    /// `enforce`: when the body of the write holding the lock must have arrived.
    pub(crate) body_deadline: Option<std::time::Instant>,
    /// `guard`: the write's places at its fence and single-flight gate, released once the
    /// origin's answer has been learned (or the exchange ended without one).
    pub(crate) fence: Vec<Hold>,
    /// When the request's context was made (its start, for the access line).
    pub(crate) started: std::time::Instant,
    /// When the request was sent upstream (for the origin-latency histogram).
    pub(crate) sent: Option<std::time::Instant>,
    /// A write forwarded and not answered yet: counted in `precond_writes_in_flight`.
    pub(crate) in_flight: Option<crate::telemetry::InFlight>,
    /// The server of the attempt in progress.
    pub(crate) server: Option<std::net::SocketAddr>,
    /// Servers this request failed to connect to (never tried again).
    pub(crate) tried: Vec<std::net::SocketAddr>,
    /// The consistent-selection key, computed on the first attempt.
    pub(crate) select_key: Option<Vec<u8>>,
    /// `observe`: the refusal `guard` would have answered.
    pub(crate) would_refuse: Option<crate::precondition::Failure>,
    /// `observe`: a PUT, PATCH or DELETE without a precondition, classified by the census when
    /// the origin answers.
    pub(crate) blind: bool,
    /// `observe`: who sent the request (credentials' hash, whatever the route's scope).
    pub(crate) caller: Principal,
    /// `enforce`: the preconditions were evaluated against synthesised tags; remove
    /// `If-Match`/`If-None-Match` before forwarding (the origin never issued those tags).
    pub(crate) strip_tags: bool,
}

impl Ctx {
    /// The state of a request that has not been routed yet, under `live`.
    pub(crate) fn new(live: Arc<Routes>) -> Ctx {
        Ctx {
            live,
            generation_write: None,
            resource: 0,
            route: None,
            method: Method::Other,
            key: None,
            ticket: None,
            shared_ticket: None,
            principal: Principal::SHARED,
            forwarded: false,
            relayed: false,
            learned: false,
            write_lock: None,
            lease: None,
            body_deadline: None,
            fence: Vec::new(),
            strip_tags: false,
            would_refuse: None,
            blind: false,
            caller: Principal::SHARED,
            server: None,
            sent: None,
            in_flight: None,
            started: std::time::Instant::now(),
            tried: Vec::new(),
            select_key: None,
        }
    }
}

impl Ctx {
    /// The matched route, in the configuration the request started under.
    pub(crate) fn route(&self) -> Option<&Route> {
        self.route.map(|i| &self.live.config.routes[i])
    }
}
