//! The verdict on a watch-only certificate (pure): certkeeper does not renew it, it
//! says when it needs attention.

use crate::policy::{relative, rfc3339};
use std::time::Duration;
use time::OffsetDateTime;

/// What a watched certificate's file says at a given time.
#[derive(Debug, Clone, PartialEq)]
pub enum Watched {
    /// Valid, and not yet inside its warning window, which opens at `warn_at`.
    Fine {
        not_after: OffsetDateTime,
        warn_at: OffsetDateTime,
    },
    /// Inside its warning window.
    Expiring {
        not_after: OffsetDateTime,
    },
    Expired {
        not_after: OffsetDateTime,
    },
    /// The file could not be read or holds no certificate.
    Unreadable(String),
}

/// Judges a watched certificate: its leaf's end (or why it could not be read), the
/// configured warning window, and `now`.
pub fn judge(
    not_after: Result<OffsetDateTime, &str>,
    warn_before: Duration,
    now: OffsetDateTime,
) -> Watched {
    let not_after = match not_after {
        Ok(t) => t,
        Err(why) => return Watched::Unreadable(why.to_string()),
    };
    let warn_at = not_after - time::Duration::seconds(warn_before.as_secs() as i64);
    if now >= not_after {
        Watched::Expired { not_after }
    } else if now >= warn_at {
        Watched::Expiring { not_after }
    } else {
        Watched::Fine { not_after, warn_at }
    }
}

impl Watched {
    /// The state word of `status` (`ok`, `expiring`, `expired`, `unreadable`).
    pub fn code(&self) -> &'static str {
        match self {
            Watched::Fine { .. } => "ok",
            Watched::Expiring { .. } => "expiring",
            Watched::Expired { .. } => "expired",
            Watched::Unreadable(_) => "unreadable",
        }
    }

    /// What `status` says beside the state, when anything.
    pub fn detail(&self, now: OffsetDateTime) -> Option<String> {
        match self {
            Watched::Fine { .. } => None,
            Watched::Expiring { not_after } => {
                Some(format!("expires {}", relative(*not_after, now)))
            }
            Watched::Expired { not_after } => Some(format!("expired at {}", rfc3339(*not_after))),
            Watched::Unreadable(why) => Some(why.clone()),
        }
    }

    pub fn not_after(&self) -> Option<OffsetDateTime> {
        match self {
            Watched::Fine { not_after, .. }
            | Watched::Expiring { not_after }
            | Watched::Expired { not_after } => Some(*not_after),
            Watched::Unreadable(_) => None,
        }
    }

    /// When to look again: when the warning window opens, or (once it needs attention)
    /// a day later, so the warning repeats daily.
    pub fn next_look(&self, now: OffsetDateTime) -> OffsetDateTime {
        match self {
            Watched::Fine { warn_at, .. } => *warn_at,
            _ => now + time::Duration::days(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_watched_certificate_is_fine_then_expiring_then_expired() {
        let end = datetime!(2027-01-31 00:00 UTC);
        let week = Duration::from_secs(7 * 86_400);
        let early = datetime!(2027-01-01 00:00 UTC);
        assert_eq!(
            judge(Ok(end), week, early),
            Watched::Fine {
                not_after: end,
                warn_at: datetime!(2027-01-24 00:00 UTC)
            }
        );
        assert_eq!(
            judge(Ok(end), week, early).next_look(early),
            datetime!(2027-01-24 00:00 UTC)
        );
        let late = datetime!(2027-01-30 00:00 UTC);
        let v = judge(Ok(end), week, late);
        assert_eq!(v.code(), "expiring");
        assert_eq!(v.detail(late).as_deref(), Some("expires in 1d"));
        assert_eq!(v.next_look(late), datetime!(2027-01-31 00:00 UTC));
        assert_eq!(judge(Ok(end), week, end).code(), "expired");
        let v = judge(Err("/x.pem: no such file"), week, early);
        assert_eq!(v.code(), "unreadable");
        assert_eq!(v.not_after(), None);
    }
}
