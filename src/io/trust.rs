//! Trust material for peers that verify our certificates (mutual TLS): the CA bundle,
//! revocations, the CRLs of both CA levels, and the `trust:` targets that receive them.
//! CRLs are signed once and kept in `state_dir/ca/`, so a target is rewritten (and its
//! servers reloaded) only when its content really changes: on revoke, on a new CA, or
//! when a CRL is re-signed before its nextUpdate.

use crate::config::{Config, TrustContents, TrustSpec};
use crate::fsutil::{write_atomic, FileSpec, FsError};
use crate::issuer::{CaError, InternalCa};
use crate::policy::rfc3339;
use crate::state::{LedgerEntry, StateDir};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The intermediate's CRL (listing revoked leaves) is valid this long...
const LEAF_CRL_VALIDITY: time::Duration = time::Duration::days(7);
/// ...and re-signed once this much of it has passed.
const LEAF_CRL_REFRESH: time::Duration = time::Duration::days(3);
/// The root's CRL (listing revoked intermediates: none so far) lives long, because the
/// root key may be kept offline; it is re-signed when the key is here and half is gone.
const ROOT_CRL_VALIDITY: time::Duration = time::Duration::days(365);

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Revoked {
    pub serial: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    /// The issuer that revoked it: None or `internal` for the internal CA (on its
    /// CRLs), else the ACME issuer's name (revoked there, never on the internal CRLs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
}

impl Revoked {
    /// Whether the internal CA revoked it (it belongs on the internal CRLs).
    pub fn internal(&self) -> bool {
        self.issuer.as_deref().is_none_or(|i| i == "internal")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error(
        "serial {0} was not issued by this CA (see `certkeeper status` or the ledger for serials)"
    )]
    UnknownSerial(String),
    #[error("serial {serial} was issued by the ACME CA `{issuer}`, not by the internal CA")]
    Foreign {
        serial: String,
        issuer: String,
        name: Option<String>,
    },
    #[error("`{0}` is not a revocation reason; use one of: unspecified, key-compromise, ca-compromise, affiliation-changed, superseded, cessation-of-operation, privilege-withdrawn")]
    BadReason(String),
    #[error("{0}")]
    Ca(#[from] CaError),
    #[error("{0}")]
    Fs(#[from] FsError),
}

pub fn parse_reason(text: &str) -> Result<rcgen::RevocationReason, TrustError> {
    use rcgen::RevocationReason as R;
    Ok(match text {
        "unspecified" => R::Unspecified,
        "key-compromise" => R::KeyCompromise,
        "ca-compromise" => R::CaCompromise,
        "affiliation-changed" => R::AffiliationChanged,
        "superseded" => R::Superseded,
        "cessation-of-operation" => R::CessationOfOperation,
        "privilege-withdrawn" => R::PrivilegeWithdrawn,
        other => return Err(TrustError::BadReason(other.to_string())),
    })
}

/// `AB:CD:01` or `abcd01` → `abcd01` (lower case, no separators, no leading zeros).
pub fn normalize_serial(text: &str) -> String {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    let t = hex.trim_start_matches("0x").trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

fn revoked_path(state: &StateDir) -> PathBuf {
    state.root.join("revoked.json")
}

pub fn revoked(state: &StateDir) -> Vec<Revoked> {
    std::fs::read(revoked_path(state))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The serials of [`revoked`], for the renewal decision.
pub fn revoked_serials(state: &StateDir) -> std::collections::HashSet<String> {
    revoked(state).into_iter().map(|r| r.serial).collect()
}

/// The ledger's `issued` entry for `serial` (normalized), or why there is none.
pub fn issued_entry(state: &StateDir, serial: &str) -> Result<LedgerEntry, TrustError> {
    let serial = normalize_serial(serial);
    state
        .ledger()
        .into_iter()
        .find(|e| e.event == "issued" && e.serial.as_deref() == Some(serial.as_str()))
        .ok_or(TrustError::UnknownSerial(serial))
}

/// Revokes a serial this CA issued. The caller holds the state lock. A serial an ACME
/// CA issued is refused ([`TrustError::Foreign`]): it is revoked there
/// ([`record_foreign`] records that), never on the internal CRLs.
pub fn revoke(
    state: &StateDir,
    ca: &InternalCa,
    serial: &str,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<Revoked, TrustError> {
    let serial = normalize_serial(serial);
    if let Some(r) = reason {
        parse_reason(r)?;
    }
    let issued = issued_entry(state, &serial)?;
    if let Some(issuer) = issued.issuer.as_deref().filter(|i| *i != "internal") {
        return Err(TrustError::Foreign {
            serial,
            issuer: issuer.to_string(),
            name: issued.name,
        });
    }
    let entry = Revoked {
        serial,
        time: now,
        reason: reason.map(str::to_string),
        name: issued.name,
        issuer: None,
    };
    let (entry, new) = append(state, entry, None)?;
    if new {
        // Re-sign the leaf CRL now, with the new entry.
        refresh_crls(state, ca, now, true)?;
    }
    Ok(entry)
}

/// Records that the ACME CA `issuer` revoked `serial` (of certificate `name`): in
/// `revoked.json` (so that a certificate carrying it is reissued) and the ledger, never
/// on the internal CRLs. Returns the entry, or the one already there. The caller holds
/// the state lock.
pub fn record_foreign(
    state: &StateDir,
    serial: &str,
    reason: Option<&str>,
    name: Option<String>,
    issuer: &str,
    now: OffsetDateTime,
) -> Result<Revoked, TrustError> {
    let entry = Revoked {
        serial: normalize_serial(serial),
        time: now,
        reason: reason.map(str::to_string),
        name,
        issuer: Some(issuer.to_string()),
    };
    let note = format!("revoked at the ACME CA `{issuer}`");
    append(state, entry, Some(note)).map(|(entry, _)| entry)
}

/// Adds `entry` to `revoked.json`, then records it in the ledger (`revoked`, with
/// `note`). A serial already there is left as it was: its entry, and false.
fn append(
    state: &StateDir,
    entry: Revoked,
    note: Option<String>,
) -> Result<(Revoked, bool), TrustError> {
    let mut list = revoked(state);
    if let Some(existing) = list.iter().find(|r| r.serial == entry.serial) {
        return Ok((existing.clone(), false));
    }
    list.push(entry.clone());
    write_atomic(&FileSpec {
        path: revoked_path(state),
        bytes: Zeroizing::new(serde_json::to_vec_pretty(&list).expect("serializes")),
        mode: 0o600,
        uid: None,
        gid: None,
        follow_symlinks: false,
    })?;
    let mut e = LedgerEntry::new(entry.time, "revoked");
    e.name = entry.name.clone();
    e.serial = Some(entry.serial.clone());
    e.issuer = entry.issuer.clone();
    e.reason = entry.reason.clone();
    e.note = note;
    state.record(&e)?;
    Ok((entry, true))
}

/// The stored CRLs in PEM: the intermediates' (leaves), then the roots'
/// (intermediates).
pub struct Crls {
    pub pems: Vec<String>,
    /// When an intermediate's CRL must be re-signed next.
    pub refresh_at: OffsetDateTime,
}

fn crl_next_update(pem: &str) -> Option<(OffsetDateTime, OffsetDateTime)> {
    use x509_parser::prelude::FromDer;
    let der = ::pem::parse(pem).ok()?;
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(der.contents()).ok()?;
    Some((
        crl.last_update().to_datetime(),
        crl.next_update()?.to_datetime(),
    ))
}

fn crl_number(pem: &str) -> Option<u64> {
    use x509_parser::prelude::FromDer;
    let der = ::pem::parse(pem).ok()?;
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(der.contents()).ok()?;
    let digits = crl.crl_number()?.to_u64_digits();
    match digits.as_slice() {
        [] => Some(0),
        [n] => Some(*n),
        _ => None,
    }
}

fn store(path: &Path, text: &str) -> Result<(), FsError> {
    write_atomic(&FileSpec {
        path: path.to_path_buf(),
        bytes: Zeroizing::new(text.as_bytes().to_vec()),
        mode: 0o644,
        uid: None,
        gid: None,
        follow_symlinks: false,
    })
}

/// Makes sure every CA certificate that carries anything has a fresh CRL: each
/// intermediate (the issuing one and the retired ones, until their last leaf has
/// expired) for its leaves, each root for its intermediates. Re-signs what is missing,
/// stale, from another CA, or (with `force`) the intermediates' CRLs after a
/// revocation. A CRL whose key is not on this host (an offline root) is kept as it is.
pub fn refresh_crls(
    state: &StateDir,
    ca: &InternalCa,
    now: OffsetDateTime,
    force: bool,
) -> Result<Crls, TrustError> {
    let dir = state.ca_dir();
    let signed_by = |pem: &str, issuer: &crate::x509::CertInfo| -> bool {
        use x509_parser::prelude::FromDer;
        let Ok(der) = ::pem::parse(pem) else {
            return false;
        };
        let Ok((_, crl)) =
            x509_parser::revocation_list::CertificateRevocationList::from_der(der.contents())
        else {
            return false;
        };
        let Ok((_, cert)) = x509_parser::certificate::X509Certificate::from_der(&issuer.der) else {
            return false;
        };
        crl.verify_signature(cert.public_key()).is_ok()
    };
    let list: Vec<_> = revoked(state)
        .into_iter()
        .filter(Revoked::internal)
        .map(|r| {
            (
                r.serial,
                r.time,
                r.reason.as_deref().and_then(|x| parse_reason(x).ok()),
            )
        })
        .collect();
    let mut out = Crls {
        pems: Vec::new(),
        refresh_at: now + LEAF_CRL_REFRESH,
    };
    for signer in ca.crl_signers() {
        let path = dir.join(&signer.crl);
        // CRL numbers must grow with every CRL (RFC 5280 5.2.3), also within one second.
        let existing = std::fs::read_to_string(&path).ok();
        let previous_number = existing.as_deref().and_then(crl_number).unwrap_or(0);
        let number = (now.unix_timestamp().max(1) as u64).max(previous_number + 1);
        let existing = existing.filter(|p| signed_by(p, signer.cert));
        let times = existing.as_deref().and_then(crl_next_update);
        let due = match times {
            Some((this, next)) if signer.root => now >= this + (next - this) / 2,
            Some((this, _)) => now >= this + LEAF_CRL_REFRESH || force,
            None => true,
        };
        let have_key = signer.key.exists() || signer.cert.der == ca.intermediate.der;
        let pem = match existing {
            Some(pem) if !due => pem,
            Some(pem) if !have_key => {
                tracing::warn!(ca = %signer.cert.subject, "a CRL is past half its life and its key is not on this host; sign a new one where the key is");
                pem
            }
            None if !have_key && signer.cert.der != ca.root.der => continue,
            _ => {
                let (validity, entries) = if signer.root {
                    (ROOT_CRL_VALIDITY, &[][..])
                } else {
                    (LEAF_CRL_VALIDITY, &list[..])
                };
                let next = (now + validity)
                    .min(signer.cert.not_after)
                    .max(now + time::Duration::seconds(1));
                let pem = ca.sign_crl_as(signer.cert, &signer.key, entries, now, next, number)?;
                store(&path, &pem)?;
                tracing::info!(ca = %signer.cert.subject, revoked = entries.len(), next_update = %rfc3339(next), "signed a CRL");
                pem
            }
        };
        if !signer.root {
            if let Some((this, _)) = crl_next_update(&pem) {
                out.refresh_at = out.refresh_at.min(this + LEAF_CRL_REFRESH);
            }
        }
        out.pems.push(pem);
    }
    Ok(out)
}

/// What a trust target must hold.
fn contents(spec: &TrustSpec, ca: &InternalCa, crls: &Crls) -> String {
    match spec.contents {
        TrustContents::Roots => ca.root_pem(),
        TrustContents::Chain => {
            let mut all = ca.root_pem();
            for c in ca.intermediates() {
                all.push_str(&c.to_pem());
            }
            all
        }
        TrustContents::Crl => crls.pems.concat(),
    }
}

/// The result of bringing the trust targets up to date.
#[derive(Debug, Default)]
pub struct TrustSync {
    /// Servers to reload because a target of theirs changed.
    pub reload: Vec<String>,
    /// Commands to run after the reloads (`run:` of targets that changed).
    pub run: Vec<Vec<String>>,
    pub errors: Vec<String>,
    pub refresh_at: Option<OffsetDateTime>,
    /// Servers that still owed a reload from an earlier pass.
    pub pending_before: Vec<String>,
}

fn pending_path(state: &StateDir) -> PathBuf {
    state.root.join("pending-reloads.json")
}

/// Servers that have not yet loaded the current trust material.
pub fn pending(state: &StateDir) -> std::collections::BTreeSet<String> {
    std::fs::read(pending_path(state))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

pub fn set_pending(
    state: &StateDir,
    servers: &std::collections::BTreeSet<String>,
) -> Result<(), FsError> {
    if servers.is_empty() {
        return match std::fs::remove_file(pending_path(state)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FsError::Io {
                path: pending_path(state),
                action: "cannot remove",
                source: e,
            }),
            _ => Ok(()),
        };
    }
    write_atomic(&FileSpec {
        path: pending_path(state),
        bytes: Zeroizing::new(serde_json::to_vec(servers).expect("serializes")),
        mode: 0o600,
        uid: None,
        gid: None,
        follow_symlinks: false,
    })
}

/// Writes every trust target whose content differs from what it must hold.
/// The caller holds the state lock.
pub fn sync(config: &Config, state: &StateDir, ca: &InternalCa, now: OffsetDateTime) -> TrustSync {
    let mut out = TrustSync::default();
    // Servers that missed earlier trust updates are reloaded again, whatever changes now.
    let before = pending(state);
    out.pending_before = before.iter().cloned().collect();
    out.reload.extend(before);
    if config.trust.is_empty() {
        return out;
    }
    let crls = match refresh_crls(state, ca, now, false) {
        Ok(c) => c,
        Err(e) => {
            out.errors.push(format!("cannot prepare CRLs: {e}"));
            return out;
        }
    };
    out.refresh_at = Some(crls.refresh_at);
    for t in &config.trust {
        let want = contents(t, ca, &crls);
        let target = match crate::fsutil::resolve_target(&t.path, t.follow_symlinks) {
            Ok(p) => p,
            Err(e) => {
                out.errors.push(e.to_string());
                continue;
            }
        };
        // Read up to the size it must have: a bigger file (or anything but a regular
        // file) differs, and is replaced.
        if crate::fsread::read_regular(&target, want.len() as u64)
            .is_ok_and(|have| have.as_slice() == want.as_bytes())
        {
            continue;
        }
        let spec = FileSpec {
            path: t.path.clone(),
            bytes: Zeroizing::new(want.into_bytes()),
            // Trust material is public: readable by all, writable by none but the owner.
            mode: 0o644,
            uid: t.owner.as_ref().map(|p| p.id),
            gid: t.group.as_ref().map(|p| p.id),
            follow_symlinks: t.follow_symlinks,
        };
        match write_atomic(&spec) {
            Ok(()) => {
                tracing::info!(path = %t.path.display(), "trust file updated");
                out.reload.extend(t.reload.iter().cloned());
                if let Some(cmd) = &t.run {
                    out.run.push(cmd.clone());
                }
            }
            Err(e) => out.errors.push(e.to_string()),
        }
    }
    out.reload.sort();
    out.reload.dedup();
    out
}

/// Runs the `run:` commands of changed trust targets, one after the other, each killed
/// after `config::DEFAULT_COMMAND_TIMEOUT`; failures are logged with the command and
/// its output (the trust file is already in place, so there is nothing to undo).
pub fn run_commands(cmds: &[Vec<String>]) {
    for cmd in cmds {
        let _ = run_command(cmd, crate::config::DEFAULT_COMMAND_TIMEOUT);
    }
}

/// Runs one `run:` command and logs how it went; the error is what was logged.
fn run_command(cmd: &[String], timeout: std::time::Duration) -> Result<(), String> {
    use crate::process::{run, show_command, NO_ENV};
    let command = show_command(cmd);
    match run(cmd, NO_ENV, timeout) {
        Ok(done) if done.status.success() => {
            tracing::info!(%command, output = %done.output, "trust command ran");
            Ok(())
        }
        Ok(done) => {
            let error = format!(
                "trust command `{command}` failed ({}):\n{}",
                done.status, done.output
            );
            tracing::error!(%command, status = %done.status, output = %done.output, "trust command failed; fix it and run it by hand (the trust file is already updated)");
            Err(error)
        }
        Err(e) => {
            let error = format!("trust command: {e}");
            tracing::error!(%command, error = %e, "trust command did not run to its end; fix it and run it by hand (the trust file is already updated)");
            Err(error)
        }
    }
}

#[cfg(test)]
mod run_tests {
    use super::run_command;
    use std::time::{Duration, Instant};

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn trust_commands_report_failures_and_are_killed_at_their_deadline() {
        run_command(&argv(&["true"]), Duration::from_secs(10)).unwrap();
        let err = run_command(
            &argv(&["sh", "-c", "echo no ca dir >&2; exit 2"]),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(
            err.contains("`sh -c 'echo no ca dir >&2; exit 2'` failed"),
            "{err}"
        );
        assert!(err.contains("no ca dir"), "{err}");
        let started = Instant::now();
        let err = run_command(&argv(&["sleep", "600"]), Duration::from_millis(200)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.contains("`sleep 600` did not finish"), "{err}");
        let err =
            run_command(&argv(&["/nonexistent/update-ca"]), Duration::from_secs(1)).unwrap_err();
        assert!(
            err.contains("cannot start `/nonexistent/update-ca`"),
            "{err}"
        );
    }
}
