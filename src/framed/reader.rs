//! The read side of [`Framed`](super::Framed): bytes read into one buffer, cut into messages by the
//! codec.

use std::io;
use std::rc::Rc;

use super::codec::Decoder;
use super::state::{READ_CHUNK, Shared};
use crate::buf::IoBuf;

/// The next message: `None` at a clean end of stream.
pub(super) async fn next_message<C: Decoder>(
    shared: &Rc<Shared<C>>,
) -> Option<io::Result<C::Item>> {
    loop {
        let want = {
            let mut state = shared.state.borrow_mut();
            let state = &mut *state;
            if let Some(e) = state.read_error.take() {
                state.eof = true;
                return Some(Err(e));
            }
            let Some(buf) = state.read_buf.as_mut() else {
                return Some(Err(io::Error::other(
                    "Framed: two readers at once (next() while another next() or read_frames runs)",
                )));
            };
            match state.codec.decode(buf) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => {}
                Err(e) => {
                    state.eof = true;
                    return Some(Err(e));
                }
            }
            if state.eof {
                if buf.is_empty() {
                    return None;
                }
                let n = buf.len();
                buf.clear();
                return Some(Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("end of stream inside a message ({n} bytes of it received)"),
                )));
            }
            let room = state.codec.max_buffered().saturating_sub(buf.len());
            if room == 0 {
                state.eof = true;
                return Some(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the decoder needs more than its maximum buffered bytes",
                )));
            }
            room.min(READ_CHUNK)
        };
        let mut buf = shared
            .state
            .borrow_mut()
            .read_buf
            .take()
            .expect("checked above");
        buf.reserve(want);
        let start = buf.len();
        let target = buf.slice(start..start + want);
        let (res, target) = shared.socket.read_some(target).await;
        let buf = target.into_inner();
        let mut state = shared.state.borrow_mut();
        state.read_buf = Some(buf);
        match res {
            Ok(0) => state.eof = true,
            Ok(_) => {}
            Err(e) => state.read_error = Some(e),
        }
    }
}
