//! Issuing a new pair and putting it in place: preflight, key, CSR, issue, checks on
//! what the issuer returned, ledger, archive, install. Nothing is written to the target
//! paths unless the new pair is complete and consistent.

use super::*;

pub fn request_for(spec: &CertSpec) -> IssueRequest {
    IssueRequest {
        name: spec.name.clone(),
        common_name: spec.common_name.clone(),
        sans: spec.sans.clone(),
        usage: spec.usage,
        lifetime: spec.lifetime,
        profile: spec.profile.clone(),
    }
}

/// A new pair made and checked, and what the pass knows of it, before anything is
/// recorded or written.
pub(super) struct Pending<'a> {
    pub spec: &'a CertSpec,
    pub reason: Reason,
    /// The issuer that signed it (a `fallback` one when the configured issuer failed).
    pub issuer: String,
    /// Facts for the ledger and the report.
    pub notes: Vec<String>,
    /// The leaf in place before, for a failure's report.
    pub in_place: Option<CertInfo>,
    pub built: Built,
}

/// How many certificates of the internal CA a pass renews at once before their pairs
/// are built on several threads.
pub(super) const PARALLEL_FROM: usize = 8;

/// A certificate to renew, with what its pass decided.
pub(super) struct Queued<'a, 'i> {
    pub spec: &'a CertSpec,
    pub reason: Reason,
    pub issuer: &'i dyn Issuer,
    /// The pair it replaces, for the CA's renewal information (same issuer only).
    pub old: Option<CertInfo>,
    /// The leaf in place, for fallback timing and a failure's report.
    pub in_place: Option<CertInfo>,
}

/// Builds a pair for each queued certificate: those of the internal CA on all cores
/// (key generation and signing are the work), the others (ACME orders, whose http-01
/// responder has one port) one after the other. Results in order; once `cancel` is set
/// (SIGTERM), no new build starts and the certificates not built are left out.
pub(super) fn build_all<'a, 'i>(
    queued: Vec<Queued<'a, 'i>>,
    now: OffsetDateTime,
    cancel: &AtomicBool,
) -> Vec<(Queued<'a, 'i>, Result<Built, Failure>)> {
    let started = std::time::Instant::now();
    let count = queued.len();
    let out = build_queued(queued, now, cancel);
    if count > 0 {
        let elapsed = started.elapsed();
        tracing::debug!(
            pairs = count,
            elapsed_us = elapsed.as_micros() as u64,
            per_second = (count as f64 / elapsed.as_secs_f64().max(1e-9)) as u64,
            "new pairs built"
        );
    }
    out
}

fn build_queued<'a, 'i>(
    queued: Vec<Queued<'a, 'i>>,
    now: OffsetDateTime,
    cancel: &AtomicBool,
) -> Vec<(Queued<'a, 'i>, Result<Built, Failure>)> {
    let stop = || cancel.load(Ordering::Relaxed);
    let local = |q: &Queued| q.issuer.id() == crate::model::IssuerRef::INTERNAL;
    let mut results: Vec<Option<Result<Built, Failure>>> = queued.iter().map(|_| None).collect();
    let parallel: Vec<usize> = (0..queued.len()).filter(|i| local(&queued[*i])).collect();
    // Threads pay off for batches, not for the one or two certificates of most passes.
    let workers = match parallel.len() {
        n if n < PARALLEL_FROM => 1,
        n => std::thread::available_parallelism()
            .map(|c| c.get())
            .unwrap_or(1)
            .min(n),
    };
    if workers > 1 {
        let next = std::sync::atomic::AtomicUsize::new(0);
        let done: Vec<(usize, Result<Built, Failure>)> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers)
                .map(|_| {
                    scope.spawn(|| {
                        // The preflight of each certificate looks at its directories
                        // through handles this thread keeps for its share of the batch.
                        let _kept = crate::fsutil::Batch::begin();
                        let mut out = Vec::new();
                        while !stop() {
                            let k = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&i) = parallel.get(k) else { break };
                            let q = &queued[i];
                            out.push((i, build(q.spec, q.issuer, now, q.old.as_ref())));
                        }
                        out
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().expect("a build thread"))
                .collect()
        });
        for (i, r) in done {
            results[i] = Some(r);
        }
    }
    let mut out = Vec::with_capacity(queued.len());
    for (q, r) in queued.into_iter().zip(results) {
        let r = match r {
            Some(r) => r,
            // Not built by the workers: they stopped (cancelled), or there were none.
            None if stop() || (workers > 1 && local(&q)) => continue,
            None => build(q.spec, q.issuer, now, q.old.as_ref()),
        };
        out.push((q, r));
    }
    out
}

/// A key and the certificate issued for it, checked.
pub(super) struct Built {
    key: PrivateKey,
    pub(super) issued: Issued,
    /// The password of a `pkcs12` layout, read before the CA was asked.
    password: Option<crate::pkcs12::Password>,
}

/// Makes a key and a CSR for `spec`, has `issuer` sign it and checks what comes back.
/// Nothing is written: unusable targets (a symlink, a file where a directory should
/// be) are refused before anything is issued, so that a refused install leaves no trace
/// in the CA.
pub(super) fn build(
    spec: &CertSpec,
    issuer: &dyn Issuer,
    now: OffsetDateTime,
    old: Option<&CertInfo>,
) -> Result<Built, Failure> {
    crate::install::preflight(spec).map_err(|e| Failure::Refused(Arc::new(e)))?;
    let password = match spec.files.password_file() {
        Some(file) => Some(
            crate::password::read_password(file, crate::observe::p12_readers(spec))
                .map_err(|e| Failure::Password(Arc::new(e)))?,
        ),
        None => None,
    };
    let key = PrivateKey::generate(spec.key).map_err(|e| Failure::Key(e.to_string()))?;
    let req = request_for(spec);
    let issued = issuer
        .issue_for_key(&key, &req, now, old)
        .map_err(|e| Failure::Issue {
            issuer: issuer.id().to_string(),
            error: Arc::new(e),
        })?;
    // What comes from outside is checked; what this process just signed is not
    // checked again (see `Issuer::signs_in_process`).
    if !issuer.signs_in_process() {
        let returned = |problem: String| Failure::Returned {
            issuer: issuer.id().to_string(),
            problem,
        };
        if !issued.leaf.matches_key(&key) {
            return Err(returned("a certificate for another key".into()));
        }
        let full: Vec<_> = std::iter::once(issued.leaf.clone())
            .chain(issued.chain.iter().cloned())
            .collect();
        check_chain_order(&full).map_err(|e| returned(format!("a bad chain: {e}")))?;
    }
    Ok(Built {
        key,
        issued,
        password,
    })
}

/// What putting one pair in place gave: its install, or why not (the pair stays in its
/// `Pending`, not copied: a batch of thousands holds each leaf once).
pub(super) type Stored = Result<Installed, Failure>;

/// Records, archives and installs every pair of `batch`, on all cores when there are
/// many (see [`in_shares`]: each share is a group commit of its own). One result per
/// item, in order.
pub(super) fn store_shared<'a>(
    state: &StateDir,
    batch: Vec<Pending<'a>>,
    now: OffsetDateTime,
) -> Vec<(Pending<'a>, Stored)> {
    in_shares(batch, |share| store_all(state, share, now))
}

/// Records, archives and installs every pair of `batch` as one group commit: first for
/// all of them the ledger's `issued` line, the archive copy and the new pair beside the
/// served one, then one flush per filesystem, then each pair served (one rename) and its
/// archive copy put in place, then one flush again. Each pair's data is durable before
/// the rename that serves it, each rename before the pass records the install; a crash
/// at any point leaves every certificate with a complete pair. One result per item, in
/// order; a failure of one leaves the others alone.
fn store_all<'a>(
    state: &StateDir,
    batch: Vec<Pending<'a>>,
    now: OffsetDateTime,
) -> Vec<(Pending<'a>, Stored)> {
    let group = crate::fsutil::GroupCommit::begin();
    // The `issued` lines first, in one append. Plain files (no store, or written
    // through links of the user's own) are renamed into place while this batch is
    // written: their lines are flushed before.
    let entries: Vec<LedgerEntry> = batch.iter().map(|p| issued_entry(p, now)).collect();
    let plain = batch
        .iter()
        .any(|p| !crate::install::uses_store(p.spec) || p.spec.follow_symlinks);
    let recorded = match plain {
        true => crate::fsutil::GroupCommit::durable(|| state.record_all(&entries)),
        false => state.record_all(&entries),
    }
    .map_err(Arc::new);
    drop(entries);
    let written: Vec<Result<_, Failure>> = batch
        .iter()
        .map(|p| match &recorded {
            Ok(()) => write(state, p),
            Err(e) => Err(Failure::State {
                what: "cannot record the new pair in the ledger",
                error: e.clone(),
            }),
        })
        .collect();
    let flushed = group.barrier().map_err(Arc::new);
    let mut out = Vec::with_capacity(batch.len());
    for (p, w) in batch.into_iter().zip(written) {
        let result = w.and_then(|(archive, prepared)| {
            if let Err(e) = &flushed {
                return Err(Failure::State {
                    what: "cannot make the new pair durable",
                    error: e.clone(),
                });
            }
            archive.publish(state).map_err(|e| Failure::State {
                what: "cannot archive the new pair",
                error: Arc::new(e),
            })?;
            prepared
                .publish()
                .map_err(|e| Failure::Install(Arc::new(e)))
        });
        out.push((p, result));
    }
    if let Err(e) = group.barrier().map_err(Arc::new) {
        // The renames may not survive a power loss: put every pair back and say so.
        for (p, result) in &mut out {
            if let Ok(installed) = result {
                if let Err(back) = installed.roll_back() {
                    tracing::error!(certificate = %p.spec.name, error = %back, "cannot roll back after a failed flush");
                }
                *result = Err(Failure::State {
                    what: "cannot make the install durable",
                    error: e.clone(),
                });
            }
        }
    }
    drop(group);
    out
}

/// The ledger's `issued` line for a new pair.
fn issued_entry(p: &Pending, now: OffsetDateTime) -> LedgerEntry {
    let (spec, leaf) = (p.spec, &p.built.issued.leaf);
    let mut entry = LedgerEntry::new(now, "issued");
    entry.name = Some(spec.name.clone());
    entry.serial = Some(leaf.serial.clone());
    entry.issuer = Some(p.issuer.clone());
    entry.not_after = Some(leaf.not_after);
    entry.sans = spec.sans.iter().map(|s| s.to_string()).collect();
    entry.reason = Some(p.reason.code().to_string());
    entry
}

/// The first half of a group commit for one pair (its `issued` line recorded): the
/// archive copy and the pair beside the served one, all still to be flushed.
fn write(
    state: &StateDir,
    p: &Pending,
) -> Result<(crate::state::StagedArchive, crate::install::Prepared), Failure> {
    let (spec, issued, key) = (p.spec, &p.built.issued, &p.built.key);
    let serial = issued.leaf.serial.clone();
    let chain_pem: String = issued.chain.iter().map(|c| c.to_pem()).collect();
    let archive = state
        .stage_archive(
            &spec.name,
            &serial,
            &issued.leaf.to_pem(),
            &chain_pem,
            key.pem(),
        )
        .map_err(|e| Failure::State {
            what: "cannot archive the new pair",
            error: Arc::new(e),
        })?;
    let files = render(
        spec,
        key,
        &issued.leaf,
        &issued.chain,
        p.built.password.as_ref(),
    )
    .map_err(Failure::Key)?;
    let prepared = crate::install::prepare(spec, &serial, &files)
        .map_err(|e| Failure::Install(Arc::new(e)))?;
    Ok((archive, prepared))
}
