//! The internal CA's own schedule (pure): when each CA certificate must be replaced so
//! that what it signs still gets a full lifetime, and what is due at a given `now`.
//!
//! The intermediate rotates when it can no longer carry a full leaf lifetime plus its
//! renewal window, or when `ca.rotate_before` of its lifetime is left, whichever comes
//! first. The root rotates in two steps: a new root is *published* (trust targets carry
//! both roots; a cross certificate signed by the old root links the new one to it)
//! `ca.root_overlap` before the old root could no longer carry a full intermediate and
//! leaf lifetime, and after the overlap issuance *switches* to a new intermediate under
//! the new root. Retired intermediates are kept until the last leaf they signed has
//! expired, and a retired root until no kept intermediate depends on it.

use crate::duration::RenewBefore;
use std::time::Duration;
use time::OffsetDateTime;

/// A certificate's validity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

/// What the CA holds, as far as its schedule is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaState {
    pub root: Span,
    pub intermediate: Span,
    /// When a new root was published, if one is waiting for its overlap to pass.
    pub next_root: Option<OffsetDateTime>,
    /// Retired intermediates: generation, generation of the root that signed it, and
    /// when the last leaf it signed expires.
    pub retired: Vec<Retired>,
    /// Generations of earlier roots still in the trust targets.
    pub old_roots: Vec<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retired {
    pub generation: u32,
    pub root: u32,
    pub last_leaf: OffsetDateTime,
}

/// The durations the schedule depends on (from the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// What the intermediate must carry: the longest leaf lifetime plus its window.
    pub leaf_carry: Duration,
    /// What the root must carry: a whole intermediate lifetime plus `leaf_carry`.
    pub root_carry: Duration,
    /// How long trust targets carry a new root before anything depends on it.
    pub root_overlap: Duration,
    /// `ca.rotate_before`: the share (or duration) of a CA certificate's lifetime left
    /// at which it is replaced at the latest.
    pub rotate_before: RenewBefore,
    pub root_lifetime: Duration,
    pub intermediate_lifetime: Duration,
}

impl Timing {
    /// Whether an intermediate made at `now` under a root ending at `root_end` could
    /// carry its leaves for a while: if not, replacing one helps nothing (the lifetimes
    /// do not fit) and replacing it again and again must not happen.
    fn fresh_intermediate_fits(&self, now: OffsetDateTime, root_end: OffsetDateTime) -> bool {
        let fresh = Span {
            not_before: now,
            not_after: (now + secs(self.intermediate_lifetime)).min(root_end),
        };
        rotate_at(fresh, self.leaf_carry, self.rotate_before) > now
    }

    /// The same for a root made at `now`.
    fn fresh_root_fits(&self, now: OffsetDateTime) -> bool {
        let fresh = Span {
            not_before: now,
            not_after: now + secs(self.root_lifetime),
        };
        root_schedule(fresh, self).0 > now
    }
}

/// Why lifetimes that do not fit cannot rotate.
const TOO_SHORT_INT: &str = "ca.intermediate_lifetime is too short to carry the longest certificate lifetime and its renewal window: replacing it would not help (lengthen it, or shorten the certificates)";
const TOO_SHORT_ROOT: &str = "ca.root_lifetime is too short to carry an intermediate lifetime, the longest certificate lifetime and ca.root_overlap: replacing it would not help (lengthen it)";

/// One thing the CA must do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaStep {
    /// Make a new root and its cross certificate, and publish them in the trust targets.
    PublishRoot,
    /// Issue from a new intermediate under the published root; the current root retires.
    SwitchRoot,
    /// Issue from a new intermediate under the current root; the current one retires.
    RotateIntermediate,
    /// The last leaf of this retired intermediate has expired: forget it.
    DropIntermediate(u32),
    /// No kept intermediate depends on this earlier root any more: take it out of trust.
    DropRoot(u32),
}

impl CaStep {
    /// Whether the step signs with the current root's key (or the published root's).
    pub fn needs_root_key(self) -> bool {
        matches!(
            self,
            CaStep::PublishRoot | CaStep::SwitchRoot | CaStep::RotateIntermediate
        )
    }
}

/// When a CA certificate valid over `span` must be replaced: early enough that it can
/// still `carry` what it signs, and at the latest when `rotate_before` of its lifetime
/// is left.
pub fn rotate_at(span: Span, carry: Duration, rotate_before: RenewBefore) -> OffsetDateTime {
    let life = (span.not_after - span.not_before).max(time::Duration::ZERO);
    let share = rotate_before.of(Duration::from_secs(life.whole_seconds() as u64));
    let window = share
        .max(carry)
        .min(Duration::from_secs(life.whole_seconds() as u64));
    span.not_after - secs(window)
}

/// When the root is published and when issuance switches to it, for a root that has
/// no successor yet.
pub fn root_schedule(root: Span, t: &Timing) -> (OffsetDateTime, OffsetDateTime) {
    let switch = rotate_at(root, t.root_carry, t.rotate_before);
    let publish = (switch - secs(t.root_overlap)).max(root.not_before);
    (publish, switch)
}

/// When the intermediate is replaced under the current root, if it can be: an
/// intermediate that already ends with its root waits for the root's successor.
pub fn intermediate_rotation(s: &CaState, t: &Timing) -> Option<OffsetDateTime> {
    let ends_with_root = s.intermediate.not_after >= s.root.not_after - time::Duration::minutes(1);
    (!ends_with_root).then(|| rotate_at(s.intermediate, t.leaf_carry, t.rotate_before))
}

/// What is due at `now`, and when the next step after those falls due (always after
/// `now`: a step that is due but cannot help, because the lifetimes do not fit, is an
/// alarm of [`health`], never a time to wake up for).
pub fn steps(
    s: &CaState,
    t: &Timing,
    now: OffsetDateTime,
) -> (Vec<CaStep>, Option<OffsetDateTime>) {
    let mut due = Vec::new();
    let mut next: Option<OffsetDateTime> = None;
    let mut later =
        |at: OffsetDateTime| next = Some(next.map_or(at, |n: OffsetDateTime| n.min(at)));
    let switching = match s.next_root {
        None => {
            let (publish, _) = root_schedule(s.root, t);
            if now < publish {
                later(publish);
            } else if t.fresh_root_fits(now) {
                due.push(CaStep::PublishRoot);
            }
            false
        }
        Some(published) => {
            let switch = published + secs(t.root_overlap);
            if now >= switch {
                due.push(CaStep::SwitchRoot);
                true
            } else {
                later(switch);
                false
            }
        }
    };
    if !switching {
        if let Some(at) = intermediate_rotation(s, t) {
            if now < at {
                later(at);
            } else if t.fresh_intermediate_fits(now, s.root.not_after) {
                due.push(CaStep::RotateIntermediate);
            }
        }
    }
    let mut kept_roots = Vec::new();
    for r in &s.retired {
        if now >= r.last_leaf {
            due.push(CaStep::DropIntermediate(r.generation));
        } else {
            later(r.last_leaf);
            kept_roots.push(r.root);
        }
    }
    for &g in &s.old_roots {
        if !kept_roots.contains(&g) {
            due.push(CaStep::DropRoot(g));
        }
    }
    debug_assert!(next.is_none_or(|n| n > now));
    (due, next)
}

/// Where a CA certificate stands, for `check`, `status`, metrics and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaHealth {
    /// Nothing to do before `rotate_at`.
    Fine {
        rotate_at: OffsetDateTime,
    },
    /// Its replacement is due since `since` and cannot happen here (`why`).
    Blocked {
        since: OffsetDateTime,
        not_after: OffsetDateTime,
        why: &'static str,
    },
    /// Its replacement is due and certkeeper does it in its next pass.
    Due {
        since: OffsetDateTime,
    },
    Expired {
        not_after: OffsetDateTime,
    },
}

/// The health of the intermediate and of the root, given whether the keys needed to
/// replace them are on this host (`root_key`: the current root's; `next_root_key`: the
/// published root's).
pub fn health(
    s: &CaState,
    t: &Timing,
    root_key: bool,
    next_root_key: bool,
    now: OffsetDateTime,
) -> (CaHealth, CaHealth) {
    const OFFLINE: &str = "the root key is not on this host";
    let (publish, _) = root_schedule(s.root, t);
    let root = if now >= s.root.not_after {
        CaHealth::Expired {
            not_after: s.root.not_after,
        }
    } else {
        match s.next_root {
            None if now >= publish && !t.fresh_root_fits(now) => CaHealth::Blocked {
                since: publish,
                not_after: s.root.not_after,
                why: TOO_SHORT_ROOT,
            },
            None if now >= publish && !root_key => CaHealth::Blocked {
                since: publish,
                not_after: s.root.not_after,
                why: OFFLINE,
            },
            None if now >= publish => CaHealth::Due { since: publish },
            None => CaHealth::Fine { rotate_at: publish },
            Some(p) => {
                let switch = p + secs(t.root_overlap);
                if now < switch {
                    CaHealth::Fine { rotate_at: switch }
                } else if next_root_key {
                    CaHealth::Due { since: switch }
                } else {
                    CaHealth::Blocked {
                        since: switch,
                        not_after: s.root.not_after,
                        why: "the new root's key is not on this host",
                    }
                }
            }
        }
    };
    let int = if now >= s.intermediate.not_after {
        CaHealth::Expired {
            not_after: s.intermediate.not_after,
        }
    } else {
        match intermediate_rotation(s, t) {
            Some(at) if now >= at && !t.fresh_intermediate_fits(now, s.root.not_after) => {
                CaHealth::Blocked {
                    since: at,
                    not_after: s.intermediate.not_after,
                    why: TOO_SHORT_INT,
                }
            }
            Some(at) if now >= at && !root_key => CaHealth::Blocked {
                since: at,
                not_after: s.intermediate.not_after,
                why: OFFLINE,
            },
            Some(at) if now >= at => CaHealth::Due { since: at },
            Some(at) => CaHealth::Fine { rotate_at: at },
            // It ends with its root: it is replaced with the root.
            None => match root {
                CaHealth::Fine { rotate_at } => CaHealth::Fine { rotate_at },
                CaHealth::Due { since } => CaHealth::Due { since },
                CaHealth::Blocked { since, why, .. } => CaHealth::Blocked {
                    since,
                    not_after: s.intermediate.not_after,
                    why,
                },
                CaHealth::Expired { .. } => CaHealth::Expired {
                    not_after: s.intermediate.not_after,
                },
            },
        }
    };
    (int, root)
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

/// The schedule's durations for a configuration.
pub fn timing(config: &crate::config::Config) -> Timing {
    let (leaf_carry, root_carry) = carries(config);
    Timing {
        leaf_carry,
        root_carry,
        root_overlap: config.ca.root_overlap,
        rotate_before: config.ca.rotate_before,
        root_lifetime: config.ca.root_lifetime,
        intermediate_lifetime: config.ca.intermediate_lifetime,
    }
}

/// The longest lifetime of a leaf the internal CA issues for this configuration.
pub fn longest_leaf(config: &crate::config::Config) -> Duration {
    config
        .certificates
        .iter()
        .filter(|c| c.issuer == crate::model::IssuerRef::Internal)
        .map(|c| c.lifetime)
        .max()
        .unwrap_or(Duration::ZERO)
}

/// The default overlap of a root rotation: 90 days, or a fortieth of a shorter root's
/// lifetime.
pub fn default_root_overlap(root_lifetime: Duration) -> Duration {
    (root_lifetime / 40).min(Duration::from_secs(90 * 86_400))
}

/// A sentence for `check`, `status`, the log and `STATUS=` about a CA certificate that
/// needs attention (None when it is fine or replaces itself).
pub fn alarm(which: &str, h: CaHealth) -> Option<String> {
    match h {
        CaHealth::Fine { .. } | CaHealth::Due { .. } => None,
        CaHealth::Blocked { since, not_after, why } if why == TOO_SHORT_INT || why == TOO_SHORT_ROOT => Some(format!(
            "the CA {which} certificate expires {} and has been due for replacement since {}, but {why}; until then certificates it signs are cut short to end with it",
            crate::policy::rfc3339(not_after),
            crate::policy::rfc3339(since),
        )),
        CaHealth::Blocked { since, not_after, why } => Some(format!(
            "the CA {which} certificate expires {} and has been due for replacement since {}, but {why}: run `certkeeper ca rotate{} --root-key FILE` where the key is reachable; until then certificates it signs are cut short to end with it",
            crate::policy::rfc3339(not_after),
            crate::policy::rfc3339(since),
            if which == "root" { "-root" } else { "" },
        )),
        CaHealth::Expired { not_after } => Some(format!(
            "the CA {which} certificate expired {}: nothing can be issued from it; run `certkeeper ca rotate --root-key FILE`, or create a new CA",
            crate::policy::rfc3339(not_after)
        )),
    }
}

fn secs(d: Duration) -> time::Duration {
    time::Duration::seconds(d.as_secs().min(i64::MAX as u64) as i64)
}

#[cfg(test)]
mod tests;
