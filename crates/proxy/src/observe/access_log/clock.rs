//! Time for the log lines: a request's wall-clock time worked out without a clock call of its
//! own, and RFC 3339 text for it, with the date worked out once per second.

use std::cell::Cell;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

/// The wall-clock time at `at`, an instant near now: worked out from a reading of both clocks
/// that this thread took within a second of it, so that a line costs no clock call of its
/// own (the request's start is already an `Instant`). A clock stepped by an operator or NTP
/// shows in the log within a second.
pub(crate) fn wall_time(at: Instant) -> SystemTime {
    thread_local! {
        static READING: Cell<Option<(Instant, SystemTime)>> = const { Cell::new(None) };
    }
    const FRESH: Duration = Duration::from_secs(1);
    if let Some(reading) = READING.get() {
        let (wall, apart) = by_reading(at, reading);
        if apart < FRESH {
            return wall;
        }
    }
    let reading = (Instant::now(), SystemTime::now());
    READING.set(Some(reading));
    by_reading(at, reading).0
}

/// `at` on the wall clock by a reading of both clocks, and how far apart `at` and the reading
/// are: requests end out of order, so `at` may come before the reading as well as after.
pub(super) fn by_reading(
    at: Instant,
    (instant, wall): (Instant, SystemTime),
) -> (SystemTime, Duration) {
    match at.checked_duration_since(instant) {
        Some(after) => (wall.checked_add(after).unwrap_or(wall), after),
        None => {
            let before = instant.saturating_duration_since(at);
            (wall.checked_sub(before).unwrap_or(wall), before)
        }
    }
}

thread_local! {
    /// Lines come in time order, many within one second: the date and time of day are
    /// worked out once per second.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// RFC 3339 in UTC with milliseconds: `2026-11-30T08:40:01.123Z`.
pub(super) fn write_time(out: &mut Vec<u8>, time: SystemTime) {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let seconds = since.as_secs();
    if SECOND.get().0 != seconds {
        SECOND.set((seconds, date_and_time(seconds)));
    }
    out.extend_from_slice(&SECOND.get().1);
    let millis = since.subsec_millis();
    out.extend_from_slice(&[
        b'.',
        b'0' + (millis / 100) as u8,
        b'0' + (millis / 10 % 10) as u8,
        b'0' + (millis % 10) as u8,
        b'Z',
    ]);
}

/// `2026-11-30T08:40:01` for `seconds` after the epoch. Kept out of line: once a second, it
/// need not crowd the path every line takes.
#[cold]
#[inline(never)]
pub(super) fn date_and_time(seconds: u64) -> [u8; 19] {
    // Years past 9999 do not fit RFC 3339's four digits; the epoch stands in for them.
    let at = i64::try_from(seconds)
        .ok()
        .and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok())
        .filter(|at| at.year() <= 9999)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let year = at.year().unsigned_abs();
    let two = |n: u8| [b'0' + n / 10, b'0' + n % 10];
    let [y1, y2] = two(u8::try_from(year / 100).unwrap_or(0));
    let [y3, y4] = two(u8::try_from(year % 100).unwrap_or(0));
    let [mo1, mo2] = two(u8::from(at.month()));
    let [d1, d2] = two(at.day());
    let [h1, h2] = two(at.hour());
    let [mi1, mi2] = two(at.minute());
    let [s1, s2] = two(at.second());
    [
        y1, y2, y3, y4, b'-', mo1, mo2, b'-', d1, d2, b'T', h1, h2, b':', mi1, mi2, b':', s1, s2,
    ]
}
