//! What a pass reports of a failed certificate: the ledger entry and its report.

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
