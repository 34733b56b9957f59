//! `certkeeper renew`: issue and install what needs it; exit 1 if any renewal failed.

use super::CliError;
use crate::config::Config;
use crate::policy::{relative, rfc3339};
use crate::reconcile::{renew, Outcome, RenewOptions};
use time::OffsetDateTime;

pub fn run(
    config: &Config,
    names: &[String],
    force: bool,
    dry_run: bool,
    now: OffsetDateTime,
) -> Result<u8, CliError> {
    let reports = renew(
        config,
        names,
        &RenewOptions {
            force,
            dry_run,
            check_served: false,
            clean_temp_files: true,
        },
        now,
    )
    .map_err(|e| {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Runtime(e.to_string())
        }
    })?;
    let mut failed = 0;
    for r in &reports {
        match &r.outcome {
            Outcome::Unchanged { renew_at, .. } => {
                println!(
                    "{}: ok, next renewal {} ({})",
                    r.name,
                    relative(*renew_at, now),
                    rfc3339(*renew_at)
                )
            }
            Outcome::WouldRenew(reason) => println!("{}: would renew ({reason})", r.name),
            Outcome::Renewed {
                reason,
                serial,
                not_after,
                notes,
                ..
            } => {
                println!(
                    "{}: renewed ({reason}); serial {serial}, valid until {}",
                    r.name,
                    rfc3339(*not_after)
                );
                for note in notes {
                    println!("{}: warning: {note}", r.name);
                }
            }
            Outcome::Failed { reason, error, .. } => {
                failed += 1;
                let why = reason
                    .as_ref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                println!("{}: FAILED{why}: {error}", r.name);
            }
        }
    }
    if failed > 0 {
        eprintln!(
            "{failed} of {} certificate(s) failed; the files already in place were kept",
            reports.len()
        );
        return Ok(1);
    }
    Ok(0)
}
