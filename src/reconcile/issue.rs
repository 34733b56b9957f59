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

/// Issues a fresh pair for `spec`, archives and installs it. Nothing is written to the
/// target paths unless the new pair is complete and consistent.
pub(super) fn issue_and_install(
    state: &StateDir,
    spec: &CertSpec,
    issuer: &dyn Issuer,
    reason: &Reason,
    now: OffsetDateTime,
    old: Option<&CertInfo>,
) -> Result<(Issued, Installed), Failure> {
    // Refuse unusable targets (a symlink, a file where a directory should be) before
    // anything is issued, so that a refused install leaves no trace in the CA.
    crate::install::preflight(spec).map_err(|e| Failure::Refused(Arc::new(e)))?;
    let key = PrivateKey::generate(spec.key).map_err(|e| Failure::Key(e.to_string()))?;
    let req = request_for(spec);
    let csr = make_csr(&key, &req).map_err(|e| Failure::Key(e.to_string()))?;
    let issued = issuer
        .issue_replacing(&csr, &req, now, old)
        .map_err(|e| Failure::Issue {
            issuer: issuer.id().to_string(),
            error: Arc::new(e),
        })?;
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
    let serial = issued.leaf.serial.clone();

    let mut entry = LedgerEntry::new(now, "issued");
    entry.name = Some(spec.name.clone());
    entry.serial = Some(serial.clone());
    entry.issuer = Some(issuer.id().to_string());
    entry.not_after = Some(issued.leaf.not_after);
    entry.sans = spec.sans.iter().map(|s| s.to_string()).collect();
    entry.reason = Some(reason.code().to_string());
    state.record(&entry).map_err(|e| Failure::State {
        what: "cannot record the new pair in the ledger",
        error: Arc::new(e),
    })?;

    let chain_pem: String = issued.chain.iter().map(|c| c.to_pem()).collect();
    state
        .archive(
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

    let files = render(spec, &key, &issued.leaf, &issued.chain);
    let installed = install(spec, &serial, &files).map_err(|e| Failure::Install(Arc::new(e)))?;
    Ok((issued, installed))
}
