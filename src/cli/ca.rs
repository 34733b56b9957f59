//! `certkeeper ca init|show|bundle|revoke|crl|encrypt`: the internal CA.

use super::{CliError, ConfigArg};
use crate::duration::format_duration;
use crate::encoding::colon_hex;
use crate::issuer::InternalCa;
use crate::policy::{relative, rfc3339};
use crate::reconcile::ensure_ca;
use crate::state::StateDir;
use crate::x509::CertInfo;
use clap::Subcommand;
use time::OffsetDateTime;

#[derive(Subcommand, Debug)]
pub enum CaCommand {
    /// Create the root and intermediate CA (never overwrites an existing one)
    Init {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Replace the intermediate now (also applies new `ca.permitted`/`ca.excluded`);
    /// the daemon does this by itself before the intermediate runs short
    Rotate {
        #[command(flatten)]
        config: ConfigArg,
        /// The root's private key, when it is not kept in the CA directory (root
        /// offline); it is read, used and never copied
        #[arg(long, value_name = "FILE")]
        root_key: Option<std::path::PathBuf>,
    },
    /// Publish a new root now: trust targets carry both roots, and issuance moves to
    /// the new one after `ca.root_overlap`
    RotateRoot {
        #[command(flatten)]
        config: ConfigArg,
        /// The current root's private key, when it is not kept in the CA directory; it
        /// is read, used and never copied (the new root's key is written to
        /// `next-root.key` in the CA directory: move it offline too, and give it to
        /// `ca rotate --root-key` when issuance moves)
        #[arg(long, value_name = "FILE")]
        root_key: Option<std::path::PathBuf>,
    },
    /// Describe the CA: every root and intermediate it keeps, which one issues, and
    /// when each is replaced
    Show {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Print the trust bundle (the root certificate) in PEM
    Bundle {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Revoke a certificate this CA issued, refresh CRL trust targets, reload their servers
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// Serial in hex, as `status`, `inspect` or the ledger print it (colons allowed)
        serial: String,
        /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
        /// cessation-of-operation, privilege-withdrawn
        #[arg(long)]
        reason: Option<String>,
    },
    /// Print the current CRLs (intermediate's, then root's) in PEM
    Crl {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// Encrypt the CA keys at rest with the passphrase of `ca.key_passphrase_file` (or
    /// of the `ca-passphrase` systemd credential)
    Encrypt {
        #[command(flatten)]
        config: ConfigArg,
    },
}

fn runtime(e: impl std::fmt::Display) -> CliError {
    CliError::Runtime(e.to_string())
}

pub fn run(cmd: CaCommand, now: OffsetDateTime) -> Result<u8, CliError> {
    match cmd {
        CaCommand::Init { config } => {
            let config = config.load()?;
            let state = StateDir::new(&config.state_dir);
            let _lock = state.lock().map_err(runtime)?;
            if InternalCa::exists(&state.ca_dir()) {
                let ca = InternalCa::load(&config.ca, &state.ca_dir()).map_err(runtime)?;
                println!(
                    "A CA already exists in {}; it was left as it is.",
                    ca.dir.display()
                );
                describe(&ca, now);
                return Ok(0);
            }
            let ca = ensure_ca(&config, &state, now).map_err(runtime)?;
            println!("Created the internal CA in {}.", ca.dir.display());
            describe(&ca, now);
            Ok(0)
        }
        CaCommand::Show { config } => {
            let config = config.load()?;
            let ca = InternalCa::load(&config.ca, &StateDir::new(&config.state_dir).ca_dir())
                .map_err(runtime)?;
            describe(&ca, now);
            let (line, alarms) = crate::status::ca_summary(&config, &ca, now);
            println!("{line}");
            for a in &alarms {
                eprintln!("warning: {a}");
            }
            Ok(if alarms.is_empty() { 0 } else { 1 })
        }
        CaCommand::Rotate { config, root_key } => {
            rotate(config, root_key, crate::issuer::Force::Intermediate, now)
        }
        CaCommand::RotateRoot { config, root_key } => {
            rotate(config, root_key, crate::issuer::Force::Root, now)
        }
        CaCommand::Revoke {
            config,
            serial,
            reason,
        } => {
            let config = config.load()?;
            revoke_serial(&config, &serial, reason.as_deref(), now)
        }
        CaCommand::Crl { config } => {
            let config = config.load()?;
            let state = StateDir::new(&config.state_dir);
            let _lock = state.lock().map_err(runtime)?;
            let ca = InternalCa::load(&config.ca, &state.ca_dir()).map_err(runtime)?;
            let crls = crate::trust::refresh_crls(&state, &ca, now, false).map_err(runtime)?;
            print!("{}", crls.pems.concat());
            Ok(0)
        }
        CaCommand::Encrypt { config } => {
            let config = config.load()?;
            let state = StateDir::new(&config.state_dir);
            let _lock = state.lock().map_err(runtime)?;
            let pass = crate::cakey::passphrase(&config.ca)
                .map_err(runtime)?
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "no passphrase to encrypt the CA keys with: set `ca.key_passphrase_file` in {} to a file of mode 0600 that holds it (one line), or run certkeeper with the systemd credential `{}` (LoadCredentialEncrypted={}:...)",
                        config.file.display(),
                        crate::cakey::CREDENTIAL_NAME,
                        crate::cakey::CREDENTIAL_NAME
                    ))
                })?;
            let done = crate::cakey::encrypt_all(&state.ca_dir(), &pass).map_err(|errors| {
                let all: Vec<String> = errors.iter().map(|e| e.to_string()).collect();
                CliError::Runtime(format!("{}\nno key was changed", all.join("\nerror: ")))
            })?;
            for outcome in done {
                println!("{outcome}");
            }
            Ok(0)
        }
        CaCommand::Bundle { config } => {
            let config = config.load()?;
            let ca = InternalCa::load(&config.ca, &StateDir::new(&config.state_dir).ca_dir())
                .map_err(runtime)?;
            print!("{}", ca.root_pem());
            Ok(0)
        }
    }
}

/// `ca rotate` and `ca rotate-root`: the step asked for (and whatever else is due),
/// then the trust targets and the certificates a pass would renew, as `renew --all`.
fn rotate(
    config: ConfigArg,
    root_key: Option<std::path::PathBuf>,
    force: crate::issuer::Force,
    now: OffsetDateTime,
) -> Result<u8, CliError> {
    let config = config.load()?;
    let state = StateDir::new(&config.state_dir);
    let _lock = state.lock().map_err(runtime)?;
    let ca = crate::reconcile::maintain_ca(&config, &state, now, force, root_key.as_deref())
        .map_err(runtime)?;
    for change in &ca.changes {
        println!("{}", change.message);
    }
    if let (crate::issuer::Force::Root, Some(n)) = (force, &ca.manifest.next_root) {
        if ca.changes.is_empty() {
            println!(
                "root generation {} is already published (since {}); issuance moves to it once ca.root_overlap has passed",
                n.generation,
                rfc3339(n.published_at)
            );
        }
    }
    let all: Vec<_> = config.certificates.iter().collect();
    let (mut failed, activity) = pass(&config, &state, Some(&ca), &all, now, "renewed");
    for server in &activity.trust_pending {
        failed = true;
        eprintln!("error: server `{server}` has not loaded the new trust material; the next `certkeeper renew` or the daemon retries");
    }
    describe(&ca, now);
    Ok(u8::from(failed))
}

/// A pass over `selected` as `renew` runs it (trust targets and their servers
/// included), one line per certificate it `did` (or could not); whether any failed.
/// Revokes `serial` where it was issued: on the internal CA's CRLs, or at the ACME CA
/// that issued it (`revokeCert`; never on the internal CRLs). Then the CRL trust targets
/// are brought up to date and reloaded, and a managed certificate that carried the
/// serial is reissued in the same pass, as `renew` would. `ca revoke` and `revoke`.
pub(super) fn revoke_serial(
    config: &crate::config::Config,
    serial: &str,
    reason: Option<&str>,
    now: OffsetDateTime,
) -> Result<u8, CliError> {
    use crate::trust::TrustError;
    let state = StateDir::new(&config.state_dir);
    let _lock = state.lock().map_err(runtime)?;
    let usage = |e: TrustError| match e {
        TrustError::UnknownSerial(_) | TrustError::BadReason(_) => CliError::Usage(e.to_string()),
        e => runtime(e),
    };
    if let Some(r) = reason {
        crate::trust::parse_reason(r).map_err(usage)?;
    }
    let issued = crate::trust::issued_entry(&state, serial).map_err(usage)?;
    let wanted = crate::trust::normalize_serial(serial);
    let already = crate::trust::revoked(&state)
        .iter()
        .any(|r| r.serial == wanted);
    let foreign = issued.issuer.clone().filter(|i| i != "internal");
    let (r, ca, at) = match foreign {
        Some(issuer) => {
            let spec = config.issuers.get(&issuer).ok_or_else(|| {
                CliError::Runtime(format!(
                    "serial {wanted} was issued by the ACME CA `{issuer}`, which the configuration no longer names under `issuers:`; revoke it there"
                ))
            })?;
            if !already {
                let (der, key) = issued_pair(config, &state, issued.name.as_deref(), &wanted)?;
                crate::issuer::acme::AcmeIssuer::new(spec, &config.state_dir)
                    .revoke(&der, key.as_deref().map(String::as_str), reason)
                    .map_err(|e| {
                        CliError::Runtime(format!(
                            "the ACME CA `{issuer}` did not revoke serial {wanted}: {e}; nothing was recorded"
                        ))
                    })?;
            }
            let r = crate::trust::record_foreign(
                &state,
                &wanted,
                reason,
                issued.name.clone(),
                &issuer,
                now,
            )
            .map_err(runtime)?;
            let ca = crate::reconcile::ensure_ca_if_used(config, &state, now).map_err(runtime)?;
            (r, ca, format!(" at the ACME CA `{issuer}`"))
        }
        None => {
            let ca = InternalCa::load(&config.ca, &state.ca_dir()).map_err(runtime)?;
            let r = crate::trust::revoke(&state, &ca, serial, reason, now).map_err(usage)?;
            (r, Some(ca), String::new())
        }
    };
    let who = r
        .name
        .as_deref()
        .map(|n| format!(" (`{n}`)"))
        .unwrap_or_default();
    if already {
        println!(
            "serial {}{who} was already revoked{at} at {}",
            r.serial,
            crate::policy::rfc3339(r.time)
        );
    } else {
        println!("revoked serial {}{who}{at}", r.serial);
    }
    // Bring the CRL trust targets up to date and reload their servers, exactly as a
    // renewal pass would; a managed certificate that carried the serial is reissued in
    // the same pass (its peers would refuse it from now on).
    let owner: Vec<_> = config
        .certificates
        .iter()
        .filter(|c| r.name.as_deref() == Some(c.name.as_str()))
        .collect();
    let (failed, activity) = pass(config, &state, ca.as_ref(), &owner, now, "reissued");
    for (server, ok) in &activity.reload_results {
        if *ok {
            println!("reloaded `{server}`");
        }
    }
    if !activity.trust_pending.is_empty() {
        for server in &activity.trust_pending {
            let why = activity
                .servers
                .get(server)
                .filter(|o| o.failed())
                .map(|o| o.to_string())
                .unwrap_or_else(|| "not reloaded".into());
            eprintln!("error: server `{server}` has not loaded the new CRL: {why}");
        }
        eprintln!(
            "the revocation is recorded; the reload is retried by the next `certkeeper renew` or by the running daemon. Fix the server and run `certkeeper renew --all`."
        );
        return Ok(1);
    }
    Ok(if failed { 1 } else { 0 })
}

/// The certificate `serial` of certificate `name`, DER: from its archived pair, else
/// from the installed files when they hold it.
/// The certificate of `serial` (archived or installed), with its private key (PEM) when
/// it is still there: a revocation can then be signed with it.
fn issued_pair(
    config: &crate::config::Config,
    state: &StateDir,
    name: Option<&str>,
    serial: &str,
) -> Result<(Vec<u8>, Option<zeroize::Zeroizing<String>>), CliError> {
    let missing = || {
        CliError::Runtime(format!(
            "the certificate of serial {serial} is neither archived nor installed any more, so it cannot be sent to its CA for revocation"
        ))
    };
    let name = name.ok_or_else(missing)?;
    let archived = state.archived_pair(name, serial).and_then(|(certs, key)| {
        crate::x509::parse_certs(&certs, "archived certificate")
            .ok()
            .and_then(|c| c.into_iter().next())
            .filter(|c| c.serial == serial)
            .map(|c| (c, key))
    });
    if let Some((c, key)) = archived {
        return Ok((c.der, Some(key)));
    }
    let spec = config
        .certificates
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(missing)?;
    match crate::observe::observe(spec, None) {
        // Observed as a matching pair: the key file holds this certificate's key.
        crate::policy::Seen::Present(p) if p.leaf.serial == serial => {
            Ok((p.leaf.der, crate::observe::key_pem(spec).ok()))
        }
        _ => Err(missing()),
    }
}

fn pass(
    config: &crate::config::Config,
    state: &StateDir,
    ca: Option<&InternalCa>,
    selected: &[&crate::config::CertSpec],
    now: OffsetDateTime,
    did: &str,
) -> (bool, crate::reconcile::ServerActivity) {
    let opts = crate::reconcile::RenewOptions::default();
    let cancel = std::sync::atomic::AtomicBool::new(false);
    let (reports, activity) = crate::reconcile::run_pass(crate::reconcile::Pass {
        config,
        state,
        ca,
        selected,
        opts: &opts,
        now,
        cancel: &cancel,
        cache: None,
    });
    let mut failed = false;
    for report in &reports {
        match &report.outcome {
            crate::reconcile::Outcome::Renewed { serial, .. } => {
                println!("{did} `{}`: new serial {serial}", report.name)
            }
            crate::reconcile::Outcome::Failed { error, .. } => {
                failed = true;
                eprintln!("error: `{}` could not be {did}: {error}", report.name);
            }
            _ => {}
        }
    }
    (failed, activity)
}

fn describe(ca: &InternalCa, now: OffsetDateTime) {
    let m = &ca.manifest;
    let mut shown: Vec<(String, &CertInfo, String)> = vec![(
        format!("root (generation {}, issuing)", m.root),
        &ca.root,
        "root.crt".into(),
    )];
    if let (Some(n), Some((c, _))) = (&m.next_root, &ca.next_root) {
        shown.push((
            format!(
                "root (generation {}, published {}, issues after the overlap)",
                n.generation,
                rfc3339(n.published_at)
            ),
            c,
            crate::issuer::internal::store::NEXT_ROOT_CRT.into(),
        ));
    }
    for (g, c) in &ca.old_roots {
        shown.push((
            format!("root (generation {g}, earlier, still trusted)"),
            c,
            crate::issuer::internal::store::old_root(*g, "crt"),
        ));
    }
    shown.push((
        format!("intermediate (generation {}, issuing)", m.intermediate),
        &ca.intermediate,
        "intermediate.crt".into(),
    ));
    for ((g, c), r) in ca.retired.iter().zip(&m.retired) {
        shown.push((
            format!(
                "intermediate (generation {g}, retired {}, kept until {})",
                rfc3339(r.retired_at),
                rfc3339(r.last_leaf)
            ),
            c,
            crate::issuer::internal::store::old_int(*g, "crt"),
        ));
    }
    if let Some(cross) = &ca.cross {
        shown.push((
            "cross certificate (issuing root signed by the earlier one, served in chains)".into(),
            cross,
            crate::issuer::internal::store::ROOT_CROSS.into(),
        ));
    }
    for (label, cert, file) in shown {
        println!("{label}: {}", ca.dir.join(file).display());
        print_cert(cert, now, "  ");
    }
    let at_rest =
        |file: &str| match crate::fsread::read_own_text(&ca.dir.join(file), crate::fsread::PEM_MAX)
        {
            Ok(pem) if crate::cakey::is_encrypted(&pem) => "encrypted at rest",
            Ok(_) => "not encrypted at rest (`certkeeper ca encrypt` encrypts it)",
            Err(_) => "unreadable",
        };
    if ca.has_root_key() {
        println!(
            "root key: present, {}; move it offline once you no longer need new intermediates",
            at_rest("root.key")
        );
    } else {
        println!("root key: not on this host");
    }
    println!("intermediate key: {}", at_rest("intermediate.key"));
}

pub fn print_cert(c: &CertInfo, now: OffsetDateTime, indent: &str) {
    println!("{indent}subject:   {}", c.subject);
    println!("{indent}issuer:    {}", c.issuer);
    if !c.sans.is_empty() || !c.other_names.is_empty() {
        let names: Vec<String> = c
            .sans
            .iter()
            .map(|s| s.to_string())
            .chain(c.other_names.iter().cloned())
            .collect();
        println!("{indent}SANs:      {}", names.join(", "));
    }
    let left = if now >= c.not_after {
        format!("EXPIRED {}", relative(c.not_after, now))
    } else if now < c.not_before {
        format!("NOT YET VALID, starts {}", relative(c.not_before, now))
    } else {
        format!(
            "{} left",
            format_duration(std::time::Duration::from_secs(
                (c.not_after - now).whole_seconds() as u64
            ))
        )
    };
    println!(
        "{indent}validity:  {} to {} ({left})",
        rfc3339(c.not_before),
        rfc3339(c.not_after)
    );
    println!("{indent}serial:    {}", c.serial);
    println!(
        "{indent}key:       {}",
        c.key_type.map(|k| k.as_str()).unwrap_or("unsupported type")
    );
    if c.is_ca {
        let pl = c
            .path_len
            .map(|p| format!(", path length {p}"))
            .unwrap_or_default();
        println!("{indent}CA:        yes{pl}");
    } else {
        println!(
            "{indent}usage:     {}",
            c.usage.map(|u| u.as_str()).unwrap_or("no TLS usage")
        );
    }
    println!(
        "{indent}sha256:    {}",
        colon_hex(&hex_bytes(&c.fingerprint))
    );
    if let Some(aki) = &c.authority_key_id {
        println!("{indent}issuer key id: {}", colon_hex(aki));
    }
}

fn hex_bytes(h: &str) -> Vec<u8> {
    (0..h.len())
        .step_by(2)
        .filter_map(|i| u8::from_str_radix(&h[i..i + 2], 16).ok())
        .collect()
}
