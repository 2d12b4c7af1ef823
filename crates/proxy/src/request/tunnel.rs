//! Tunnels: recognising a client's request to switch protocols (an HTTP/1.1 `Upgrade`, or
//! HTTP/2 extended CONNECT), answering it as its own protocol expects once the upstream has
//! switched, and copying bytes both ways between the two upgraded connections.

use http::header::{CONNECTION, HeaderValue, UPGRADE};
use http::request::Parts;
use http::{Method, StatusCode, Version};
use tracing::debug;

use crate::fields::has_token;
use crate::upstream::request::Upgrade;

/// A client's side of a tunnel it asked for: how it asked, and the handle hyper gives its
/// connection over by once the response is out.
#[derive(Debug)]
pub(super) struct Tunnel {
    pub(super) upgrade: Upgrade,
    pub(super) client: Option<hyper::upgrade::OnUpgrade>,
}

/// The tunnel a client asks for: `Upgrade` with `Connection: upgrade` on HTTP/1.1, or
/// CONNECT with `:protocol` on HTTP/2. Takes the client's upgrade handle from `parts`.
#[inline]
pub(super) fn requested(parts: &mut Parts) -> Option<Tunnel> {
    let upgrade = upgrade_protocol(parts)?;
    let client = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    Some(Tunnel { upgrade, client })
}

fn upgrade_protocol(parts: &Parts) -> Option<Upgrade> {
    if parts.version == Version::HTTP_2 {
        if parts.method != Method::CONNECT {
            return None;
        }
        let protocol = parts.extensions.get::<hyper::ext::Protocol>()?;
        return Some(Upgrade {
            protocol: HeaderValue::from_str(protocol.as_str()).ok()?,
            extended_connect: true,
        });
    }
    if parts.version != Version::HTTP_11 {
        return None;
    }
    if !has_token(&parts.headers, &CONNECTION, "upgrade") {
        return None;
    }
    // An `h2c` upgrade would turn the connection into HTTP/2 spoken straight to the
    // upstream, whose later requests no rule sees (RFC 9113 deprecates it). The request is
    // served as a plain HTTP/1.1 one; its `Upgrade` goes with the other hop-by-hop fields.
    if has_token(&parts.headers, &UPGRADE, "h2c") {
        return None;
    }
    Some(Upgrade {
        protocol: parts.headers.get(UPGRADE)?.clone(),
        extended_connect: false,
    })
}

/// Answers the client as its protocol expects once the upstream has switched (`parts` is
/// the upstream's 101), and starts copying between the two connections.
pub(super) fn open(
    tunnel: Tunnel,
    parts: &mut http::response::Parts,
    upgrade_header: Option<HeaderValue>,
) {
    if tunnel.upgrade.extended_connect {
        // RFC 8441: the tunnel opens with a 2xx, and the HTTP/1.1 handshake's proof belongs
        // to the hop it was made on.
        parts.status = StatusCode::OK;
        parts.headers.remove(http::header::SEC_WEBSOCKET_ACCEPT);
    } else {
        if let Some(value) = upgrade_header {
            parts.headers.insert(UPGRADE, value);
        }
        parts
            .headers
            .insert(CONNECTION, HeaderValue::from_static("upgrade"));
    }
    // hyper keeps the upstream side of the upgrade in the response's extensions.
    let upstream = parts.extensions.remove::<hyper::upgrade::OnUpgrade>();
    if let (Some(client), Some(upstream)) = (tunnel.client, upstream) {
        tokio::spawn(copy(client, upstream));
    }
}

/// Copies bytes both ways between the upgraded client and upstream connections. The tunnel
/// holds no configuration, so it outlives any number of table changes.
///
/// It ends when the upstream's side does, once what the upstream sent has reached the
/// client: a backend that has closed takes no more bytes, and waiting for the client to
/// close too would let a silent client hold both sockets (one to a backend long gone) with
/// no timeout ever ending them, as nginx's tunnels never do either. The client's end is only
/// passed on (its half-close), so that the backend's last answer still reaches it.
async fn copy(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    use tokio::io::AsyncWriteExt;

    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(both) => both,
        Err(e) => {
            debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let (mut client_read, mut client_write) =
        tokio::io::split(hyper_util::rt::TokioIo::new(client));
    let (mut upstream_read, mut upstream_write) =
        tokio::io::split(hyper_util::rt::TokioIo::new(upstream));
    let to_upstream = async {
        tokio::io::copy(&mut client_read, &mut upstream_write).await?;
        upstream_write.shutdown().await
    };
    let to_client = async {
        tokio::io::copy(&mut upstream_read, &mut client_write).await?;
        client_write.shutdown().await
    };
    tokio::pin!(to_upstream, to_client);
    let ended = tokio::select! {
        ended = &mut to_client => ended,
        sent = &mut to_upstream => match sent {
            Ok(()) => to_client.await,
            Err(e) => Err(e),
        },
    };
    if let Err(e) = ended {
        debug!(error = %e, "tunnel closed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(version: Version, method: Method, headers: &[(&str, &str)]) -> Parts {
        let mut request = Request::builder().version(version).method(method).uri("/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn an_upgrade_is_asked_for_with_connection_upgrade_on_http1_only() {
        let websocket = [
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ];
        let asked = requested(&mut parts(Version::HTTP_11, Method::GET, &websocket));
        let asked = asked.unwrap().upgrade;
        assert_eq!(asked.protocol, "websocket");
        assert!(!asked.extended_connect);
        let without_connection = [("upgrade", "websocket")];
        assert!(
            requested(&mut parts(
                Version::HTTP_11,
                Method::GET,
                &without_connection
            ))
            .is_none()
        );
        assert!(requested(&mut parts(Version::HTTP_10, Method::GET, &websocket)).is_none());
        let h2c = [
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQCAAAAAAIAAAAA"),
        ];
        assert!(requested(&mut parts(Version::HTTP_11, Method::GET, &h2c)).is_none());
        let mixed = [("connection", "upgrade"), ("upgrade", "websocket, H2C")];
        assert!(requested(&mut parts(Version::HTTP_11, Method::GET, &mixed)).is_none());
        // HTTP/2 asks with CONNECT and `:protocol`, never with these fields.
        assert!(requested(&mut parts(Version::HTTP_2, Method::GET, &websocket)).is_none());
        assert!(requested(&mut parts(Version::HTTP_2, Method::CONNECT, &[])).is_none());
    }
}
