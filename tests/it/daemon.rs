//! The daemon end to end, with a harmless `command` server whose config test and
//! reload append to a log: scheduling, repair, coalescing, signals, systemd
//! notifications, crash safety. Real nginx and Apache are exercised in `servers.rs`.

use crate::support::daemon::{wait_until, Daemon, READY};
use crate::support::*;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// A config with a `demo` command server that logs its tests and reloads.
fn config_with_server(sb: &Sandbox, certs: &[CertDef]) -> PathBuf {
    let mut yaml = String::from(
        "state_dir: $DIR/state\n\
         ca:\n  organization: Test Org\n  common_name: Test CA\n\
         servers:\n  demo:\n    type: command\n\
         \x20   test: [/bin/sh, -c, \"echo test >> $DIR/server.log\"]\n\
         \x20   reload: [/bin/sh, -c, \"echo reload >> $DIR/server.log\"]\n\
         certificates:\n",
    );
    for c in certs {
        yaml.push_str(&c.clone().extra("reload: [demo]").yaml());
    }
    sb.write_config(&yaml)
}

fn server_log(sb: &Sandbox) -> (usize, usize) {
    let text = fs::read_to_string(sb.path("server.log")).unwrap_or_default();
    (
        text.lines().filter(|l| *l == "test").count(),
        text.lines().filter(|l| *l == "reload").count(),
    )
}

#[test]
fn notifies_systemd_and_stops_cleanly_on_sigterm() {
    let sb = Sandbox::new();
    config_with_server(&sb, &[CertDef::new("www", Layout::Nginx)]);
    let mut d = Daemon::start(&sb, &[]);
    assert!(
        d.wait_notify("READY=1", READY),
        "no READY=1: {:?}\n{}",
        d.messages,
        d.log()
    );
    assert!(
        d.messages
            .iter()
            .any(|m| m.contains("STATUS=1 certificate, next renewal www in")),
        "{:?}",
        d.messages
    );
    // The first reconciliation happened before READY: the certificate is installed.
    CertDef::new("www", Layout::Nginx)
        .files(&sb)
        .check(&sb.root_bundle(), "sslserver");

    d.messages.clear();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        d.wait_notify("READY=1", READY),
        "no READY=1 after SIGHUP: {:?}",
        d.messages
    );
    let reloading = d.messages.iter().position(|m| m.contains("RELOADING=1"));
    let ready = d.messages.iter().position(|m| m.contains("READY=1"));
    assert!(
        reloading.is_some() && reloading < ready,
        "RELOADING=1 must come before READY=1: {:?}",
        d.messages
    );

    let started = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(5))
        .expect("exits within 5 s of SIGTERM");
    assert!(status.success(), "{status:?}\n{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        d.wait_notify("STOPPING=1", Duration::from_secs(1)),
        "{:?}",
        d.messages
    );
}

#[test]
fn watchdog_pings_when_the_unit_asks() {
    let sb = Sandbox::new();
    config_with_server(&sb, &[CertDef::new("www", Layout::Nginx)]);
    let sock = sb.path("notify.sock");
    let notify = UnixDatagram::bind(&sock).unwrap();
    let config = sb.config();
    let mut child = sb
        .command(&["run", "-c", &config])
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "400000")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut seen = 0;
    let mut buf = [0u8; 4096];
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let deadline = Instant::now() + READY;
    while Instant::now() < deadline && seen < 3 {
        if let Ok(n) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("WATCHDOG=1") {
                seen += 1;
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(seen >= 3, "only {seen} WATCHDOG=1 messages");
}

#[test]
fn sighup_with_a_bad_config_keeps_the_old_one() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    config_with_server(&sb, std::slice::from_ref(&www));
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    let good = fs::read_to_string(sb.config_path()).unwrap();

    fs::write(
        sb.config_path(),
        format!("{good}  - name: broken\n    sanz: [x]\n"),
    )
    .unwrap();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || d
            .log()
            .contains("the new configuration is invalid")),
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("sanz"),
        "the reason is logged: {}",
        d.log()
    );
    assert!(d.alive(), "the daemon must survive a bad configuration");

    // A valid change with a new certificate is applied: the new one is issued.
    let api = CertDef::new("api", Layout::Apache);
    config_with_server(&sb, &[www, api.clone()]);
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(Duration::from_secs(10), || api
        .files(&sb)
        .cert
        .exists()
        && sb.ck(&["status"]).stdout.contains("api")));
    assert!(wait_until(Duration::from_secs(10), || fs::metadata(
        &api.files(&sb).key_file
    )
    .is_ok()));
    api.files(&sb).check(&sb.root_bundle(), "sslserver");
}

#[test]
fn deleted_or_damaged_files_are_repaired_within_seconds() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    let api = CertDef::new("api", Layout::Apache);
    config_with_server(&sb, &[www.clone(), api.clone()]);
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    let root = sb.root_bundle();
    let (_, reloads_before) = server_log(&sb);
    let api_serial = api.files(&sb).serial();

    // Someone deletes the key.
    let key = www.files(&sb).key.unwrap();
    fs::remove_file(&key).unwrap();
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || key.exists()),
        "key not restored: {}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(5), || server_log(&sb).1
        > reloads_before));
    eprintln!("key repaired in {:?}", t.elapsed());
    www.files(&sb).check(&root, "sslserver");

    // Someone damages the chain file of the other certificate.
    let chain = api.files(&sb).chain.unwrap();
    fs::write(&chain, "-----BEGIN CERTIFICATE-----\ngarbage\n").unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || fs::read_to_string(&chain)
            .is_ok_and(|c| c.contains("END CERTIFICATE"))),
        "chain not repaired: {}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(5), || api
        .files(&sb)
        .serial()
        != api_serial));
    api.files(&sb).check(&root, "sslserver");
    assert!(d.alive());
}

#[test]
fn simultaneous_renewals_get_one_config_test_and_one_reload() {
    let sb = Sandbox::new();
    let certs: Vec<CertDef> = (0..6)
        .map(|i| {
            CertDef::new(
                &format!("c{i}"),
                [Layout::Nginx, Layout::Apache, Layout::Combined][i % 3],
            )
        })
        .collect();
    config_with_server(&sb, &certs);
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    assert_eq!(
        server_log(&sb),
        (1, 1),
        "six new certificates, one test and one reload"
    );
    let installed = count_events(&sb.ledger(), "installed", None);
    assert_eq!(installed, 6);

    // Our own writes fired inotify events; the pass they caused must find nothing to
    // do. Give the watcher a quiet window to prove the absence of a loop.
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        assert_eq!(
            count_events(&sb.ledger(), "installed", None),
            6,
            "work loop: {}",
            d.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(server_log(&sb), (1, 1));
}

#[test]
fn short_lived_certificates_renew_again_and_again() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx)
        .extra("lifetime: 30s")
        .extra("renew_before: 50%");
    config_with_server(&sb, std::slice::from_ref(&www));
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    let mut serials = vec![www.files(&sb).serial()];
    for _ in 0..2 {
        let last = serials.last().unwrap().clone();
        assert!(
            wait_until(Duration::from_secs(25), || www.files(&sb).serial() != last),
            "no renewal: {}",
            d.log()
        );
        serials.push(www.files(&sb).serial());
    }
    www.files(&sb).check(&sb.root_bundle(), "sslserver");
    assert!(server_log(&sb).1 >= 3, "{:?}", server_log(&sb));
    let status = sb.ck(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(rows[0]["state"], "ok", "{rows}");
    assert_eq!(rows[0]["last_result"]["event"], "installed", "{rows}");
}

#[test]
fn json_logs_name_the_certificate_and_hold_no_key_material() {
    let sb = Sandbox::new();
    config_with_server(&sb, &[CertDef::new("www", Layout::Nginx)]);
    let mut d = Daemon::start(&sb, &["--log-format", "json"]);
    assert!(d.wait_notify("READY=1", READY));
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).expect("exit");
    let log = d.log();
    let mut installed = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["message"] == "installed" {
            assert_eq!(v["certificate"], "www");
            installed += 1;
        }
    }
    assert_eq!(installed, 1, "{log}");
    assert!(!log.contains("PRIVATE KEY"));
}

#[test]
fn a_failing_config_test_keeps_the_old_pair_and_status_says_why() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    config_with_server(&sb, std::slice::from_ref(&www));
    sb.renew_all().ok();
    let before = sb.snapshot();
    let text = fs::read_to_string(sb.config_path()).unwrap();
    fs::write(
        sb.config_path(),
        text.replace(
            "test: [/bin/sh, -c, \"echo test",
            "test: [/bin/sh, -c, \"echo broken >&2; exit 1; echo test",
        ),
    )
    .unwrap();
    let r = sb.ck(&["renew", "--force", "www"]);
    r.expect_code(1)
        .stdout_has("config test of server `demo` failed")
        .stdout_has("previous files restored");
    let after = sb.snapshot();
    for p in www.files(&sb).paths() {
        let rel = p.strip_prefix(sb.dir()).unwrap();
        assert!(before.0.contains_key(rel), "{} not installed", p.display());
        assert_eq!(
            before.0.get(rel),
            after.0.get(rel),
            "{} changed",
            p.display()
        );
    }
    // The store is back as it was too: `current` names the old pair, the new one is gone.
    let tls = |s: &Snapshot| {
        s.0.iter()
            .filter(|(p, _)| p.starts_with("tls"))
            .map(|(p, n)| (p.clone(), n.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(tls(&before), tls(&after));
    let status = sb.ck(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(rows[0]["last_result"]["event"], "failed", "{rows}");
    assert!(
        rows[0]["last_result"]["reason"]
            .as_str()
            .unwrap()
            .contains("broken"),
        "{rows}"
    );
    assert_eq!(
        rows[0]["state"], "ok",
        "the old pair is still valid: {rows}"
    );
}

/// The config test fails at the very first install: there is nothing to go back to,
/// so the new (valid) pair stays, and the message says so instead of claiming a restore.
#[test]
fn a_failing_config_test_at_the_first_install_keeps_the_new_pair() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Apache);
    config_with_server(&sb, std::slice::from_ref(&www));
    break_server(&sb);
    let r = sb.ck(&["renew", "www"]);
    r.expect_code(1)
        .stdout_has("config test of server `demo` failed, there were no previous files; the new pair stays installed");
    assert!(!r.stdout.contains("previous files restored"), "{r:?}");
    www.files(&sb).check(&sb.root_bundle(), "sslserver");
}

/// Installs made before the store existed left plain files. The first install after
/// that moves them into the store (the same bytes and modes behind the new links), and
/// a rollback brings exactly those bytes back.
#[test]
fn plain_files_of_an_older_install_are_migrated_and_restored_on_rollback() {
    let sb = Sandbox::new();
    let certs = [
        CertDef::new("www", Layout::Nginx),
        CertDef::new("api", Layout::Separate),
    ];
    config_with_server(&sb, &certs);
    sb.renew_all().ok();
    let paths: Vec<PathBuf> = certs.iter().flat_map(|c| c.files(&sb).paths()).collect();
    for p in &paths {
        let (bytes, m) = (fs::read(p).unwrap(), mode(p));
        fs::remove_file(p).unwrap();
        fs::write(p, bytes).unwrap();
        set_mode(p, m);
    }
    fs::remove_dir_all(sb.path("tls/.certkeeper")).unwrap();
    let shown = || -> Vec<(Vec<u8>, u32)> {
        paths
            .iter()
            .map(|p| (fs::read(p).unwrap(), mode(p)))
            .collect()
    };
    let before = shown();

    break_server(&sb);
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.expect_code(1).stdout_has("previous files restored");
    for p in &paths {
        assert!(
            fs::symlink_metadata(p).unwrap().file_type().is_symlink(),
            "{} is not a link into the store",
            p.display()
        );
    }
    assert!(
        shown() == before,
        "the old pairs are not what the paths show"
    );

    fix_server(&sb);
    sb.ck(&["renew", "--all", "--force"]).ok();
    assert!(shown() != before);
    let root = sb.root_bundle();
    for c in &certs {
        c.files(&sb).check(&root, "sslserver");
    }
}

/// Makes the `demo` server's config test fail.
fn break_server(sb: &Sandbox) {
    let text = fs::read_to_string(sb.config_path()).unwrap();
    let broken = text.replace(
        "test: [/bin/sh, -c, \"echo test",
        "test: [/bin/sh, -c, \"echo broken >&2; exit 1; echo test",
    );
    assert_ne!(text, broken);
    fs::write(sb.config_path(), broken).unwrap();
}

fn fix_server(sb: &Sandbox) {
    let text = fs::read_to_string(sb.config_path()).unwrap();
    fs::write(
        sb.config_path(),
        text.replace("echo broken >&2; exit 1; ", ""),
    )
    .unwrap();
}

/// SIGKILL at many points during renewals, then a start of the daemon: every pair is
/// whole and matching, no temporary file is left, the ledger still parses.
#[test]
fn killed_at_any_point_the_next_start_repairs_everything() {
    let sb = Sandbox::new();
    let certs = vec![
        CertDef::new("a", Layout::Nginx),
        CertDef::new("b", Layout::Apache).key("rsa-2048"),
        CertDef::new("c", Layout::Separate),
        CertDef::new("d", Layout::Combined),
    ];
    config_with_server(&sb, &certs);
    sb.renew_all().ok();
    let root = sb.root_bundle();
    let config = sb.config();
    // Kill points spread over a renewal of everything (about 50-300 ms here).
    for i in 0..24u64 {
        let mut child = sb
            .command(&["renew", "--all", "--force", "-c", &config])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_micros(2_000 + i * 13_000 % 280_000);
        let t = Instant::now();
        while t.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(500));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    for c in &certs {
        c.files(&sb).check(&root, "sslserver");
    }
    let leftovers: Vec<_> = fs::read_dir(sb.path("tls"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("certkeeper-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let text = fs::read_to_string(sb.state_dir().join("ledger.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    for (n, l) in lines.iter().enumerate() {
        // Only a torn final line may be left by a kill in the middle of an append.
        if serde_json::from_str::<serde_json::Value>(l).is_err() {
            assert_eq!(n + 1, lines.len(), "ledger line {} is damaged: {l}", n + 1);
        }
    }
    let status = sb.ck(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    for row in rows.as_array().unwrap() {
        assert_eq!(row["state"], "ok", "{row}");
    }
}

/// The daemon remembers what it checked (so a restart with thousands of certificates
/// is fast) but a file changed while it was down is noticed at the next start.
#[test]
fn changes_made_while_stopped_are_noticed_at_start() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    let api = CertDef::new("api", Layout::Nginx);
    config_with_server(&sb, &[www.clone(), api.clone()]);
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).expect("exit");
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).expect("exit");
    assert!(sb.state_dir().join("observed.json").exists());

    // While stopped: www's key is swapped for api's (a valid key, the wrong one).
    let www_serial = www.files(&sb).serial();
    let api_serial = api.files(&sb).serial();
    fs::copy(api.files(&sb).key.unwrap(), www.files(&sb).key.unwrap()).unwrap();
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    assert!(
        d.log().contains("does not match the certificate"),
        "{}",
        d.log()
    );
    assert_ne!(www.files(&sb).serial(), www_serial, "www must be reissued");
    assert_eq!(api.files(&sb).serial(), api_serial, "api is untouched");
    www.files(&sb).check(&sb.root_bundle(), "sslserver");
}

/// A restart reads none of the files it checked before and that did not change, even
/// beside other work of the start-up (here a trust target's pass, which runs at the
/// same time as the certificates' pass), and it still sees the one that did change.
#[test]
fn a_restart_reads_only_the_files_that_changed() {
    let sb = Sandbox::new();
    let certs: Vec<CertDef> = (0..5)
        .map(|i| CertDef::new(&format!("c{i}"), Layout::Nginx))
        .collect();
    let mut yaml = String::from(
        "state_dir: $DIR/state\n\
         servers:\n  demo:\n    type: command\n\
         \x20   test: [/bin/true]\n\
         \x20   reload: [/bin/true]\n\
         trust:\n  - { path: $DIR/tls/roots.pem, contents: roots }\n\
         certificates:\n",
    );
    for c in &certs {
        yaml.push_str(&c.clone().extra("reload: [demo]").yaml());
    }
    sb.write_config(&yaml);
    let level = "info,certkeeper::reconcile=debug";
    let looked = |log: &str| -> Vec<(u64, u64)> {
        log.lines()
            .filter(|l| l.contains("certificates looked at"))
            .map(|l| {
                let field = |key: &str| {
                    l.split_whitespace()
                        .find_map(|w| w.strip_prefix(key))
                        .and_then(|v| v.parse::<u64>().ok())
                        .expect("a count")
                };
                (field("read="), field("unchanged="))
            })
            .collect()
    };
    let run = |expect_ready: &str| -> String {
        let mut d = Daemon::start_logging(&sb, level);
        assert!(
            d.wait_notify("READY=1", READY),
            "{expect_ready}: {}",
            d.log()
        );
        d.signal(nix::sys::signal::Signal::SIGTERM);
        d.wait_exit(Duration::from_secs(5)).expect("exit");
        d.log()
    };
    // The start-up pass over the certificates: the first that looked at any.
    let startup = |log: &str| -> (u64, u64) {
        looked(log)
            .into_iter()
            .find(|(read, unchanged)| read + unchanged > 0)
            .unwrap_or_else(|| panic!("no pass looked at a certificate: {log}"))
    };
    let first = run("first start");
    assert_eq!(startup(&first), (5, 0), "{first}");
    for round in 0..3 {
        let log = run("restart");
        assert_eq!(startup(&log), (0, 5), "restart {round}: {log}");
    }
    // One file changed while stopped (rewritten with the same bytes: a new mtime and
    // ctime): that certificate alone is read again.
    let key = certs[2].files(&sb).key.unwrap();
    let bytes = fs::read(&key).unwrap();
    fs::write(&key, bytes).unwrap();
    let log = run("restart after a change");
    assert_eq!(startup(&log), (1, 4), "{log}");
}

/// A key file the cache of checked files knows unchanged is still judged against the
/// configuration of this start: a `key_mode` narrowed while the daemon was stopped
/// makes the key exposed, and it is replaced.
#[test]
fn a_key_mode_narrowed_while_stopped_replaces_a_cached_key() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    config_with_server(&sb, &[www.clone().extra("key_mode: 0640")]);
    let key = www.files(&sb).key.unwrap();
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    d.signal(nix::sys::signal::Signal::SIGTERM);
    d.wait_exit(Duration::from_secs(5)).expect("exit");
    assert_eq!(mode(&key), 0o640);
    let serial = www.files(&sb).serial();
    config_with_server(&sb, std::slice::from_ref(&www));
    let mut d = Daemon::start_logging(&sb, "info,certkeeper::reconcile=debug");
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    let log = d.log();
    assert!(log.contains("read=0 unchanged=1"), "from the cache: {log}");
    assert!(log.contains("lets its group"), "{log}");
    assert_ne!(www.files(&sb).serial(), serial, "a new pair: {log}");
    assert_eq!(mode(&key), 0o600);
    www.files(&sb).check(&sb.root_bundle(), "sslserver");
}

#[test]
fn a_deleted_directory_is_recreated_and_watched_again() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    config_with_server(&sb, std::slice::from_ref(&www));
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    // `rm -rf`, run again, as an operator would, when the daemon put files back while
    // it ran ("Directory not empty"): the daemon may be looking at the directory.
    assert!(
        wait_until(Duration::from_secs(5), || {
            match fs::remove_dir_all(sb.path("tls")) {
                Ok(()) => true,
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => false,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => panic!("{e}"),
            }
        }),
        "{}",
        d.log()
    );
    let key = www.files(&sb).key.unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || key.exists()
            && www.files(&sb).cert.exists()),
        "{}",
        d.log()
    );
    // The new directory is watched: a second deletion is repaired too.
    assert!(wait_until(Duration::from_secs(5), || fs::read(&key).is_ok()));
    let serial = www.files(&sb).serial();
    fs::remove_file(&key).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || key.exists()),
        "{}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(5), || www
        .files(&sb)
        .serial()
        != serial));
    www.files(&sb).check(&sb.root_bundle(), "sslserver");
    // Racing the removal is not a failure of the certificate (no backoff).
    assert!(!d.log().contains("will retry"), "{}", d.log());
}

#[test]
fn sigterm_in_the_middle_of_a_long_pass_stops_between_certificates() {
    let sb = Sandbox::new();
    // Slow keys, so that the first pass is still running when SIGTERM arrives.
    let certs: Vec<CertDef> = (0..30)
        .map(|i| CertDef::new(&format!("c{i}"), Layout::Nginx).key("rsa-4096"))
        .collect();
    config_with_server(&sb, &certs);
    let mut d = Daemon::start(&sb, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || d
            .log()
            .contains("renewing certificate=c1")),
        "{}",
        d.log()
    );
    let t = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("stops within 10 s");
    assert!(status.success(), "{status:?}: {}", d.log());
    eprintln!("stopped {:?} after SIGTERM", t.elapsed());
    assert!(
        !d.messages.iter().any(|m| m.contains("READY=1"))
            || d.wait_notify("STOPPING=1", Duration::from_secs(1))
    );
    // Whatever was installed is whole; the rest is simply not there yet.
    let root = sb.root_bundle();
    let mut installed = 0;
    for c in &certs {
        let f = c.files(&sb);
        if f.cert.exists() || f.key_file.exists() {
            f.check(&root, "sslserver");
            installed += 1;
        }
    }
    assert!(
        installed < certs.len(),
        "the pass should have been cut short"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> Option<String> {
    http_get_with(port, path, "")
}

/// GET with extra header lines (each ending in CRLF).
fn http_get_with(port: u16, path: &str, headers: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n{headers}\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// `promtool` from Debian's `prometheus` package: on the PATH, or unpacked by
/// `tests/run.sh` under `target/tools/`.
fn promtool() -> std::path::PathBuf {
    let unpacked =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tools/usr/bin/promtool");
    if unpacked.exists() {
        return unpacked;
    }
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("promtool"))
        .find(|p| p.exists())
        .expect(
            "promtool: run tests/run.sh (it unpacks Debian's prometheus package into target/tools)",
        )
}

/// The scrape lints clean with `promtool check metrics` (the classic text format by
/// default, OpenMetrics when asked for); a certificate that can never be installed is
/// `failing` with its failures counted from zero; the shipped alert rules pass their
/// `promtool test rules` (never-installed and starved renewals among them).
#[test]
fn metrics_lint_with_promtool_and_the_shipped_alert_rules_pass_their_tests() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    // A file where its directory should be: it can never be installed.
    fs::write(sb.path("blocker"), "not a directory\n").unwrap();
    let broken = CertDef::new("broken", Layout::Combined);
    config_with_server(&sb, &[www, broken]);
    let port = free_port();
    let text = fs::read_to_string(sb.config_path()).unwrap();
    let blocked = sb.path("blocker/broken.pem");
    let text = text
        .replace(
            "certificates:\n",
            &format!("metrics:\n  listen: 127.0.0.1:{port}\ncertificates:\n"),
        )
        .replace(
            &sb.path("tls/broken.pem").display().to_string(),
            &blocked.display().to_string(),
        );
    fs::write(sb.config_path(), text).unwrap();
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    let mut scrape = String::new();
    let failing = wait_until(Duration::from_secs(20), || {
        scrape = http_get(port, "/metrics").unwrap_or_default();
        scrape.contains("certkeeper_certificate_failing{name=\"broken\"} 1")
    });
    assert!(failing, "broken is not failing:\n{scrape}\n{}", d.log());
    assert!(
        scrape.contains("Content-Type: text/plain; version=0.0.4"),
        "{scrape}"
    );
    for needle in [
        "certkeeper_certificate_failing{name=\"www\"} 0",
        "certkeeper_renewal_failures_total{name=\"www\"} 0",
        "# TYPE certkeeper_renewal_failures_total counter",
        "certkeeper_ca_not_after_seconds{ca=\"root\",generation=\"1\"}",
    ] {
        assert!(scrape.contains(needle), "{needle} missing in:\n{scrape}");
    }
    assert!(
        !scrape.contains("certkeeper_certificate_not_after_seconds{name=\"broken\"}"),
        "{scrape}"
    );
    let body = scrape.split_once("\r\n\r\n").unwrap().1.to_string();
    let mut lint = std::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        lint.stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .unwrap();
    }
    let out = lint.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {out:?}\n{body}"
    );
    let open = http_get_with(
        port,
        "/metrics",
        "Accept: application/openmetrics-text; version=1.0.0\r\n",
    )
    .unwrap();
    assert!(
        open.contains("Content-Type: application/openmetrics-text"),
        "{open}"
    );
    assert!(open.ends_with("# EOF\n"), "{open}");
    drop(d);
    let rules = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/prometheus");
    let out = std::process::Command::new(promtool())
        .args(["test", "rules", "certkeeper-alerts.test.yml"])
        .current_dir(&rules)
        .output()
        .unwrap();
    assert!(out.status.success(), "promtool test rules: {out:?}");
}

#[test]
fn metrics_cover_every_managed_and_watched_certificate() {
    let sb = Sandbox::new();
    // A certificate certkeeper does not own: a one-off, watched only.
    let www = CertDef::new("www", Layout::Nginx);
    config_with_server(&sb, std::slice::from_ref(&www));
    sb.ck(&[
        "issue",
        "--name",
        "vendor",
        "--san",
        "vendor.example",
        "--out",
        &sb.path("vendor").display().to_string(),
    ])
    .ok();
    let port = free_port();
    let text = fs::read_to_string(sb.config_path()).unwrap();
    let text = text.replace(
        "certificates:\n",
        &format!("metrics:\n  listen: 127.0.0.1:{port}\ncertificates:\n  - name: vendor\n    watch: {}\n    warn_before: 30d\n", sb.path("vendor/vendor.crt").display()),
    );
    fs::write(sb.config_path(), text).unwrap();
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    let body = http_get(port, "/metrics").expect("metrics answer");
    assert!(body.starts_with("HTTP/1.1 200"), "{body}");
    for needle in [
        "certkeeper_certificate_not_after_seconds{name=\"www\"}",
        "certkeeper_certificate_not_after_seconds{name=\"vendor\"}",
        "certkeeper_certificate_next_renewal_seconds{name=\"www\"}",
        "certkeeper_renewals_total{name=\"www\",result=\"success\"} 1",
        "certkeeper_reloads_total{server=\"demo\",result=\"success\"} 1",
        "certkeeper_last_success_timestamp_seconds{name=\"www\"}",
        "certkeeper_build_info{version=",
        "certkeeper_ca_not_after_seconds{ca=\"root\",generation=\"1\"}",
        "certkeeper_ca_not_after_seconds{ca=\"intermediate\",generation=\"1\"}",
    ] {
        assert!(body.contains(needle), "{needle} missing in:\n{body}");
    }
    // The vendor certificate expires in 90 days; it is within its 30-day warning? No.
    assert!(
        !d.log().contains("watched certificate needs attention"),
        "{}",
        d.log()
    );
    let other = http_get(port, "/").unwrap();
    assert!(other.starts_with("HTTP/1.1 404"), "{other}");
    // The watched certificate is shown by status too.
    let status = sb.ck(&["status", "--json"]);
    assert!(
        status.stdout.contains("\"kind\": \"watched\""),
        "{}",
        status.stdout
    );
}

#[test]
fn a_watched_certificate_close_to_expiry_is_logged_as_a_warning() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    config_with_server(&sb, std::slice::from_ref(&www));
    sb.ck(&[
        "issue",
        "--name",
        "vendor",
        "--san",
        "vendor.example",
        "--lifetime",
        "10d",
        "--out",
        &sb.path("vendor").display().to_string(),
    ])
    .ok();
    let text = fs::read_to_string(sb.config_path()).unwrap();
    let text = text.replace(
        "certificates:\n",
        &format!(
            "certificates:\n  - name: vendor\n    watch: {}\n    warn_before: 21d\n",
            sb.path("vendor/vendor.crt").display()
        ),
    );
    fs::write(sb.config_path(), text).unwrap();
    let before = fs::read(sb.path("vendor/vendor.crt")).unwrap();
    let mut d = Daemon::start(&sb, &[]);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    assert!(
        d.log()
            .contains("watched certificate needs attention certificate=vendor"),
        "{}",
        d.log()
    );
    assert_eq!(
        fs::read(sb.path("vendor/vendor.crt")).unwrap(),
        before,
        "never written"
    );
}

#[test]
fn a_reload_that_moves_the_state_or_changes_the_ca_is_refused_by_name() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Combined);
    sb.write_certs(std::slice::from_ref(&www));
    let mut d = Daemon::start_ready(&sb, &[]);
    let good = fs::read_to_string(sb.config_path()).unwrap();
    let root = sb.root_bundle();
    let refusals = |d: &Daemon| {
        d.log()
            .matches("cannot change while certkeeper runs; keeping the running one")
            .count()
    };
    // By the file watch: a new state_dir would mean a second CA and every certificate
    // reissued from it.
    fs::write(
        sb.config_path(),
        good.replace("/state\n", "/state2\n")
            .replace("Test CA", "Other CA"),
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || refusals(&d) == 1),
        "{}",
        d.log()
    );
    assert!(
        d.log().contains("fields=state_dir, ca.common_name"),
        "{}",
        d.log()
    );
    // By SIGHUP, with STATUS= saying what to do.
    d.messages.clear();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(10), || refusals(&d) == 2),
        "{}",
        d.log()
    );
    assert!(
        d.wait_notify(
            "the configuration file changes state_dir, ca.common_name: restart to apply it",
            READY
        ),
        "{:?}",
        d.messages
    );
    assert!(!sb.path("state2").exists(), "a second state directory");
    // The running configuration still manages: a deleted certificate comes back, from
    // the one CA.
    fs::remove_file(www.files(&sb).cert).unwrap();
    assert!(wait_until(Duration::from_secs(10), || www
        .files(&sb)
        .cert
        .exists()));
    www.files(&sb).check(&root, "sslserver");
    // Putting the file back clears the notice.
    d.messages.clear();
    fs::write(sb.config_path(), &good).unwrap();
    let cleared = wait_until(Duration::from_secs(10), || {
        // Reads what arrives for a moment (no message holds this).
        d.wait_notify("\0", Duration::from_millis(200));
        d.messages
            .iter()
            .any(|m| m.contains("STATUS=1 certificate, next") && !m.contains("restart"))
    });
    assert!(cleared, "{:?}\n{}", d.messages, d.log());
    assert!(!sb.path("state2").exists());
}

#[test]
fn a_configuration_named_without_a_directory_is_watched_too() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Combined);
    sb.write_certs(std::slice::from_ref(&www));
    let mut d = Daemon::start_relative(&sb);
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    let api = CertDef::new("api", Layout::Combined);
    sb.write_certs(&[www, api.clone()]);
    assert!(
        wait_until(Duration::from_secs(10), || api.files(&sb).cert.exists()),
        "the edit of config.yaml went unseen:\n{}",
        d.log()
    );
}

/// The daemon on a virtual clock (tokio's paused time): a 90-day certificate renewed
/// 30 days before it ends, through a year, in well under a second of real time.
#[tokio::test(start_paused = true)]
async fn a_year_of_virtual_time_renews_a_90_day_certificate_every_60_days() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Combined)
        .extra("lifetime: 90d")
        .extra("renew_before: 30d");
    sb.write_certs(std::slice::from_ref(&www));
    let start = time::OffsetDateTime::now_utc();
    let clock = std::sync::Arc::new(certkeeper::clock::RuntimeClock::starting_at(start));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = sb.config_path();
    let real = std::time::Instant::now();
    let year = Duration::from_secs(365 * 86_400);
    let (served, _) = tokio::join!(
        certkeeper::daemon::serve(&config, clock, async {
            let _ = rx.await;
        }),
        async {
            tokio::time::sleep(year).await;
            tx.send(()).unwrap();
        }
    );
    served.unwrap();
    let real = real.elapsed();
    println!("a year of virtual time took {real:?}");

    let installs: Vec<time::OffsetDateTime> = ledger(&sb.state_dir().join("ledger.jsonl"))
        .iter()
        .filter(|e| e["event"] == "installed" && e["name"] == "www")
        .map(|e| {
            time::OffsetDateTime::parse(
                e["time"].as_str().unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
        })
        .collect();
    // The first issue at start, then one renewal every 60 days (30 before the end of a
    // 90-day certificate, up to an hour earlier for the spread): days 60 ... 360.
    assert_eq!(installs.len(), 7, "{installs:?}");
    assert!(
        installs[0] - start < time::Duration::seconds(5),
        "{installs:?}"
    );
    for pair in installs.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap <= time::Duration::days(60)
                && gap >= time::Duration::days(60) - time::Duration::minutes(61),
            "renewed {gap} after the last one: {installs:?}"
        );
    }
    // What is installed at the end is the last one, and valid at the virtual end.
    let pem = fs::read(www.files(&sb).cert).unwrap();
    let leaf = certkeeper::x509::parse_pem(&pem)
        .unwrap()
        .into_iter()
        .find_map(|i| match i {
            certkeeper::x509::PemItem::Cert(c) => Some(c),
            _ => None,
        })
        .unwrap();
    assert!(leaf.not_after > start + time::Duration::days(365));
    // A year in virtual time; a real one would never end here.
    assert!(real < Duration::from_secs(10), "{real:?}");
}

/// A leaf that would outlive its CA is cut short, and never silently: the ledger (and
/// so `status`) says so.
#[tokio::test(start_paused = true)]
async fn a_leaf_cut_short_by_its_ca_says_so() {
    let sb = Sandbox::new();
    sb.write_config(
        "state_dir: $DIR/state\n\
         ca: { organization: Test Org, common_name: Test CA, intermediate_lifetime: 100d, root_lifetime: 400d }\n\
         certificates:\n  - name: www\n    sans: [www.example.internal]\n    lifetime: 90d\n    renew_before: 30d\n    files: { layout: combined, cert: $DIR/tls/www.pem }\n",
    );
    let start = time::OffsetDateTime::now_utc();
    let clock = std::sync::Arc::new(certkeeper::clock::RuntimeClock::starting_at(start));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let config = sb.config_path();
    let (served, _) = tokio::join!(
        certkeeper::daemon::serve(&config, clock, async {
            let _ = rx.await;
        }),
        async {
            // The renewal at day 60 asks for day 150; the intermediate ends at day 100.
            tokio::time::sleep(Duration::from_secs(70 * 86_400)).await;
            tx.send(()).unwrap();
        }
    );
    served.unwrap();
    let installs: Vec<serde_json::Value> = ledger(&sb.state_dir().join("ledger.jsonl"))
        .into_iter()
        .filter(|e| e["event"] == "installed")
        .collect();
    assert_eq!(installs.len(), 2, "{installs:?}");
    assert!(installs[0]["note"].is_null(), "{installs:?}");
    let note = installs[1]["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with("issued short: valid until ")
            && note.contains("because the CA that signs it expires then"),
        "{installs:?}"
    );
    let r = sb.ck(&["status"]);
    r.ok();
    assert!(r.stdout.contains("issued short"), "{r:?}");
}

#[test]
fn a_ca_due_for_replacement_is_said_in_the_status_line_and_the_log() {
    let sb = Sandbox::new();
    sb.write_config(
        "state_dir: $DIR/state\n\
         ca: { organization: Test Org, common_name: Test CA, intermediate_lifetime: 10d, root_lifetime: 20d }\n\
         certificates:\n  - name: www\n    sans: [www.example.internal]\n    lifetime: 9d\n    files: { layout: combined, cert: $DIR/tls/www.pem }\n",
    );
    let d = Daemon::start_ready(&sb, &[]);
    assert!(
        d.messages.iter().any(|m| m.contains("READY=1")
            && m.contains(
                "; the CA is due for replacement and cannot rotate (see `certkeeper check`)"
            )),
        "{:?}",
        d.messages
    );
    assert!(
        d.log().contains("the CA intermediate certificate expires"),
        "{}",
        d.log()
    );
}
