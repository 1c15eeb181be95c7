//! Golden bytes: pin the encoding of every message. bincode is not self-describing, so a change
//! here breaks every deployed syncctl/syncd pair; variants are only ever appended.

mod common;

use syncd_proto::*;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn requests() -> Vec<(Request, &'static str)> {
    vec![
        (
            Request::Hello {
                protocol: PROTOCOL_VERSION,
            },
            "000000020008",
        ),
        (Request::Status, "0000000101"),
        (Request::Pause { target: None }, "000000020200"),
        (
            Request::Pause {
                target: Some("b1".into()),
            },
            "000000050201026231",
        ),
        (
            Request::Resume {
                target: Some("b1".into()),
            },
            "000000050301026231",
        ),
        (
            Request::Resync {
                target: None,
                path: Some(ByteBuf::from(b"/d/\xff".to_vec())),
            },
            "00000008040001042f642fff",
        ),
        (Request::RetryFailed { target: None }, "000000020500"),
        (
            Request::ListFailed {
                target: None,
                limit: 1000,
            },
            "000000050600fbe803",
        ),
        (
            Request::WaitIdle {
                target: Some("b1".into()),
                timeout_ms: Some(5000),
            },
            "00000009070102623101fb8813",
        ),
        (Request::Reload, "0000000108"),
        (Request::Shutdown, "0000000109"),
        (Request::Log { follow: true }, "000000020a01"),
        (
            Request::Verify {
                target: Some("b1".into()),
                path: None,
                checksum: true,
            },
            "000000070b010262310001",
        ),
        (
            Request::Versions {
                target: None,
                path: ByteBuf::from(b"/d/a".to_vec()),
            },
            "000000070c00042f642f61",
        ),
        (
            Request::ReleaseDeletes {
                target: Some("b1".into()),
            },
            "000000050d01026231",
        ),
    ]
}

fn responses() -> Vec<(Response, &'static str)> {
    vec![
        (Response::Hello { protocol: 1, version: "0.1.0".into() }, "00000008000105302e312e30"),
        (Response::Done { message: "ok".into() }, "0000000401026f6b"),
        (
            Response::Status(StatusReport {
                version: "0.1.0".into(),
                pid: 42,
                uptime_ms: 1000,
                roots: vec![RootStatus {
                    name: "data".into(),
                    source: ByteBuf::from(b"/data".to_vec()),
                    state: RootState::Watching,
                    watches: 3,
                    targets: vec![TargetStatus {
                        name: "b1".into(),
                        dest: "h::m".into(),
                        state: TargetState::Backoff,
                        pending: 2,
                        in_flight: 0,
                        failed: 1,
                        delivered: 300,
                        oldest_pending_ms: Some(250),
                        last_error: Some("e".into()),
                        next_retry_ms: None,
                        full_sync: Some(SyncProgress {
                            elapsed_ms: 10,
                            files: 7,
                            path: ByteBuf::from(b"d".to_vec()),
                            queued: 1,
                            checked: 300,
                            checked_bytes: 5,
                            deleted: 2,
                            bytes_sent: 6,
                            total: Some(TreeSize { entries: 9, bytes: 8 }),
                        }),
                        verify: None,
                        renames: RenameMode::Unprobed,
                        deletes_held: 3,
                        stuck: 0,
                    }],
                }],
            }),
            "000000420205302e312e302afbe803010464617461052f6461746100030102623104683a3a6d02020001fb2c0101fa01016500010a07016401fb2c0105020601090800000300",
        ),
        (
            Response::Failed(Box::new(common::failed_list())),
            "00000063030107646174612f62310178030664656e696564000107646174612f6231017901fb88130772656675736564020107646174612f6231027aff040107646174612f623200060107646174612f623104642f61fffbc4090c70757368656420616761696e",
        ),
        (Response::WaitIdle(IdleOutcome::Idle { failed: 0 }), "00000003040000"),
        (Response::WaitIdle(IdleOutcome::TimedOut { pending: 9 }), "00000003040109"),
        (
            Response::WaitIdle(IdleOutcome::DeletesHeld { held: 7, failed: 1 }),
            "0000000404020701",
        ),
        (Response::Error { kind: ErrorKind::UnknownTarget, message: "no".into() }, "000000050502026e6f"),
        (
            Response::Event(LogEvent {
                time_ms: 1000,
                target: "r/t".into(),
                kind: LogKind::Failed,
                paths: 1,
                sample: vec![ByteBuf::from(b"x".to_vec())],
                error: Some("no".into()),
            }),
            "0000001106fbe80303722f74010101017801026e6f",
        ),
        (
            Response::Status(StatusReport {
                version: String::new(),
                pid: 0,
                uptime_ms: 0,
                roots: vec![RootStatus {
                    name: String::new(),
                    source: ByteBuf::new(),
                    state: RootState::Unavailable { reason: "r".into() },
                    watches: 0,
                    targets: vec![],
                }],
            }),
            "0000000c020000000100000201720000",
        ),
        (
            Response::Status(StatusReport {
                version: String::new(),
                pid: 0,
                uptime_ms: 0,
                roots: vec![RootStatus {
                    name: String::new(),
                    source: ByteBuf::new(),
                    state: RootState::ScheduledResync { reason: "w".into() },
                    watches: 0,
                    targets: [TargetState::Running, TargetState::Paused, TargetState::InitialSync]
                        .into_iter()
                        .map(|state| TargetStatus {
                            name: String::new(),
                            dest: String::new(),
                            state,
                            pending: 0,
                            in_flight: 0,
                            failed: 0,
                            delivered: 0,
                            oldest_pending_ms: None,
                            last_error: None,
                            next_retry_ms: Some(1),
                            full_sync: None,
                            verify: None,
                            renames: RenameMode::Plain("p".into()),
                            deletes_held: 0,
                            stuck: 0,
                        })
                        .collect(),
                }],
            }),
            "00000042020000000100000101770003000000000000000000010100000201700000000001000000000000010100000201700000000003000000000000010100000201700000",
        ),
        (
            Response::Verify(VerifyReport {
                targets: vec![TargetDrift {
                    target: "d/b1".into(),
                    dir: ByteBuf::from(b"s".to_vec()),
                    error: None,
                    paths: [DriftKind::Missing, DriftKind::Extra, DriftKind::Attributes]
                        .into_iter()
                        .map(|kind| DriftPath {
                            path: ByteBuf::from(b"f".to_vec()),
                            kind,
                            itemized: "i".into(),
                        })
                        .collect(),
                    more: 1,
                    elapsed_ms: 7,
                }],
            }),
            "0000001c070104642f6231017300030166000169016601016901660501690107",
        ),
        (
            Response::Versions(VersionsList {
                path: ByteBuf::from(b"a".to_vec()),
                targets: vec![TargetVersions {
                    target: "d/b1".into(),
                    dir: Some(".v".into()),
                    versions: vec![KeptVersion {
                        run: "t".into(),
                        size: 300,
                    }],
                    error: None,
                }],
            }),
            "000000140801610104642f623101022e76010174fb2c0100",
        ),
    ]
}

fn error_kinds() -> Vec<(ErrorKind, &'static str)> {
    vec![
        (ErrorKind::ProtocolMismatch, "00000003050000"),
        (ErrorKind::BadRequest, "00000003050100"),
        (ErrorKind::UnknownTarget, "00000003050200"),
        (ErrorKind::UnknownPath, "00000003050300"),
        (ErrorKind::Denied, "00000003050400"),
        (ErrorKind::Config, "00000003050500"),
        (ErrorKind::Internal, "00000003050600"),
    ]
}

#[test]
fn error_kinds_encode_to_golden_bytes() {
    for (kind, want) in error_kinds() {
        let msg = Response::Error {
            kind,
            message: String::new(),
        };
        let got = hex(&encode_frame(&msg, MAX_RESPONSE_FRAME).unwrap());
        assert_eq!(got, want, "{kind:?}");
    }
}

#[test]
fn requests_encode_to_golden_bytes() {
    for (msg, want) in requests() {
        let got = hex(&encode_frame(&msg, MAX_REQUEST_FRAME).unwrap());
        assert_eq!(got, want, "{msg:?}");
        let back: Request = decode_payload(
            &encode_payload(&msg, MAX_REQUEST_FRAME).unwrap(),
            MAX_REQUEST_FRAME,
        )
        .unwrap();
        assert_eq!(back, msg);
    }
}

#[test]
fn responses_encode_to_golden_bytes() {
    for (msg, want) in responses() {
        let got = hex(&encode_frame(&msg, MAX_RESPONSE_FRAME).unwrap());
        assert_eq!(got, want, "{msg:?}");
        let back: Response = decode_payload(
            &encode_payload(&msg, MAX_RESPONSE_FRAME).unwrap(),
            MAX_RESPONSE_FRAME,
        )
        .unwrap();
        assert_eq!(back, msg);
    }
}
