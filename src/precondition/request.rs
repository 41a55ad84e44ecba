//! The precondition fields of one request, as the evaluators see them.
//!
//! Owns: the request method classification and [`FieldLines`], the borrowed view of a header's
//! field lines. The proxy glue implements [`FieldLines`] over its header map; tests implement it
//! over slices. Nothing is copied: every evaluator re-walks the borrowed bytes.

/// The field lines of one request header, in order, as raw bytes (RFC 9110 §5.3: several lines of a
/// list-valued field form one list).
pub trait FieldLines<'a>: Copy {
    /// Iterator over the lines.
    type Iter: Iterator<Item = &'a [u8]>;
    /// The lines, first to last.
    fn lines(self) -> Self::Iter;
}

impl<'a> FieldLines<'a> for &'a [&'a [u8]] {
    type Iter = std::iter::Copied<std::slice::Iter<'a, &'a [u8]>>;
    fn lines(self) -> Self::Iter {
        self.iter().copied()
    }
}

/// Request methods, as far as preconditions care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
    /// POST
    Post,
    /// OPTIONS, CONNECT, TRACE: preconditions MUST be ignored (RFC 9110 §13.2.1).
    NoPreconditions,
    /// Any other (extension) method.
    Other,
}

impl Method {
    /// Classifies a method token (case-sensitive, RFC 9110 §9.1).
    pub fn from_bytes(m: &[u8]) -> Method {
        match m {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"PUT" => Method::Put,
            b"PATCH" => Method::Patch,
            b"DELETE" => Method::Delete,
            b"POST" => Method::Post,
            b"OPTIONS" | b"CONNECT" | b"TRACE" => Method::NoPreconditions,
            _ => Method::Other,
        }
    }

    /// GET or HEAD: the methods for which a false `If-None-Match`/`If-Modified-Since` means 304.
    pub fn is_get_or_head(self) -> bool {
        matches!(self, Method::Get | Method::Head)
    }

    /// The writes precond guards: PUT, PATCH, DELETE, POST.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Method::Put | Method::Patch | Method::Delete | Method::Post
        )
    }

    /// Methods that may change the target's state: the writes, and any extension method (or a
    /// standard method in the wrong case, which RFC 9110 §9.1 makes another method). Fails
    /// closed: what precond does not know is treated as a write when learning and serialising.
    pub fn changes_state(self) -> bool {
        self.is_write() || self == Method::Other
    }

    /// Methods that can create a missing resource, so that a precondition on a resource known to be
    /// absent is still evaluated (RFC 9110 §13.2.1: for the others the 404 takes precedence).
    pub fn may_create(self) -> bool {
        matches!(self, Method::Put | Method::Patch)
    }
}

/// A request's precondition fields. `L` gives the raw field lines of each header.
#[derive(Clone, Copy, Debug)]
pub struct Conditional<L> {
    /// The request method.
    pub method: Method,
    /// `If-Match` lines.
    pub if_match: L,
    /// `If-None-Match` lines.
    pub if_none_match: L,
    /// `If-Modified-Since` lines.
    pub if_modified_since: L,
    /// `If-Unmodified-Since` lines.
    pub if_unmodified_since: L,
    /// The request carries `Cache-Control: no-cache` (or `Pragma: no-cache`): a 304 must not be
    /// answered from stored validators (RFC 9111 §5.2.1.4).
    pub no_cache: bool,
}

impl<'a, L: FieldLines<'a>> Conditional<L> {
    /// Whether any of the four precondition fields is present.
    pub fn has_any(&self) -> bool {
        [
            self.if_match,
            self.if_none_match,
            self.if_modified_since,
            self.if_unmodified_since,
        ]
        .into_iter()
        .any(|l| l.lines().next().is_some())
    }
}
