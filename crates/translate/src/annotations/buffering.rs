//! nginx's buffering keys. Vestibule streams requests and responses without spooling to disk,
//! so these are checked and noted, not obeyed; `proxy-buffer-size` above the upstream
//! response head limit raises that limit, since nginx would have accepted such heads.

use vestibule_model::ProxyPolicy;

use super::syntax::{parse_on_off, parse_size, parse_uint};
use super::{ON_OFF, Reader};

pub(crate) const KEYS: &[&str] = &[
    "proxy-buffering",
    "proxy-request-buffering",
    "proxy-buffer-size",
    "proxy-buffers-number",
    "proxy-busy-buffers-size",
    "proxy-max-temp-file-size",
    "client-body-buffer-size",
    "proxy-http-version",
];

/// The largest response head a route may ask for.
const MAX_HEAD: u64 = 1 << 20;

const SIZE: &str = "an nginx size (bytes, or a number with k or m)";
const NOTE: &str = "accepted; Vestibule streams bodies without buffering them to disk, so \
                    this changes nothing";

pub(super) fn read(reader: &mut Reader<'_>, p: &mut ProxyPolicy) {
    for short in ["proxy-buffering", "proxy-request-buffering"] {
        if reader.read(short, parse_on_off, ON_OFF, "off").is_some() {
            reader.info(short, NOTE);
        }
    }
    for short in [
        "proxy-busy-buffers-size",
        "proxy-max-temp-file-size",
        "client-body-buffer-size",
    ] {
        if reader.read(short, parse_size, SIZE, "unset").is_some() {
            reader.info(short, NOTE);
        }
    }
    if reader
        .read(
            "proxy-buffers-number",
            parse_uint::<u32>,
            "a count",
            "unset",
        )
        .is_some()
    {
        reader.info("proxy-buffers-number", NOTE);
    }
    let limit = p.response_head_limit;
    let head = |v: &str| parse_size(v).filter(|s| *s <= MAX_HEAD);
    let expected = format!("{SIZE}, at most 1m");
    if let Some(size) = reader.read("proxy-buffer-size", head, &expected, limit) {
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        if size > limit {
            p.response_head_limit = size;
            reader.info(
                "proxy-buffer-size",
                format!("upstream response heads of up to {size} bytes are accepted"),
            );
        } else {
            reader.info(
                "proxy-buffer-size",
                format!("accepted; upstream response heads of up to {limit} bytes are accepted"),
            );
        }
    }
    match reader.get("proxy-http-version") {
        Some("1.1") => reader.info("proxy-http-version", "HTTP/1.1 is what Vestibule speaks"),
        Some("1.0") => reader.warning(
            "proxy-http-version",
            "Vestibule speaks HTTP/1.1 to upstreams; 1.0 is not used",
        ),
        Some(other) => reader.error(
            "proxy-http-version",
            format!("{other:?} is not \"1.0\" or \"1.1\"; HTTP/1.1 is used"),
        ),
        None => {}
    }
}
