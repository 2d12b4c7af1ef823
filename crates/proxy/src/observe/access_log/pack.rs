//! The packed form of a line, made by the serving thread and read back by the writer: a
//! length, fixed-size numbers, then length-prefixed byte strings. Packing copies the values
//! and allocates nothing; reading back borrows from the packed bytes.

use std::time::{Duration, UNIX_EPOCH};

use super::line::{Line, Names};

// A packed line: a `u32` length, then the values below in this order. Numbers are in the
// machine's own byte order, as only this process reads them; each byte string is a `u32`
// length and its bytes, an absent one the length `u32::MAX` alone. An endpoint that gave no
// status is packed with status 0.

/// The fixed-size part: time (seconds, nanoseconds), duration (the same), upstream duration
/// (the same; [`ABSENT`] nanoseconds, which no duration has, when there is none), bytes
/// sent, bytes received, status, canary.
pub(super) const FIXED: usize = 8 + 4 + 8 + 4 + 8 + 4 + 8 + 8 + 2 + 1;
pub(super) const ABSENT: u32 = u32::MAX;

/// Appends `line` packed.
pub(super) fn pack(line: &Line<'_>, out: &mut Vec<u8>) {
    // Room for a typical packed line at once rather than growth checks failing on the way.
    out.reserve(512);
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut fixed = [0; FIXED];
    let mut at = 0;
    let mut put = |bytes: &[u8]| {
        fixed[at..at + bytes.len()].copy_from_slice(bytes);
        at += bytes.len();
    };
    let since = line.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    for duration in [Some(since), Some(line.duration), line.upstream_duration] {
        let (seconds, nanos) = duration.map_or((0, ABSENT), |d| (d.as_secs(), d.subsec_nanos()));
        put(&seconds.to_ne_bytes());
        put(&nanos.to_ne_bytes());
    }
    put(&line.bytes_sent.to_ne_bytes());
    put(&line.bytes_received.to_ne_bytes());
    put(&line.status.to_ne_bytes());
    put(&[u8::from(line.names.canary)]);
    out.extend_from_slice(&fixed);
    for bytes in [
        line.client_ip,
        line.method,
        line.host,
        line.path,
        line.protocol,
        line.request_id,
        line.names.namespace,
        line.names.ingress,
        line.names.service,
    ] {
        put_bytes(out, Some(bytes));
    }
    put_bytes(out, line.user_agent);
    put_bytes(out, line.referer);
    put_bytes(out, line.user);
    let tries = u32::try_from(line.upstreams.len()).unwrap_or(0);
    out.extend_from_slice(&tries.to_ne_bytes());
    for (address, status) in &line.upstreams[..tries as usize] {
        put_bytes(out, Some(address));
        out.extend_from_slice(&status.unwrap_or(0).to_ne_bytes());
    }
    let length = u32::try_from(out.len() - start - 4).unwrap_or(ABSENT);
    out[start..start + 4].copy_from_slice(&length.to_ne_bytes());
}

/// A byte string as [`pack`] writes it. Nothing here comes near 4 GiB (headers are limited
/// long before), but a longer one would be cut rather than misread.
#[inline(always)]
pub(super) fn put_bytes(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(bytes) => {
            let bytes = &bytes[..bytes.len().min(ABSENT as usize - 1)];
            out.extend_from_slice(&(bytes.len() as u32).to_ne_bytes());
            out.extend_from_slice(bytes);
        }
        None => out.extend_from_slice(&ABSENT.to_ne_bytes()),
    }
}

/// Reads back what [`pack`] wrote, borrowing from it.
pub(super) fn unpack<'a, 's>(
    packed: &'a [u8],
    upstreams: &'s mut smallvec::SmallVec<[(&'a [u8], Option<u16>); 2]>,
) -> Option<Line<'s>> {
    let mut r = Reader(packed);
    let mut duration = || {
        let seconds = r.u64()?;
        let nanos = r.u32()?;
        if nanos == ABSENT {
            return Some(None);
        }
        Duration::from_secs(seconds)
            .checked_add(Duration::from_nanos(nanos.into()))
            .map(Some)
    };
    let since = duration()??;
    let took = duration()??;
    let upstream_duration = duration()?;
    let (bytes_sent, bytes_received, status) = (r.u64()?, r.u64()?, r.u16()?);
    let canary = r.u8()? != 0;
    let (client_ip, method, host, path) = (r.bytes()?, r.bytes()?, r.bytes()?, r.bytes()?);
    let (protocol, request_id) = (r.bytes()?, r.bytes()?);
    let names = Names {
        namespace: r.bytes()?,
        ingress: r.bytes()?,
        service: r.bytes()?,
        canary,
    };
    let (user_agent, referer, user) = (r.optional()?, r.optional()?, r.optional()?);
    for _ in 0..r.u32()? {
        let address = r.bytes()?;
        let status = r.u16()?;
        upstreams.push((address, (status != 0).then_some(status)));
    }
    let upstreams: &'s [(&'a [u8], Option<u16>)] = upstreams;
    Some(Line {
        time: UNIX_EPOCH.checked_add(since)?,
        client_ip,
        method,
        host,
        path,
        protocol,
        status,
        bytes_sent,
        bytes_received,
        duration: took,
        upstreams,
        upstream_duration,
        names,
        request_id,
        user_agent,
        referer,
        user,
    })
}

/// The first packed line of `packed`, and what follows it; `None` when it is cut short.
pub(super) fn split_line(packed: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut reader = Reader(packed);
    let one = reader
        .u32()
        .and_then(|length| reader.take(length as usize))?;
    Some((one, reader.0))
}

/// A cursor over a packed line.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (taken, rest) = self.0.split_at_checked(n)?;
        self.0 = rest;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        self.array().map(u8::from_ne_bytes)
    }

    fn u16(&mut self) -> Option<u16> {
        self.array().map(u16::from_ne_bytes)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_ne_bytes)
    }

    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_ne_bytes)
    }

    fn optional(&mut self) -> Option<Option<&'a [u8]>> {
        match self.u32()? {
            ABSENT => Some(None),
            length => self.take(length as usize).map(Some),
        }
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        self.optional()?
    }
}
