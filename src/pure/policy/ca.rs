//! The internal CA's own schedule (pure): when a CA certificate must be replaced so that
//! what it signs can still get a full lifetime, and whether that time has come.
//! certkeeper does not rotate its CA yet: until it does, a CA inside its rotation
//! window is an alarm (`check` exits 1, `status`, the log and `STATUS=` say so).

use std::time::Duration;
use time::OffsetDateTime;

/// Where a CA certificate stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaHealth {
    /// Nothing to do before `rotate_at`.
    Fine {
        rotate_at: OffsetDateTime,
    },
    /// Inside its rotation window since `since`: what it signs from now on is cut
    /// short, and it expires at `not_after`.
    RotationDue {
        since: OffsetDateTime,
        not_after: OffsetDateTime,
    },
    Expired {
        not_after: OffsetDateTime,
    },
}

/// When a CA certificate valid from `not_before` to `not_after` must be replaced: early
/// enough that it can still `carry` what it signs (the longest lifetime plus its renewal
/// window), and at the latest when a third of its lifetime is left.
pub fn rotate_at(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    carry: Duration,
) -> OffsetDateTime {
    let life = (not_after - not_before).max(time::Duration::ZERO);
    let third: time::Duration = life / 3;
    let window = third.max(time::Duration::seconds(carry.as_secs() as i64));
    (not_after - window).max(not_before)
}

pub fn health(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    carry: Duration,
    now: OffsetDateTime,
) -> CaHealth {
    let at = rotate_at(not_before, not_after, carry);
    if now >= not_after {
        CaHealth::Expired { not_after }
    } else if now >= at {
        CaHealth::RotationDue {
            since: at,
            not_after,
        }
    } else {
        CaHealth::Fine { rotate_at: at }
    }
}

/// What the intermediate must carry: the longest lifetime of a certificate it issues
/// plus that certificate's renewal window; and what the root must carry: a whole
/// intermediate lifetime plus that.
pub fn carries(config: &crate::config::Config) -> (Duration, Duration) {
    let leaf = config
        .certificates
        .iter()
        .filter(|c| c.issuer == crate::model::IssuerRef::Internal)
        .map(|c| c.lifetime + c.renew_before.of(c.lifetime).min(c.lifetime))
        .max()
        .unwrap_or(Duration::ZERO);
    (leaf, config.ca.intermediate_lifetime + leaf)
}

/// A sentence for `check`, `status`, the log and `STATUS=` about a CA certificate that
/// needs attention (None when it is fine).
pub fn alarm(which: &str, h: CaHealth) -> Option<String> {
    match h {
        CaHealth::Fine { .. } => None,
        CaHealth::RotationDue { since, not_after } => Some(format!(
            "the CA {which} certificate expires {} and has been due for replacement since {}: certificates it signs are cut short to end with it; certkeeper cannot rotate its CA yet: create a new CA before then",
            crate::policy::rfc3339(not_after),
            crate::policy::rfc3339(since)
        )),
        CaHealth::Expired { not_after } => Some(format!(
            "the CA {which} certificate expired {}: nothing can be issued from it; create a new CA",
            crate::policy::rfc3339(not_after)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const DAY: u64 = 86_400;

    #[test]
    fn a_ca_is_due_when_it_can_no_longer_carry_a_leaf_or_a_third_of_it_is_left() {
        let start = datetime!(2026-01-01 00:00 UTC);
        let end = start + time::Duration::days(3 * 365);
        // A 90-day leaf renewed 30 days early needs 120 days: less than a third.
        let carry = Duration::from_secs(120 * DAY);
        assert_eq!(
            rotate_at(start, end, carry),
            end - time::Duration::days(365)
        );
        assert!(matches!(
            health(start, end, carry, start),
            CaHealth::Fine { .. }
        ));
        let late = end - time::Duration::days(100);
        assert_eq!(
            health(start, end, carry, late),
            CaHealth::RotationDue {
                since: end - time::Duration::days(365),
                not_after: end
            }
        );
        assert_eq!(
            health(start, end, carry, end),
            CaHealth::Expired { not_after: end }
        );
        // A leaf longer than a third of the CA: its lifetime decides.
        let long = Duration::from_secs(2 * 365 * DAY);
        assert_eq!(
            rotate_at(start, end, long),
            end - time::Duration::days(2 * 365)
        );
        // A CA shorter than what it must carry is due from its first day.
        let short_end = start + time::Duration::days(30);
        assert_eq!(rotate_at(start, short_end, long), start);
    }
}
