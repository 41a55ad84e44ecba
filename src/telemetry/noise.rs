//! Log lines a client causes outside any request, bounded.
//!
//! Pingora logs every failed TLS handshake of a data listener at `ERROR` (`Downstream handshake
//! error from …`), one line per connection a client opens, as it does a failed `accept()`: a
//! client that opens connections and speaks no TLS could fill the log. [`ListenerNoise`], a
//! per-layer filter on the log output, lets at most one such line through per [`PERIOD`], and
//! counts the others ([`dropped`], exported as `precond_log_lines_dropped_total`).
//!
//! Owns: [`ListenerNoise`] and the rule that recognises these lines (their target and level;
//! records of the `log` crate are recognised by their original target).
//!
//! Invariant: every other event passes unchanged; of the listener's `ERROR` lines, at most one per
//! [`PERIOD`] passes, whatever the number of threads logging.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tracing::{Event, Level, Metadata};
use tracing_log::NormalizeEvent;
use tracing_subscriber::layer::{Context, Filter};

use super::RateLimit;

/// At most one listener error line per period.
pub const PERIOD: Duration = Duration::from_secs(1);

/// Where Pingora's accept loop logs (handshake failures and timeouts, `accept()` errors).
const LISTENER_TARGET: &str = "pingora_core::services::listening";

/// Lines dropped since the process started (`precond_log_lines_dropped_total`).
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The listener error lines dropped so far, by every [`ListenerNoise`] of the process.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A per-layer filter that rate-limits the data listeners' per-connection error lines.
#[derive(Debug, Default)]
pub struct ListenerNoise {
    gate: RateLimit,
}

/// An `ERROR` of Pingora's accept loop.
fn is_listener_error(meta: &Metadata<'_>) -> bool {
    *meta.level() == Level::ERROR && meta.target() == LISTENER_TARGET
}

impl<S> Filter<S> for ListenerNoise {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        if !is_listener_error(meta) || self.gate.ready(PERIOD) {
            return true;
        }
        DROPPED.fetch_add(1, Ordering::Relaxed);
        false
    }
}
