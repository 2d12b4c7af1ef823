//! The snippet parser on any input: it must answer (mapped or refused) without panicking or
//! hanging, and what it maps must be safe to send: no field name or value with a line
//! break or NUL, whatever the input.

#![no_main]

use libfuzzer_sys::fuzz_target;
use vestibule_model::HeaderOp;
use vestibule_translate::snippet;

fn unsafe_byte(b: u8) -> bool {
    b == b'\r' || b == b'\n' || b == 0
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = snippet::protects(text);
    let Ok(mapped) = snippet::parse(text) else {
        return;
    };
    let ops = mapped
        .request
        .iter()
        .chain(mapped.response.iter().map(|r| &r.op));
    for op in ops {
        let name = op.name();
        assert!(!name.is_empty() && !name.bytes().any(|b| b.is_ascii_control() || b == b' '));
        if let HeaderOp::Set { value, .. } | HeaderOp::Add { value, .. } = op {
            assert!(!value.as_str().bytes().any(unsafe_byte), "{value:?}");
        }
    }
    if let Some(fixed) = &mapped.fixed {
        assert!((200..=599).contains(&fixed.code));
        assert!(!fixed.body.bytes().any(unsafe_byte));
    }
    if let Some(redirect) = &mapped.redirect {
        assert!(!redirect.location.bytes().any(unsafe_byte));
    }
});
