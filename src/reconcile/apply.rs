//! After the installs of a pass: each server's config test (once), its reload (once),
//! verification of what is served, and the rollback of every certificate whose server
//! failed a step; typed outcomes per server and per certificate.

use super::clients::Clients;
use super::*;
use crate::verify::VerifyError;

/// Config-tests and reloads every server the installed certificates name (once each),
/// verifies what is served, and rolls back the certificates whose server failed.
pub(super) fn apply_to_servers(
    config: &Config,
    staged: &mut [Box<Staged>],
    stale: &BTreeSet<String>,
    cancel: &AtomicBool,
    clients: &Clients,
) -> ServerActivity {
    let mut activity = ServerActivity::default();
    let installed = |s: &Staged| s.error.is_none();
    let mut wanted: BTreeSet<String> = stale.clone();
    for st in staged.iter().filter(|s| installed(s)) {
        wanted.extend(st.spec.reload.iter().cloned());
    }
    // Config tests first: a failing test rolls back every certificate of that server
    // before anything is reloaded. A server that is not running is tested too (it will
    // read these files when it starts) but has nothing to reload.
    let mut failed: BTreeMap<String, Arc<crate::server::ServerError>> = BTreeMap::new();
    for name in &wanted {
        let Some(server) = config.servers.get(name) else {
            continue;
        };
        match crate::server::running(server) {
            Ok(()) => {
                activity.running.insert(name.clone());
            }
            Err(why) => {
                activity.not_running.insert(name.clone(), why);
            }
        }
        if let Err(e) = crate::server::config_test(server) {
            tracing::error!(server = %name, error = %e, "config test failed; rolling back");
            let e = Arc::new(e);
            activity
                .servers
                .insert(name.clone(), ServerOutcome::TestFailed(e.clone()));
            failed.insert(name.clone(), e);
        }
    }
    for st in staged.iter_mut().filter(|s| s.error.is_none()) {
        if let Some((name, e)) = st
            .spec
            .reload
            .iter()
            .find_map(|s| failed.get(s).map(|e| (s, e.clone())))
        {
            st.roll_back(|rollback| Failure::Server {
                step: ServerStep::ConfigTest,
                server: name.clone(),
                error: e,
                rollback,
            });
        }
    }
    // Reload each server that passed and still has something new to serve.
    let mut reloaded: BTreeSet<String> = BTreeSet::new();
    for name in wanted.iter().filter(|n| !failed.contains_key(*n)) {
        let needed = stale.contains(name)
            || staged
                .iter()
                .any(|s| s.error.is_none() && s.spec.reload.contains(name));
        let Some(server) = config.servers.get(name) else {
            continue;
        };
        if !needed {
            continue;
        }
        if let Some(why) = activity.not_running.get(name) {
            let kind = server_kind(server);
            let mut installed = 0;
            for st in staged
                .iter_mut()
                .filter(|s| s.error.is_none() && s.spec.reload.contains(name))
            {
                st.notes.push(format!(
                    "server `{name}` is not running ({why}): reload skipped; {kind} will load the new files when it starts"
                ));
                installed += 1;
            }
            if installed > 0 {
                tracing::warn!(server = %name, reason = %why, "{kind} is not running; it will load the new files when it starts (reload skipped)");
            }
            activity
                .servers
                .insert(name.clone(), ServerOutcome::Skipped(why.clone()));
            continue;
        }
        let result = crate::server::reload(server);
        activity.reload_results.push((name.clone(), result.is_ok()));
        match result {
            Ok(()) => {
                tracing::info!(server = %name, "reloaded");
                reloaded.insert(name.clone());
                activity
                    .servers
                    .insert(name.clone(), ServerOutcome::Reloaded);
            }
            Err(e) => {
                tracing::error!(server = %name, error = %e, "reload failed; rolling back");
                let e = Arc::new(e);
                activity
                    .servers
                    .insert(name.clone(), ServerOutcome::ReloadFailed(e.clone()));
                for st in staged
                    .iter_mut()
                    .filter(|s| s.error.is_none() && s.spec.reload.contains(name))
                {
                    st.roll_back(|rollback| Failure::Server {
                        step: ServerStep::Reload,
                        server: name.clone(),
                        error: e.clone(),
                        rollback,
                    });
                }
            }
        }
    }
    // Verify: each target must serve the new leaf; if not, roll back and reload again.
    // All targets are verified at once, so a pass waits at most one timeout. When a
    // stop was requested the wait is skipped: the files are installed and reloaded, and
    // the next start checks what is served (and reloads if it is stale).
    let mut again: BTreeSet<String> = BTreeSet::new();
    let to_verify: Vec<(usize, usize)> = staged
        .iter()
        .enumerate()
        .filter(|(_, st)| st.error.is_none())
        .filter(|(_, st)| {
            st.spec.reload.is_empty() || st.spec.reload.iter().any(|s| reloaded.contains(s))
        })
        .flat_map(|(i, st)| (0..st.spec.verify.len()).map(move |t| (i, t)))
        .collect();
    if cancel.load(Ordering::Relaxed) && !to_verify.is_empty() {
        tracing::warn!(
            targets = to_verify.len(),
            "stopping: verification skipped; the next start checks what is served"
        );
        return finish(config, activity, again);
    }
    type Verdict = Result<Vec<crate::served::Problem>, VerifyError>;
    let results: Vec<((usize, usize), Verdict)> = std::thread::scope(|scope| {
        let handles: Vec<_> = to_verify
            .iter()
            .map(|&(i, t)| {
                let st = &staged[i];
                let target = &st.spec.verify[t];
                let fingerprint = &st.signed.fingerprint;
                let chain: Vec<Vec<u8>> = st.signed.chain.iter().map(|c| c.der.clone()).collect();
                scope.spawn(move || {
                    let r = clients.wait(st.spec, target, fingerprint, Some(&chain));
                    ((i, t), r)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("verify thread"))
            .collect()
    });
    for ((i, t), result) in results {
        let st = &mut staged[i];
        let target = st.spec.verify[t].clone();
        match result {
            Ok(problems) => {
                activity.served.push(ServedLook {
                    name: st.spec.name.clone(),
                    target: target.label.clone(),
                    matches: true,
                    verified: problems.is_empty(),
                });
                if problems.is_empty() {
                    tracing::info!(certificate = %st.spec.name, connect = %target.connect, "verified: the new certificate is served, and a client accepts it");
                    activity
                        .findings
                        .push((st.spec.name.clone(), target.label.clone(), None));
                    continue;
                }
                // The leaf is ours; what a client refuses is the server's reading of its
                // files or a setting of its own, not this pair's fault: the pair stays
                // (a rollback would serve the old certificate until it expires), the
                // problem is said (log, ledger, status, metrics).
                let note = super::clients::note(&target, &problems);
                tracing::warn!(certificate = %st.spec.name, "served, but clients refuse it: {note}");
                st.notes.push(format!("served at {note}"));
                activity.findings.push((
                    st.spec.name.clone(),
                    target.label.clone(),
                    Some(crate::drift::Finding { drift: false, note }),
                ));
            }
            Err(e) => {
                if st.error.is_some() {
                    continue; // another target of it failed first
                }
                tracing::error!(certificate = %st.spec.name, error = %e, "verify failed; rolling back");
                let e = Arc::new(e);
                for server in st.spec.reload.iter() {
                    activity.servers.insert(
                        server.clone(),
                        ServerOutcome::VerifyFailed {
                            certificate: st.spec.name.clone(),
                            error: e.clone(),
                        },
                    );
                }
                st.roll_back(|rollback| Failure::Verify {
                    connect: target.connect.to_string(),
                    error: e,
                    rollback,
                });
                again.extend(st.spec.reload.iter().cloned());
            }
        }
    }
    finish(config, activity, again)
}

/// Reloads again the servers whose certificates were rolled back after verification.
fn finish(
    config: &Config,
    mut activity: ServerActivity,
    again: BTreeSet<String>,
) -> ServerActivity {
    for name in again {
        if let Some(server) = config.servers.get(&name) {
            let result = crate::server::reload(server);
            activity.reload_results.push((name.clone(), result.is_ok()));
            if let Err(e) = result {
                tracing::error!(server = %name, error = %e, "reload after rollback failed");
            }
        }
    }
    activity
}

/// What to call a server in messages: the program for nginx and Apache, else its name.
fn server_kind(server: &crate::config::ServerSpec) -> String {
    match server.kind {
        crate::config::ServerKind::Nginx => "nginx".into(),
        crate::config::ServerKind::Apache => "apache".into(),
        _ => format!("server `{}`", server.name),
    }
}
