//! The counters of `observe` routes: what `guard` would have refused and what the origin
//! answered instead, and the lost-update census (writes without a precondition that overwrote a
//! version their caller had not read). `precond report` reads them back ([`super::report`]).
//!
//! Owns: [`ObserveMetrics`] and [`Answer`]. Invariants: counters only increase; every
//! (precondition, reason) pair has its own slot, indexed like the edge's 412 counters; only
//! series that can occur are exposed (a would-be refusal's pair once counted).

use prometheus::{IntCounter, IntCounterVec};

use crate::precondition::{Field, Reason};

use super::registry::Builder;

/// How the origin answered a write `guard` would have refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// 2xx: the write was applied over a version its client had not seen (a lost update in
    /// the making).
    Success,
    /// The origin refused it too (412).
    PreconditionFailed,
    /// Another 3xx or 4xx.
    Refused,
    /// 5xx.
    Error,
    /// No answer (the exchange broke).
    Broken,
}

impl Answer {
    /// Every answer, in counter order.
    pub const ALL: [Answer; 5] = [
        Answer::Success,
        Answer::PreconditionFailed,
        Answer::Refused,
        Answer::Error,
        Answer::Broken,
    ];

    /// The class of a final status.
    pub fn of(status: u16) -> Answer {
        match status {
            200..=299 => Answer::Success,
            412 => Answer::PreconditionFailed,
            500..=599 => Answer::Error,
            _ => Answer::Refused,
        }
    }

    /// Its label value.
    pub fn name(self) -> &'static str {
        match self {
            Answer::Success => "2xx",
            Answer::PreconditionFailed => "412",
            Answer::Refused => "other",
            Answer::Error => "5xx",
            Answer::Broken => "broken",
        }
    }
}

/// Counters of `observe` routes (registered with the proxy's other metrics).
pub struct ObserveMetrics {
    would_refuse: IntCounterVec,
    answered: [IntCounter; Answer::ALL.len()],
    /// Writes seen on observe routes: `[with a precondition, without]`.
    writes: [IntCounter; 2],
    /// Writes without a precondition the origin accepted over a version their caller had not read.
    blind_overwrites: IntCounter,
    /// `precond_census_writes_total{result}`: overwrite, informed, unclassified.
    census: [IntCounter; 3],
    /// `precond::observe` log lines not written: the per-route budget was spent.
    pub log_suppressed: IntCounter,
}

/// What the census said of a write without a precondition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Census {
    /// It overwrote a version its caller had not read (a blind overwrite).
    Overwrite,
    /// Its caller had seen the latest version.
    Informed,
    /// The census could not classify it (the caller never read the resource through precond,
    /// or an entry was forgotten).
    Unclassified,
}

impl ObserveMetrics {
    /// Registers the counters.
    pub(super) fn new(b: &Builder<'_>) -> ObserveMetrics {
        let writes = b.counters(
            "precond_observed_writes_total",
            "Writes on observe routes, by whether they carried a precondition.",
            &["precondition"],
        );
        let answered = b.counters(
            "precond_would_refuse_answered_total",
            "How the origin answered the writes guard would have refused.",
            &["answer"],
        );
        let census = b.counters(
            "precond_census_writes_total",
            "PUT, PATCH and DELETE without a precondition completed on observe routes, by what the census says of them.",
            &["result"],
        );
        ObserveMetrics {
            would_refuse: b.counters(
                "precond_would_refuse_total",
                "Writes on observe routes that guard would have answered 412.",
                &["precondition", "reason"],
            ),
            answered: Answer::ALL.map(|a| answered.with_label_values(&[a.name()])),
            writes: ["some", "none"].map(|l| writes.with_label_values(&[l])),
            blind_overwrites: b.counter(
                "precond_blind_overwrites_total",
                "Writes without a precondition the origin accepted over a version their caller had not read.",
            ),
            census: ["overwrite", "informed", "unclassified"]
                .map(|l| census.with_label_values(&[l])),
            log_suppressed: b.counter(
                "precond_observe_log_suppressed_total",
                "Observe log lines not written (over the per-route budget).",
            ),
        }
    }

    /// Counts a write seen on an observe route.
    pub fn write(&self, conditional: bool) {
        self.writes[usize::from(!conditional)].inc();
    }

    /// Counts a write `guard` would have refused.
    pub fn would_refuse(&self, field: Field, reason: Reason) {
        self.would_refuse
            .with_label_values(&[field.header_name(), reason.code()])
            .inc();
    }

    /// Counts the origin's answer to a write `guard` would have refused.
    pub fn answered(&self, a: Answer) {
        self.answered[a as usize].inc();
    }

    /// Counts what the census said of a completed write without a precondition.
    pub fn census(&self, c: Census) {
        self.census[c as usize].inc();
        if c == Census::Overwrite {
            self.blind_overwrites.inc();
        }
    }

    /// Completed writes without a precondition the census classified as `c`.
    pub fn census_count(&self, c: Census) -> u64 {
        self.census[c as usize].get()
    }

    /// Blind overwrites counted.
    pub fn blind_overwrites(&self) -> u64 {
        self.blind_overwrites.get()
    }

    /// Would-be refusals counted for one pair.
    pub fn would_refused(&self, field: Field, reason: Reason) -> u64 {
        self.would_refuse
            .get_metric_with_label_values(&[field.header_name(), reason.code()])
            .map_or(0, |c| c.get())
    }

    /// Would-be refusals the origin answered with `a`.
    pub fn answered_with(&self, a: Answer) -> u64 {
        self.answered[a as usize].get()
    }
}
