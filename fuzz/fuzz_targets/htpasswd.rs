//! htpasswd files on any input, through basic authentication end to end: the compile reads
//! the `auth` of the Secret an Ingress names, and the proxy reads credentials and verifies
//! passwords. Nothing may panic; every line the compile takes gives its user (the first hash
//! of a user named twice) and no other; that user signs in with `Basic` credentials for the
//! name; a `{SHA}` hash made for a password verifies it; and diagnostics name lines, never a
//! hash.
//!
//! Input: the file, as the Secret's bytes.

#![no_main]

#[path = "common/objects.rs"]
mod objects;

use std::collections::BTreeMap;

use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use sha1::Digest as _;
use vestibule_model::BasicAuth;
use vestibule_proxy::fuzzing::{basic_credentials, verify_password};
use vestibule_translate::{compile, values};

/// Hashes verified per input: apr1 takes a thousand rounds of MD5.
const VERIFIED: usize = 4;

fn annotations() -> BTreeMap<String, String> {
    [
        ("auth-type", "basic"),
        ("auth-secret", "users"),
        ("auth-realm", "fuzz"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{}{k}", objects::PREFIX), v.to_owned()))
    .collect()
}

/// Whether verifying `hash` is cheap: bcrypt costs above 6 and SHA-crypt rounds above the
/// default take from milliseconds to hours, a cost the Secret's author chose.
fn cheap(hash: &str) -> bool {
    let mut parts = hash.split('$');
    if hash.starts_with("$2") {
        return parts
            .nth(2)
            .and_then(|cost| cost.parse::<u32>().ok())
            .is_none_or(|c| c <= 6);
    }
    if let Some(at) = hash.find("rounds=") {
        let digits: String = hash[at + 7..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        return digits.parse::<u32>().is_ok_and(|r| r <= 5000) || digits.is_empty();
    }
    true
}

/// The users an htpasswd file gives, read independently: trimmed lines, `#` comments,
/// `user:hash` split at the first colon, hashes of the supported formats that ask for no
/// more work than the bound; the first line of a user wins.
fn expected_users(text: &str) -> BTreeMap<&str, &str> {
    let mut users = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((user, hash)) = line.split_once(':')
            && !user.is_empty()
            && !hash.is_empty()
            && values::password_hash(hash.as_bytes())
            && vestibule_model::hash_work_over_bound(hash).is_none()
        {
            users.entry(user).or_insert(hash);
        }
    }
    users
}

fn basic_auth(compiled: &vestibule_translate::Compiled) -> Option<&BasicAuth> {
    compiled
        .table
        .routes()
        .iter()
        .filter(|r| &*r.origin.name == "web")
        .find_map(|r| r.policy.basic_auth.as_deref())
}

/// Each run of digits as one `0`, so that a line number in a message and in a hash compare
/// equal.
fn without_numbers(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if !c.is_ascii_digit() {
            out.push(c);
        } else if !out.ends_with('0') {
            out.push('0');
        }
    }
    out
}

/// What the compile says about an htpasswd file of one bad line of each kind: the fixed text
/// of its messages, which a hash may happen to repeat.
fn message_text() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let snapshot = objects::snapshot(annotations(), Some(b"a:plain\nno colon\n"));
        let compiled = compile(&snapshot, objects::options());
        let messages: Vec<String> = compiled
            .report
            .diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect();
        without_numbers(&messages.join("\n"))
    })
}

fuzz_target!(|data: &[u8]| {
    let snapshot = objects::snapshot(annotations(), Some(data));
    let compiled = compile(&snapshot, objects::options());
    // The compile reads the file as text, invalid UTF-8 replaced.
    let text = String::from_utf8_lossy(data);
    let expected = expected_users(&text);
    let Some(auth) = basic_auth(&compiled) else {
        panic!(
            "basic authentication is not built: {:?}",
            compiled.report.diagnostics
        );
    };
    assert_eq!(
        auth.user_count(),
        expected.len(),
        "users: {:?}",
        expected.keys()
    );
    for (user, hash) in &expected {
        assert_eq!(auth.hash_of(user), Some(*hash), "{user:?}");
    }
    // The annotations' diagnostics are about the Secret's lines, by number.
    for d in &compiled.report.diagnostics {
        if d.object.name != "web" || !d.field.starts_with("metadata.annotations") {
            continue;
        }
        assert_eq!(
            d.field,
            format!("metadata.annotations[\"{}auth-secret\"]", objects::PREFIX),
            "{d}"
        );
        // A refused user is named, quoted; a name may hold anything, a hash included.
        let mut message = d.message.clone();
        for line in text.lines() {
            if let Some((user, _)) = line.trim().split_once(':') {
                message = message.replace(&format!("{user:?}"), "");
            }
        }
        let message = without_numbers(&message);
        for line in text.lines() {
            let Some((_, hash)) = line.trim().split_once(':') else {
                continue;
            };
            let hash = without_numbers(hash);
            if hash.len() >= 6 && !message_text().contains(&hash) {
                assert!(!message.contains(&hash), "a message shows a hash: {d}");
            }
        }
    }
    // Each user signs in: the name comes back out of the credentials whatever it holds.
    let engine = base64::engine::general_purpose::STANDARD;
    for (i, (user, hash)) in expected.iter().enumerate() {
        let password = format!("{user}:{i}");
        let header = format!("Basic {}", engine.encode(format!("{user}:{password}")));
        let credentials = basic_credentials(header.as_bytes());
        assert_eq!(credentials, Some(((*user).to_owned(), password.clone())));
        if i < VERIFIED && cheap(hash) {
            let _ = verify_password(&password, hash);
        }
        let made = format!(
            "{{SHA}}{}",
            engine.encode(sha1::Sha1::digest(password.as_bytes()))
        );
        assert!(verify_password(&password, &made));
        assert!(!verify_password(&format!("{password}x"), &made));
    }
    // Any header at all is read without panicking.
    let _ = basic_credentials(data);
});
