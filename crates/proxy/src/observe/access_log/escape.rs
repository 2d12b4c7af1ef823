//! Escaping what clients send, so that no value can end a field or a line early or forge one:
//! JSON string escaping, and nginx's `\xHH` escaping for the text format.

/// The inside of a JSON string holding `value`: valid UTF-8 is kept, with quotes,
/// backslashes and control characters escaped; bytes that are not UTF-8 become U+FFFD.
pub(super) fn json_text(out: &mut Vec<u8>, value: &[u8]) {
    if plain(value, b'"') {
        out.extend_from_slice(value);
        return;
    }
    match std::str::from_utf8(value) {
        Ok(text) => escape_all(out, text),
        Err(_) => escape_all(out, &String::from_utf8_lossy(value)),
    }
}

/// Whether every byte of `bytes` is printable ASCII other than `"`, `\` and `also`: what
/// both formats copy as it is, and nearly every value is. Eight bytes are checked at a time
/// with word arithmetic, so that a long user agent costs little more than a short path.
pub(super) fn plain(bytes: &[u8], also: u8) -> bool {
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        let mut eight = [0; 8];
        eight.copy_from_slice(word);
        if odd_bytes(u64::from_le_bytes(eight), also) != 0 {
            return false;
        }
    }
    words.remainder().iter().all(|&b| plain_byte(b, also))
}

/// [`plain`] for one byte: for the few after the last whole word, and for escaping.
#[inline(always)]
pub(super) fn plain_byte(b: u8, also: u8) -> bool {
    PRINTABLE[usize::from(b)] && b != also
}

/// Nonzero when some byte of `x` is below `0x20`, above `0x7e`, or `"`, `\` or `also`. Each
/// test is exact for the word as a whole, though a borrow or carry may mark the wrong byte,
/// which does not matter here.
#[inline(always)]
pub(super) fn odd_bytes(x: u64, also: u8) -> u64 {
    const ONES: u64 = u64::from_le_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_le_bytes([0x80; 8]);
    // High bit set in some byte when a byte of `x` is below `n` (for `n` up to 0x80).
    let below = |x: u64, n: u8| x.wrapping_sub(ONES * u64::from(n)) & !x & HIGH;
    let above = (x.wrapping_add(ONES) | x) & HIGH;
    let equal = |b: u8| below(x ^ (ONES * u64::from(b)), 1);
    below(x, 0x20) | above | equal(b'"') | equal(b'\\') | equal(also)
}

/// Printable ASCII but `"` and `\`.
pub(super) static PRINTABLE: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x20;
    while b < 0x7f {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

/// [`json_text`] for text known to hold something to escape (or non-ASCII, which valid
/// UTF-8 keeps as it is).
pub(super) fn escape_all(out: &mut Vec<u8>, text: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = text.as_bytes();
    let mut clean = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => &[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ],
            _ => continue,
        };
        out.extend_from_slice(&bytes[clean..i]);
        out.extend_from_slice(escaped);
        clean = i + 1;
    }
    out.extend_from_slice(&bytes[clean..]);
}

/// Writes `value` with `"`, `\`, control characters and every byte outside ASCII as `\xHH`, as
/// nginx does, so that no client-sent string can end a field or a line early or forge one;
/// `bare` also escapes spaces, for fields that are not quoted.
pub(super) fn escape(out: &mut Vec<u8>, value: &[u8], bare: bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let also = if bare { b' ' } else { b'"' };
    if plain(value, also) {
        out.extend_from_slice(value);
        return;
    }
    let mut clean = 0;
    for (i, &b) in value.iter().enumerate() {
        if !plain_byte(b, also) {
            out.extend_from_slice(&value[clean..i]);
            out.extend_from_slice(&[
                b'\\',
                b'x',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]);
            clean = i + 1;
        }
    }
    out.extend_from_slice(&value[clean..]);
}
