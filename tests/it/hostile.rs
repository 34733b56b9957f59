//! Hostile configurations: paths that would make certkeeper write into its own state
//! (the CA, the archive, the ledger, the lock) or onto its configuration, under any
//! spelling (`..`, a symlinked directory, a hard link), and two outputs that are one
//! file. Each is a configuration error (exit 2) naming both paths, and nothing on disk
//! changes, whether given to `check`, `renew` or a running daemon.

use crate::support::daemon::{wait_until, Daemon};
use crate::support::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// A configuration with one certificate whose `files:` line is `files`.
fn config(files: &str, extra: &str) -> String {
    let state = if extra.contains("state_dir:") {
        ""
    } else {
        "state_dir: $DIR/state\n"
    };
    format!(
        "{state}\
         ca:\n  organization: Test Org\n  common_name: Test CA\n\
         {extra}\
         certificates:\n  - name: www\n    sans: [www.example.internal]\n    files: {files}\n"
    )
}

/// The hostile paths: (what, files line, extra top-level YAML, words the error must hold).
fn path_cases() -> Vec<(&'static str, String, String, Vec<&'static str>)> {
    vec![
        (
            "the CA root key as a managed key",
            "{ layout: nginx, cert: $DIR/tls/www.crt, key: $DIR/state/ca/root.key }".into(),
            String::new(),
            vec!["files.key", "$DIR/state/ca/root.key is inside state_dir $DIR/state"],
        ),
        (
            "the ledger, spelled with ..",
            "{ layout: combined, cert: $DIR/tls/../state/ledger.jsonl }".into(),
            String::new(),
            vec![
                "files.cert",
                "$DIR/tls/../state/ledger.jsonl (that is $DIR/state/ledger.jsonl) is inside state_dir",
            ],
        ),
        (
            "the archive through a symlinked directory",
            "{ layout: nginx, cert: $DIR/alias/archive/x.crt, key: $DIR/alias/archive/x.key }"
                .into(),
            String::new(),
            vec!["(that is $DIR/state/archive/x.crt) is inside state_dir"],
        ),
        (
            "the lock as a trust target",
            "{ layout: combined, cert: $DIR/tls/www.pem }".into(),
            "trust:\n  - path: $DIR/state/lock\n".into(),
            vec!["trust[0].path", "$DIR/state/lock is inside state_dir"],
        ),
        (
            "the configuration file as a key",
            "{ layout: nginx, cert: $DIR/tls/www.crt, key: $DIR/config.yaml }".into(),
            String::new(),
            vec!["$DIR/config.yaml is the configuration file"],
        ),
        (
            "one file under two spellings",
            "{ layout: nginx, cert: $DIR/tls/www.crt, key: $DIR/tls/sub/../www.crt }".into(),
            String::new(),
            vec!["is also written by", "(as $DIR/tls/www.crt)"],
        ),
        (
            "a managed directory that is a symbolic link",
            "{ layout: nginx, cert: $DIR/linked/www.crt, key: $DIR/linked/www.key }".into(),
            String::new(),
            vec![
                "files.cert",
                "$DIR/linked/www.crt: $DIR/linked is a symbolic link",
                "write the real path ($DIR/decoy/www.crt), or set follow_symlinks: true",
            ],
        ),
        (
            "a trust target in a symbolic-linked directory",
            "{ layout: combined, cert: $DIR/tls/www.pem }".into(),
            "trust:\n  - path: $DIR/linked/ca.pem\n".into(),
            vec!["trust[0].path", "$DIR/linked is a symbolic link"],
        ),
        (
            "a state directory that others can write",
            "{ layout: combined, cert: $DIR/tls/www.pem }".into(),
            "state_dir: $DIR/open-state\n".into(),
            vec!["state_dir", "$DIR/open-state can be written by anyone (mode 777)"],
        ),
        (
            "one file under two hard-linked names",
            "{ layout: nginx, cert: $DIR/tls/a.crt, key: $DIR/tls/b.key }".into(),
            String::new(),
            vec!["$DIR/tls/b.key is also written by", "(as $DIR/tls/a.crt)"],
        ),
    ]
}

/// A configuration with one certificate named `name` (YAML as written).
fn named(name: &str) -> String {
    format!(
        "state_dir: $DIR/state\ncertificates:\n  - name: {name}\n    sans: [a.example.internal]\n    files: {{ layout: combined, cert: $DIR/tls/x.pem }}\n"
    )
}

/// Every hostile configuration: (what, whole configuration text, words the error must
/// hold). The paths above, and values that make no sense.
fn cases() -> Vec<(&'static str, String, Vec<&'static str>)> {
    let mut all: Vec<(&'static str, String, Vec<&'static str>)> = path_cases()
        .into_iter()
        .map(|(what, files, extra, words)| (what, config(&files, &extra), words))
        .collect();
    all.extend([
        (
            "a lifetime whose end no certificate date can hold",
            "state_dir: $DIR/state\nca: { root_lifetime: 9000y, intermediate_lifetime: 8000y }\ncertificates: []\n".to_string(),
            vec!["field `ca.root_lifetime`: 9000y is longer than certkeeper accepts (1000y)"],
        ),
        ("the name `.`", named("."), vec!["`.` is not a valid name"]),
        ("the name `..`", named(".."), vec!["`..` is not a valid name"]),
        ("a name with a slash", named("a/b"), vec!["`a/b` is not a valid name"]),
        ("a name with a NUL", named("\"a\\0b\""), vec!["is not a valid name"]),
        (
            "a state_dir that is a file",
            "state_dir: $DIR/tls/a.crt\ncertificates: []\n".to_string(),
            vec!["field `state_dir`: $DIR/tls/a.crt exists and is not a directory"],
        ),
        ("an empty configuration", String::new(), vec!["would manage nothing"]),
        (
            "a configuration of comments alone",
            "# certificates:\n#   - name: www\n".to_string(),
            vec!["would manage nothing"],
        ),
    ]);
    all
}

/// Does `act` and waits until the daemon has rejected one more configuration.
#[track_caller]
fn rejects(d: &Daemon, act: impl FnOnce()) {
    let count = || d.log().matches("keeping the running one").count();
    let before = count();
    act();
    assert!(
        wait_until(Duration::from_secs(10), || count() > before),
        "{}",
        d.log()
    );
}

/// The CA exists, a symlink leads into the state directory, and two names of one file
/// exist in `tls/`.
fn world(sb: &Sandbox) {
    sb.write_config(&config("{ layout: combined, cert: $DIR/tls/www.pem }", ""));
    sb.ck(&["ca", "init"]).ok();
    fs::create_dir_all(sb.path("tls/sub")).unwrap();
    std::os::unix::fs::symlink(sb.state_dir(), sb.path("alias")).unwrap();
    fs::write(sb.path("tls/a.crt"), "decoy\n").unwrap();
    fs::hard_link(sb.path("tls/a.crt"), sb.path("tls/b.key")).unwrap();
    // A directory reached through a link, holding files a write through it would hit.
    fs::create_dir_all(sb.path("decoy")).unwrap();
    fs::write(sb.path("decoy/www.crt"), "decoy\n").unwrap();
    fs::write(sb.path("decoy/www.key"), "decoy\n").unwrap();
    std::os::unix::fs::symlink(sb.path("decoy"), sb.path("linked")).unwrap();
    fs::create_dir_all(sb.path("open-state")).unwrap();
    fs::set_permissions(sb.path("open-state"), fs::Permissions::from_mode(0o777)).unwrap();
}

#[test]
fn paths_into_the_state_or_the_config_are_refused_and_nothing_changes() {
    for (what, text, words) in cases() {
        let sb = Sandbox::new();
        world(&sb);
        sb.write_config(&text);
        let before = sb.snapshot();
        for args in [
            &["check"][..],
            &["renew", "--all"],
            &["renew", "--all", "--force"],
        ] {
            let r = sb.ck(args);
            r.expect_code(2);
            for w in &words {
                let w = sb.expand(w);
                assert!(r.stderr.contains(&w), "{what}: `{w}` not in {r:?}");
            }
        }
        before.assert_same(&sb.snapshot(), what);
    }
}

#[test]
fn issue_never_writes_into_the_state() {
    let sb = Sandbox::new();
    world(&sb);
    let before = sb.snapshot();
    for out in ["$DIR/state/ca", "$DIR/alias", "$DIR/tls/../state/archive"] {
        let out = sb.expand(out);
        let r = sb.ck(&[
            "issue",
            "--name",
            "root",
            "--san",
            "x.example.internal",
            "--out",
            &out,
        ]);
        r.expect_code(2);
        r.stderr_has("is inside state_dir");
    }
    before.assert_same(&sb.snapshot(), "issue --out into the state");
}

#[test]
fn a_running_daemon_rejects_them_by_sighup_and_by_the_file_watch() {
    let sb = Sandbox::new();
    world(&sb);
    let mut d = Daemon::start_ready(&sb, &[]);
    // What the daemon writes on its own (its log, its notify socket) and the
    // configuration the test rewrites are not part of the tree compared.
    let tree = || {
        let mut s = sb.snapshot();
        s.0.retain(|p, _| {
            !["config.yaml", "daemon.log", "notify.sock"]
                .iter()
                .any(|x| p.as_path() == std::path::Path::new(x))
        });
        s
    };
    let before = tree();
    for (what, text, words) in cases() {
        let seen = d.log().len();
        // By the file watch...
        rejects(&d, || {
            sb.write_config(&text);
        });
        let said = d.log()[seen..].to_string();
        for w in &words {
            let w = sb.expand(w);
            assert!(said.contains(&w), "{what}: `{w}` not in the log:\n{said}");
        }
        // ... and by SIGHUP.
        rejects(&d, || d.signal(nix::sys::signal::Signal::SIGHUP));
        assert!(d.alive(), "{what}: the daemon stopped\n{}", d.log());
        before.assert_same(&tree(), what);
    }
}

#[test]
fn a_key_readable_beyond_its_mode_is_replaced_and_status_says_why() {
    for layout in [Layout::Nginx, Layout::Combined] {
        let sb = Sandbox::new();
        let www = CertDef::new("www", layout);
        sb.write_certs(std::slice::from_ref(&www));
        sb.renew_all().ok();
        let f = www.files(&sb);
        let key = f.key.clone().unwrap_or_else(|| f.cert.clone());
        let serial = f.serial();
        set_mode(&key, 0o644);
        let status = sb.ck(&["status", "--wide"]);
        status.stdout_has("key-exposed");
        status.stdout_has("which lets its group and every user read it");
        let r = sb.renew_all();
        r.ok();
        r.stdout_has("the key may have been read, so a new key replaces it");
        assert_ne!(f.serial(), serial, "{layout:?}: the pair was not replaced");
        assert_eq!(mode(&key), 0o600, "{layout:?}");
        f.check(&sb.root_bundle(), "sslserver");
        // Nothing else to do afterwards.
        sb.renew_all().ok().stdout_has("ok, next renewal");
    }
}

#[test]
fn a_key_chmodded_under_a_running_daemon_is_replaced_within_a_second() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Apache);
    sb.write_certs(std::slice::from_ref(&www));
    let d = Daemon::start_ready(&sb, &[]);
    let f = www.files(&sb);
    let key = f.key.clone().unwrap();
    let serial = f.serial();
    set_mode(&key, 0o640);
    let t = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(5), || f.serial() != serial
            && mode(&key) == 0o600),
        "{}",
        d.log()
    );
    eprintln!("exposed key replaced in {:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    f.check(&sb.root_bundle(), "sslserver");
}

#[test]
fn a_ca_key_owned_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root to give the CA key away");
        return;
    }
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Combined);
    sb.write_certs(std::slice::from_ref(&www));
    sb.ck(&["ca", "init"]).ok();
    let key = sb.state_dir().join("ca/intermediate.key");
    std::os::unix::fs::chown(&key, Some(65534), None).unwrap();
    let before = sb.snapshot();
    let r = sb.renew_all();
    r.expect_code(1);
    r.stderr_has("the CA key is owned by uid 65534");
    before.assert_same(&sb.snapshot(), "renew with a CA key owned by someone else");
}

#[test]
fn deleting_the_lock_file_lets_no_second_writer_in_and_a_waiter_names_the_holder() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Combined);
    sb.write_certs(std::slice::from_ref(&www));
    let state = certkeeper::state::StateDir::new(&sb.state_dir());
    let held = state.lock().unwrap();
    // Whatever lock file there is, deleting it changes nothing.
    let _ = fs::remove_file(sb.state_dir().join("lock"));
    let mut renew = sb.spawn(&["renew", "--all"]);
    // It waits, and says for whom.
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        renew.try_wait().unwrap().is_none(),
        "renew got past a held lock"
    );
    assert!(!www.files(&sb).cert.exists(), "a second writer wrote");
    drop(held);
    let out = renew.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another certkeeper holds the state lock")
            && stderr.contains(&format!("pid {}", std::process::id())),
        "{stderr}"
    );
    assert!(www.files(&sb).cert.exists());
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let sb = Sandbox::new();
    let certs: Vec<CertDef> = (0..40)
        .map(|i| CertDef::new(&format!("c{i}"), Layout::Combined))
        .collect();
    sb.write_certs(&certs);
    sb.renew_all().ok();
    for args in [
        &["status", "--json"][..],
        &["status"],
        &["completions", "bash"],
    ] {
        let config = sb.config();
        let mut all: Vec<&str> = args.to_vec();
        if args[0] == "status" {
            all.extend(["-c", &config]);
        }
        let mut child = sb
            .command(&all)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The reader goes away before the first byte.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn a_truncated_configuration_never_stops_the_daemon_managing() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Combined);
    sb.write_certs(std::slice::from_ref(&www));
    let d = Daemon::start_ready(&sb, &[]);
    // Cut right after `certificates:` (a truncated write), then emptied.
    for text in ["state_dir: $DIR/state\ncertificates:\n", ""] {
        rejects(&d, || {
            sb.write_config(text);
        });
    }
    assert!(d.log().contains("would manage nothing"), "{}", d.log());
    // Still managing `www`: a deleted file comes back.
    let cert = www.files(&sb).cert;
    fs::remove_file(&cert).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || cert.exists()),
        "{}",
        d.log()
    );
}

#[test]
fn a_symlinked_managed_directory_is_written_only_when_allowed() {
    let sb = Sandbox::new();
    world(&sb);
    let files = "{ layout: nginx, cert: $DIR/linked/www.crt, key: $DIR/linked/www.key }";
    // Refused (the table above) unless the certificate says links are expected: then
    // the pair lands in the linked directory, which shows the refusal is the link's.
    sb.write_config(
        &config(files, "").replace("    files:", "    follow_symlinks: true\n    files:"),
    );
    sb.ck(&["renew", "--all"]).ok();
    let cert = fs::read_to_string(sb.path("decoy/www.crt")).unwrap();
    assert!(cert.contains("BEGIN CERTIFICATE"), "{cert}");
}

#[test]
fn a_link_planted_in_the_archive_is_refused_and_its_target_untouched() {
    for planted in ["archive/www", "archive"] {
        let sb = Sandbox::new();
        world(&sb);
        sb.write_config(&config("{ layout: combined, cert: $DIR/tls/www.pem }", ""));
        sb.ck(&["renew", "--all"]).ok();
        // What an attacker would have certkeeper prune or write into: a tree that looks
        // like archived pairs.
        let decoy = sb.path("archive-decoy");
        for pair in ["01", "02", "03", "04", "05", "06", "07"] {
            fs::create_dir_all(decoy.join(pair)).unwrap();
            fs::write(decoy.join(pair).join("key.pem"), pair).unwrap();
        }
        fs::create_dir_all(decoy.join("www")).unwrap();
        let link = sb.state_dir().join(planted);
        fs::rename(&link, sb.path("moved-away")).unwrap();
        let target = if planted == "archive" {
            decoy.clone()
        } else {
            decoy.join("www")
        };
        if planted == "archive" {
            fs::create_dir_all(decoy.join("www")).unwrap();
        }
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let before = snapshot(&decoy);
        let served = fs::read(sb.path("tls/www.pem")).unwrap();
        for _ in 0..3 {
            let r = sb.ck(&["renew", "--all", "--force"]);
            r.expect_code(1);
            r.stderr_has(&format!("{}: is a symbolic link", link.display()));
        }
        before.assert_same(&snapshot(&decoy), planted);
        assert_eq!(
            fs::read(sb.path("tls/www.pem")).unwrap(),
            served,
            "{planted}: the served pair changed although its archive copy was refused"
        );
    }
}

#[test]
fn a_state_directory_we_create_is_private_and_one_others_can_write_is_refused() {
    let sb = Sandbox::new();
    sb.write_config(&config("{ layout: combined, cert: $DIR/tls/www.pem }", ""));
    sb.ck(&["renew", "--all"]).ok();
    assert_eq!(mode(&sb.state_dir()), 0o700);
    fs::set_permissions(sb.state_dir(), fs::Permissions::from_mode(0o770)).unwrap();
    let before = sb.snapshot();
    for args in [&["check"][..], &["renew", "--all", "--force"], &["status"]] {
        let r = sb.ck(args);
        r.expect_code(2);
        r.stderr_has(&sb.expand(
            "field `state_dir`: $DIR/state can be written by its group (mode 770); it holds the CA keys",
        ));
    }
    before.assert_same(&sb.snapshot(), "a group-writable state directory");
}

#[test]
fn a_link_planted_among_the_ca_files_is_not_followed() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Combined);
    sb.write_certs(std::slice::from_ref(&www));
    sb.ck(&["ca", "init"]).ok();
    // The real intermediate key moved away, a link to a copy of it in its place: the
    // CA must not sign with whatever a link leads to.
    let key = sb.state_dir().join("ca/intermediate.key");
    let elsewhere = sb.path("elsewhere.key");
    fs::rename(&key, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &key).unwrap();
    let before = sb.snapshot();
    let r = sb.renew_all();
    r.expect_code(1);
    r.stderr_has(&format!(
        "{}: is a symbolic link, not a regular file",
        key.display()
    ));
    before.assert_same(&sb.snapshot(), "renew with a linked CA key");
}
