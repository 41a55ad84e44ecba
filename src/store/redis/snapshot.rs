//! What a probe of the origin showed, as the shared store keeps it for the next writer: the
//! status class, the validators precond answers with, and the modification date. A compact,
//! bounded binary encoding (tags are bytes, possibly not UTF-8).
//!
//! Owns: [`Snapshot`], [`Snapshot::encode`], [`Snapshot::decode`]. Invariant: `decode(encode(s))
//! == s`, and `decode` refuses (returns `None`) any input it did not produce, whole.

/// The state one probe established for one caller's partition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The probe's status (2xx: exists; 404/410: absent).
    pub status: u16,
    /// The `ETag` precond answers with: the origin's, or a synthesised one.
    pub tag: Option<Vec<u8>>,
    /// `tag` was synthesised.
    pub synthetic: bool,
    /// With a synthesised tag: the origin's own (weak) tag it replaced.
    pub alias: Option<Vec<u8>>,
    /// `Last-Modified`, in seconds since the epoch.
    pub last_modified: Option<i64>,
}

/// Format version, first byte of every encoding.
const VERSION: u8 = 1;
/// Longest tag kept (a longer one is not shared: the next writer probes).
const MAX_TAG: usize = 1024;

fn put(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => out.extend_from_slice(&u16::MAX.to_be_bytes()),
        Some(b) => {
            out.extend_from_slice(&(b.len() as u16).to_be_bytes());
            out.extend_from_slice(b);
        }
    }
}

fn take<'a>(input: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if input.len() < n {
        return None;
    }
    let (head, rest) = input.split_at(n);
    *input = rest;
    Some(head)
}

fn get(input: &mut &[u8]) -> Option<Option<Vec<u8>>> {
    let len = u16::from_be_bytes(take(input, 2)?.try_into().ok()?);
    if len == u16::MAX {
        return Some(None);
    }
    Some(Some(take(input, usize::from(len))?.to_vec()))
}

impl Snapshot {
    /// The encoding, or `None` when a tag is too long to share.
    pub fn encode(&self) -> Option<Vec<u8>> {
        let too_long = |t: &Option<Vec<u8>>| t.as_ref().is_some_and(|t| t.len() > MAX_TAG);
        if too_long(&self.tag) || too_long(&self.alias) {
            return None;
        }
        let mut out = Vec::with_capacity(16 + self.tag.as_ref().map_or(0, Vec::len));
        out.push(VERSION);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.push(u8::from(self.synthetic) | (u8::from(self.last_modified.is_some()) << 1));
        out.extend_from_slice(&self.last_modified.unwrap_or(0).to_be_bytes());
        put(&mut out, self.tag.as_deref());
        put(&mut out, self.alias.as_deref());
        Some(out)
    }

    /// The snapshot `bytes` encode; `None` for anything else.
    pub fn decode(bytes: &[u8]) -> Option<Snapshot> {
        let mut input = bytes;
        if take(&mut input, 1)? != [VERSION] {
            return None;
        }
        let status = u16::from_be_bytes(take(&mut input, 2)?.try_into().ok()?);
        let flags = take(&mut input, 1)?[0];
        if flags > 3 {
            return None;
        }
        let lm = i64::from_be_bytes(take(&mut input, 8)?.try_into().ok()?);
        let tag = get(&mut input)?;
        let alias = get(&mut input)?;
        if !input.is_empty() {
            return None;
        }
        Some(Snapshot {
            status,
            tag,
            synthetic: flags & 1 == 1,
            alias,
            last_modified: (flags & 2 == 2).then_some(lm),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::Snapshot;

    #[test]
    fn encodings_round_trip_and_nothing_else_decodes() {
        let cases = [
            Snapshot {
                status: 200,
                tag: Some(b"\"s-abc\"".to_vec()),
                synthetic: true,
                alias: Some(b"W/\"1\"".to_vec()),
                last_modified: Some(1_700_000_000),
            },
            Snapshot {
                status: 404,
                tag: None,
                synthetic: false,
                alias: None,
                last_modified: None,
            },
            Snapshot {
                status: 200,
                tag: Some(vec![b'"', 0xff, 0x80, b'"']),
                synthetic: false,
                alias: None,
                last_modified: Some(-5),
            },
        ];
        for s in cases {
            let e = s.encode().unwrap();
            assert_eq!(Snapshot::decode(&e), Some(s.clone()));
            for cut in 0..e.len() {
                assert_eq!(Snapshot::decode(&e[..cut]), None, "a prefix of {cut} bytes");
            }
            let mut longer = e.clone();
            longer.push(0);
            assert_eq!(Snapshot::decode(&longer), None);
        }
        assert_eq!(Snapshot::decode(b""), None);
        let huge = Snapshot {
            status: 200,
            tag: Some(vec![b'a'; 2000]),
            synthetic: false,
            alias: None,
            last_modified: None,
        };
        assert_eq!(huge.encode(), None);
    }
}
