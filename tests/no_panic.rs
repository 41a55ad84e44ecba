//! Property tests: no input bytes make the parser, the evaluator or the guard panic, and the
//! guard never refuses what the origin-role evaluator would accept with the same knowledge.

use precond::precondition::date::parse_date_field;
use precond::precondition::etag::scan_list;
use precond::precondition::{
    evaluate, guard, Conditional, Current, Decision, EntityTag, Existence, Knowledge, Method,
    Policy,
};
use proptest::prelude::*;

/// Header bytes biased toward the interesting characters.
fn field_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![
            Just(b'"'),
            Just(b','),
            Just(b' '),
            Just(b'\t'),
            Just(b'*'),
            Just(b'W'),
            Just(b'/'),
            Just(b'a'),
            Just(b'1'),
            any::<u8>(),
        ],
        0..24,
    )
}

fn lines() -> impl Strategy<Value = Vec<Vec<u8>>> {
    prop::collection::vec(field_bytes(), 0..3)
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        Just(Method::Get),
        Just(Method::Head),
        Just(Method::Put),
        Just(Method::Patch),
        Just(Method::Delete),
        Just(Method::Post),
        Just(Method::NoPreconditions),
    ]
}

struct Known {
    existence: Existence,
    current: Option<Vec<u8>>,
    replaced: Vec<Vec<u8>>,
    lm: Option<i64>,
}

impl Knowledge for Known {
    fn existence(&self) -> Existence {
        self.existence
    }
    fn current_known(&self) -> bool {
        true
    }
    fn is_current_strong(&self, tag: &EntityTag<'_>) -> bool {
        self.current
            .as_deref()
            .and_then(|c| EntityTag::new(false, c))
            .is_some_and(|c| c.strong_eq(tag))
    }
    fn is_current_weak(&self, tag: &EntityTag<'_>) -> bool {
        self.current
            .as_deref()
            .and_then(|c| EntityTag::new(false, c))
            .is_some_and(|c| c.weak_eq(tag))
    }
    fn was_replaced(&self, tag: &EntityTag<'_>) -> bool {
        !tag.is_weak() && self.replaced.iter().any(|r| r.as_slice() == tag.opaque())
    }
    fn last_modified(&self) -> Option<i64> {
        self.lm
    }
}

fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
    v.iter().map(|l| l.as_slice()).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn parsers_never_panic(ls in lines()) {
        let refs: Vec<&[u8]> = ls.iter().map(|l| l.as_slice()).collect();
        let _ = scan_list(refs.iter().copied(), |_| {});
        let _ = parse_date_field(refs.iter().copied());
        for l in &refs {
            let _ = EntityTag::parse(l);
        }
    }

    #[test]
    fn evaluators_never_panic_and_guard_is_never_stricter_than_the_truth(
        m in method(),
        im in lines(),
        inm in lines(),
        ims in lines(),
        ius in lines(),
        exists in any::<bool>(),
        cur in prop::option::of(prop::sample::select(vec![b"a".to_vec(), b"1".to_vec(), b"".to_vec()])),
        lm in prop::option::of(-2_000_000_000i64..2_000_000_000),
        no_cache in any::<bool>(),
    ) {
        let (im, inm, ims, ius) = (refs(&im), refs(&inm), refs(&ims), refs(&ius));
        let req = Conditional {
            method: m,
            if_match: &im[..],
            if_none_match: &inm[..],
            if_modified_since: &ims[..],
            if_unmodified_since: &ius[..],
            no_cache,
        };
        let existence = if exists { Existence::Exists } else { Existence::Absent };
        let current = Current {
            existence,
            etag: cur.as_deref().and_then(|c| EntityTag::new(false, c)),
            alias: None,
            last_modified: lm,
        };
        let truth = evaluate(&req, &current, false);
        let _ = evaluate(&req, &current, true);
        // The edge's knowledge equals the truth, and nothing was seen replaced except tags
        // that are not current: `mismatch` may refuse only what the origin would refuse.
        let k = Known {
            existence,
            current: if exists { cur.clone() } else { None },
            replaced: vec![b"old".to_vec()],
            lm,
        };
        for policy in [Policy::Superseded, Policy::Mismatch] {
            let d = guard(&req, Some(&k), policy);
            if let Decision::PreconditionFailed(_) = d {
                prop_assert!(
                    matches!(truth, Decision::PreconditionFailed(_)),
                    "guard {:?} refused {:?} but the origin would answer {:?}", policy, d, truth
                );
            }
        }
    }
}
