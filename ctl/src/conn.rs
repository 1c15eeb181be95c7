//! The connection to syncd's control socket: open it (with the protocol hello), send a request,
//! read an answer.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;

use anyhow::{bail, Context};
use syncd_proto::{
    decode_payload, encode_frame, frame_len, ErrorKind, Request, Response, HEADER_LEN,
    MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, PROTOCOL_VERSION,
};

pub struct Conn {
    stream: UnixStream,
}

impl Conn {
    /// Connect and say hello; an unreachable daemon is told with what to try.
    pub fn open(path: &Path) -> anyhow::Result<Conn> {
        let stream = UnixStream::connect(path).map_err(|e| {
            let hint = match e.kind() {
                std::io::ErrorKind::PermissionDenied => "permission denied: run as root, as syncd's user, or as a member of its socket_group",
                _ => "is it running?",
            };
            anyhow::anyhow!("cannot reach syncd at {}: {hint} ({e})", path.display())
        })?;
        let mut c = Conn { stream };
        match c.call(&Request::Hello {
            protocol: PROTOCOL_VERSION,
        })? {
            Response::Hello { .. } => Ok(c),
            Response::Error { message, .. } => bail!("{message}"),
            other => bail!("unexpected answer to hello: {other:?}"),
        }
    }

    /// One request, one answer.
    pub fn call(&mut self, req: &Request) -> anyhow::Result<Response> {
        if let Err(e) = self.send(req) {
            // The daemon may have answered and closed first (a refusal): read that answer.
            if let Ok(resp) = self.read_response() {
                return Ok(resp);
            }
            return Err(e);
        }
        self.read_response()
    }

    /// Send a request whose answers are then read one by one (`log`).
    pub fn send(&mut self, req: &Request) -> anyhow::Result<()> {
        let frame = encode_frame(req, MAX_REQUEST_FRAME)?;
        self.stream.write_all(&frame).context("sending the request")
    }

    pub fn read_response(&mut self) -> anyhow::Result<Response> {
        let mut header = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .context("syncd closed the connection")?;
        let len = frame_len(header, MAX_RESPONSE_FRAME)?;
        let mut payload = vec![0u8; len];
        self.stream
            .read_exact(&mut payload)
            .context("reading the answer")?;
        Ok(decode_payload(&payload, MAX_RESPONSE_FRAME)?)
    }
}

/// The error for a request syncd refused: its own words for access and protocol refusals.
pub fn refused(kind: ErrorKind, message: String) -> anyhow::Error {
    match kind {
        ErrorKind::Denied | ErrorKind::ProtocolMismatch => anyhow::anyhow!("{message}"),
        _ => anyhow::anyhow!("syncd refused: {message}"),
    }
}
