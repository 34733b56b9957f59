//! After the installs of a pass: each server's config test (once), its reload (once),
//! verification of what is served, and the rollback of every certificate whose server
//! failed a step; typed outcomes per server and per certificate.

use super::*;

/// Config-tests and reloads every server the installed certificates name (once each),
/// verifies what is served, and rolls back the certificates whose server failed.
pub(super) fn apply_to_servers(
    config: &Config,
    staged: &mut [Staged],
    stale: &BTreeSet<String>,
    cancel: &AtomicBool,
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
    // Verify: the server must serve the new leaf; if not, roll back and reload again.
    // All certificates are verified at once, so a pass waits at most one timeout. When
    // a stop was requested the wait is skipped: the files are installed and reloaded,
    // and the next start checks what is served (and reloads if it is stale).
    let mut again: BTreeSet<String> = BTreeSet::new();
    let to_verify: Vec<usize> = staged
        .iter()
        .enumerate()
        .filter(|(_, st)| st.error.is_none() && st.spec.verify.is_some())
        .filter(|(_, st)| {
            st.spec.reload.is_empty() || st.spec.reload.iter().any(|s| reloaded.contains(s))
        })
        .map(|(i, _)| i)
        .collect();
    if cancel.load(Ordering::Relaxed) && !to_verify.is_empty() {
        tracing::warn!(
            certificates = to_verify.len(),
            "stopping: verification skipped; the next start checks what is served"
        );
    } else {
        let results: Vec<(
            usize,
            Result<crate::verify::Served, crate::verify::VerifyError>,
        )> = std::thread::scope(|scope| {
            let handles: Vec<_> = to_verify
                .iter()
                .map(|&i| {
                    let st = &staged[i];
                    let v = st.spec.verify.as_ref().expect("filtered on verify");
                    let der = &st.issued.leaf.der;
                    scope.spawn(move || {
                        (
                            i,
                            crate::verify::wait_for_leaf(
                                &v.connect,
                                &v.server_name,
                                der,
                                v.timeout,
                            ),
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("verify thread"))
                .collect()
        });
        for (i, result) in results {
            let st = &mut staged[i];
            let v = st.spec.verify.clone().expect("filtered on verify");
            match result {
                Ok(served) => {
                    tracing::info!(certificate = %st.spec.name, connect = %v.connect, "verified: the new certificate is served");
                    // The leaf is ours; a chain that differs is the server's reading of
                    // its files, not this pair's fault: the pair stays, the problem is
                    // said (log, ledger note, status).
                    let expected: Vec<Vec<u8>> =
                        st.issued.chain.iter().map(|c| c.der.clone()).collect();
                    if let Some(problem) = crate::served::judge(&served[1..], &expected) {
                        tracing::warn!(certificate = %st.spec.name, connect = %v.connect, "{problem}");
                        st.notes.push(format!(
                            "{}{} (SNI {}): {problem}",
                            crate::served::NOTE_PREFIX,
                            v.connect,
                            v.server_name
                        ));
                    }
                }
                Err(e) => {
                    tracing::error!(certificate = %st.spec.name, error = %e, "verify failed; rolling back");
                    let e = Arc::new(e);
                    for server in &st.spec.reload {
                        activity.servers.insert(
                            server.clone(),
                            ServerOutcome::VerifyFailed {
                                certificate: st.spec.name.clone(),
                                error: e.clone(),
                            },
                        );
                    }
                    st.roll_back(|rollback| Failure::Verify {
                        connect: v.connect.to_string(),
                        error: e,
                        rollback,
                    });
                    again.extend(st.spec.reload.iter().cloned());
                }
            }
        }
    }
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
