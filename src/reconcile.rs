//! One reconcile pass: observe → decide → issue → install → record, for the selected
//! certificates. Used by `certkeeper renew` now and by the daemon later. One
//! certificate failing never stops the others; the report says what happened to each.

use crate::ca::{make_csr, InternalCa, IssueRequest, Issuer};
use crate::config::{CertSpec, Config};
use crate::fsutil::write_all;
use crate::keys::PrivateKey;
use crate::layout::{observe, render};
use crate::policy::{decide, Reason, Seen, Verdict};
use crate::state::{LedgerEntry, StateDir};
use crate::x509::check_chain_order;
use std::path::PathBuf;
use time::OffsetDateTime;

#[derive(Debug, Clone)]
pub enum Outcome {
    Unchanged {
        renew_at: OffsetDateTime,
    },
    WouldRenew(Reason),
    Renewed {
        reason: Reason,
        serial: String,
        not_after: OffsetDateTime,
    },
    Failed {
        reason: Option<Reason>,
        error: String,
    },
}

#[derive(Debug, Clone)]
pub struct CertReport {
    pub name: String,
    pub outcome: Outcome,
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("no certificate named `{0}` in the configuration; `certkeeper status` lists them")]
    UnknownName(String),
    #[error("`{0}` is a watch-only certificate; certkeeper does not issue it")]
    WatchOnly(String),
    #[error("{0}")]
    Ca(#[from] crate::ca::CaError),
    #[error("{0}")]
    Fs(#[from] crate::fsutil::FsError),
}

impl RenewError {
    /// Naming something that is not there is a usage error (exit 2); the rest are runtime.
    pub fn is_usage(&self) -> bool {
        matches!(self, RenewError::UnknownName(_) | RenewError::WatchOnly(_))
    }
}

/// Picks the certificates `names` refers to (all managed ones when empty).
pub fn select<'a>(config: &'a Config, names: &[String]) -> Result<Vec<&'a CertSpec>, RenewError> {
    if names.is_empty() {
        return Ok(config.certificates.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            config
                .certificates
                .iter()
                .find(|c| &c.name == n)
                .ok_or_else(|| {
                    if config.watched.iter().any(|w| &w.name == n) {
                        RenewError::WatchOnly(n.clone())
                    } else {
                        RenewError::UnknownName(n.clone())
                    }
                })
        })
        .collect()
}

/// Loads the internal CA for reading, without creating it.
pub fn load_ca(config: &Config) -> Result<Option<InternalCa>, crate::ca::CaError> {
    match InternalCa::load(&StateDir::new(&config.state_dir).ca_dir()) {
        Ok(ca) => Ok(Some(ca)),
        Err(crate::ca::CaError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Loads the internal CA, creating it (and recording that) on first use.
/// The caller holds the state lock.
pub fn ensure_ca(
    config: &Config,
    state: &StateDir,
    now: OffsetDateTime,
) -> Result<InternalCa, crate::ca::CaError> {
    state.create()?;
    let (ca, created) = InternalCa::load_or_init(&config.ca, &state.ca_dir(), now)?;
    if created {
        tracing::info!(dir = %ca.dir.display(), root = %ca.root.subject, "created the internal CA");
        let mut e = LedgerEntry::new(now, "ca-init");
        e.serial = Some(ca.intermediate.serial.clone());
        e.not_after = Some(ca.intermediate.not_after);
        state.record(&e)?;
    }
    Ok(ca)
}

pub struct RenewOptions {
    pub force: bool,
    pub dry_run: bool,
}

/// Renews what needs it among `names` (all when empty).
pub fn renew(
    config: &Config,
    names: &[String],
    opts: &RenewOptions,
    now: OffsetDateTime,
) -> Result<Vec<CertReport>, RenewError> {
    let selected = select(config, names)?;
    let state = StateDir::new(&config.state_dir);
    let (_lock, ca) = if opts.dry_run {
        (None, load_ca(config)?)
    } else {
        let lock = state.lock()?;
        let ca = ensure_ca(config, &state, now)?;
        (Some(lock), Some(ca))
    };
    let mut reports = Vec::new();
    for spec in selected {
        let issuer: Option<&dyn Issuer> = match spec.issuer.as_str() {
            "internal" => ca.as_ref().map(|c| c as &dyn Issuer),
            _ => None,
        };
        let outcome = renew_one(&state, spec, issuer, opts, now);
        reports.push(CertReport {
            name: spec.name.clone(),
            outcome,
        });
    }
    Ok(reports)
}

fn renew_one(
    state: &StateDir,
    spec: &CertSpec,
    issuer: Option<&dyn Issuer>,
    opts: &RenewOptions,
    now: OffsetDateTime,
) -> Outcome {
    let seen = observe(spec, issuer);
    let reason = match decide(spec, &seen, now) {
        Verdict::Fine { renew_at } if !opts.force => return Outcome::Unchanged { renew_at },
        Verdict::Fine { .. } => Reason::Forced,
        Verdict::Reissue(r) => r,
    };
    if opts.dry_run {
        return Outcome::WouldRenew(reason);
    }
    let Some(issuer) = issuer else {
        let error = format!(
            "issuer `{}` is not available in this version of certkeeper",
            spec.issuer
        );
        record_failure(state, spec, &reason, &error, now);
        return Outcome::Failed {
            reason: Some(reason),
            error,
        };
    };
    tracing::info!(certificate = %spec.name, reason = %reason, "renewing");
    match issue_and_install(state, spec, issuer, &reason, &seen, now) {
        Ok((serial, not_after)) => Outcome::Renewed {
            reason,
            serial,
            not_after,
        },
        Err(error) => {
            tracing::error!(certificate = %spec.name, %error, "renewal failed; the installed files were left as they were");
            record_failure(state, spec, &reason, &error, now);
            Outcome::Failed {
                reason: Some(reason),
                error,
            }
        }
    }
}

fn record_failure(
    state: &StateDir,
    spec: &CertSpec,
    reason: &Reason,
    error: &str,
    now: OffsetDateTime,
) {
    let mut e = LedgerEntry::new(now, "failed");
    e.name = Some(spec.name.clone());
    e.issuer = Some(spec.issuer.clone());
    e.reason = Some(format!("{}: {error}", reason.code()));
    if let Err(err) = state.record(&e) {
        tracing::error!(certificate = %spec.name, error = %err, "cannot record the failure in the ledger");
    }
}

pub fn request_for(spec: &CertSpec) -> IssueRequest {
    IssueRequest {
        name: spec.name.clone(),
        common_name: spec.common_name.clone(),
        sans: spec.sans.clone(),
        usage: spec.usage,
        lifetime: spec.lifetime,
    }
}

/// Issues a fresh pair for `spec` and installs it. Nothing is written to the target
/// paths unless the new pair is complete and consistent.
fn issue_and_install(
    state: &StateDir,
    spec: &CertSpec,
    issuer: &dyn Issuer,
    reason: &Reason,
    _seen: &Seen,
    now: OffsetDateTime,
) -> Result<(String, OffsetDateTime), String> {
    let key = PrivateKey::generate(spec.key).map_err(|e| e.to_string())?;
    let req = request_for(spec);
    let csr = make_csr(&key, &req).map_err(|e| e.to_string())?;
    let issued = issuer
        .issue(&csr, &req, now)
        .map_err(|e| format!("issuer `{}`: {e}", issuer.id()))?;
    if !issued.leaf.matches_key(&key) {
        return Err(format!(
            "issuer `{}` returned a certificate for another key",
            issuer.id()
        ));
    }
    let full: Vec<_> = std::iter::once(issued.leaf.clone())
        .chain(issued.chain.iter().cloned())
        .collect();
    check_chain_order(&full)
        .map_err(|e| format!("issuer `{}` returned a bad chain: {e}", issuer.id()))?;
    let serial = issued.leaf.serial.clone();

    let mut entry = LedgerEntry::new(now, "issued");
    entry.name = Some(spec.name.clone());
    entry.serial = Some(serial.clone());
    entry.issuer = Some(issuer.id().to_string());
    entry.not_after = Some(issued.leaf.not_after);
    entry.sans = spec.sans.iter().map(|s| s.to_string()).collect();
    entry.reason = Some(reason.code().to_string());
    state.record(&entry).map_err(|e| e.to_string())?;

    let chain_pem: String = issued.chain.iter().map(|c| c.to_pem()).collect();
    state
        .archive(
            &spec.name,
            &serial,
            &issued.leaf.to_pem(),
            &chain_pem,
            key.pem(),
        )
        .map_err(|e| format!("cannot archive the new pair: {e}"))?;

    let files = render(spec, &key, &issued.leaf, &issued.chain);
    write_all(&files).map_err(|e| format!("install failed, previous files kept: {e}"))?;
    let installed: Vec<PathBuf> = files.iter().map(|f| f.path.clone()).collect();
    tracing::info!(certificate = %spec.name, serial = %serial, not_after = %crate::policy::rfc3339(issued.leaf.not_after), "installed");

    let mut entry = LedgerEntry::new(now, "installed");
    entry.name = Some(spec.name.clone());
    entry.serial = Some(serial.clone());
    entry.issuer = Some(issuer.id().to_string());
    entry.not_after = Some(issued.leaf.not_after);
    entry.files = installed.iter().map(|p| p.display().to_string()).collect();
    state.record(&entry).map_err(|e| e.to_string())?;
    Ok((serial, issued.leaf.not_after))
}
