//! Hooks and command deadlines, end to end with the real binary: `renew` runs the
//! `renewed` and `failed` hooks with the facts in their environment, kills a hanging
//! hook or config test at its deadline, and never leaves the state lock held.

use crate::support::daemon::wait_until;
use crate::support::*;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The environment a hook saved with `env -0`.
#[track_caller]
fn saved_env(path: &Path) -> BTreeMap<String, String> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    String::from_utf8(bytes)
        .expect("UTF-8 environment")
        .split('\0')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("NAME=value");
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// A serial as certkeeper writes it: lower-case hex without leading zeros.
fn canonical_serial(s: &str) -> String {
    s.to_ascii_lowercase().trim_start_matches('0').to_string()
}

/// The notAfter of the first certificate in a file, according to openssl.
#[track_caller]
fn not_after(p: &Path) -> OffsetDateTime {
    let r = openssl(&[
        "x509",
        "-in",
        path_str(p),
        "-noout",
        "-enddate",
        "-dateopt",
        "iso_8601",
    ]);
    r.ok();
    let text = r
        .stdout
        .trim()
        .strip_prefix("notAfter=")
        .expect("notAfter= line")
        .replace(' ', "T");
    OffsetDateTime::parse(&text, &Rfc3339).unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Whether a process is gone (or a zombie nobody collected).
fn gone(pid: i32) -> bool {
    if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() {
        return true;
    }
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let after = &s[s.rfind(')')? + 1..];
            after.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(true)
}

#[track_caller]
fn pid_in(p: &Path) -> i32 {
    fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .expect("a pid")
}

#[test]
fn renew_runs_the_renewed_hooks_with_the_certificates_facts() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx)
        .extra("hooks: { renewed: [sh, -c, 'echo own >> $DIR/order'] }");
    sb.write_config(&format!(
        "hooks:\n  renewed:\n    - [sh, -c, 'env -0 > $DIR/renewed.env; echo global >> $DIR/order']\n  timeout: 20s\n{}{}",
        header(),
        www.yaml()
    ));
    let r = sb.renew_all();
    r.ok();
    assert!(r.line_for("www").contains("renewed"), "{r:?}");
    // `renew` waited for its hooks before exiting: the files are there now.
    let env = saved_env(&sb.path("renewed.env"));
    let files = www.files(&sb);
    assert_eq!(env["CERTKEEPER_EVENT"], "renewed");
    assert_eq!(env["CERTKEEPER_NAME"], "www");
    assert_eq!(env["CERTKEEPER_SERIAL"], canonical_serial(&files.serial()));
    let hook_not_after = OffsetDateTime::parse(&env["CERTKEEPER_NOT_AFTER"], &Rfc3339)
        .unwrap_or_else(|e| panic!("CERTKEEPER_NOT_AFTER: {e}: {env:?}"));
    assert_eq!(hook_not_after, not_after(&files.cert));
    assert_eq!(
        env["CERTKEEPER_FILES"],
        format!(
            "{} {}",
            files.cert.display(),
            files.key.as_ref().unwrap().display()
        )
    );
    assert!(!env.contains_key("CERTKEEPER_ERROR"), "{env:?}");
    // Global hooks first, then the certificate's own.
    assert_eq!(
        fs::read_to_string(sb.path("order")).unwrap(),
        "global\nown\n"
    );
    r.stderr_has("hook ran");

    // Nothing renewed, nothing run.
    fs::remove_file(sb.path("renewed.env")).unwrap();
    let r = sb.renew_all();
    r.ok();
    assert!(r.line_for("www").contains(": ok"), "{r:?}");
    assert!(!sb.path("renewed.env").exists(), "{r:?}");
    assert_eq!(
        fs::read_to_string(sb.path("order")).unwrap(),
        "global\nown\n"
    );
}

#[test]
fn a_failing_config_test_runs_the_failed_hook_once() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx).extra("reload: [web]");
    let config = |test: &str| {
        format!(
            "servers:\n  web: {{ type: command, test: ['{test}'], reload: ['true'] }}\n\
             hooks:\n  failed: [sh, -c, 'env -0 > $DIR/failed.env; echo fired >> $DIR/failed.count']\n{}{}",
            header(),
            www.yaml()
        )
    };
    sb.write_config(&config("true"));
    sb.renew_all().ok();
    assert!(!sb.path("failed.count").exists());
    let files = www.files(&sb);
    let serial = files.serial();

    sb.write_config(&config("false"));
    let before = sb.snapshot();
    let r = sb.ck(&["renew", "--force", "www"]);
    r.expect_code(1);
    assert!(r.line_for("www").contains("FAILED"), "{r:?}");
    assert_eq!(
        fs::read_to_string(sb.path("failed.count")).unwrap(),
        "fired\n",
        "{r:?}"
    );
    let env = saved_env(&sb.path("failed.env"));
    assert_eq!(env["CERTKEEPER_EVENT"], "failed");
    assert_eq!(env["CERTKEEPER_NAME"], "www");
    // The certificate still in place is the old one.
    assert_eq!(files.serial(), serial);
    assert_eq!(env["CERTKEEPER_SERIAL"], canonical_serial(&serial));
    let error = &env["CERTKEEPER_ERROR"];
    assert!(
        error.contains("config test of server `web` failed"),
        "{error}"
    );
    assert!(error.contains("`false` failed"), "{error}");
    // The installed files are unchanged.
    let after = sb.snapshot();
    for p in files.paths() {
        let rel = p.strip_prefix(sb.dir()).unwrap();
        assert_eq!(before.0.get(rel), after.0.get(rel), "{}", rel.display());
    }
}

#[test]
fn a_hanging_hook_is_killed_and_renew_exits_soon() {
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "hooks:\n  renewed:\n    - [sh, -c, 'echo $$ > $DIR/hook.pid; exec sleep 600']\n    - [sh, -c, 'touch $DIR/after']\n  timeout: 1s\n{}{}",
        header(),
        CertDef::new("www", Layout::Combined).yaml()
    ));
    let started = Instant::now();
    let r = sb.renew_all();
    let took = started.elapsed();
    r.ok();
    assert!(
        took >= Duration::from_secs(1),
        "did not wait for the hook: {took:?}"
    );
    assert!(took < Duration::from_secs(10), "{took:?}: {r:?}");
    r.stderr_has("hook did not run to its end");
    r.stderr_has("did not finish within 1s");
    // The next command of the event ran after the kill.
    assert!(sb.path("after").exists(), "{r:?}");
    let pid = pid_in(&sb.path("hook.pid"));
    assert!(
        wait_until(Duration::from_secs(5), || gone(pid)),
        "hook {pid} still runs"
    );
}

#[test]
fn a_hanging_config_test_is_killed_and_the_lock_is_free_after() {
    let sb = Sandbox::new();
    sb.write_config(&format!(
        "servers:\n  web:\n    type: command\n    test: [sh, -c, 'echo $$ > $DIR/test.pid; exec sleep 600']\n    reload: ['true']\n    timeout: 2s\n{}{}",
        header(),
        CertDef::new("www", Layout::Nginx).extra("reload: [web]").yaml()
    ));
    let started = Instant::now();
    let r = sb.renew_all();
    let took = started.elapsed();
    r.expect_code(1);
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}: {r:?}");
    let line = r.line_for("www");
    assert!(line.contains("FAILED"), "{r:?}");
    assert!(
        line.contains("did not finish within 2s and was killed"),
        "{r:?}"
    );
    let pid = pid_in(&sb.path("test.pid"));
    assert!(
        wait_until(Duration::from_secs(5), || gone(pid)),
        "config test {pid} still runs"
    );
    // Nothing holds the state lock any more.
    assert!(sb.state_lock_free(), "the state lock is still held");
    // A second run starts at once (and, forced past the first pair that stayed
    // installed, fails the same way).
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.expect_code(1);
    assert!(!r.stderr.contains("holds the state lock"), "{r:?}");
}
