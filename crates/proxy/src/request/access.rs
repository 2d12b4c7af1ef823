//! Access control: who may use a route. A route whose Ingress asks for protection that is not
//! built yet is refused (503, fail closed); basic authentication checks the client's user and
//! password against the route's users. A password is verified once per credential and Secret
//! version: successes are remembered (as keyed digests, never the password) in a bounded set
//! read without locks, so a slow hash such as bcrypt does not run on every request.

use std::collections::HashSet;
use std::sync::Arc;

use arc_swap::ArcSwap;
use base64::Engine as _;
use http::HeaderMap;
use http::header::{AUTHORIZATION, HeaderValue};
use sha2::{Digest, Sha256};
use vestibule_model::BasicAuth;

use crate::respond::ProxyError;

/// Verified credentials kept per Secret version; past this, the set starts again.
const REMEMBERED: usize = 4096;

/// A route's basic authentication, settled at install and carried over to the next table
/// while its Secret does not change.
#[derive(Debug)]
pub(crate) struct BasicGuard {
    auth: Arc<BasicAuth>,
    /// `WWW-Authenticate` of the 401.
    challenge: HeaderValue,
    /// Digests of credentials verified so far.
    verified: ArcSwap<HashSet<[u8; 32]>>,
    /// Mixed into every digest, so the set says nothing about passwords outside this process.
    key: [u8; 16],
}

impl BasicGuard {
    pub(crate) fn new(auth: Arc<BasicAuth>) -> BasicGuard {
        let challenge = format!("Basic realm=\"{}\"", auth.realm);
        // The realm was checked in the compile as printable text without quotes.
        let challenge = HeaderValue::try_from(challenge)
            .unwrap_or(HeaderValue::from_static("Basic realm=\"\""));
        BasicGuard {
            auth,
            challenge,
            verified: ArcSwap::from_pointee(HashSet::new()),
            key: fastrand::u128(..).to_le_bytes(),
        }
    }

    pub(crate) fn version(&self) -> u64 {
        self.auth.version
    }

    fn digest(&self, user: &str, password: &str) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(self.auth.version.to_le_bytes());
        hasher.update(user.as_bytes());
        hasher.update([0]);
        hasher.update(password.as_bytes());
        hasher.finalize().into()
    }

    fn unauthorized(&self) -> ProxyError {
        ProxyError::Unauthorized(Some(self.challenge.clone()))
    }
}

/// A password still to be checked against its hash, off the request's thread.
#[derive(Debug)]
pub(super) struct Pending {
    guard: Arc<BasicGuard>,
    user: String,
    password: String,
}

impl Pending {
    /// Runs the hash (bcrypt may take tens of milliseconds) on the blocking pool; the user,
    /// when the password is right.
    pub(super) async fn verify(self) -> Result<String, ProxyError> {
        let guard = Arc::clone(&self.guard);
        let checked = tokio::task::spawn_blocking(move || {
            let hash = self.guard.auth.hash_of(&self.user)?;
            verify_password(&self.password, hash).then_some(self)
        })
        .await;
        match checked {
            Ok(Some(pending)) => {
                let digest = pending.guard.digest(&pending.user, &pending.password);
                pending.guard.verified.rcu(|set| {
                    let mut set = if set.len() >= REMEMBERED {
                        HashSet::new()
                    } else {
                        (**set).clone()
                    };
                    set.insert(digest);
                    set
                });
                Ok(pending.user)
            }
            _ => Err(guard.unauthorized()),
        }
    }
}

/// What basic authentication made of a request.
pub(super) enum Basic {
    /// The route has none.
    Off,
    /// A user whose password was verified before.
    Known(String),
    /// A password still to verify.
    Pending(Pending),
}

/// Basic authentication of a request; `Err` (401) when it cannot go on. The credentials are
/// taken out of the request: the upstream never sees them.
#[inline]
pub(super) fn basic(
    guard: Option<&Arc<BasicGuard>>,
    headers: &mut HeaderMap,
) -> Result<Basic, ProxyError> {
    let Some(guard) = guard else {
        return Ok(Basic::Off);
    };
    let credentials = headers.remove(AUTHORIZATION);
    let Some((user, password)) = credentials.as_ref().and_then(decode) else {
        return Err(guard.unauthorized());
    };
    if guard.auth.hash_of(&user).is_none() {
        return Err(guard.unauthorized());
    }
    if guard
        .verified
        .load()
        .contains(&guard.digest(&user, &password))
    {
        return Ok(Basic::Known(user));
    }
    Ok(Basic::Pending(Pending {
        guard: Arc::clone(guard),
        user,
        password,
    }))
}

/// `Basic <base64 of user:password>`; anything else (another scheme, bad base64, not UTF-8,
/// no colon) is no credential at all.
pub(crate) fn decode(value: &HeaderValue) -> Option<(String, String)> {
    let value = value.to_str().ok()?.trim();
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Whether `password` matches `hash`, in the formats nginx reads from an htpasswd file.
pub(crate) fn verify_password(password: &str, hash: &str) -> bool {
    // Every supported format is printable ASCII. crypt3_rs's decoder underflows on a control
    // character (a panic where overflow is checked), so such a hash never reaches it.
    if !hash.bytes().all(|b| b.is_ascii_graphic()) {
        return false;
    }
    // The compile refuses such users; checked again so that no hash, however it got in,
    // pins a blocking thread for hours.
    if vestibule_model::hash_work_over_bound(hash).is_some() {
        return false;
    }
    if let Some(encoded) = hash.strip_prefix("{SHA}") {
        let digest = <sha1::Sha1 as sha1::Digest>::digest(password.as_bytes());
        let expected = base64::engine::general_purpose::STANDARD.decode(encoded);
        return expected.is_ok_and(|e| constant_time_eq(&e, &digest));
    }
    if hash.starts_with("$2") {
        return bcrypt::verify(password, hash).unwrap_or(false);
    }
    if hash.starts_with("$apr1$") {
        return crypt3_rs::crypt::apr1::verify(password, hash);
    }
    if hash.starts_with("$5$") {
        return crypt3_rs::crypt::sha256::verify(password, hash);
    }
    if hash.starts_with("$6$") {
        return crypt3_rs::crypt::sha512::verify(password, hash);
    }
    false
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    // Hashes of "password", made with `openssl passwd` and `htpasswd`.
    const HASHES: &[&str] = &[
        "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK00",
        "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZFpe",
        "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=",
        "$5$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4AtC.",
        "$6$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/jctKu9YterLp8wwnSq.qc.eoxqOmSuNp2xS0ktL3nh/",
    ];

    #[test]
    fn every_format_nginx_reads_is_verified() {
        for hash in HASHES {
            assert!(verify_password("password", hash), "{hash}");
            assert!(!verify_password("Password", hash), "{hash}");
        }
        assert!(
            !verify_password("password", "password"),
            "plain text is no hash"
        );
    }

    #[test]
    fn hashes_with_control_characters_are_refused_not_decoded() {
        // crypt3_rs's decoder subtracts 0x20 from each character of the salt and checksum.
        for hash in [
            "$6$sa\0lt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/",
            "$5$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4A\x01C.",
            "$apr1$lZL6V/ci$eIMz/iKDkbtys/uU7LEK\x1f0",
            "$2y$05$bvIG6Nmid91Mu9RcmmWZfO5HJIMCT8riNW0hEp8f6/FuA2/mHZF\n",
            "{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\r",
        ] {
            assert!(!verify_password("password", hash), "{hash:?}");
        }
    }

    /// Runs `verify_password` on a thread, for at most a few seconds: a hash past the bound
    /// must be answered without hashing (cost 31 or a billion rounds would take hours).
    fn verified_quickly(password: &str, hash: &str) -> bool {
        let (tx, rx) = std::sync::mpsc::channel();
        let (password, owned) = (password.to_owned(), hash.to_owned());
        std::thread::spawn(move || tx.send(verify_password(&password, &owned)));
        rx.recv_timeout(std::time::Duration::from_secs(5))
            .unwrap_or_else(|_| panic!("{hash} was hashed, not refused"))
    }

    #[test]
    fn hashes_asking_for_more_work_than_the_bound_are_refused_without_hashing() {
        let bcrypt = &HASHES[1][7..];
        for hash in [
            format!("$2y$31${bcrypt}"),
            format!("$2b$13${bcrypt}"),
            "$6$rounds=999999999$saltsalt$qFmFH.bQmmtXzyBY0s9v7Oicd2z4XSIecDzlB5KiA2/".to_owned(),
            "$5$rounds=+4294967295$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4AtC.".to_owned(),
            "$5$rounds=99999999999999999999999$saltsalt$gOjOtoMpVhru2uyjeJSEc/JaLQWOXMNmlOnj6T4AtC."
                .to_owned(),
        ] {
            assert!(!verified_quickly("password", &hash), "{hash}");
        }
        // Real hashes of "password" (glibc crypt): the bound itself verifies, one round
        // past it is refused though the password is right.
        assert!(verified_quickly(
            "password",
            "$5$rounds=200000$saltsalt$XjsJk4X52CPYJcBCoPu.9prC0B7LnwRx2kw4A93bHG6"
        ));
        assert!(!verified_quickly(
            "password",
            "$5$rounds=200001$saltsalt$013KF52e300TVoaYrUmpoxaXSzJJfHpOkRJ5gGDmBT/"
        ));
        assert!(verified_quickly("password", &format!("$2y$05${bcrypt}")));
    }

    #[test]
    fn only_well_formed_basic_credentials_are_read() {
        let header = |v: &str| HeaderValue::from_str(v).unwrap();
        let ok = base64::engine::general_purpose::STANDARD.encode("ann:pa:ss");
        assert_eq!(
            decode(&header(&format!("basic {ok}"))),
            Some(("ann".into(), "pa:ss".into()))
        );
        let latin = base64::engine::general_purpose::STANDARD.encode([0xff, b':', b'x']);
        for bad in [
            "Bearer abc",
            "Basic !!!",
            "Basic",
            &format!("Basic {latin}"),
        ] {
            assert_eq!(decode(&header(bad)), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn a_verified_password_is_remembered_for_its_secret_version_only() {
        let users = [("ann".to_owned(), HASHES[1].to_owned())];
        let guard = Arc::new(BasicGuard::new(Arc::new(BasicAuth::new(
            "Private",
            "default/users",
            users,
        ))));
        let encoded = base64::engine::general_purpose::STANDARD.encode("ann:password");
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {encoded}")).unwrap(),
        );
        let Ok(Basic::Pending(pending)) = basic(Some(&guard), &mut headers.clone()) else {
            panic!("a first password is verified");
        };
        assert_eq!(pending.verify().await.unwrap(), "ann");
        assert!(
            matches!(basic(Some(&guard), &mut headers), Ok(Basic::Known(user)) if user == "ann"),
            "remembered"
        );
        assert!(
            !headers.contains_key(AUTHORIZATION),
            "the credentials do not go upstream"
        );

        let wrong = base64::engine::general_purpose::STANDARD.encode("ann:nope");
        let mut headers = HeaderMap::new();
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&format!("Basic {wrong}")).unwrap(),
        );
        let Ok(Basic::Pending(pending)) = basic(Some(&guard), &mut headers) else {
            panic!("an unknown password is verified");
        };
        let refused = pending.verify().await.unwrap_err();
        assert_eq!(refused.status().as_u16(), 401);
    }
}
