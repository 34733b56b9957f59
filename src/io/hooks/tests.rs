use super::*;
use crate::policy::Reason;
use std::path::Path;
use time::macros::datetime;

const NB: OffsetDateTime = datetime!(2030-01-01 00:00:00 UTC);

fn days(n: i64) -> time::Duration {
    time::Duration::days(n)
}

fn secs(n: i64) -> time::Duration {
    time::Duration::seconds(n)
}

fn config(yaml: &str) -> Config {
    crate::config::parse(yaml, Path::new("hooks-test.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

/// Global hooks for every event; `www` adds its own `renewed` hook and timeout;
/// `plain` has only the global ones.
fn with_hooks(state_dir: &Path) -> Config {
    config(&format!(
        "state_dir: {}\n\
         hooks:\n  renewed: [[g1, a], [g2]]\n  failed: [gfail]\n  expiring: [gexp]\n  timeout: 7s\n\
         certificates:\n\
         \x20 - name: www\n    sans: [www.example.internal]\n    files: {{ layout: nginx, cert: /tmp/x/www.crt, key: /tmp/x/www.key }}\n    hooks: {{ renewed: [own], timeout: 3s }}\n\
         \x20 - name: plain\n    sans: [plain.example.internal]\n    files: {{ layout: combined, cert: /tmp/x/plain.pem }}\n",
        state_dir.display()
    ))
}

fn report(name: &str, outcome: Outcome) -> CertReport {
    CertReport {
        name: name.into(),
        outcome,
    }
}

fn unchanged(serial: &str, not_before: OffsetDateTime, lifetime: time::Duration) -> Outcome {
    Outcome::Unchanged {
        renew_at: not_before + lifetime / 2,
        not_after: not_before + lifetime,
        serial: serial.into(),
        not_before,
        look_at: None,
    }
}

fn failed(error: &str, in_place: Option<(&str, OffsetDateTime, time::Duration)>) -> Outcome {
    Outcome::Failed {
        reason: Some(Reason::Forced),
        error: crate::reconcile::Failure::Key(error.into()),
        not_after: in_place.map(|(_, nb, l)| nb + l),
        serial: in_place.map(|(s, _, _)| s.to_string()),
        not_before: in_place.map(|(_, nb, _)| nb),
    }
}

#[test]
fn expiring_starts_in_the_last_tenth_of_validity() {
    let na = NB + days(100);
    let cases = [
        // (not_before, not_after, now, expected)
        (NB, na, NB, false),
        (NB, na, NB + days(90) - secs(1), false),
        (NB, na, NB + days(90), true),
        (NB, na, na - secs(1), true),
        (NB, na, na, true),
        // Expired and never warned about: still a warning, late.
        (NB, na, na + days(30), true),
        // Short lifetimes: 30 s, last 3 s.
        (NB, NB + secs(30), NB + secs(26), false),
        (NB, NB + secs(30), NB + secs(27), true),
        // No validity at all (or dates reversed): from notAfter on.
        (NB, NB, NB - secs(1), false),
        (NB, NB, NB, true),
        (NB + days(1), NB, NB - secs(1), false),
        (NB + days(1), NB, NB, true),
    ];
    for (i, (nb, na, now, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            in_last_tenth(nb, na, now),
            want,
            "case {i}: {nb} {na} {now}"
        );
    }
    assert_eq!(expiring_at(NB, na), NB + days(90));
    assert_eq!(expiring_at(NB + days(1), NB), NB);
}

#[test]
fn expiring_fires_once_per_serial() {
    let ev = |name: &str, serial: Option<&str>| HookEvent {
        kind: HookKind::Expiring,
        name: name.into(),
        serial: serial.map(str::to_string),
        not_after: None,
        files: vec![],
        error: None,
    };
    let names = |v: Vec<HookEvent>| -> Vec<String> {
        v.into_iter()
            .map(|e| format!("{}:{}", e.name, e.serial.unwrap_or_default()))
            .collect()
    };
    let mut fired = ExpiringFired::new();
    fired.insert("old".into(), "aa".into());
    let cases: Vec<(Vec<HookEvent>, Vec<&str>)> = vec![
        // The first sighting fires; a name already fired for this serial does not.
        (
            vec![ev("www", Some("01")), ev("old", Some("aa"))],
            vec!["www:01"],
        ),
        // Again, same serials: nothing.
        (vec![ev("www", Some("01")), ev("old", Some("aa"))], vec![]),
        // A new serial (renewed, then expiring again) fires again.
        (vec![ev("www", Some("02"))], vec!["www:02"]),
        // Twice in one pass: once.
        (
            vec![ev("api", Some("0f")), ev("api", Some("0f"))],
            vec!["api:0f"],
        ),
        // Without a serial there is nothing to remember it by: not fired.
        (vec![ev("gone", None)], vec![]),
    ];
    for (i, (candidates, want)) in cases.into_iter().enumerate() {
        assert_eq!(
            names(not_yet_fired(&mut fired, candidates)),
            want,
            "case {i}"
        );
    }
    assert_eq!(fired["www"], "02");
    assert!(!fired.contains_key("gone"));
}

#[test]
fn a_pass_becomes_events() {
    let dir = tempfile::tempdir().unwrap();
    let c = with_hooks(dir.path());
    let now = NB + days(95);
    let reports = vec![
        report(
            "www",
            Outcome::Renewed {
                reason: Reason::Forced,
                serial: "abc1".into(),
                not_after: now + days(90),
                renew_at: now + days(60),
                notes: Vec::new(),
            },
        ),
        // Nothing installed yet: failed without serial, no expiring.
        report("plain", failed("issuer down", None)),
        // A failure with an old certificate in its last tenth: failed + expiring.
        report("plain", failed("issuer down", Some(("0b", NB, days(100))))),
        // Unchanged, in its last tenth (renew_before below 10 %): expiring.
        report("www", unchanged("0c", NB, days(100))),
        // Unchanged and young: nothing.
        report("www", unchanged("0d", now - days(1), days(100))),
        // Not (or no longer) in the configuration: nothing.
        report("ghost", failed("x", None)),
    ];
    let pe = pass_events(&c, &reports, now);
    let www_files = vec![PathBuf::from("/tmp/x/www.crt"), "/tmp/x/www.key".into()];
    let plain_files = vec![PathBuf::from("/tmp/x/plain.pem")];
    assert_eq!(
        pe.events,
        vec![
            HookEvent {
                kind: HookKind::Renewed,
                name: "www".into(),
                serial: Some("abc1".into()),
                not_after: Some(now + days(90)),
                files: www_files.clone(),
                error: None,
            },
            HookEvent {
                kind: HookKind::Failed,
                name: "plain".into(),
                serial: None,
                not_after: None,
                files: plain_files.clone(),
                error: Some("issuer down".into()),
            },
            HookEvent {
                kind: HookKind::Failed,
                name: "plain".into(),
                serial: Some("0b".into()),
                not_after: Some(NB + days(100)),
                files: plain_files.clone(),
                error: Some("issuer down".into()),
            },
        ]
    );
    let expiring: Vec<(&str, Option<&str>)> = pe
        .expiring
        .iter()
        .map(|e| (e.name.as_str(), e.serial.as_deref()))
        .collect();
    assert_eq!(expiring, vec![("plain", Some("0b")), ("www", Some("0c"))]);
    assert!(pe.expiring.iter().all(|e| e.kind == HookKind::Expiring));
    assert!(pe.needs_state());

    // Without hooks configured, a pass makes no events at all.
    let bare = config(&format!(
        "state_dir: {}\ncertificates:\n  - name: www\n    sans: [www.example.internal]\n    files: {{ layout: combined, cert: /tmp/x/www.pem }}\n",
        dir.path().display()
    ));
    let pe = pass_events(&bare, &reports, now);
    assert!(pe.is_empty() && !pe.needs_state(), "{pe:?}");
}

#[test]
fn expiring_is_remembered_in_the_state_directory() {
    let dir = tempfile::tempdir().unwrap();
    let c = with_hooks(dir.path());
    let state = StateDir::new(dir.path());
    let now = NB + days(95);
    let pass = |serial: &str| {
        let reports = vec![report("www", unchanged(serial, NB, days(100)))];
        pass_events(&c, &reports, now).settle(&c, &state)
    };
    // A stale entry for a certificate that is gone from the configuration.
    std::fs::write(dir.path().join(EXPIRING_FILE), r#"{"removed":"77"}"#).unwrap();
    let first = pass("0c");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].kind, HookKind::Expiring);
    assert_eq!(first[0].serial.as_deref(), Some("0c"));
    // A restart reads the file: the same serial does not fire again.
    assert!(pass("0c").is_empty());
    let text = std::fs::read_to_string(dir.path().join(EXPIRING_FILE)).unwrap();
    let saved: ExpiringFired = serde_json::from_str(&text).unwrap();
    assert_eq!(saved, ExpiringFired::from([("www".into(), "0c".into())]));
    // The next certificate of that name fires again.
    assert_eq!(pass("0e").len(), 1);
    // A damaged file is started afresh rather than blocking hooks.
    std::fs::write(dir.path().join(EXPIRING_FILE), "{not json").unwrap();
    assert_eq!(pass("0e").len(), 1);
}

#[test]
fn the_environment_carries_the_facts() {
    let mut ev = HookEvent {
        kind: HookKind::Renewed,
        name: "www".into(),
        serial: Some("1f2e".into()),
        not_after: Some(datetime!(2030-04-01 12:30:00.5 UTC)),
        files: vec!["/etc/tls/www.crt".into(), "/etc/tls/www.key".into()],
        error: Some("ignored unless failed".into()),
    };
    let env = |ev: &HookEvent| -> BTreeMap<&'static str, String> { ev.env().into_iter().collect() };
    let e = env(&ev);
    assert_eq!(e["CERTKEEPER_EVENT"], "renewed");
    assert_eq!(e["CERTKEEPER_NAME"], "www");
    assert_eq!(e["CERTKEEPER_SERIAL"], "1f2e");
    assert_eq!(e["CERTKEEPER_NOT_AFTER"], "2030-04-01T12:30:00Z");
    assert_eq!(e["CERTKEEPER_FILES"], "/etc/tls/www.crt /etc/tls/www.key");
    assert!(!e.contains_key("CERTKEEPER_ERROR"));
    ev.kind = HookKind::Failed;
    ev.serial = None;
    ev.not_after = None;
    let e = env(&ev);
    assert_eq!(e["CERTKEEPER_EVENT"], "failed");
    assert_eq!(e["CERTKEEPER_ERROR"], "ignored unless failed");
    assert_eq!(e["CERTKEEPER_SERIAL"], "");
    assert_eq!(e["CERTKEEPER_NOT_AFTER"], "");
}

#[test]
fn global_commands_run_before_the_certificates_own() {
    let dir = tempfile::tempdir().unwrap();
    let c = with_hooks(dir.path());
    let cmd = |argv: &[&str], t: u64| HookCommand {
        argv: argv.iter().map(|s| s.to_string()).collect(),
        timeout: Duration::from_secs(t),
    };
    assert_eq!(
        commands_for(&c, HookKind::Renewed, "www"),
        vec![cmd(&["g1", "a"], 7), cmd(&["g2"], 7), cmd(&["own"], 3)]
    );
    assert_eq!(
        commands_for(&c, HookKind::Renewed, "plain"),
        vec![cmd(&["g1", "a"], 7), cmd(&["g2"], 7)]
    );
    assert_eq!(
        commands_for(&c, HookKind::Expiring, "www"),
        vec![cmd(&["gexp"], 7)]
    );
}

// ---------------------------------------------------------------------------------------
// The runner

fn sh(script: &str, timeout: Duration) -> HookCommand {
    HookCommand {
        argv: vec!["sh".into(), "-c".into(), script.into()],
        timeout,
    }
}

fn event(kind: HookKind, name: &str) -> HookEvent {
    HookEvent {
        kind,
        name: name.into(),
        serial: Some("0a".into()),
        not_after: Some(NB),
        files: vec!["/tmp/x/a.crt".into()],
        error: None,
    }
}

#[track_caller]
fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_runner_can_be_shared_between_threads() {
    // The daemon keeps one in an `Arc` and fires from its blocking pass threads.
    fn shareable<T: Send + Sync + 'static>() {}
    shareable::<HookRunner>();
}

#[test]
fn fire_returns_at_once_while_a_hook_runs() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    let finished = dir.path().join("finished");
    let runner = HookRunner::new();
    // The hook waits for the test to release it; if `fire` waited for the hook, it
    // would return only after the hook's 5 s deadline.
    let script = format!(
        "touch {s}; while [ ! -e {r} ]; do sleep 0.01; done; touch {f}",
        s = started.display(),
        r = release.display(),
        f = finished.display()
    );
    let t0 = Instant::now();
    assert!(runner.fire_commands(
        event(HookKind::Renewed, "www"),
        vec![sh(&script, Duration::from_secs(5))]
    ));
    let took = t0.elapsed();
    assert!(took < Duration::from_millis(500), "fire took {took:?}");
    wait_until("the hook to start", Duration::from_secs(5), || {
        started.exists()
    });
    assert!(!finished.exists());
    assert!(runner.budget() >= Duration::from_secs(5));
    // Still running: drain gives up at its deadline.
    assert!(!runner.drain(Instant::now() + Duration::from_millis(50)));
    std::fs::write(&release, "").unwrap();
    assert!(runner.drain(Instant::now() + Duration::from_secs(5)));
    assert!(finished.exists());
    assert_eq!(runner.budget(), Duration::ZERO);
}

#[test]
fn commands_of_an_event_run_in_order_with_its_environment() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let runner = HookRunner::new();
    let t = Duration::from_secs(10);
    let line = |tag: &str| {
        sh(
            &format!(
                "echo \"{tag} $CERTKEEPER_EVENT $CERTKEEPER_NAME $CERTKEEPER_SERIAL $CERTKEEPER_FILES ${{CERTKEEPER_ERROR-unset}}\" >> {}",
                log.display()
            ),
            t,
        )
    };
    let mut failed = event(HookKind::Failed, "api");
    failed.error = Some("boom".into());
    // The first command is slow: a runner that did not keep order would let the
    // second overtake it.
    let slow = sh(&format!("sleep 0.2; echo slow >> {}", log.display()), t);
    assert!(runner.fire_commands(
        event(HookKind::Renewed, "www"),
        vec![slow, line("one"), sh("exit 3", t), line("two")]
    ));
    assert!(runner.fire_commands(failed, vec![line("three")]));
    assert!(runner.drain(Instant::now() + Duration::from_secs(10)));
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "slow\n\
         one renewed www 0a /tmp/x/a.crt unset\n\
         two renewed www 0a /tmp/x/a.crt unset\n\
         three failed api 0a /tmp/x/a.crt boom\n"
    );
}

#[test]
fn a_hanging_hook_is_killed_at_its_deadline_and_the_next_runs() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let after = dir.path().join("after");
    let runner = HookRunner::new();
    let t0 = Instant::now();
    runner.fire_commands(
        event(HookKind::Expiring, "www"),
        vec![
            sh(
                &format!("echo $$ > {}; exec sleep 600", pid_file.display()),
                Duration::from_millis(300),
            ),
            sh(
                &format!("touch {}", after.display()),
                Duration::from_secs(5),
            ),
        ],
    );
    assert!(runner.drain(Instant::now() + Duration::from_secs(10)));
    let took = t0.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        after.exists(),
        "the command after the hanging one did not run"
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Reaped by the runner, so the pid no longer exists.
    wait_until(
        "the hanging hook to be gone",
        Duration::from_secs(5),
        || nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
    );
}

#[test]
fn a_full_queue_drops_events_instead_of_growing() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let release = dir.path().join("release");
    let log = dir.path().join("log");
    let runner = HookRunner::with_capacity(1);
    let t = Duration::from_secs(10);
    let blocker = sh(
        &format!(
            "touch {s}; while [ ! -e {r} ]; do sleep 0.01; done",
            s = started.display(),
            r = release.display()
        ),
        t,
    );
    let append = |tag: &str| sh(&format!("echo {tag} >> {}", log.display()), t);
    assert!(runner.fire_commands(event(HookKind::Renewed, "a"), vec![blocker]));
    // Once the worker has taken the first event, the queue has room for one more.
    wait_until("the first hook to start", Duration::from_secs(5), || {
        started.exists()
    });
    assert!(runner.fire_commands(event(HookKind::Renewed, "b"), vec![append("b")]));
    let budget = runner.budget();
    assert!(!runner.fire_commands(event(HookKind::Renewed, "c"), vec![append("c")]));
    // The dropped event is not waited for.
    assert_eq!(runner.budget(), budget);
    std::fs::write(&release, "").unwrap();
    assert!(runner.drain(Instant::now() + Duration::from_secs(10)));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "b\n");
}

#[test]
fn fire_looks_up_the_commands_in_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    let c = config(&format!(
        "state_dir: {d}\n\
         hooks: {{ renewed: [sh, -c, 'echo global $CERTKEEPER_NAME >> {l}'] }}\n\
         certificates:\n\
         \x20 - name: www\n    sans: [www.example.internal]\n    files: {{ layout: combined, cert: /tmp/x/www.pem }}\n    hooks: {{ renewed: [sh, -c, 'echo own >> {l}'] }}\n",
        d = dir.path().display(),
        l = log.display()
    ));
    let runner = HookRunner::new();
    // `failed` has no commands: nothing is queued for it.
    let queued = runner.fire(
        &c,
        vec![
            event(HookKind::Failed, "www"),
            event(HookKind::Renewed, "www"),
        ],
    );
    assert_eq!(queued, 1);
    assert!(runner.drain(Instant::now() + Duration::from_secs(10)));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "global www\nown\n");
}
