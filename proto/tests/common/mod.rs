//! Messages both the golden bytes and the JSON tests pin.

use syncd_proto::{
    ByteBuf, FailedList, FailedPath, HeldFullSync, HeldPath, RetryingPath, StuckPath,
};

/// A `FailedList` with one of each kind: parked, retrying, held, held by a full sync.
pub fn failed_list() -> FailedList {
    FailedList {
        entries: vec![FailedPath {
            target: "data/b1".into(),
            path: ByteBuf::from(b"x".to_vec()),
            attempts: 3,
            last_error: "denied".into(),
        }],
        more: 0,
        retrying: vec![RetryingPath {
            target: "data/b1".into(),
            path: ByteBuf::from(b"y".to_vec()),
            attempts: 1,
            next_retry_ms: 5000,
            last_error: "refused".into(),
        }],
        retrying_more: 2,
        held: vec![HeldPath {
            target: "data/b1".into(),
            path: ByteBuf::from(b"z\xff".to_vec()),
        }],
        held_more: 4,
        held_full: vec![HeldFullSync {
            target: "data/b2".into(),
            path: ByteBuf::from(b"".to_vec()),
            deletions: 6,
        }],
        stuck: vec![StuckPath {
            target: "data/b1".into(),
            path: ByteBuf::from(b"d/a\xff".to_vec()),
            ago_ms: 2500,
            what: "pushed again".into(),
        }],
    }
}
