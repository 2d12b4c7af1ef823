//! TLS passthrough (`ssl-passthrough`): the ClientHello read by rustls's `Acceptor` with its
//! bytes kept, so that a connection for a passed-through host can be spliced, untouched, to an
//! endpoint of that host's Service, and every other connection's handshake goes on here.

use std::io::{self, Read};
use std::net::IpAddr;
use std::sync::Arc;

use rustls::server::{Accepted, Acceptor};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tracing::debug;
use vestibule_model::{Backend, Route, RouteId};

use crate::balance::{self, PickInput};
use crate::dataplane::{RouteAt, Runtime};
use crate::upstream::connect::connect;

/// Bytes kept while a ClientHello arrives. rustls refuses a handshake message over 64 KiB
/// itself; this only bounds what a connection can make us hold beside it.
const MAX_HELLO_BYTES: usize = 64 * 1024 + 5 * 16;

/// A ClientHello read, and when asked for, every byte it arrived in.
pub(super) struct Hello {
    pub(super) accepted: Accepted,
    pub(super) bytes: Option<Vec<u8>>,
}

/// Reads from the connection until rustls has its ClientHello. `keep`: keep the bytes read,
/// for a splice. A malformed hello is answered with the alert rustls chose.
pub(super) async fn read_hello(stream: &mut TcpStream, keep: bool) -> io::Result<Hello> {
    let mut acceptor = Acceptor::default();
    let mut bytes = keep.then(Vec::new);
    loop {
        stream.readable().await?;
        let mut reading = Reading {
            stream,
            kept: bytes.as_mut(),
        };
        match acceptor.read_tls(&mut reading) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before its ClientHello",
                ));
            }
            Ok(_) => {}
            // Readiness can be spurious; wait for it again.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(Hello { accepted, bytes }),
            Ok(None) => {}
            Err((error, mut alert)) => {
                let mut out = Vec::new();
                // Best effort: the connection is refused whether or not the alert arrives.
                if alert.write_all(&mut out).is_ok() {
                    let _ = stream.write_all(&out).await;
                }
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
        }
    }
}

/// A non-blocking reader for rustls that keeps a copy of what it hands over.
struct Reading<'a> {
    stream: &'a TcpStream,
    kept: Option<&'a mut Vec<u8>>,
}

impl Read for Reading<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.stream.try_read(buf)?;
        if let Some(kept) = self.kept.as_deref_mut() {
            if kept.len() + n > MAX_HELLO_BYTES {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ClientHello larger than 64 KiB",
                ));
            }
            kept.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

/// Sends the connection on, untouched, to an endpoint of `route`'s backend: `hello` first
/// (the bytes already read), then both directions copied until each side has closed its own
/// (a half-close is passed on as one). Endpoints that refuse the connection are passed over
/// as for requests, up to the route's `proxy-next-upstream-tries`.
pub(super) async fn splice(
    mut client: TcpStream,
    hello: Vec<u8>,
    runtime: Arc<Runtime>,
    route: RouteId,
    peer: IpAddr,
) {
    let Some(mut upstream) = open(&runtime, runtime.table.route(route), peer).await else {
        return;
    };
    // The connection holds no configuration from here on, so it outlives table changes.
    drop(runtime);
    if let Err(e) = upstream.write_all(&hello).await {
        debug!(%peer, error = %e, "passthrough: the upstream closed before the ClientHello was sent");
        return;
    }
    drop(hello);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((up, down)) => {
            debug!(%peer, sent = up, received = down, "passthrough connection closed")
        }
        Err(e) => debug!(%peer, error = %e, "passthrough connection ended with an error"),
    }
}

/// A connection to an endpoint of `route`'s backend, or `None` (logged) when none answers.
async fn open(runtime: &Runtime, route: &Route, peer: IpAddr) -> Option<TcpStream> {
    let host = &route.host;
    let Backend::Cluster(cluster) = &route.backend else {
        debug!(%peer, %host, "passthrough: the backend is unavailable; connection closed");
        return None;
    };
    let balancer = runtime.balancers.get(cluster.0 as usize)?;
    let proxy = &runtime.route_state(RouteAt::Route(route.id)).proxy;
    let tries = match proxy.next_upstream_tries {
        0 => usize::MAX,
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    let mut excluded = Vec::new();
    while excluded.len() < tries {
        let input = PickInput {
            hash_key: None,
            now_nanos: balance::now_nanos(),
            excluded: &excluded,
        };
        // Round robin whatever the route's balancing: a TLS connection carries nothing to
        // hash on, and response times of spliced bytes mean nothing.
        let round_robin = vestibule_model::Balance::RoundRobin;
        let Some(i) = balancer.pick(&round_robin, &input, &mut |n| fastrand::usize(..n)) else {
            break;
        };
        let address = balancer.address(i);
        match connect(address, proxy.connect_timeout).await {
            Ok(stream) => {
                balancer.stats(i).health.record_success();
                return Some(stream);
            }
            Err(e) => {
                debug!(%peer, %host, upstream = %balancer.address_text(i), error = %e, "passthrough: connecting failed");
                balancer
                    .stats(i)
                    .health
                    .record_failure(balance::now_nanos());
                excluded.push(i);
            }
        }
    }
    debug!(%peer, %host, "passthrough: no endpoint answered; connection closed");
    None
}
