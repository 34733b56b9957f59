//! The renewal decision: given what a certificate should be, what is on disk and the
//! time, is it fine (and until when) or must it be reissued (and why)? Pure: `now` is
//! a parameter and the jitter is a hash, so the answer is the same on every run.

use crate::config::CertSpec;
use crate::duration::format_duration;
use crate::model::{KeyType, San, Usage};
use crate::x509::CertInfo;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;
use time::OffsetDateTime;

pub mod ca;
pub mod retry;
pub mod watch;

/// What was found on disk for a managed certificate.
#[derive(Debug, Clone)]
pub enum Seen {
    /// A file the layout needs does not exist.
    Missing(PathBuf),
    /// A file is unreadable, not PEM, out of order or inconsistent with the others.
    Damaged {
        path: PathBuf,
        reason: String,
    },
    /// The key file's key is not the certificate's.
    KeyMismatch(PathBuf),
    /// The key file's mode or owner let someone read it whom the configuration does not.
    Exposed {
        path: PathBuf,
        why: String,
    },
    Present(Box<Present>),
}

#[derive(Debug, Clone)]
pub struct Present {
    pub leaf: CertInfo,
    pub chain: Vec<CertInfo>,
    /// The leaf and chain come from the certificate's issuer as it is now.
    pub from_issuer: bool,
    /// When the CA certificate that signed the leaf ends (the chain's first), if known.
    pub issuer_not_after: Option<OffsetDateTime>,
    /// Signed by what issues now, not by an earlier generation of the CA kept for the
    /// leaves it signed.
    pub issuer_current: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    Fine { renew_at: OffsetDateTime },
    Reissue(Reason),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    Missing(PathBuf),
    Damaged {
        path: PathBuf,
        reason: String,
    },
    KeyMismatch(PathBuf),
    /// The key may have been read by someone else (see `Seen::Exposed`).
    KeyExposed {
        path: PathBuf,
        why: String,
    },
    Expired(OffsetDateTime),
    NotYetValid(OffsetDateTime),
    Due(OffsetDateTime),
    NamesChanged {
        have: Vec<String>,
        want: Vec<String>,
    },
    CommonNameChanged {
        have: Option<String>,
        want: String,
    },
    KeyTypeChanged {
        have: Option<KeyType>,
        want: KeyType,
    },
    UsageChanged {
        have: Option<Usage>,
        want: Usage,
    },
    IssuerChanged,
    /// The certificate in place was revoked (`certkeeper ca revoke`).
    Revoked(String),
    /// The ACME CA's renewal window (RFC 9773) has come: (start, end).
    Ari(OffsetDateTime, OffsetDateTime),
    /// The certificate in place came from a `fallback` issuer: back to the configured one.
    OnFallback(String),
    /// The files hold an earlier pair of certkeeper's than the one it last installed:
    /// something put an old copy back (a restored backup, config management).
    Reverted {
        serial: String,
        installed: String,
    },
    Forced,
}

impl Reason {
    /// One word for the ledger and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Missing(_) => "missing",
            Reason::Damaged { .. } => "damaged",
            Reason::KeyMismatch(_) => "key-mismatch",
            Reason::KeyExposed { .. } => "key-exposed",
            Reason::Expired(_) => "expired",
            Reason::NotYetValid(_) => "not-yet-valid",
            Reason::Due(_) => "due",
            Reason::NamesChanged { .. } | Reason::CommonNameChanged { .. } => "names-changed",
            Reason::KeyTypeChanged { .. } => "key-changed",
            Reason::UsageChanged { .. } => "usage-changed",
            Reason::IssuerChanged => "issuer-changed",
            Reason::Revoked(_) => "revoked",
            Reason::Reverted { .. } => "reverted",
            Reason::OnFallback(_) => "fallback",
            Reason::Ari(..) => "ari",
            Reason::Forced => "forced",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Missing(p) => write!(f, "{} is missing", p.display()),
            Reason::Damaged { path, reason } => {
                write!(f, "{} is damaged: {reason}", path.display())
            }
            Reason::KeyMismatch(p) => write!(f, "{} does not match the certificate", p.display()),
            Reason::KeyExposed { path, why } => write!(
                f,
                "{} {why}: the key may have been read, so a new key replaces it",
                path.display()
            ),
            Reason::Expired(t) => write!(f, "expired at {}", rfc3339(*t)),
            Reason::NotYetValid(t) => write!(f, "not valid before {}", rfc3339(*t)),
            Reason::Due(t) => write!(f, "due since {}", rfc3339(*t)),
            Reason::NamesChanged { have, want } => {
                write!(
                    f,
                    "names changed: has [{}], config wants [{}]",
                    have.join(", "),
                    want.join(", ")
                )
            }
            Reason::CommonNameChanged { have, want } => {
                write!(
                    f,
                    "common name changed: has {}, config wants {want}",
                    have.as_deref().unwrap_or("none")
                )
            }
            Reason::KeyTypeChanged { have, want } => write!(
                f,
                "key type changed: has {}, config wants {want}",
                have.map(|k| k.as_str()).unwrap_or("unknown")
            ),
            Reason::UsageChanged { have, want } => write!(
                f,
                "usage changed: has {}, config wants {want}",
                have.map(|u| u.as_str()).unwrap_or("none")
            ),
            Reason::IssuerChanged => f.write_str("not issued by the current CA"),
            Reason::Revoked(serial) => write!(f, "serial {serial} was revoked"),
            Reason::Ari(start, end) => write!(
                f,
                "inside the renewal window the ACME CA suggests ({} to {})",
                rfc3339(*start),
                rfc3339(*end)
            ),
            Reason::OnFallback(issuer) => write!(
                f,
                "issued by the fallback issuer `{issuer}`: going back to the configured issuer"
            ),
            Reason::Reverted { serial, installed } => write!(
                f,
                "the files hold serial {serial}, an earlier pair than serial {installed} that certkeeper installed last: something put an old copy back"
            ),
            Reason::Forced => f.write_str("renewal forced"),
        }
    }
}

pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// Decides whether `spec`'s certificate must be reissued at `now`.
pub fn decide(spec: &CertSpec, seen: &Seen, now: OffsetDateTime) -> Verdict {
    let p = match seen {
        Seen::Missing(path) => return Verdict::Reissue(Reason::Missing(path.clone())),
        Seen::Damaged { path, reason } => {
            return Verdict::Reissue(Reason::Damaged {
                path: path.clone(),
                reason: reason.clone(),
            })
        }
        Seen::KeyMismatch(path) => return Verdict::Reissue(Reason::KeyMismatch(path.clone())),
        Seen::Exposed { path, why } => {
            return Verdict::Reissue(Reason::KeyExposed {
                path: path.clone(),
                why: why.clone(),
            })
        }
        Seen::Present(p) => p,
    };
    let leaf = &p.leaf;
    if now >= leaf.not_after {
        return Verdict::Reissue(Reason::Expired(leaf.not_after));
    }
    if now < leaf.not_before {
        return Verdict::Reissue(Reason::NotYetValid(leaf.not_before));
    }
    let mut have: Vec<String> = leaf.sans.iter().map(San::to_string).collect();
    let mut want: Vec<String> = spec.sans.iter().map(San::to_string).collect();
    have.sort();
    want.sort();
    if have != want || !leaf.other_names.is_empty() {
        return Verdict::Reissue(Reason::NamesChanged { have, want });
    }
    if leaf.common_name.as_deref() != Some(spec.common_name.as_str()) {
        return Verdict::Reissue(Reason::CommonNameChanged {
            have: leaf.common_name.clone(),
            want: spec.common_name.clone(),
        });
    }
    if leaf.key_type != Some(spec.key) {
        return Verdict::Reissue(Reason::KeyTypeChanged {
            have: leaf.key_type,
            want: spec.key,
        });
    }
    let usage_ok = if spec.issuer == crate::model::IssuerRef::Internal {
        leaf.usage == Some(spec.usage)
    } else {
        // An ACME CA picks the extended key usages itself (RFC 8555 cannot ask for
        // them): a leaf that allows at least what the config wants is fine.
        leaf.usage.is_some_and(|u| {
            (u.server() || !spec.usage.server()) && (u.client() || !spec.usage.client())
        })
    };
    if !usage_ok {
        return Verdict::Reissue(Reason::UsageChanged {
            have: leaf.usage,
            want: spec.usage,
        });
    }
    if !p.from_issuer {
        return Verdict::Reissue(Reason::IssuerChanged);
    }
    let renew_at = renew_at(spec, leaf);
    if now >= renew_at {
        // A leaf that ends with the CA that signed it (it was cut short to fit) gains
        // nothing from a renewal while that CA still issues: renewing would make the
        // same short certificate again, and again. It stays until it expires; the CA's
        // alarm (`check`, `status`, the log) says what to do. Once the CA has rotated,
        // the renewal gets a full lifetime from the new intermediate.
        let ends_with_its_ca = p
            .issuer_not_after
            .is_some_and(|end| leaf.not_after >= end - time::Duration::minutes(1));
        if ends_with_its_ca && p.issuer_current {
            return Verdict::Fine {
                renew_at: leaf.not_after,
            };
        }
        Verdict::Reissue(Reason::Due(renew_at))
    } else {
        Verdict::Fine { renew_at }
    }
}

/// `decide`, and a certificate whose serial is in `revoked` is reissued at once: a
/// revoked certificate in place would be refused by every peer that checks the CRL.
pub fn decide_with_revocations(
    spec: &CertSpec,
    seen: &Seen,
    now: OffsetDateTime,
    revoked: &std::collections::HashSet<String>,
) -> Verdict {
    match seen {
        Seen::Present(p) if revoked.contains(&p.leaf.serial) => {
            Verdict::Reissue(Reason::Revoked(p.leaf.serial.clone()))
        }
        _ => decide(spec, seen, now),
    }
}

/// When a certificate becomes due: `renew_before` ahead of notAfter, minus a jitter.
///
/// The window is measured against the shorter of the configured lifetime and the
/// certificate's own validity, so a backdated notBefore (clock-skew margin, or a CA
/// that backdates by an hour) cannot make a fresh certificate due at once; and a
/// window that would cover the whole validity is cut to half of it, so a CA that
/// issues shorter certificates than asked does not cause a renewal loop.
pub fn renew_at(spec: &CertSpec, leaf: &CertInfo) -> OffsetDateTime {
    renew_at_of(spec, leaf.not_before, leaf.not_after, &leaf.serial)
}

/// [`renew_at`] of a leaf known by its dates and serial.
pub fn renew_at_of(
    spec: &CertSpec,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    serial: &str,
) -> OffsetDateTime {
    let validity = secs(not_after - not_before);
    let base = validity.min(spec.lifetime);
    let mut window = spec.renew_before.of(base);
    if window >= base {
        window = base / 2;
    }
    let jitter = jitter(&spec.name, serial, window);
    not_after - time::Duration::seconds((window + jitter).as_secs() as i64)
}

/// When to renew inside a renewal window the CA suggests (RFC 9773: a point chosen at
/// random in it; here deterministic per name and serial, so every look agrees).
pub fn ari_point(
    name: &str,
    serial: &str,
    start: OffsetDateTime,
    end: OffsetDateTime,
) -> OffsetDateTime {
    if end <= start {
        return start;
    }
    let span = secs(end - start);
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes().chain([0]).chain(serial.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x100000001b3);
    }
    start + time::Duration::seconds((h % span.as_secs().max(1)) as i64)
}

/// Whether a certificate whose issuer failed is issued by its next `fallback` issuer:
/// nothing is in place, or only `fallback_before` of its life is left at `now`.
pub fn fallback_due(spec: &CertSpec, current: Option<&CertInfo>, now: OffsetDateTime) -> bool {
    match current {
        None => true,
        Some(leaf) => {
            let life = secs(leaf.not_after - leaf.not_before);
            let before = spec.fallback_before.of(life).min(life);
            now >= leaf.not_after - time::Duration::seconds(before.as_secs() as i64)
        }
    }
}

/// Spreads renewals of many certificates: up to a tenth of the window, at most an hour,
/// always earlier (never closer to expiry). Deterministic per name and serial.
pub fn jitter(name: &str, serial: &str, window: Duration) -> Duration {
    let max = (window / 10).min(Duration::from_secs(3600));
    let mut h: u64 = 0xcbf29ce484222325;
    for b in name.bytes().chain([b'/']).chain(serial.bytes()) {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    let frac = (h >> 11) as f64 / (1u64 << 53) as f64;
    Duration::from_secs_f64(max.as_secs_f64() * frac).min(max)
}

fn secs(d: time::Duration) -> Duration {
    Duration::from_secs(d.whole_seconds().max(0) as u64)
}

/// A human phrase for how far `t` is from `now`: `in 29d 23h`, `3m ago`.
pub fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    if t >= now {
        format!("in {}", format_duration(secs(t - now)))
    } else {
        format!("{} ago", format_duration(secs(now - t)))
    }
}

#[cfg(test)]
mod tests;
