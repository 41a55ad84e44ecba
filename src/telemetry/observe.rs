//! The counters of `observe` routes: what `guard` would have refused and what the origin
//! answered instead, and the lost-update census (writes without a precondition that overwrote a
//! version their caller had not read). `precond report` reads them back ([`super::report`]).
//!
//! Owns: [`ObserveMetrics`] and [`Answer`]. Invariants: counters only increase; every
//! (precondition, reason) pair has its own slot, indexed like the edge's 412 counters; only
//! series that can occur are rendered (a would-be refusal's pair once counted).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::precondition::{Field, Reason};

const FIELDS: usize = Field::ALL.len();
const REASONS: usize = Reason::ALL.len();

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

/// Counters of `observe` routes.
pub struct ObserveMetrics {
    would_refuse: [AtomicU64; FIELDS * REASONS],
    answered: [AtomicU64; Answer::ALL.len()],
    /// Writes seen on observe routes: `[with a precondition, without]`.
    writes: [AtomicU64; 2],
    /// Writes without a precondition the origin accepted over a version their caller had not read.
    pub blind_overwrites: AtomicU64,
    /// Of those writes, the ones whose caller had seen the latest version.
    pub informed: AtomicU64,
    /// Of those writes, the ones the census could not classify (the caller never read the
    /// resource through precond, or an entry was forgotten).
    pub unclassified: AtomicU64,
    /// `precond::observe` log lines not written: the per-route budget was spent.
    pub log_suppressed: AtomicU64,
}

impl Default for ObserveMetrics {
    fn default() -> Self {
        ObserveMetrics {
            would_refuse: std::array::from_fn(|_| AtomicU64::new(0)),
            answered: std::array::from_fn(|_| AtomicU64::new(0)),
            writes: std::array::from_fn(|_| AtomicU64::new(0)),
            blind_overwrites: AtomicU64::new(0),
            informed: AtomicU64::new(0),
            unclassified: AtomicU64::new(0),
            log_suppressed: AtomicU64::new(0),
        }
    }
}

impl ObserveMetrics {
    /// Counts a write seen on an observe route.
    pub fn write(&self, conditional: bool) {
        self.writes[usize::from(!conditional)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a write `guard` would have refused.
    pub fn would_refuse(&self, field: Field, reason: Reason) {
        self.would_refuse[field.index() * REASONS + reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the origin's answer to a write `guard` would have refused.
    pub fn answered(&self, a: Answer) {
        self.answered[a as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Would-be refusals counted for one pair.
    pub fn would_refused(&self, field: Field, reason: Reason) -> u64 {
        self.would_refuse[field.index() * REASONS + reason.index()].load(Ordering::Relaxed)
    }

    /// Would-be refusals the origin answered with `a`.
    pub fn answered_with(&self, a: Answer) -> u64 {
        self.answered[a as usize].load(Ordering::Relaxed)
    }

    /// Appends the Prometheus text of these counters and the census's size.
    pub fn render(&self, out: &mut String, census_bytes: u64) {
        let _ = writeln!(
            out,
            "# HELP precond_observed_writes_total Writes on observe routes, by whether they carried a precondition.\n# TYPE precond_observed_writes_total counter"
        );
        for (label, v) in ["some", "none"].iter().zip(&self.writes) {
            let _ = writeln!(
                out,
                "precond_observed_writes_total{{precondition=\"{label}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP precond_would_refuse_total Writes on observe routes that guard would have answered 412.\n# TYPE precond_would_refuse_total counter"
        );
        for f in Field::ALL {
            for r in Reason::ALL {
                let v = self.would_refused(f, r);
                if v > 0 {
                    let _ = writeln!(
                        out,
                        "precond_would_refuse_total{{precondition=\"{}\",reason=\"{}\"}} {v}",
                        f.header_name(),
                        r.code()
                    );
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP precond_would_refuse_answered_total How the origin answered the writes guard would have refused.\n# TYPE precond_would_refuse_answered_total counter"
        );
        for a in Answer::ALL {
            let _ = writeln!(
                out,
                "precond_would_refuse_answered_total{{answer=\"{}\"}} {}",
                a.name(),
                self.answered_with(a)
            );
        }
        let _ = writeln!(
            out,
            "# HELP precond_blind_overwrites_total Writes without a precondition the origin accepted over a version their caller had not read.\n# TYPE precond_blind_overwrites_total counter\nprecond_blind_overwrites_total {}",
            self.blind_overwrites.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP precond_census_writes_total PUT, PATCH and DELETE without a precondition completed on observe routes, by what the census says of them.\n# TYPE precond_census_writes_total counter"
        );
        for (label, v) in [
            ("overwrite", &self.blind_overwrites),
            ("informed", &self.informed),
            ("unclassified", &self.unclassified),
        ] {
            let _ = writeln!(
                out,
                "precond_census_writes_total{{result=\"{label}\"}} {}",
                v.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP precond_observe_log_suppressed_total Observe log lines not written (over the per-route budget).\n# TYPE precond_observe_log_suppressed_total counter\nprecond_observe_log_suppressed_total {}",
            self.log_suppressed.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP precond_census_bytes Bytes of the lost-update census, as store.census_max_bytes counts them.\n# TYPE precond_census_bytes gauge\nprecond_census_bytes {census_bytes}"
        );
    }
}
