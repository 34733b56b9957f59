//! `certkeeper renew`: issue and install what needs it, run the hooks of what happened;
//! exit 1 if any renewal failed (hooks never change the exit code).

use super::CliError;
use crate::config::Config;
use crate::hooks::{pass_events, HookRunner};
use crate::policy::{relative, rfc3339};
use crate::reconcile::{plan_for, renew, CertReport, Outcome, RenewError, RenewOptions};
use crate::state::StateDir;
use std::time::Instant;
use time::OffsetDateTime;

pub fn run(
    config: &Config,
    names: &[String],
    force: bool,
    dry_run: bool,
    now: OffsetDateTime,
) -> Result<u8, CliError> {
    let cli_err = |e: RenewError| {
        if e.is_usage() {
            CliError::Usage(e.to_string())
        } else {
            CliError::Runtime(e.to_string())
        }
    };
    if dry_run {
        // The plan a real run would follow, decided by the same function; as `check`
        // prints it.
        let plan = plan_for(config, names, force, now).map_err(cli_err)?;
        print!("{}", plan.render(now));
        return Ok(0);
    }
    let reports = renew(
        config,
        names,
        &RenewOptions {
            force,
            check_served: false,
            clean_temp_files: true,
            skip_trust: false,
        },
        now,
    )
    .map_err(cli_err)?;
    let hooks = fire_hooks(config, &reports, now);
    let code = report(&reports, now);
    if let Some(runner) = hooks {
        // Every hook is killed at its deadline, so this bound is never reached unless
        // something is badly wrong; then we exit rather than hang.
        let budget = runner.budget();
        if !runner.drain(Instant::now() + budget) {
            tracing::warn!(
                waited_s = budget.as_secs(),
                "hooks are still running; exiting without them"
            );
        }
    }
    Ok(code)
}

/// Fires the hooks of this pass (on a background worker) and returns the runner to
/// drain, or None when there is nothing to run.
fn fire_hooks(config: &Config, reports: &[CertReport], now: OffsetDateTime) -> Option<HookRunner> {
    let planned = pass_events(config, reports, now);
    if planned.is_empty() {
        return None;
    }
    let state = StateDir::new(&config.state_dir);
    let events = if planned.needs_state() {
        // `expiring` remembers what it fired in the state directory, shared with the
        // daemon: take the lock for that read and write.
        match state.lock() {
            Ok(lock) => {
                let events = planned.settle(config, &state);
                drop(lock);
                events
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot lock the state directory; `expiring` hooks wait for the next run");
                planned.without_expiring()
            }
        }
    } else {
        planned.settle(config, &state)
    };
    let runner = HookRunner::new();
    runner.fire(config, events);
    Some(runner)
}

/// Prints one line per certificate; returns the exit code.
fn report(reports: &[CertReport], now: OffsetDateTime) -> u8 {
    let mut failed = 0;
    for r in reports {
        match &r.outcome {
            Outcome::Unchanged { renew_at, .. } => {
                println!(
                    "{}: ok, next renewal {} ({})",
                    r.name,
                    relative(*renew_at, now),
                    rfc3339(*renew_at)
                )
            }
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
        return 1;
    }
    0
}
