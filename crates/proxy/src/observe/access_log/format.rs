//! The two line formats, JSON and text (nginx's combined format followed by Vestibule's own
//! fields), written from packed lines in batches by the writer thread.

use super::clock::write_time;
use super::escape::{escape, json_text};
use super::line::{Line, Names};
use super::pack::{split_line, unpack};

/// How a record is written out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// nginx's combined format followed by the request's timings, upstream and route.
    Text,
}

/// Formats packed lines from `packed` into `out` until `out` holds `limit` bytes or more, or
/// none is left; returns what is left of `packed`, and how many lines could not be read,
/// which only a bug could cause: those are left out, and counted as dropped.
pub(super) fn format_lines<'p>(
    format: AccessLogFormat,
    mut packed: &'p [u8],
    out: &mut Vec<u8>,
    limit: usize,
) -> (&'p [u8], u64) {
    let mut unreadable = 0;
    while !packed.is_empty() && out.len() < limit {
        let Some((one, rest)) = split_line(packed) else {
            return (&[], unreadable + 1);
        };
        packed = rest;
        let mut upstreams = smallvec::SmallVec::<[(&[u8], Option<u16>); 2]>::new();
        match unpack(one, &mut upstreams) {
            Some(line) => match format {
                AccessLogFormat::Json => json_line(&line, out),
                AccessLogFormat::Text => text_line(&line, out),
            },
            None => unreadable += 1,
        }
    }
    (packed, unreadable)
}

// The small helpers below are inlined into the line formatters so that their constant keys
// and separators are copied as constants: a library `memcpy` call for each few-byte piece
// of a line cost more than the formatting itself.

#[inline(always)]
pub(super) fn number(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// A response status: three digits, as every status `http` takes has.
#[inline(always)]
pub(super) fn status_code(out: &mut Vec<u8>, status: u16) {
    if (100..1000).contains(&status) {
        let digit = |d: u16| b'0' + (d % 10) as u8;
        out.extend_from_slice(&[digit(status / 100), digit(status / 10), digit(status)]);
    } else {
        number(out, status);
    }
}

/// A count of thousandths written as a decimal with three places (`1234` → `1.234`).
/// Takes `u128` as `Duration` gives it, but formats in `u64`: 128-bit division is slow.
pub(super) fn thousandths(out: &mut Vec<u8>, n: u128) {
    let n = u64::try_from(n).unwrap_or(u64::MAX);
    number(out, n / 1000);
    let frac = n % 1000;
    let digit = |d: u64| b'0' + (d % 10) as u8;
    out.extend_from_slice(&[b'.', digit(frac / 100), digit(frac / 10), digit(frac)]);
}

/// nginx's `$upstream_addr`: every endpoint tried, `10.0.0.1:8080, 10.0.0.2:8080`. The
/// addresses come from the table, which holds only IP addresses and valid DNS names: nothing
/// to escape.
pub(super) fn upstream_addrs(out: &mut Vec<u8>, upstreams: &[(&[u8], Option<u16>)]) {
    for (i, (address, _)) in upstreams.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(address);
    }
}

/// nginx's `$upstream_status`: each try's status, `-` for one that got no answer (`-, 200`).
pub(super) fn upstream_statuses(out: &mut Vec<u8>, upstreams: &[(&[u8], Option<u16>)]) {
    for (i, (_, status)) in upstreams.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        match status {
            Some(status) => status_code(out, *status),
            None => out.push(b'-'),
        }
    }
}

/// `value` as a JSON string, or `null` when the header was absent; `key` ends with the
/// opening quote, which `null` must not have.
#[inline(always)]
pub(super) fn json_optional(out: &mut Vec<u8>, key: &[u8], value: Option<&[u8]>) {
    match value {
        Some(value) => {
            out.extend_from_slice(key);
            json_text(out, value);
            out.push(b'"');
        }
        None => {
            out.extend_from_slice(&key[..key.len() - 1]);
            out.extend_from_slice(b"null");
        }
    }
}

// Each constant piece below runs from the end of one value to the start of the next, so that
// a line is about one copy per field: a copy is a length check and an update of the Vec's
// length, which cost more than the bytes they copy.
pub(super) fn json_line(r: &Line<'_>, out: &mut Vec<u8>) {
    // Room for a typical line at once rather than growth checks failing along the way.
    out.reserve(1024);
    out.extend_from_slice(b"{\"time\":\"");
    write_time(out, r.time);
    out.extend_from_slice(b"\",\"client_ip\":\"");
    out.extend_from_slice(r.client_ip);
    // A method is a token and the protocol one of a few names: nothing in them to escape.
    out.extend_from_slice(b"\",\"method\":\"");
    out.extend_from_slice(r.method);
    out.extend_from_slice(b"\",\"host\":\"");
    json_text(out, r.host);
    out.extend_from_slice(b"\",\"path\":\"");
    json_text(out, r.path);
    out.extend_from_slice(b"\",\"protocol\":\"");
    out.extend_from_slice(r.protocol);
    out.extend_from_slice(b"\",\"status\":");
    status_code(out, r.status);
    out.extend_from_slice(b",\"bytes_sent\":");
    number(out, r.bytes_sent);
    out.extend_from_slice(b",\"bytes_received\":");
    number(out, r.bytes_received);
    out.extend_from_slice(b",\"duration_ms\":");
    thousandths(out, r.duration.as_micros());
    if r.upstreams.is_empty() {
        out.extend_from_slice(b",\"upstream_addr\":null,\"upstream_status\":null");
    } else {
        out.extend_from_slice(b",\"upstream_addr\":\"");
        upstream_addrs(out, r.upstreams);
        out.extend_from_slice(b"\",\"upstream_status\":\"");
        upstream_statuses(out, r.upstreams);
        out.push(b'"');
    }
    out.extend_from_slice(b",\"upstream_duration_ms\":");
    match r.upstream_duration {
        Some(d) => thousandths(out, d.as_micros()),
        None => out.extend_from_slice(b"null"),
    }
    json_names(out, &r.names);
    out.extend_from_slice(b",\"request_id\":\"");
    json_text(out, r.request_id);
    out.push(b'"');
    json_optional(out, b",\"user_agent\":\"", r.user_agent);
    json_optional(out, b",\"referer\":\"", r.referer);
    json_optional(out, b",\"user\":\"", r.user);
    out.extend_from_slice(b"}\n");
}

/// `,"namespace":"…","ingress":"…","service":"…"`.
pub(super) fn json_names(out: &mut Vec<u8>, names: &Names<'_>) {
    out.extend_from_slice(b",\"namespace\":\"");
    json_text(out, names.namespace);
    out.extend_from_slice(b"\",\"ingress\":\"");
    json_text(out, names.ingress);
    out.extend_from_slice(b"\",\"service\":\"");
    json_text(out, names.service);
    out.extend_from_slice(match names.canary {
        true => b"\",\"canary\":true",
        false => b"\",\"canary\":false",
    });
}

/// `namespace/ingress/service`, or `-` for a request no Ingress routed.
pub(super) fn text_names(out: &mut Vec<u8>, names: &Names<'_>) {
    if names.namespace.is_empty() {
        out.push(b'-');
        return;
    }
    escape(out, names.namespace, true);
    out.push(b'/');
    escape(out, names.ingress, true);
    out.push(b'/');
    escape(out, names.service, true);
}

/// `client - user [time] "METHOD path PROTOCOL" status bytes_sent "referer" "user agent"
/// bytes_received seconds upstream_addr upstream_status upstream_seconds namespace/ingress/service
/// "host" request_id`, `-` standing for what is absent. The first fields are nginx's combined
/// format and the next ones follow ingress-nginx's `upstreaminfo`, so existing parsers need
/// little change.
pub(super) fn text_line(r: &Line<'_>, out: &mut Vec<u8>) {
    // As in `json_line`, separators are copied together where they meet.
    out.reserve(512);
    out.extend_from_slice(r.client_ip);
    out.extend_from_slice(b" - ");
    // The user came from a client's credentials or an auth service: escaped like the rest.
    match r.user {
        Some(user) if !user.is_empty() => escape(out, user, true),
        _ => out.push(b'-'),
    }
    out.extend_from_slice(b" [");
    write_time(out, r.time);
    out.extend_from_slice(b"] \"");
    // A method is a token (hyper takes no other): nothing in it to escape.
    out.extend_from_slice(r.method);
    out.push(b' ');
    escape(out, r.path, false);
    out.push(b' ');
    out.extend_from_slice(r.protocol);
    out.extend_from_slice(b"\" ");
    status_code(out, r.status);
    out.push(b' ');
    number(out, r.bytes_sent);
    out.extend_from_slice(b" \"");
    escape(out, r.referer.unwrap_or(b"-"), false);
    out.extend_from_slice(b"\" \"");
    escape(out, r.user_agent.unwrap_or(b"-"), false);
    out.extend_from_slice(b"\" ");
    number(out, r.bytes_received);
    out.push(b' ');
    thousandths(out, r.duration.as_millis());
    // Vestibule's own values, in nginx's own form ("a, b" for several tries): not escaped.
    if r.upstreams.is_empty() {
        out.extend_from_slice(b" - - ");
    } else {
        out.push(b' ');
        upstream_addrs(out, r.upstreams);
        out.push(b' ');
        upstream_statuses(out, r.upstreams);
        out.push(b' ');
    }
    match r.upstream_duration {
        Some(d) => thousandths(out, d.as_millis()),
        None => out.push(b'-'),
    }
    out.push(b' ');
    text_names(out, &r.names);
    out.extend_from_slice(b" \"");
    escape(out, r.host, false);
    out.extend_from_slice(b"\" ");
    // The client may have chosen the ID (`X-Request-ID`), so it is escaped like the rest.
    if r.request_id.is_empty() {
        out.push(b'-');
    } else {
        escape(out, r.request_id, true);
    }
    out.push(b'\n');
}
