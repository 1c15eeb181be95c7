//! The JSON of `syncctl --json status` and `GET /status` is public interface: its bytes are
//! pinned here (keys in the order scripts have seen them, every field of every kind of root,
//! target and progress).

mod common;

use syncd_proto::{
    status_json, ByteBuf, RenameMode, RootState, RootStatus, StatusReport, SyncProgress,
    TargetState, TargetStatus, TreeSize,
};

fn target(name: &str, full_sync: Option<SyncProgress>, renames: RenameMode) -> TargetStatus {
    TargetStatus {
        name: name.into(),
        dest: "u@127.0.0.1::m".into(),
        state: TargetState::Backoff,
        pending: 12_345,
        in_flight: 2,
        failed: 1,
        delivered: 99,
        oldest_pending_ms: Some(1500),
        last_error: Some("rsync exit 10: connection failed".into()),
        next_retry_ms: None,
        full_sync,
        verify: None,
        renames,
        deletes_held: 4,
        stuck: 0,
    }
}

fn report() -> StatusReport {
    let progress = |total| SyncProgress {
        elapsed_ms: 3200,
        files: 10,
        path: ByteBuf::from(b"d\xff".to_vec()),
        queued: 2,
        checked: 450,
        checked_bytes: 3_000,
        deleted: 1,
        bytes_sent: 1536,
        total,
    };
    StatusReport {
        version: "0.1.0".into(),
        pid: 42,
        uptime_ms: 7000,
        roots: vec![
            RootStatus {
                name: "data".into(),
                source: ByteBuf::from(b"/data".to_vec()),
                state: RootState::Watching,
                watches: 3,
                targets: vec![
                    target("b1", None, RenameMode::Unprobed),
                    target(
                        "b2",
                        Some(progress(Some(TreeSize {
                            entries: 1000,
                            bytes: 10_000,
                        }))),
                        RenameMode::Moves,
                    ),
                ],
            },
            RootStatus {
                name: "gone".into(),
                source: ByteBuf::from(b"/g\xfe".to_vec()),
                state: RootState::Unavailable {
                    reason: "the source root is gone".into(),
                },
                watches: 0,
                targets: vec![target(
                    "b3",
                    Some(progress(None)),
                    RenameMode::Plain("the probe failed".into()),
                )],
            },
        ],
    }
}

const GOLDEN: &str = r#"{"pid":42,"roots":[{"name":"data","reason":null,"source":"/data","state":"watching","targets":[{"deletes_held":4,"delivered":99,"dest":"u@127.0.0.1::m","failed":1,"full_sync":null,"id":"data/b1","in_flight":2,"last_error":"rsync exit 10: connection failed","name":"b1","next_retry_ms":null,"oldest_pending_ms":1500,"pending":12345,"renames":"unprobed","renames_reason":null,"root":"data","state":"backoff","stuck":0,"verify":null},{"deletes_held":4,"delivered":99,"dest":"u@127.0.0.1::m","failed":1,"full_sync":{"bytes_sent":1536,"checked":450,"checked_bytes":3000,"deleted":1,"elapsed_ms":3200,"files":10,"fraction":0.45,"path":"d�","queued":2,"total":{"bytes":10000,"entries":1000}},"id":"data/b2","in_flight":2,"last_error":"rsync exit 10: connection failed","name":"b2","next_retry_ms":null,"oldest_pending_ms":1500,"pending":12345,"renames":"moves","renames_reason":null,"root":"data","state":"backoff","stuck":0,"verify":null}],"watches":3},{"name":"gone","reason":"the source root is gone","source":"/g�","state":"unavailable","targets":[{"deletes_held":4,"delivered":99,"dest":"u@127.0.0.1::m","failed":1,"full_sync":{"bytes_sent":1536,"checked":450,"checked_bytes":3000,"deleted":1,"elapsed_ms":3200,"files":10,"fraction":null,"path":"d�","queued":2,"total":null},"id":"gone/b3","in_flight":2,"last_error":"rsync exit 10: connection failed","name":"b3","next_retry_ms":null,"oldest_pending_ms":1500,"pending":12345,"renames":"plain","renames_reason":"the probe failed","root":"gone","state":"backoff","stuck":0,"verify":null}],"watches":0}],"targets":[{"deletes_held":4,"delivered":99,"dest":"u@127.0.0.1::m","failed":1,"full_sync":null,"id":"data/b1","in_flight":2,"last_error":"rsync exit 10: connection failed","name":"b1","next_retry_ms":null,"oldest_pending_ms":1500,"pending":12345,"renames":"unprobed","renames_reason":null,"root":"data","state":"backoff","stuck":0,"verify":null},{"deletes_held":4,"delivered":99,"dest":"u@127.0.0.1::m","failed":1,"full_sync":{"bytes_sent":1536,"checked":450,"checked_bytes":3000,"deleted":1,"elapsed_ms":3200,"files":10,"fraction":0.45,"path":"d�","queued":2,"total":{"bytes":10000,"entries":1000}},"id":"data/b2","in_flight":2,"last_error":"rsync exit 10: connection failed","name":"b2","next_retry_ms":null,"oldest_pending_ms":1500,"pending":12345,"renames":"moves","renames_reason":null,"root":"data","state":"backoff","stuck":0,"verify":null},{"deletes_held":4,"delivered":99,"dest":"u@127.0.0.1::m","failed":1,"full_sync":{"bytes_sent":1536,"checked":450,"checked_bytes":3000,"deleted":1,"elapsed_ms":3200,"files":10,"fraction":null,"path":"d�","queued":2,"total":null},"id":"gone/b3","in_flight":2,"last_error":"rsync exit 10: connection failed","name":"b3","next_retry_ms":null,"oldest_pending_ms":1500,"pending":12345,"renames":"plain","renames_reason":"the probe failed","root":"gone","state":"backoff","stuck":0,"verify":null}],"uptime_ms":7000,"version":"0.1.0"}"#;

#[test]
fn status_json_bytes_are_pinned() {
    assert_eq!(status_json(&report()), GOLDEN);
}

#[test]
fn control_answers_are_ok_with_a_message_or_not_ok_with_an_error() {
    use syncd_proto::json::Outcome;
    let done = serde_json::to_string(&Outcome::done("paused data/b1")).unwrap();
    assert_eq!(done, r#"{"message":"paused data/b1","ok":true}"#);
    let failed = serde_json::to_string(&Outcome::failed("no target named \"x\"")).unwrap();
    assert_eq!(failed, r#"{"error":"no target named \"x\"","ok":false}"#);
}

#[test]
fn failed_lists_parked_retrying_and_held_paths_apart() {
    use syncd_proto::json::FailedView;
    let list = common::failed_list();
    let json = serde_json::to_string(&FailedView::of(&list)).unwrap();
    assert_eq!(
        json,
        r#"{"failed":[{"attempts":3,"last_error":"denied","path":"x","target":"data/b1"}],"held":[{"path":"z�","target":"data/b1"}],"held_full_sync":[{"deletions":6,"path":"","target":"data/b2"}],"held_more":4,"more":0,"retrying":[{"attempts":1,"last_error":"refused","next_retry_ms":5000,"path":"y","target":"data/b1"}],"retrying_more":2,"stuck":[{"ago_ms":2500,"path":"d/a�","target":"data/b1","what":"pushed again"}]}"#
    );
}
