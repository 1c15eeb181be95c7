//! The control socket's framing, as a tokio [`Decoder`] over the protocol crate's own
//! [`split_frame`]: one definition of a frame for syncd and syncctl (proto does no IO; this is
//! only the adapter to a stream).

use syncd_proto::split_frame;
use tokio_util::bytes::BytesMut;
use tokio_util::codec::Decoder;

/// Request frames of at most `max` payload bytes; a longer one is refused by its header,
/// before anything is allocated for it.
pub struct FrameDecoder {
    pub max: usize,
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        let (start, used) = match split_frame(src, self.max) {
            Ok(Some((payload, used))) => (used - payload.len(), used),
            Ok(None) => return Ok(None),
            Err(e) => return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        };
        let mut frame = src.split_to(used);
        Ok(Some(frame.split_off(start)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use syncd_proto::{encode_frame, Request, MAX_REQUEST_FRAME};

    #[test]
    fn frames_are_split_whole_and_oversized_ones_refused_by_their_header() {
        let one = encode_frame(&Request::Status, MAX_REQUEST_FRAME).unwrap();
        let mut d = FrameDecoder {
            max: MAX_REQUEST_FRAME,
        };
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&one);
        buf.extend_from_slice(&one[..3]);
        let f = d.decode(&mut buf).unwrap().unwrap();
        assert_eq!(&f[..], &one[4..]);
        assert_eq!(
            d.decode(&mut buf).unwrap(),
            None,
            "an incomplete frame waits"
        );
        buf.extend_from_slice(&one[3..]);
        assert_eq!(&d.decode(&mut buf).unwrap().unwrap()[..], &one[4..]);
        assert!(buf.is_empty());
        let mut huge = BytesMut::from(&u32::MAX.to_be_bytes()[..]);
        assert!(d.decode(&mut huge).is_err());
    }
}
