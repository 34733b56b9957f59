//! One reconcile pass: observe → decide (`plan`) → issue and install (`issue`) →
//! config-test → reload → verify, rolling back on failure (`apply`) → record (`report`).
//! Used by `certkeeper renew` and by the daemon. Reloads are coalesced: however many
//! certificates a pass installs, each server gets one config test and one reload. One
//! certificate failing never stops the others; each report carries a typed outcome
//! (`failure`).

use crate::cache::{Learned, ObserveCache};
use crate::config::{CertSpec, Config};
use crate::install::{Installed, RolledBack};
use crate::issuer::{InternalCa, IssueRequest, Issued, Issuer, Registry};
use crate::keys::PrivateKey;
use crate::layout::render;
use crate::observe::observe;
use crate::policy::{renew_at_of, rfc3339, Reason, Seen};
use crate::state::{LedgerEntry, StateDir};
use crate::x509::{check_chain_order, CertInfo};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use time::OffsetDateTime;

mod apply;
pub mod clients;
pub mod failure;
mod issue;
pub mod plan;
mod report;

use apply::apply_to_servers;
pub use issue::request_for;
use report::failed;

pub use failure::{Failure, Rollback, ServerOutcome, ServerStep};
use plan::Action;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Outcome {
    Unchanged {
        renew_at: OffsetDateTime,
        not_after: OffsetDateTime,
        /// The certificate in place (for hooks: `expiring` fires once per serial).
        serial: String,
        not_before: OffsetDateTime,
        /// When to look again before `renew_at` (the ACME CA's renewal information is
        /// due to be asked again then).
        look_at: Option<OffsetDateTime>,
    },
    Renewed {
        reason: Reason,
        serial: String,
        not_after: OffsetDateTime,
        renew_at: OffsetDateTime,
        /// What the user should know although it worked (a reload skipped because the
        /// server is not running).
        notes: Vec<String>,
    },
    Failed {
        reason: Option<Reason>,
        error: Failure,
        /// The certificate still in place, if any.
        not_after: Option<OffsetDateTime>,
        serial: Option<String>,
        not_before: Option<OffsetDateTime>,
    },
}

#[derive(Debug, Clone)]
pub struct CertReport {
    pub name: String,
    pub outcome: Outcome,
}

/// What a pass did to the servers and trust targets, for the daemon and `ca revoke`.
#[derive(Debug, Clone, Default)]
pub struct ServerActivity {
    /// When the CRL must be re-signed next (when there are trust targets).
    pub trust_refresh_at: Option<OffsetDateTime>,
    /// The CA rotated at the start of this pass: the trust targets must follow.
    pub ca_changed: bool,
    /// Every reload with whether it worked, in order.
    pub reload_results: Vec<(String, bool)>,
    /// What this pass did with each server it looked at, with the error where a step
    /// failed (the last outcome when a server was reloaded again after a rollback).
    pub servers: BTreeMap<String, ServerOutcome>,
    /// Servers that still owe a reload for changed trust material (retried later).
    pub trust_pending: Vec<String>,
    /// Servers that were not reloaded because they are not running: they load the
    /// installed files when they start.
    pub not_running: BTreeMap<String, crate::server::NotRunning>,
    /// Servers found running when the pass looked.
    pub running: BTreeSet<String>,
    /// What was served where it was checked, after any reload that repaired a drift.
    pub served: Vec<ServedLook>,
    /// What verification found at each target it judged (recorded by the pass).
    pub findings: Vec<crate::drift::Change>,
    /// Drifts a reload of this pass repaired: (certificate, what was served before).
    pub repaired: Vec<(String, String)>,
}

/// What one look at a verify target found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedLook {
    pub name: String,
    /// The target's label (`verify.connect`, with the SNI name when two share it).
    pub target: String,
    /// The certificate on disk is the one served.
    pub matches: bool,
    /// And a strict client accepts it (chain, trust, name, dates, key).
    pub verified: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error("no certificate named `{0}` in the configuration; `certkeeper status` lists them")]
    UnknownName(String),
    #[error("`{0}` is a watch-only certificate; certkeeper does not issue it")]
    WatchOnly(String),
    #[error("{0}")]
    Ca(#[from] crate::issuer::CaError),
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
/// Whether the pair in place is one the internal CA issued as the fallback of the
/// certificate's ACME issuer: a pass takes it back to that issuer, `status` says so.
/// (An ACME issuer accepts any chain as its own; the internal CA knows its own for sure.)
pub fn on_internal_fallback(spec: &CertSpec, seen: &Seen, ca: Option<&InternalCa>) -> bool {
    let internal = crate::model::IssuerRef::Internal;
    match (seen, ca) {
        (Seen::Present(p), Some(ca)) => {
            spec.issuer != internal
                && spec.fallback.contains(&internal)
                && ca.issued(&p.leaf, &p.chain)
        }
        _ => false,
    }
}

pub fn load_ca(config: &Config) -> Result<Option<InternalCa>, crate::issuer::CaError> {
    match InternalCa::load(&config.ca, &StateDir::new(&config.state_dir).ca_dir()) {
        Ok(ca) => Ok(Some(ca)),
        Err(crate::issuer::CaError::Missing { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Loads the internal CA, creating it (and recording that) on first use, and does what
/// its own schedule says is due (rotations, see [`InternalCa::maintain`]), each change
/// in the log and the ledger. The caller holds the state lock.
pub fn ensure_ca(
    config: &Config,
    state: &StateDir,
    now: OffsetDateTime,
) -> Result<InternalCa, crate::issuer::CaError> {
    maintain_ca(config, state, now, crate::issuer::Force::Nothing, None)
}

/// [`ensure_ca`] when the configuration uses the internal CA (a certificate it issues,
/// or a trust target, which holds its material) or one exists already; None for a
/// configuration of ACME certificates alone, which creates no CA.
pub fn ensure_ca_if_used(
    config: &Config,
    state: &StateDir,
    now: OffsetDateTime,
) -> Result<Option<InternalCa>, crate::issuer::CaError> {
    let used = !config.trust.is_empty()
        || config.certificates.iter().any(|c| {
            c.issuer == crate::model::IssuerRef::Internal
                || c.fallback.contains(&crate::model::IssuerRef::Internal)
        });
    if !used && !state.ca_dir().exists() {
        return Ok(None);
    }
    ensure_ca(config, state, now).map(Some)
}

/// [`ensure_ca`], also doing `force` (`ca rotate`, `ca rotate-root`) with the root
/// key from `root_key_file` when given.
pub fn maintain_ca(
    config: &Config,
    state: &StateDir,
    now: OffsetDateTime,
    force: crate::issuer::Force,
    root_key_file: Option<&std::path::Path>,
) -> Result<InternalCa, crate::issuer::CaError> {
    // Creating the CA happens once; concurrent passes of the daemon must not race it.
    static CREATE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = CREATE.lock().unwrap_or_else(|p| p.into_inner());
    state.create()?;
    let (ca, created) = InternalCa::load_or_init(&config.ca, &state.ca_dir(), now)?;
    if created {
        tracing::info!(dir = %ca.dir.display(), root = %ca.root.subject, "created the internal CA");
        let mut e = LedgerEntry::new(now, "ca-init");
        e.serial = Some(ca.intermediate.serial.clone());
        e.not_after = Some(ca.intermediate.not_after);
        state.record(&e)?;
    }
    let dir = ca.dir.clone();
    let ca = match ca.maintain(
        &config.ca,
        &crate::policy::ca::timing(config),
        crate::policy::ca::longest_leaf(config),
        now,
        force,
        root_key_file,
    ) {
        Ok(ca) => ca,
        // A rotation that fails (a full disk, a key that does not decrypt) must not
        // stop issuance from the intermediate that still works: it is tried again at
        // the next pass, and the CA's alarm says when time runs short.
        Err(e) if force == crate::issuer::Force::Nothing => {
            tracing::error!(error = %e, "the CA could not replace its own certificate; certificates are issued from the current intermediate meanwhile, and the next pass tries again");
            InternalCa::load(&config.ca, &dir)?
        }
        Err(e) => return Err(e),
    };
    for change in &ca.changes {
        let mut e = LedgerEntry::new(now, change.event);
        e.serial = Some(change.serial.clone());
        e.not_after = Some(change.not_after);
        e.note = Some(change.message.clone());
        state.record(&e)?;
    }
    Ok(ca)
}

#[derive(Debug, Clone, Default)]
pub struct RenewOptions {
    pub force: bool,
    /// Also reload servers whose `verify` target serves something other than the
    /// (valid) files on disk: the daemon does this at start, to finish an install that
    /// a crash interrupted before its reload.
    pub check_served: bool,
    /// Remove temporary files an interrupted install left next to the targets.
    pub clean_temp_files: bool,
    /// Leave the trust targets alone: the daemon runs passes of certificates that share
    /// no server side by side, and only one of them (the one that owns every trust
    /// target's servers) looks after the trust material.
    pub skip_trust: bool,
}

/// `certkeeper renew`: takes the lock, makes sure the CA exists, runs one pass.
pub fn renew(
    config: &Config,
    names: &[String],
    opts: &RenewOptions,
    now: OffsetDateTime,
) -> Result<Vec<CertReport>, RenewError> {
    let selected = select(config, names)?;
    let state = StateDir::new(&config.state_dir);
    let _lock = state.lock()?;
    let ca = ensure_ca_if_used(config, &state, now)?;
    Ok(run_pass(Pass {
        config,
        state: &state,
        ca: ca.as_ref(),
        selected: &selected,
        opts,
        now,
        cancel: &AtomicBool::new(false),
        cache: None,
    })
    .0)
}

/// What `renew` would do for `names` (all when empty), without the lock and without
/// writing anything: `renew --dry-run` and `check`.
pub fn plan_for(
    config: &Config,
    names: &[String],
    force: bool,
    now: OffsetDateTime,
) -> Result<plan::Plan, RenewError> {
    let selected = select(config, names)?;
    let ca = load_ca(config)?;
    Ok(plan::make(config, ca.as_ref(), &selected, force, now))
}

/// A new pair that has been issued and perhaps installed, on its way through the pass.
/// How many new pairs one group commit puts in place at most: the flushes of a batch are
/// shared, and memory stays bounded (each holds its key and chain until then).
const GROUP_COMMIT: usize = 256;

/// A pair built (or not) for a queued certificate: a failed issuance may fall back to the
/// certificate's `fallback` issuers (one after the other, here); a pair goes to
/// `pending`, a failure to the reports.
fn settle_built<'a>(
    state: &StateDir,
    issuers: &Registry,
    q: issue::Queued<'a, '_>,
    mut result: Result<issue::Built, Failure>,
    now: OffsetDateTime,
    pending: &mut Vec<issue::Pending<'a>>,
    reports: &mut Vec<CertReport>,
) {
    let spec = q.spec;
    let mut signer = q.issuer.id().to_string();
    let mut fell_back: Option<String> = None;
    if let Err(primary @ Failure::Issue { .. }) = &result {
        // A pair that came from a fallback issuer is not replaced by another one
        // while it is fine: the attempt to go back just failed, that is all.
        let on_fallback = matches!(q.reason, Reason::OnFallback(_));
        if !spec.fallback.is_empty()
            && !on_fallback
            && crate::policy::fallback_due(spec, q.in_place.as_ref(), now)
        {
            let primary = primary.to_string();
            for f in &spec.fallback {
                let Some(other) = issuers.get(f) else {
                    tracing::error!(certificate = %spec.name, fallback = %f, "the fallback issuer is not available");
                    continue;
                };
                tracing::warn!(certificate = %spec.name, issuer = %spec.issuer, fallback = %f, error = %primary, "the issuer failed and the certificate is close to its end (or missing): issuing from the fallback issuer");
                match issue::build(spec, other, now, None) {
                    Ok(done) => {
                        signer = other.id().to_string();
                        fell_back = Some(format!(
                            "issued by the fallback issuer `{f}` because `{}` failed: {primary}; the next renewal tries `{}` again",
                            spec.issuer, spec.issuer
                        ));
                        result = Ok(done);
                        break;
                    }
                    Err(e) => {
                        tracing::error!(certificate = %spec.name, fallback = %f, error = %e, "the fallback issuer failed too")
                    }
                }
            }
        }
    }
    match result {
        Ok(built) => pending.push(issue::Pending {
            spec,
            reason: q.reason,
            issuer: signer,
            notes: fell_back.into_iter().collect(),
            in_place: q.in_place,
            built,
        }),
        Err(error) => {
            tracing::error!(certificate = %spec.name, %error, "renewal failed; the installed files were left as they were");
            reports.push(failed(
                state,
                spec,
                q.reason,
                error,
                q.in_place.as_ref(),
                now,
            ));
        }
    }
}

/// Records, archives and installs the pairs in `pending` as one group commit, and makes
/// each a staged install (to reload and verify) or a failure.
fn store_pending<'a>(
    state: &StateDir,
    pending: &mut Vec<issue::Pending<'a>>,
    now: OffsetDateTime,
    staged: &mut Vec<Box<Staged<'a>>>,
    reports: &mut Vec<CertReport>,
) {
    if pending.is_empty() {
        return;
    }
    let batch = std::mem::take(pending);
    for (p, result) in issue::store_shared(state, batch, now) {
        match result {
            Ok(installed) => {
                let issued = p.built.issued;
                // A leaf cut short to end with its CA is never silent.
                let mut notes: Vec<String> = issued
                    .clamped
                    .map(|wanted| {
                        let note = format!(
                            "issued short: valid until {} instead of {}, because the CA that signs it expires then; create a new CA",
                            rfc3339(issued.leaf.not_after),
                            rfc3339(wanted)
                        );
                        tracing::warn!(certificate = %p.spec.name, "{note}");
                        note
                    })
                    .into_iter()
                    .collect();
                for note in p.notes {
                    tracing::warn!(certificate = %p.spec.name, "{note}");
                    notes.push(note);
                }
                staged.push(Box::new(Staged {
                    spec: p.spec,
                    reason: p.reason,
                    signed: Signed {
                        serial: issued.leaf.serial,
                        fingerprint: issued.leaf.fingerprint,
                        not_before: issued.leaf.not_before,
                        not_after: issued.leaf.not_after,
                        chain: issued.chain,
                    },
                    issuer: p.issuer,
                    installed: Some(installed),
                    error: None,
                    notes,
                }))
            }
            Err(error) => {
                tracing::error!(certificate = %p.spec.name, %error, "renewal failed; the installed files were left as they were");
                reports.push(failed(
                    state,
                    p.spec,
                    p.reason,
                    error,
                    p.in_place.as_ref(),
                    now,
                ));
            }
        }
    }
}

/// What a staged install keeps of its new pair until it is settled: enough to check
/// what is served, record and report it. The leaf's DER, names and key, and the PEM,
/// are gone once the pair is stored (with 10,000 in one batch, they were 10 MB).
struct Signed {
    serial: String,
    fingerprint: String,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    chain: std::sync::Arc<[CertInfo]>,
}

struct Staged<'a> {
    spec: &'a CertSpec,
    reason: Reason,
    signed: Signed,
    /// The issuer that signed it (a `fallback` one when the configured issuer failed).
    issuer: String,
    /// The install, until it is rolled back. Dropped with the pass, it is kept for good
    /// (see `Drop`).
    installed: Option<Installed>,
    error: Option<Failure>,
    /// Facts for the ledger and the report although it worked.
    notes: Vec<String>,
}

impl Staged<'_> {
    /// Rolls the install back, and fails with what `failure` makes of what the rollback
    /// did. Only a pair's first failure counts: one already rolled back stays as it is.
    fn roll_back(&mut self, failure: impl FnOnce(Rollback) -> Failure) {
        let name = &self.spec.name;
        let Some(installed) = self.installed.take() else {
            return;
        };
        let done = match installed.roll_back() {
            Ok(RolledBack::Restored) => {
                tracing::warn!(certificate = %name, "rolled back to the previous files");
                Rollback::Restored
            }
            Ok(RolledBack::KeptNew) => {
                tracing::warn!(certificate = %name, "no previous files to roll back to; the new pair stays installed");
                Rollback::KeptNew
            }
            Err(e) => {
                tracing::error!(certificate = %name, error = %e, "could not restore the previous files");
                Rollback::Failed(Arc::new(e))
            }
        };
        if self.error.is_none() {
            self.error = Some(failure(done));
        }
    }
}

impl Drop for Staged<'_> {
    /// A pair that was not rolled back by the end of the pass is kept: the store drops
    /// the pairs older than the previous one.
    fn drop(&mut self) {
        if let Some(installed) = self.installed.take() {
            if let Err(e) = installed.commit() {
                tracing::warn!(certificate = %self.spec.name, error = %e, "cannot remove superseded pairs");
            }
        }
    }
}

/// One pass, as its caller describes it.
pub struct Pass<'a> {
    pub config: &'a Config,
    pub state: &'a StateDir,
    /// The internal CA; None when there is none (its certificates fail, ACME ones go on).
    pub ca: Option<&'a InternalCa>,
    /// The certificates to look at (and renew what needs it).
    pub selected: &'a [&'a CertSpec],
    pub opts: &'a RenewOptions,
    pub now: OffsetDateTime,
    /// Checked between certificates, never in the middle of an install.
    pub cancel: &'a AtomicBool,
    /// Files unchanged since their last full check are not read again (the daemon's).
    pub cache: Option<&'a mut ObserveCache>,
}

/// Runs one pass: observe, decide (`plan::decide`), issue and install, then config
/// tests, reloads, verification and rollback per server, and the ledger. The caller
/// holds the state lock.
pub fn run_pass(pass: Pass) -> (Vec<CertReport>, ServerActivity) {
    let Pass {
        config,
        state,
        ca,
        selected,
        opts,
        now,
        cancel,
        mut cache,
    } = pass;
    // One report per certificate: sized once (grown by doubling, 10,000 reports would
    // hold room for 16,384, 1.2 MB unused).
    let mut reports = Vec::with_capacity(selected.len());
    // Boxed: a batch of thousands grows this list, and doubling a list of large items
    // leaves much of it unused.
    let mut staged: Vec<Box<Staged>> = Vec::new();
    if opts.clean_temp_files {
        // Each directory read once, on all cores.
        let dirs = crate::fsutil::parent_dirs(
            selected
                .iter()
                .flat_map(|c| c.files.paths())
                .map(|(_, p)| p),
        );
        crate::par::map(&dirs, 2, |dir| crate::fsutil::remove_stale_temp_files(dir));
    }
    let mut stale_servers: BTreeSet<String> = BTreeSet::new();
    let clients = clients::Clients::new(config, ca, now);
    // Targets that served something else than the files on disk: after the reload of
    // their servers, looked at once more (drift).
    let mut drifted: Vec<Drifted> = Vec::new();
    let mut looks: Vec<(ServedLook, Option<crate::drift::Finding>)> = Vec::new();
    // Whether each server of these certificates runs, when what is served is checked:
    // a server that does not run serves nothing to compare.
    let liveness: BTreeMap<String, Result<(), crate::server::NotRunning>> = if opts.check_served {
        selected
            .iter()
            .flat_map(|c| c.reload.iter())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .filter_map(|n| {
                let server = config.servers.get(n)?;
                Some((n.clone(), crate::server::running(server)))
            })
            .collect()
    } else {
        BTreeMap::new()
    };
    // The ACME CAs' renewal information, read when an ACME certificate is looked at.
    let mut ari: Option<BTreeMap<String, crate::ari::Answer>> = None;
    let mut ari_changed = false;
    // Certificates with a new pair in the archive (installed or not), pruned at the end.
    let mut attempted: Vec<&CertSpec> = Vec::new();
    // Certificates to renew, built together (on all cores for the internal CA), then
    // put in place together (one group commit).
    let mut queued: Vec<issue::Queued> = Vec::new();
    let mut pending: Vec<issue::Pending> = Vec::new();
    let revoked = crate::trust::revoked_serials(state);
    let issuers = Registry::new(config, ca);
    let issuer_of = |spec: &CertSpec| issuers.get(&spec.issuer);
    // Observed in slices, so that memory stays flat with thousands of certificates.
    let (read, unchanged) = (std::cell::Cell::new(0usize), std::cell::Cell::new(0usize));
    let slices = selected.chunks(OBSERVE_SLICE).flat_map(|part| {
        let observed = observe_all(part, &issuer_of, cache.as_deref());
        let mut seen_part = Vec::with_capacity(part.len());
        for (seen, learned, cached) in observed {
            // Read from the files now (not from the cache of unchanged files).
            let fresh = learned.is_some() || cache.is_none();
            let counter = if cached { &unchanged } else { &read };
            counter.set(counter.get() + 1);
            if let (Some(c), Some(l)) = (cache.as_deref_mut(), learned) {
                c.insert(l);
            }
            seen_part.push((seen, fresh));
        }
        part.iter().zip(seen_part).collect::<Vec<_>>()
    });
    for (spec, (seen, fresh)) in slices {
        if cancel.load(Ordering::Relaxed) {
            break;
        }
        let issuer = issuer_of(spec);
        let current = match &seen {
            Seen::Present(p) => Some(&p.leaf),
            _ => None,
        };
        let mut action = plan::decide(spec, &seen, now, &revoked, opts.force);
        // Files that changed since certkeeper last read them may be an old copy of its
        // own put back (a restored backup, config management): a fresh pair replaces it.
        if let (Action::Keep { .. }, true, Seen::Present(p)) = (&action, fresh, &seen) {
            if let Some(installed) = state.reverted_from(&spec.name, &p.leaf.serial) {
                action = Action::Renew(Reason::Reverted {
                    serial: p.leaf.serial.clone(),
                    installed,
                });
            }
        }
        // An ACME CA's renewal information (RFC 9773) decides when it suggests a window:
        // renewed inside it; asked again when the CA says (`Retry-After`).
        let mut look_at = None;
        if let (Action::Keep { .. }, Seen::Present(p), crate::model::IssuerRef::Acme(_), Some(i)) =
            (&action, &seen, &spec.issuer, issuer)
        {
            let ari = ari.get_or_insert_with(|| crate::ari::load(state));
            let known = ari
                .get(&spec.name)
                .filter(|a| a.serial == p.leaf.serial && now < a.next_poll)
                .cloned();
            let answer = match known {
                Some(a) => a,
                None => {
                    let a = ask_ari(spec, i, &p.leaf, now);
                    ari.insert(spec.name.clone(), a.clone());
                    ari_changed = true;
                    a
                }
            };
            look_at = Some(answer.next_poll);
            if let (Some((start, end)), Action::Keep { renew_at, .. }) =
                (answer.window(), &mut action)
            {
                let at = crate::policy::ari_point(&spec.name, &p.leaf.serial, start, end);
                if at <= now {
                    action = Action::Renew(Reason::Ari(start, end));
                } else {
                    *renew_at = at;
                }
            }
        }
        // A pair the internal CA issued as the fallback of an ACME issuer goes back to
        // that issuer (an ACME issuer accepts any chain as its own; the internal CA
        // knows its own for sure).
        if matches!(action, Action::Keep { .. }) && on_internal_fallback(spec, &seen, ca) {
            let internal = crate::model::IssuerRef::Internal.to_string();
            action = Action::Renew(Reason::OnFallback(internal));
        }
        let reason = match action {
            Action::Keep {
                renew_at,
                not_after,
                serial,
                not_before,
            } => {
                let serving = spec
                    .reload
                    .iter()
                    .all(|s| !matches!(liveness.get(s), Some(Err(_))));
                if let (true, true, Seen::Present(p)) = (opts.check_served, serving, &seen) {
                    // A cached observation has no chain: read it (only for certificates
                    // whose targets are looked at, and the handshake costs more).
                    let full = match (spec.verify.is_empty(), p.chain.is_empty()) {
                        (false, true) => match observe(spec, issuer) {
                            Seen::Present(full) => full.chain,
                            _ => Vec::new(),
                        },
                        _ => p.chain.clone(),
                    };
                    let chain: Vec<Vec<u8>> = full.iter().map(|c| c.der.clone()).collect();
                    for target in &spec.verify {
                        match clients.look(spec, target, &p.leaf.fingerprint, Some(&chain)) {
                            clients::Look::Ours(problems) => {
                                if problems.is_empty() {
                                    tracing::info!(certificate = %spec.name, connect = %target.connect, "verified: the server serves the certificate on disk, and a client accepts it");
                                }
                                looks.push(judged(spec, target, &problems));
                            }
                            clients::Look::Other { found, problems } => {
                                tracing::warn!(certificate = %spec.name, connect = %target.connect, "the server does not serve the certificate on disk; reloading it");
                                stale_servers.extend(spec.reload.iter().cloned());
                                drifted.push(Drifted {
                                    spec,
                                    target,
                                    fingerprint: p.leaf.fingerprint.clone(),
                                    chain: chain.clone(),
                                    found,
                                    problems,
                                });
                            }
                            clients::Look::Failed(e) => {
                                tracing::warn!(certificate = %spec.name, error = %e, "cannot check what the server serves")
                            }
                        }
                    }
                }
                reports.push(CertReport {
                    name: spec.name.clone(),
                    outcome: Outcome::Unchanged {
                        renew_at,
                        not_after,
                        serial,
                        not_before,
                        look_at: look_at.filter(|t| *t < renew_at),
                    },
                });
                continue;
            }
            Action::Renew(r) => r,
        };
        let Some(issuer) = issuer else {
            let error = Failure::NoIssuer(spec.issuer.clone());
            reports.push(failed(state, spec, reason, error, current, now));
            continue;
        };
        if let Reason::KeyExposed { path, why } = &reason {
            tracing::warn!(certificate = %spec.name, path = %path.display(), %why, "the private key was readable beyond its configuration: tightening it now and replacing the pair");
            crate::observe::tighten(spec, path);
        }
        // A certificate issued by a fallback issuer goes back to the configured one.
        let reason = match (&reason, &seen) {
            (Reason::IssuerChanged, Seen::Present(p)) => spec
                .fallback
                .iter()
                .find(|f| issuers.get(f).is_some_and(|i| i.issued(&p.leaf, &p.chain)))
                .map(|f| Reason::OnFallback(f.to_string()))
                .unwrap_or(reason),
            _ => reason,
        };
        tracing::info!(certificate = %spec.name, reason = %reason, "renewing");
        attempted.push(spec);
        // The pair this one replaces, for the CA's renewal information (ACME `replaces`):
        // only one the same issuer made.
        let old = current
            .filter(|_| !matches!(reason, Reason::OnFallback(_) | Reason::IssuerChanged))
            .cloned();
        queued.push(issue::Queued {
            spec,
            reason,
            issuer,
            old,
            in_place: current.cloned(),
        });
        if queued.len() >= GROUP_COMMIT {
            let built = issue::build_all(std::mem::take(&mut queued), now, cancel);
            for (q, result) in built {
                settle_built(state, &issuers, q, result, now, &mut pending, &mut reports);
            }
            store_pending(state, &mut pending, now, &mut staged, &mut reports);
        }
    }
    for (q, result) in issue::build_all(std::mem::take(&mut queued), now, cancel) {
        settle_built(state, &issuers, q, result, now, &mut pending, &mut reports);
    }
    store_pending(state, &mut pending, now, &mut staged, &mut reports);

    // Trust targets (CA bundle, CRLs) follow the CA; their servers join this pass's
    // single round of config tests and reloads.
    tracing::debug!(
        read = read.get(),
        unchanged = unchanged.get(),
        "certificates looked at (unchanged: files as last checked, not read again)"
    );
    let mut trust = crate::trust::TrustSync::default();
    if let (false, Some(ca)) = (opts.skip_trust, ca) {
        trust = crate::trust::sync(config, state, ca, now);
        for e in &trust.errors {
            tracing::error!(error = %e, "trust target not updated");
        }
        stale_servers.extend(trust.reload.iter().cloned());
    }
    let mut activity = apply_to_servers(config, &mut staged, &stale_servers, cancel, &clients);
    for (name, live) in liveness {
        match live {
            Ok(()) => {
                activity.running.insert(name);
            }
            Err(why) => {
                activity.not_running.entry(name).or_insert(why);
            }
        }
    }
    if let (true, Some(ari)) = (ari_changed, &ari) {
        if let Err(e) = crate::ari::store(state, ari) {
            tracing::error!(error = %e, "cannot record the ACME renewal information");
        }
    }
    settle_drift(&clients, drifted, looks, &mut activity);
    record_findings(state, &mut activity, now);
    crate::trust::run_commands(&trust.run);
    // The trust pass is also when the CA's own next step falls due (ensure_ca does it).
    let ca_next = ca.and_then(|ca| {
        crate::policy::ca::steps(&ca.state(), &crate::policy::ca::timing(config), now).1
    });
    activity.trust_refresh_at = match (trust.refresh_at, ca_next) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    activity.ca_changed = ca.is_some_and(|ca| !ca.changes.is_empty());
    if !opts.skip_trust && (!trust.reload.is_empty() || !trust.pending_before.is_empty()) {
        // A server that did not take new trust material (a revocation!) is remembered
        // and reloaded again by the next pass, until it does.
        let pending: BTreeSet<String> = trust
            .reload
            .iter()
            .filter(|s| {
                activity.servers.get(*s).is_some_and(ServerOutcome::failed)
                    || !config.servers.contains_key(*s)
            })
            .cloned()
            .collect();
        for s in &pending {
            tracing::error!(server = %s, "new trust material is not loaded by this server yet; will retry");
        }
        if let Err(e) = crate::trust::set_pending(state, &pending) {
            tracing::error!(error = %e, "cannot record pending trust reloads");
        }
        activity.trust_pending = pending.into_iter().collect();
    }

    // One group commit for the ledger's records of every install, then the archive
    // markers.
    let group = crate::fsutil::GroupCommit::begin();
    let mut marks: Vec<(String, String)> = Vec::new();
    reports.reserve(staged.len());
    for st in staged {
        let report = report::settle(state, ca, *st, now);
        if let Outcome::Renewed { serial, .. } = &report.outcome {
            marks.push((report.name.clone(), serial.clone()));
        }
        reports.push(report);
    }
    if let Err(err) = group.barrier() {
        tracing::error!(error = %err, "cannot flush the records of this pass's installs");
    }
    drop(group);
    // The archive markers, one group commit per share.
    in_shares(marks, |share| {
        let group = crate::fsutil::GroupCommit::begin();
        let refs: Vec<(&str, &str)> = share
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_str()))
            .collect();
        for ((name, _), done) in share.iter().zip(state.mark_installed_all(&group, &refs)) {
            if let Err(err) = done {
                tracing::warn!(certificate = %name, error = %err, "cannot mark the installed pair in the archive");
            }
        }
        if let Err(err) = group.barrier() {
            tracing::error!(error = %err, "cannot flush the archive markers of this pass's installs");
        }
        Vec::<()>::new()
    });
    // The archive keeps the installed pair (and the one on disk, should they differ after
    // a crash) plus `archive.keep` superseded ones.
    in_shares(attempted, |share| {
        let _kept = crate::fsutil::Batch::begin();
        for spec in share {
            // Looked at only when the archive holds more than it keeps.
            let on_disk = || match observe(spec, None) {
                Seen::Present(p) => Some(p.leaf.serial),
                _ => None,
            };
            if let Err(err) = state.prune_archive_with(&spec.name, config.archive_keep, on_disk) {
                tracing::warn!(certificate = %spec.name, error = %err, "cannot prune the archive");
            }
        }
        Vec::<()>::new()
    });
    (reports, activity)
}

/// Runs `work` over `items` cut into one share per core, each share on a thread of its
/// own, when there are enough items to pay for threads (else on this thread); the
/// results in the items' order. For the file work of a batch: creating, renaming and
/// flushing entries is mostly the kernel's work, and runs on both cores when the
/// entries are in different directories. `work` opens its own group commit (the
/// flushes it defers are this thread's).
fn in_shares<T: Send, R: Send>(items: Vec<T>, work: impl Fn(Vec<T>) -> Vec<R> + Sync) -> Vec<R> {
    let workers = match items.len() {
        n if n < issue::PARALLEL_FROM => 1,
        n => std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
            .min(n / (issue::PARALLEL_FROM / 2)),
    };
    if workers <= 1 {
        return work(items);
    }
    let size = items.len().div_ceil(workers);
    let mut shares: Vec<Vec<T>> = Vec::with_capacity(workers);
    let mut rest = items.into_iter().peekable();
    while rest.peek().is_some() {
        shares.push(rest.by_ref().take(size).collect());
    }
    let work = &work;
    std::thread::scope(|scope| {
        let handles: Vec<_> = shares
            .into_iter()
            .map(|share| scope.spawn(move || work(share)))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("a worker thread"))
            .collect()
    })
}

/// How many certificates are observed before their decisions are acted on.
const OBSERVE_SLICE: usize = 1024;

/// Observes certificates, on all cores when there are many: start-up with thousands
/// of certificates is mostly parsing and signature checks. With a cache, files whose
/// identity is unchanged since their last full check are not read again.
fn observe_all<'a>(
    selected: &[&CertSpec],
    issuer_of: &(dyn Fn(&CertSpec) -> Option<&'a dyn Issuer> + Sync),
    cache: Option<&ObserveCache>,
) -> Vec<(Seen, Option<Learned>, bool)> {
    let one = |spec: &CertSpec| -> (Seen, Option<Learned>, bool) {
        let Some(cache) = cache else {
            return (observe(spec, issuer_of(spec)), None, false);
        };
        let (stamps, key_meta) = ObserveCache::stamps(spec).unzip();
        if let Some(seen) = stamps.as_ref().and_then(|st| cache.lookup(spec, st)) {
            let exposed = key_meta.and_then(|m| crate::observe::exposure_in(spec, &m));
            return (exposed.unwrap_or(seen), None, true);
        }
        let seen = observe(spec, issuer_of(spec));
        // Stamps taken before reading: a change during the read shows up next time.
        let learned = stamps.and_then(|st| ObserveCache::learn(spec, st, &seen));
        (seen, learned, false)
    };
    crate::par::map(selected, 64, |s| one(s))
}

fn observe_leaf(spec: &CertSpec, ca: Option<&InternalCa>) -> Option<CertInfo> {
    match observe(spec, ca.map(|c| c as &dyn Issuer)) {
        Seen::Present(p) => Some(p.leaf),
        _ => None,
    }
}

/// Asks `issuer` for its renewal window for `leaf`, as an answer to keep until the
/// CA's `Retry-After` (between a minute and a day); without one (no ARI, an error),
/// `renew_before` decides, and the CA is asked again in a day (an hour after an error).
fn ask_ari(
    spec: &CertSpec,
    issuer: &dyn Issuer,
    leaf: &CertInfo,
    now: OffsetDateTime,
) -> crate::ari::Answer {
    let hours = |h: i64| now + time::Duration::hours(h);
    let (start, end, source, next_poll) = match issuer.renewal_info(leaf) {
        None => (
            None,
            None,
            "the CA has no renewal information (ARI); renew_before decides".to_string(),
            hours(24),
        ),
        Some(Ok(w)) => {
            let wait = w.retry_after.clamp(
                std::time::Duration::from_secs(60),
                std::time::Duration::from_secs(86400),
            );
            let source = match &w.explanation {
                Some(url) => format!("the ACME CA's renewal information (see {url})"),
                None => "the ACME CA's renewal information".to_string(),
            };
            tracing::info!(certificate = %spec.name, start = %rfc3339(w.start), end = %rfc3339(w.end), "the ACME CA suggests a renewal window");
            (Some(w.start), Some(w.end), source, now + wait)
        }
        Some(Err(e)) => {
            tracing::warn!(certificate = %spec.name, error = %e, "no renewal information from the ACME CA; renew_before decides");
            (
                None,
                None,
                format!("the ACME CA's renewal information failed ({e}); renew_before decides"),
                hours(1),
            )
        }
    };
    crate::ari::Answer {
        serial: leaf.serial.clone(),
        start,
        end,
        source,
        next_poll,
    }
}

/// A target that served another certificate than the one on disk, to look at again
/// after its servers' reload.
struct Drifted<'a> {
    spec: &'a CertSpec,
    target: &'a crate::config::VerifySpec,
    fingerprint: String,
    chain: Vec<Vec<u8>>,
    /// What was served instead, and what a client refuses in it.
    found: String,
    problems: Vec<crate::served::Problem>,
}

/// A look that found the certificate on disk, as a look and a finding.
fn judged(
    spec: &CertSpec,
    target: &crate::config::VerifySpec,
    problems: &[crate::served::Problem],
) -> (ServedLook, Option<crate::drift::Finding>) {
    let finding = (!problems.is_empty()).then(|| crate::drift::Finding {
        drift: false,
        note: clients::note(target, problems),
    });
    if let Some(f) = &finding {
        tracing::warn!(certificate = %spec.name, "served, but clients refuse it: {}", f.note);
    }
    (
        ServedLook {
            name: spec.name.clone(),
            target: target.label.clone(),
            matches: true,
            verified: problems.is_empty(),
        },
        finding,
    )
}

/// After the reloads of a pass: each target that served something other than the
/// files on disk is looked at once more. Served now: the drift was repaired by the
/// reload (said in the ledger at once). Still not: drift, left for the next check
/// (never a loop of reloads).
fn settle_drift(
    clients: &clients::Clients,
    drifted: Vec<Drifted>,
    looks: Vec<(ServedLook, Option<crate::drift::Finding>)>,
    activity: &mut ServerActivity,
) {
    for (look, finding) in looks {
        activity
            .findings
            .push((look.name.clone(), look.target.clone(), finding));
        activity.served.push(look);
    }
    for d in drifted {
        let reloaded = d
            .spec
            .reload
            .iter()
            .all(|s| activity.reload_results.iter().any(|(n, ok)| n == s && *ok));
        let result = if reloaded {
            clients
                .wait(d.spec, d.target, &d.fingerprint, Some(&d.chain))
                .map_err(|e| match e {
                    // Still another certificate: what it is and what clients refuse in
                    // it, as found after the reload.
                    crate::verify::VerifyError::NotServed { found, .. } => {
                        (found.to_string(), String::new())
                    }
                    e => (
                        format!("{}{}", d.found, clients::refused(&d.problems)),
                        format!(": after the reload, {e}"),
                    ),
                })
        } else {
            Err((
                format!("{}{}", d.found, clients::refused(&d.problems)),
                ": its server could not be reloaded".into(),
            ))
        };
        match result {
            Ok(problems) => {
                tracing::info!(certificate = %d.spec.name, connect = %d.target.connect, "drift repaired: after a reload the server serves the certificate on disk");
                activity.repaired.push((
                    d.spec.name.clone(),
                    format!(
                        "{} served {}; reloaded, it serves the certificate on disk",
                        d.target.label, d.found
                    ),
                ));
                let (look, finding) = judged(d.spec, d.target, &problems);
                activity
                    .findings
                    .push((look.name.clone(), look.target.clone(), finding));
                activity.served.push(look);
            }
            Err((found, why)) => {
                let note = format!(
                    "{} (SNI {}) serves {found}, not the certificate on disk, even after a reload{why}; check the server's certificate settings (certkeeper checks again at the next verify.every)",
                    d.target.connect, d.target.server_name
                );
                tracing::error!(certificate = %d.spec.name, "drift: {note}");
                activity.served.push(ServedLook {
                    name: d.spec.name.clone(),
                    target: d.target.label.clone(),
                    matches: false,
                    verified: false,
                });
                activity.findings.push((
                    d.spec.name.clone(),
                    d.target.label.clone(),
                    Some(crate::drift::Finding { drift: true, note }),
                ));
            }
        }
    }
}

/// Records what verification found: `served.json` once, and in the ledger what is
/// news (a drift or a problem found, changed or gone) and every drift a reload repaired.
fn record_findings(state: &StateDir, activity: &mut ServerActivity, now: OffsetDateTime) {
    let record = |name: &str, event: &str, note: String| {
        let mut e = LedgerEntry::new(now, event);
        e.name = Some(name.to_string());
        e.note = Some(note);
        if let Err(err) = state.record(&e) {
            tracing::error!(error = %err, "cannot record in the ledger");
        }
    };
    for (name, note) in std::mem::take(&mut activity.repaired) {
        record(&name, "drift-repaired", note);
    }
    let changes = std::mem::take(&mut activity.findings);
    if changes.is_empty() {
        return;
    }
    let news = match crate::drift::update(state, changes) {
        Ok(news) => news,
        Err(e) => {
            tracing::error!(error = %e, "cannot record what verification found");
            return;
        }
    };
    for (name, target, before, after) in news {
        match (before, after) {
            (_, Some(f)) if f.drift => record(&name, "drift", f.note),
            (_, Some(f)) => record(&name, "unverified", f.note),
            (Some(b), None) if b.drift => record(
                &name,
                "drift-repaired",
                format!("{target} serves the certificate on disk again"),
            ),
            (Some(_), None) => record(
                &name,
                "verified",
                format!("{target} serves it as clients expect again"),
            ),
            (None, None) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Mutex;

    #[test]
    fn shares_give_every_result_in_order_and_small_batches_stay_on_this_thread() {
        let seen = Mutex::new(HashSet::new());
        let out = super::in_shares((0..1000).collect(), |share: Vec<usize>| {
            seen.lock().unwrap().insert(std::thread::current().id());
            share.into_iter().map(|i| i * 2).collect()
        });
        assert_eq!(out, (0..1000).map(|i| i * 2).collect::<Vec<_>>());
        let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
        assert_eq!(seen.lock().unwrap().len(), cores.min(1000 / 4));

        let me = std::thread::current().id();
        let out = super::in_shares(vec![1, 2, 3], |share: Vec<i32>| {
            assert_eq!(std::thread::current().id(), me);
            share
        });
        assert_eq!(out, [1, 2, 3]);
    }
}
