//! What labels an edge answer: the decision word the metrics count it under, and where it was
//! given (route, upstream, start) for its decision line.
//!
//! Owns: [`Where`] and [`decision_label`]. Invariant: every label value is one of precond's own
//! words or a name from the configuration, never a client's value (the origin's
//! `Precond-Decision` is removed before anything reads the header).

use std::sync::Arc;

use super::ctx::Ctx;
use super::shared::Routes;

/// Where an edge answer is given, for its decision line: the request's route and upstream (as
/// the metrics name them, from the configuration it started under) and when it started.
pub(crate) struct Where {
    live: Arc<Routes>,
    route: Option<usize>,
    started: std::time::Instant,
}

impl Where {
    /// The request of `ctx`.
    pub(crate) fn of(ctx: &Ctx) -> Where {
        Where {
            live: ctx.live.clone(),
            route: ctx.route,
            started: ctx.started,
        }
    }

    pub(crate) fn route(&self) -> &str {
        self.route.map_or("", |i| self.live.labels[i].as_str())
    }

    pub(crate) fn upstream(&self) -> &str {
        self.route.map_or("", |i| {
            let c = &self.live.config;
            c.upstreams[c.routes[i].upstream].name.as_str()
        })
    }

    pub(crate) fn duration_ms(&self) -> f64 {
        self.started.elapsed().as_secs_f64() * 1000.0
    }
}

/// The first word of every [`DECISION_HEADER`](super::answer::DECISION_HEADER) value precond writes (the metrics' `decision`
/// label: a fixed set, so that series stay bounded).
const DECISIONS: [&str; 11] = [
    "rejected",
    "not-modified",
    "required",
    "no-route",
    "ambiguous-target",
    "key-too-long",
    "write-busy",
    "state-unknown",
    "earlier-write-in-flight",
    "shared-store-unavailable",
    "upstream-error",
];

/// The decision of a finished request, as a metric label: the first word of the edge's
/// [`DECISION_HEADER`](super::answer::DECISION_HEADER), else `forwarded` when the request reached an upstream (an `enforce`
/// read precond fetched and relayed included), else `none`
/// (the client left before an answer, or Pingora answered itself).
pub(crate) fn decision_label(header: Option<&[u8]>, forwarded: bool) -> &'static str {
    match header {
        Some(v) => {
            let word = v.split(|b| *b == b';').next().unwrap_or_default();
            DECISIONS
                .iter()
                .find(|d| d.as_bytes() == word)
                .copied()
                .unwrap_or("other")
        }
        None if forwarded => "forwarded",
        None => "none",
    }
}
