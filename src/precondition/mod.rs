//! The RFC 9110 §13 precondition logic, pure: no I/O, no Pingora or `http` types, no allocation on
//! the decision path.
//!
//! - [`etag`]: entity-tag grammar, quote-aware lists, strong/weak comparison.
//! - [`date`]: HTTP-date fields (three formats via `httpdate`; lists and invalid dates ignored).
//! - [`request`]: the view of a request's precondition fields that every evaluator reads.
//! - [`evaluate`](mod@evaluate): the full §13.2.2 evaluation for a judge that knows the resource's state
//!   (origin role: `enforce` mode, and the reference the other policies are tested against).
//! - [`guard`](mod@guard): the `guard` role, where the origin is the judge and the edge only refuses what its
//!   learned knowledge *proves* false.

pub mod date;
pub mod etag;
pub mod evaluate;
pub mod guard;
pub mod request;

pub use date::{DateField, Timestamp};
pub use etag::{EntityTag, ListShape};
pub use evaluate::{evaluate, Current, Decision, Existence, Failure, Field, Reason};
pub use guard::{guard, Comparison, Knowledge, Policy};
pub use request::{Conditional, FieldLines, Method};
