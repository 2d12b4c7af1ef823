//! A raw HTTP/1.1 client: sends bytes exactly as written and parses what comes back, for
//! requests that well-behaved clients would rewrite (dot segments, odd hosts, hostile input)
//! and for checking framing headers that client libraries hide.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as it came off the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    pub status: u16,
    /// Names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `request` (which should ask for `Connection: close`) and reads until the server
/// closes, within `timeout`.
pub async fn send(
    addr: SocketAddr,
    request: &str,
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    let work = async {
        let mut stream = TcpStream::connect(addr).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf).await?;
        parse(&buf)
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "no full response in time")
    })?
}

/// `GET {target}` with `Host: {host}` and `Connection: close`.
pub async fn get(addr: SocketAddr, host: &str, target: &str) -> std::io::Result<RawResponse> {
    let request = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    send(addr, &request, Duration::from_secs(10)).await
}

/// Reads one response from `stream`, which stays open for the next (keep-alive): its head,
/// then as much body as `Content-Length` says, or a chunked body to its last chunk.
pub async fn read_response(
    stream: &mut TcpStream,
    timeout: Duration,
) -> std::io::Result<RawResponse> {
    let work = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let response = parse(&buf)?;
                let whole = match response.header("content-length") {
                    Some(length) => length.parse().ok().map(|n: usize| buf.len() - end - 4 >= n),
                    None => Some(buf.ends_with(b"0\r\n\r\n")),
                };
                match whole {
                    Some(true) => return Ok(response),
                    Some(false) => {}
                    None => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::InvalidData,
                            "bad content-length",
                        ));
                    }
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("closed after {:?}", String::from_utf8_lossy(&buf)),
                ));
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::TimedOut, "no full response in time")
    })?
}

/// Parses a whole response: head, then the body (de-chunked when chunked).
pub fn parse(buf: &[u8]) -> std::io::Result<RawResponse> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let end = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().ok_or_else(|| bad("no status line"))?;
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("bad status line"))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect::<Vec<_>>();
    let mut body = buf[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
    if chunked {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..line_end]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}
