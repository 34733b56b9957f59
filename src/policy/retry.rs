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
}
