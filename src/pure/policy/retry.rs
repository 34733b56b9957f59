//! When to try again after failures (pure): exponential backoff from 30 s to an hour,
//! never so late that a still-valid certificate expires first, spread per name so that
//! many failures together do not come back at one instant. Certificates, servers and
//! trust targets all retry by these rules.

use std::time::Duration;
use time::OffsetDateTime;

/// First retry delay after a failure; doubles up to `BACKOFF_MAX`.
pub const BACKOFF_MIN: Duration = Duration::from_secs(30);
pub const BACKOFF_MAX: Duration = Duration::from_secs(3600);

/// The delay after `failures` failures in a row.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX)
}

/// When to retry after `failures` failures in a row: backoff, but never so late that a
/// still-valid certificate expires first (half of the time it has left, at least 5 s).
pub fn retry_at(
    now: OffsetDateTime,
    failures: u32,
    not_after: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let mut wait = backoff(failures);
    if let Some(na) = not_after {
        if na > now {
            let half = Duration::from_secs(((na - now).whole_seconds() / 2).max(5) as u64);
            wait = wait.min(half);
        }
    }
    now + time::Duration::seconds(wait.as_secs() as i64)
}

/// `retry_at`, spread: up to a fifth of the backoff earlier, derived from the
/// certificate's name, so that many certificates failing together (a CA down, a rate
/// limit) do not come back at the same instant.
pub fn retry_at_spread(
    name: &str,
    now: OffsetDateTime,
    failures: u32,
    not_after: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let at = retry_at(now, failures, not_after);
    let spread = super::jitter(name, &failures.to_string(), backoff(failures) * 2);
    (at - time::Duration::seconds(spread.as_secs() as i64)).max(now + time::Duration::seconds(1))
}

/// A thing in backoff: how many failures in a row, and when it may be tried again.
#[derive(Debug, Clone, Copy)]
pub struct Held {
    pub failures: u32,
    pub next: OffsetDateTime,
}

/// When a certificate may be attempted: no sooner than its own retry time and those of
/// every server it reloads that is in backoff. None when it may go now.
pub fn held_until(
    own: Option<Held>,
    servers: impl IntoIterator<Item = Held>,
    now: OffsetDateTime,
) -> Option<OffsetDateTime> {
    own.into_iter()
        .chain(servers)
        .filter(|h| h.failures > 0 && h.next > now)
        .map(|h| h.next)
        .max()
}

/// When a certificate is looked at next: its renewal (or retry) time, or its
/// `expiring` hook's time when that comes first.
pub fn next_look(next: OffsetDateTime, expiring_at: Option<OffsetDateTime>) -> OffsetDateTime {
    expiring_at.map_or(next, |e| e.min(next))
}

/// How long to sleep until the earliest of `wakes` (at once when it has passed; a day
/// when nothing is scheduled).
pub fn sleep_for(wakes: impl IntoIterator<Item = OffsetDateTime>, now: OffsetDateTime) -> Duration {
    match wakes.into_iter().min() {
        Some(t) => Duration::from_secs_f64((t - now).as_seconds_f64().max(0.0)),
        None => Duration::from_secs(86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(5), Duration::from_secs(480));
        assert_eq!(backoff(50), BACKOFF_MAX);
    }

    #[test]
    fn retry_never_outlives_the_certificate() {
        let now = datetime!(2026-11-27 12:00 UTC);
        let in_days = now + time::Duration::days(10);
        assert_eq!(
            retry_at(now, 1, Some(in_days)),
            now + time::Duration::seconds(30)
        );
        assert_eq!(
            retry_at(now, 20, Some(in_days)),
            now + time::Duration::hours(1)
        );
        // 40 minutes left: retry within 20 minutes, not in an hour.
        let soon = now + time::Duration::minutes(40);
        assert_eq!(
            retry_at(now, 20, Some(soon)),
            now + time::Duration::minutes(20)
        );
        // Already expired or missing: plain backoff.
        assert_eq!(
            retry_at(now, 3, Some(now - time::Duration::minutes(1))),
            now + time::Duration::seconds(120)
        );
        assert_eq!(retry_at(now, 3, None), now + time::Duration::seconds(120));
        // Spread: never later than the plain retry, at most a fifth earlier, stable.
        for name in ["a", "b", "www", "api"] {
            let plain = retry_at(now, 4, None);
            let spread = retry_at_spread(name, now, 4, None);
            assert!(
                spread <= plain && spread >= plain - time::Duration::seconds(48),
                "{name}: {spread}"
            );
            assert_eq!(spread, retry_at_spread(name, now, 4, None));
        }
    }

    #[test]
    fn a_certificate_waits_for_its_own_retry_and_its_servers() {
        let now = datetime!(2026-11-27 12:00 UTC);
        let at = |m| now + time::Duration::minutes(m);
        let held = |failures, m| Held {
            failures,
            next: at(m),
        };
        assert_eq!(held_until(None, [], now), None);
        // Healthy (no failures) or already past: nothing holds.
        assert_eq!(held_until(Some(held(0, 10)), [held(2, -1)], now), None);
        assert_eq!(held_until(Some(held(1, 5)), [], now), Some(at(5)));
        // The latest of its own retry and its servers' in backoff.
        assert_eq!(
            held_until(Some(held(1, 5)), [held(3, 20), held(0, 60)], now),
            Some(at(20))
        );
        assert_eq!(next_look(at(30), Some(at(10))), at(10));
        assert_eq!(next_look(at(30), None), at(30));
        assert_eq!(sleep_for([at(2), at(1)], now), Duration::from_secs(60));
        assert_eq!(sleep_for([at(-5)], now), Duration::ZERO);
        assert_eq!(sleep_for([], now), Duration::from_secs(86_400));
    }
}
