//! Property tests of the frame decoder, the daemon's first contact with untrusted bytes: any
//! input is either a request or an error, never a panic and never an allocation beyond the limit;
//! every request survives a round trip. Bounded in time (a few seconds), so they run in CI.

use proptest::prelude::*;
use syncd_proto::{
    decode_payload, encode_frame, split_frame, ByteBuf, Request, Response, MAX_REQUEST_FRAME,
};

fn opt_name() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(".{0,40}")
}

fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        any::<u16>().prop_map(|protocol| Request::Hello { protocol }),
        Just(Request::Status),
        opt_name().prop_map(|target| Request::Pause { target }),
        opt_name().prop_map(|target| Request::Resume { target }),
        (
            opt_name(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300))
        )
            .prop_map(|(target, path)| Request::Resync {
                target,
                path: path.map(ByteBuf::from),
            }),
        opt_name().prop_map(|target| Request::RetryFailed { target }),
        (opt_name(), any::<u32>())
            .prop_map(|(target, limit)| Request::ListFailed { target, limit }),
        (opt_name(), proptest::option::of(any::<u64>()))
            .prop_map(|(target, timeout_ms)| Request::WaitIdle { target, timeout_ms }),
        Just(Request::Reload),
        Just(Request::Shutdown),
    ]
}

/// Decode `buf` the way the daemon does: split a frame, then decode its payload.
fn decode_all(buf: &[u8]) {
    let mut rest = buf;
    while let Ok(Some((payload, used))) = split_frame(rest, MAX_REQUEST_FRAME) {
        let _ = decode_payload::<Request>(payload, MAX_REQUEST_FRAME);
        let _ = decode_payload::<Response>(payload, MAX_REQUEST_FRAME);
        rest = &rest[used..];
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10_000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..2048)) {
        decode_all(&buf);
    }

    #[test]
    fn random_payloads_behind_a_valid_header_never_panic(
        payload in proptest::collection::vec(any::<u8>(), 0..512)
    ) {
        let mut buf = (payload.len() as u32).to_be_bytes().to_vec();
        buf.extend(&payload);
        decode_all(&buf);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn every_request_round_trips(req in request()) {
        let frame = encode_frame(&req, MAX_REQUEST_FRAME).unwrap();
        let (payload, used) = split_frame(&frame, MAX_REQUEST_FRAME).unwrap().unwrap();
        prop_assert_eq!(used, frame.len());
        let back: Request = decode_payload(payload, MAX_REQUEST_FRAME).unwrap();
        prop_assert_eq!(back, req);
    }

    /// Valid frames cut short, or with bytes flipped: an error or some request, never a panic.
    #[test]
    fn mutated_valid_frames_never_panic(
        req in request(),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4)
    ) {
        let mut frame = encode_frame(&req, MAX_REQUEST_FRAME).unwrap();
        for (i, b) in flips {
            let i = i.index(frame.len());
            frame[i] ^= b;
        }
        let end = cut.index(frame.len() + 1);
        decode_all(&frame[..end]);
        // A truncated frame is never mistaken for a complete one.
        if end < frame.len() && frame[..4] == encode_frame(&req, MAX_REQUEST_FRAME).unwrap()[..4] {
            prop_assert!(matches!(split_frame(&frame[..end], MAX_REQUEST_FRAME), Ok(None)));
        }
    }

    /// A length above the limit is refused from the header alone, before any allocation.
    #[test]
    fn oversized_lengths_are_refused_from_the_header(len in (MAX_REQUEST_FRAME as u32 + 1)..=u32::MAX) {
        let mut buf = len.to_be_bytes().to_vec();
        buf.extend([0u8; 16]);
        prop_assert!(split_frame(&buf, MAX_REQUEST_FRAME).is_err());
    }
}
