//! What a client needs from the chain a server sends, judged after each reload by a real
//! nginx: a server that reads the leaf alone (a `separate` layout's `cert` where the
//! `fullchain` belongs) is found and named; the new pair stays installed, since the fault
//! is the server's file setting; `openssl s_client -verify_return_error` agrees.

use crate::support::servers::{q, self_signed, server_yaml, Nginx, SERVER_NAME};
use crate::support::*;
use std::path::Path;

/// The configuration: `cert` reloading `nginx`, verified at its address (`verify`
/// holds more settings after a comma, or nothing).
fn serve_with(sb: &Sandbox, cert: &CertDef, nginx: &Nginx, verify: &str) {
    let served = cert.clone().extra("reload: [nginx]").extra(&format!(
        "verify: {{ connect: {}, server_name: {SERVER_NAME}{verify} }}",
        q(&nginx.connect())
    ));
    sb.write_config_with(
        "",
        &[server_yaml(&nginx.server_spec("nginx"), None, None)],
        &[served],
    );
}

/// `openssl s_client` trusting only `root`, refusing what does not verify.
fn s_client(connect: &str, root: &Path) -> Run {
    crate::support::servers::s_client(connect, root, &[])
}

/// `www` (nginx layout) issued in `sb`: its definition, files and key file.
fn www_issued(sb: &Sandbox) -> (CertDef, Installed, std::path::PathBuf) {
    let cert = CertDef::new("www", Layout::Nginx).sans(&[SERVER_NAME]);
    sb.write_config_with("", &[], std::slice::from_ref(&cert));
    sb.renew_all().ok();
    let f = cert.files(sb);
    let key = f.key.clone().unwrap();
    (cert, f, key)
}

/// Copies `from` over `to` as config management does (a temporary file renamed).
fn put_back(from: &Path, to: &Path) {
    let tmp = to.with_extension("cm-tmp");
    std::fs::copy(from, &tmp).unwrap();
    std::fs::rename(&tmp, to).unwrap();
}

#[test]
fn served_a_leaf_without_its_intermediate_is_named_and_the_pair_stays() {
    let sb = Sandbox::new();
    let cert = CertDef::new("www", Layout::Separate).sans(&[SERVER_NAME]);
    sb.write_config_with("", &[], std::slice::from_ref(&cert));
    sb.renew_all().ok();
    let f = cert.files(&sb);
    // nginx reads the leaf alone.
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, f.key.as_ref().unwrap());
    serve_with(&sb, &cert, &nginx, "");
    // A client that is not ours refuses what nginx serves.
    let root = sb.root_bundle();
    let r = s_client(&nginx.connect(), &root);
    assert_ne!(r.code, 0, "{r:?}");

    let old = f.serial();
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok().stderr_has(&format!(
        "nginx sends the leaf without its intermediate: `ssl_certificate` points at a file with 1 certificate, expected leaf + 1 intermediate; point `ssl_certificate` at `{}` (leaf + chain)",
        f.fullchain.as_ref().unwrap().display()
    ));
    assert_ne!(f.serial(), old, "the new pair stays installed");
    let installed = sb
        .ledger()
        .into_iter()
        .rfind(|e| e["event"] == "installed")
        .unwrap();
    let note = installed["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!(
            "served at {} (SNI {SERVER_NAME}): ",
            nginx.connect()
        )),
        "{installed}"
    );
    let r = sb.ck(&["status", "--check"]);
    r.expect_code(1).stdout_has(&format!(
        "\nwww: unverified: {} (SNI {SERVER_NAME}): nginx sends the leaf without its intermediate",
        nginx.connect()
    ));

    // Pointed at the full chain, the next renewal is clean and openssl agrees.
    drop(nginx);
    let nginx = Nginx::start(
        &sb.path("nginx2"),
        f.fullchain.as_ref().unwrap(),
        f.key.as_ref().unwrap(),
    );
    serve_with(&sb, &cert, &nginx, "");
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok();
    assert!(!r.stderr.contains("the server sends"), "{r:?}");
    sb.ck(&["status", "--check"]).ok();
    let r = s_client(&nginx.connect(), &root);
    assert!(
        r.code == 0 && r.stdout.contains("Verify return code: 0 (ok)"),
        "{r:?}"
    );
}

/// Drift: nginx pointed by hand at another certificate and reloaded behind the daemon's
/// back. The periodic check (`verify.every`) finds it, reloads nginx once, finds it
/// still wrong and reports drift (ledger, `status --check`) without a loop of reloads;
/// once the vhost reads certkeeper's file again, the next check repairs it with one
/// reload and clears the drift.
#[test]
fn served_drift_is_found_reported_once_per_check_and_repaired() {
    use crate::support::daemon::{wait_until, Daemon};
    use std::time::Duration;
    let sb = Sandbox::new();
    let (cert, f, key) = www_issued(&sb);
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, &key);
    serve_with(&sb, &cert, &nginx, ", every: 2s, timeout: 2s");
    let mut d = Daemon::start_ready(&sb, &[]);
    // Another certificate for the same name, and nginx reading it.
    let (other_cert, other_key) = self_signed(sb.dir(), "other", 30);
    nginx.point_at(&f.cert, &key, &other_cert, &other_key);
    nginx.reload_by_hand();
    let serves_other = || {
        certkeeper::verify::served_leaf(&nginx.connect(), SERVER_NAME, Duration::from_secs(2))
            .ok()
            .and_then(|der| certkeeper::x509::CertInfo::from_der(&der).ok())
            .is_some_and(|c| c.subject.contains(SERVER_NAME) && c.issuer == c.subject)
    };
    assert!(
        wait_until(Duration::from_secs(10), serves_other),
        "nginx never served the other certificate"
    );
    let drift_events = || count_events(&sb.ledger(), "drift", Some("www"));
    assert!(
        wait_until(Duration::from_secs(20), || drift_events() >= 1),
        "no drift recorded:\n{}",
        d.log()
    );
    let r = sb.ck(&["status", "--check"]);
    r.expect_code(1).stdout_has("\nwww: drift: ");
    assert!(
        r.stdout
            .contains("not the certificate on disk, even after a reload"),
        "{r:?}"
    );
    // Never a loop: one reload and one record per check (every 2 s), not more.
    let t = std::time::Instant::now();
    let before = drift_events();
    std::thread::sleep(Duration::from_secs(8));
    let during = drift_events() - before;
    let elapsed = t.elapsed().as_secs_f64();
    assert!(
        during as f64 <= elapsed / 2.0 + 1.0,
        "{during} drift records in {elapsed:.1}s:\n{}",
        d.log()
    );
    // The vhost reads certkeeper's file again (nobody reloads): the next check repairs.
    nginx.fix_config();
    assert!(
        wait_until(Duration::from_secs(20), || {
            count_events(&sb.ledger(), "drift-repaired", Some("www")) >= 1
        }),
        "the drift was not repaired:\n{}",
        d.log()
    );
    assert!(wait_until(Duration::from_secs(5), || !serves_other()));
    sb.ck(&["status", "--check"]).ok();
    assert!(d.alive());
    d.stop();
}

/// A managed file put back behind the daemon's back: config management copies an old
/// pair of certkeeper's over the files and reloads nginx. The file watch sees it, the
/// pass finds an earlier pair than the one installed last, and a fresh pair is
/// installed, reloaded and served within one check; the ledger says why (`reverted`).
#[test]
fn served_an_old_pair_put_back_is_replaced_and_served_within_one_check() {
    use crate::support::daemon::{wait_until, Daemon};
    use std::time::Duration;
    let sb = Sandbox::new();
    let (cert, f, key) = www_issued(&sb);
    let (old_cert, old_key) = (sb.path("old.crt"), sb.path("old.key"));
    std::fs::copy(&f.cert, &old_cert).unwrap();
    std::fs::copy(&key, &old_key).unwrap();
    let old = f.serial();
    sb.ck(&["renew", "--all", "--force"]).ok();
    let latest = f.serial();
    assert_ne!(old, latest);
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, &key);
    serve_with(&sb, &cert, &nginx, ", every: 1h");
    let mut d = Daemon::start_ready(&sb, &[]);
    let served = || crate::support::servers::served_serial(&nginx.connect());
    assert_eq!(served().as_deref(), Some(latest.as_str()));
    // Config management puts the old pair back, and reloads nginx.
    put_back(&old_key, &key);
    put_back(&old_cert, &f.cert);
    nginx.reload_by_hand();
    let replaced = wait_until(Duration::from_secs(20), || {
        sb.ledger()
            .iter()
            .any(|e| e["event"] == "installed" && e["reason"] == "reverted")
    });
    assert!(replaced, "the old pair was not replaced:\n{}", d.log());
    let now = f.serial();
    assert!(now != old && now != latest, "{now}");
    assert!(
        wait_until(Duration::from_secs(10), || served().as_deref()
            == Some(now.as_str())),
        "nginx does not serve the fresh pair:\n{}",
        d.log()
    );
    f.check(&sb.root_bundle(), "sslserver");
    sb.ck(&["status", "--check"]).ok();
    // Once: the fresh pair is the one installed last, so nothing more happens.
    let t = std::time::Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(300));
    }
    let reverted = sb
        .ledger()
        .iter()
        .filter(|e| e["event"] == "installed" && e["reason"] == "reverted")
        .count();
    assert_eq!(reverted, 1, "{}", d.log());
    assert!(d.alive());
    d.stop();
}

/// A changed managed file is checked against what is served at once, not at the next
/// `verify.every`: another pair of certkeeper's CA (from `certkeeper issue`) copied over
/// the files, nginx not reloaded. The pair is valid, so it stays; nginx still serves the
/// one before, so it is reloaded once and serves the files on disk (`drift-repaired`).
#[test]
fn served_a_changed_file_is_checked_against_what_is_served_at_once() {
    use crate::support::daemon::{wait_until, Daemon};
    use std::time::Duration;
    let sb = Sandbox::new();
    // One file (key, leaf, chain), replaced in one rename: a writer that replaces a
    // key and a certificate in two steps shows the daemon a mismatched pair between
    // them, which it would replace (see the note on the combined layout below).
    let cert = CertDef::new("www", Layout::Combined).sans(&[SERVER_NAME]);
    sb.write_config_with("", &[], std::slice::from_ref(&cert));
    sb.renew_all().ok();
    let f = cert.files(&sb);
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, &f.cert);
    serve_with(&sb, &cert, &nginx, ", every: 1h");
    let mut d = Daemon::start_ready(&sb, &[]);
    let before = f.serial();
    let served = || crate::support::servers::served_serial(&nginx.connect());
    assert_eq!(served().as_deref(), Some(before.as_str()));
    let out = sb.path("issued");
    sb.ck(&[
        "issue",
        "--name",
        "www",
        "--san",
        SERVER_NAME,
        "--out",
        crate::support::path_str(&out),
    ])
    .ok();
    let combined = sb.path("issued/www.pem");
    let text = std::fs::read_to_string(out.join("www.key")).unwrap()
        + &std::fs::read_to_string(out.join("www.crt")).unwrap();
    crate::support::servers::write_file(&combined, &text, 0o600);
    put_back(&combined, &f.cert);
    let issued = f.serial();
    assert_ne!(issued, before);
    let repaired = wait_until(Duration::from_secs(15), || {
        count_events(&sb.ledger(), "drift-repaired", Some("www")) == 1
    });
    assert!(repaired, "{}", d.log());
    // nginx's old worker may answer a last handshake or two after the reload.
    assert!(
        wait_until(Duration::from_secs(10), || served().as_deref()
            == Some(issued.as_str())),
        "{}",
        d.log()
    );
    assert_eq!(f.serial(), issued, "a valid pair of its CA stays");
    sb.ck(&["status", "--check"]).ok();
    assert!(d.alive());
    d.stop();
}
