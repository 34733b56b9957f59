//! What a pass records and reports of each certificate it renewed or failed to.

use super::*;

/// Records a failure in the ledger and makes its report.
pub(super) fn failed(
    state: &StateDir,
    spec: &CertSpec,
    reason: Reason,
    error: Failure,
    in_place: Option<&CertInfo>,
    now: OffsetDateTime,
) -> CertReport {
    record_failure(state, spec, &reason, &error, now);
    CertReport {
        name: spec.name.clone(),
        outcome: Outcome::Failed {
            reason: Some(reason),
            error,
            not_after: in_place.map(|l| l.not_after),
            serial: in_place.map(|l| l.serial.clone()),
            not_before: in_place.map(|l| l.not_before),
        },
    }
}

fn record_failure(
    state: &StateDir,
    spec: &CertSpec,
    reason: &Reason,
    error: &Failure,
    now: OffsetDateTime,
) {
    let mut e = LedgerEntry::new(now, "failed");
    e.name = Some(spec.name.clone());
    e.issuer = Some(spec.issuer.to_string());
    e.reason = Some(format!("{}: {error}", reason.code()));
    if let Err(err) = state.record(&e) {
        tracing::error!(certificate = %spec.name, error = %err, "cannot record the failure in the ledger");
    }
}

/// Settles one staged pair at the end of its pass: an install that held is recorded in
/// the ledger (the caller marks it in the archive) and reported renewed; one that failed
/// is recorded as failed, reported with the certificate still in place. The pair is
/// then kept (see `Drop`).
pub(super) fn settle(
    state: &StateDir,
    ca: Option<&InternalCa>,
    mut st: Staged,
    now: OffsetDateTime,
) -> CertReport {
    let spec = st.spec;
    match st.error.take() {
        None => {
            let leaf = &st.signed;
            let mut e = LedgerEntry::new(now, "installed");
            e.name = Some(spec.name.clone());
            e.serial = Some(leaf.serial.clone());
            e.issuer = Some(st.issuer.clone());
            e.not_after = Some(leaf.not_after);
            e.files = spec
                .files
                .paths()
                .iter()
                .map(|(_, p)| p.display().to_string())
                .collect();
            e.reason = Some(st.reason.code().to_string());
            e.note = (!st.notes.is_empty()).then(|| st.notes.join("; "));
            if let Err(err) = state.record(&e) {
                tracing::error!(certificate = %spec.name, error = %err, "cannot record the install in the ledger");
            }
            tracing::info!(certificate = %spec.name, serial = %leaf.serial, not_after = %rfc3339(leaf.not_after), reason = %st.reason, "installed");
            CertReport {
                name: spec.name.clone(),
                outcome: Outcome::Renewed {
                    reason: st.reason.clone(),
                    serial: leaf.serial.clone(),
                    not_after: leaf.not_after,
                    renew_at: renew_at_of(spec, leaf.not_before, leaf.not_after, &leaf.serial),
                    notes: std::mem::take(&mut st.notes),
                },
            }
        }
        Some(error) => {
            let in_place = observe_leaf(spec, ca);
            failed(
                state,
                spec,
                st.reason.clone(),
                error,
                in_place.as_ref(),
                now,
            )
        }
    }
}
