//! An HTTP/1.1 connection to an upstream: its stream and what has been read from it but not
//! yet used, whether an idle one can take a request, and reading more into its buffer.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::TcpStream;

/// What one read asks the socket for.
const READ_SIZE: usize = 16 * 1024;

/// A connection to an upstream, in clear text (left) or TLS (right).
pub(crate) type Stream =
    tokio_util::either::Either<TcpStream, Box<tokio_rustls::client::TlsStream<TcpStream>>>;

/// An idle or busy HTTP/1.1 connection and what has been read from it but not yet used.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(super) stream: Stream,
    pub(crate) buf: BytesMut,
}

impl Connection {
    pub(crate) fn new(stream: Stream) -> Connection {
        Connection {
            stream,
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection can take a request: the upstream has neither closed it
    /// nor sent anything unasked. Costs no system call while the socket has had no event.
    pub(crate) fn is_usable(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut byte = [0u8; 1];
        let mut probe = ReadBuf::new(&mut byte);
        Pin::new(&mut self.stream)
            .poll_read(&mut cx, &mut probe)
            .is_pending()
    }

    /// Reads what the socket has into the buffer: the count, 0 at the end of the stream.
    pub(super) fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.buf)
    }
}
