//! The real `certkeeper run` daemon (and `certkeeper renew` beside it) against real,
//! private nginx and Apache instances: continuous renewals while a client handshakes
//! without pause, rollback after a failed config test or a failed verify, repair at
//! start-up of an install that was never reloaded, and SIGTERM in the middle of work.
//!
//! Each test has its own sandbox, its own server on a free 127.0.0.1 port and its own
//! daemon; it waits with deadlines and stops only the processes it started. The TLS
//! client here is independent of certkeeper's own `verify` module: it trusts only the
//! root that `certkeeper ca bundle` prints and checks the server name.

use crate::support::daemon::{wait_until, Daemon, READY};
use crate::support::servers::{q, server_yaml, tls_handshake, Apache, Nginx, SERVER_NAME};
use crate::support::*;
use certkeeper::x509::CertInfo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One handshake's bound (connect, every read and write).
const HANDSHAKE: Duration = Duration::from_secs(5);
/// Pause between two handshakes of the continuous client: enough to leave the two
/// cores to the daemon and the servers, short enough to see every switch.
const CLIENT_PAUSE: Duration = Duration::from_millis(5);
/// How long after a newer leaf is first served an older one may still be: a reloaded
/// nginx's old worker keeps accepting for tens of milliseconds (about 90 ms seen here,
/// alternating with the new worker), and an Apache graceful restart overlaps too.
const TRANSITION: Duration = Duration::from_secs(2);

// ---------------------------------------------------------------------------------------
// Waiting

// ---------------------------------------------------------------------------------------
// Configurations

/// Writes `config.yaml`: state dir, CA, the given `servers:` entries, the certificates.
fn write_config(sb: &Sandbox, servers: &[String], certs: &[CertDef]) {
    sb.write_config_with("", servers, certs);
}

/// The certificate every test manages: `www`, for the harness's server name.
fn www(layout: Layout) -> CertDef {
    CertDef::new("www", layout).sans(&[SERVER_NAME])
}

/// `cert` reloading `server` and verified at `connect`.
fn served_by(cert: &CertDef, server: &str, connect: &str, timeout: Option<&str>) -> CertDef {
    let timeout = timeout
        .map(|t| format!(", timeout: {t}"))
        .unwrap_or_default();
    cert.clone()
        .extra(&format!("reload: [{server}]"))
        .extra(&format!(
            "verify: {{ connect: {}, server_name: {SERVER_NAME}{timeout} }}",
            q(connect)
        ))
}

/// A server needs certificate files before it can start, and certkeeper cannot reload
/// a server that is not running: the first pair is installed with a configuration that
/// names no server. The full configuration is written once the server runs.
fn bootstrap(sb: &Sandbox, cert: &CertDef) {
    write_config(sb, &[], std::slice::from_ref(cert));
    sb.renew_all().ok();
}

fn start_nginx(sb: &Sandbox, cert: &CertDef) -> Nginx {
    let f = cert.files(sb);
    Nginx::start(&sb.path("nginx"), &f.cert, f.key.as_ref().unwrap())
}

fn start_apache(sb: &Sandbox, cert: &CertDef) -> Apache {
    let f = cert.files(sb);
    Apache::start(
        &sb.path("apache"),
        &f.cert,
        f.chain.as_ref().unwrap(),
        f.key.as_ref().unwrap(),
    )
}

/// The leaf certificate (DER) installed in `cert`'s files.
fn leaf_on_disk(sb: &Sandbox, cert: &CertDef) -> Vec<u8> {
    let f = cert.files(sb);
    let pem = fs::read(&f.cert).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .expect("a certificate in the cert file")
        .expect("a readable certificate")
        .to_vec()
}

fn describe(der: &[u8]) -> String {
    match CertInfo::from_der(der) {
        Ok(c) => format!("serial {} (SHA-256 {})", c.serial, &c.fingerprint),
        Err(e) => format!("unparsable certificate: {e}"),
    }
}

fn serial_of(der: &[u8]) -> String {
    CertInfo::from_der(der).unwrap().serial
}

/// The `installed` ledger entries' serials, oldest first.
fn installed_serials(sb: &Sandbox) -> Vec<String> {
    sb.ledger()
        .iter()
        .filter(|e| e["event"] == "installed")
        .filter_map(|e| e["serial"].as_str().map(str::to_string))
        .collect()
}

/// Every file of the sandbox's `tls/` directory, bytes and modes.
fn tls_snapshot(sb: &Sandbox) -> Snapshot {
    snapshot(&sb.path("tls"))
}

// ---------------------------------------------------------------------------------------
// An independent TLS client

/// Handshakes trusting only the CA's root and checking `SERVER_NAME`, always a full
/// handshake on a new connection.
#[derive(Clone)]
struct TlsClient {
    config: Arc<ClientConfig>,
    addr: SocketAddr,
}

impl TlsClient {
    fn new(root_pem: &Path, connect: &str) -> TlsClient {
        let mut roots = RootCertStore::empty();
        let pem = fs::read(root_pem).unwrap();
        for c in CertificateDer::pem_slice_iter(&pem) {
            roots.add(c.expect("a root certificate")).unwrap();
        }
        assert!(!roots.is_empty(), "no root in {}", root_pem.display());
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        TlsClient {
            config: Arc::new(config),
            addr: connect.parse().unwrap(),
        }
    }

    /// One full handshake; the certificates the server presented (leaf first).
    fn handshake(&self) -> Result<Vec<Vec<u8>>, String> {
        tls_handshake(Arc::clone(&self.config), self.addr, HANDSHAKE)
    }

    fn leaf(&self) -> Result<Vec<u8>, String> {
        self.handshake().map(|mut c| c.swap_remove(0))
    }

    /// Polls until the server presents `want` as its leaf.
    fn wait_for(&self, want: &[u8], limit: Duration) -> bool {
        wait_until(limit, || self.leaf().is_ok_and(|l| l == want))
    }
}

/// One handshake of the continuous client.
struct Obs {
    at: Duration,
    /// Index of the served leaf in `Seen::leaves`, or why the handshake failed.
    result: Result<usize, String>,
    chain_len: usize,
}

#[derive(Default)]
struct Seen {
    /// Distinct leaves in the order they were first served.
    leaves: Vec<Vec<u8>>,
    log: Vec<Obs>,
}

impl Seen {
    fn failures(&self) -> Vec<&Obs> {
        self.log.iter().filter(|o| o.result.is_err()).collect()
    }

    /// Runs of the same result, for messages: `leaf#0 x120 (0.01s..2.3s)`.
    fn timeline(&self) -> String {
        let mut out = Vec::new();
        let mut i = 0;
        while i < self.log.len() {
            let mut j = i;
            while j + 1 < self.log.len() && self.log[j + 1].result == self.log[i].result {
                j += 1;
            }
            let what = match &self.log[i].result {
                Ok(n) => format!("leaf#{n} {}", describe(&self.leaves[*n])),
                Err(e) => format!("FAILED: {e}"),
            };
            out.push(format!(
                "{what} x{} ({:.3}s..{:.3}s)",
                j - i + 1,
                self.log[i].at.as_secs_f64(),
                self.log[j].at.as_secs_f64()
            ));
            i = j + 1;
        }
        out.join("\n  ")
    }

    /// The served leaf indices with consecutive repeats collapsed.
    fn runs(&self) -> Vec<usize> {
        let mut runs: Vec<usize> = Vec::new();
        for o in &self.log {
            if let Ok(n) = o.result {
                if runs.last() != Some(&n) {
                    runs.push(n);
                }
            }
        }
        runs
    }
}

/// A thread that handshakes without pause until stopped, recording what it sees.
struct Handshaker {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<JoinHandle<()>>,
}

impl Handshaker {
    fn start(client: TlsClient) -> Handshaker {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let thread = {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            std::thread::spawn(move || {
                let t0 = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let result = client.handshake();
                    let at = t0.elapsed();
                    let mut s = seen.lock().unwrap();
                    let (result, chain_len) = match result {
                        Ok(chain) => {
                            let n = match s.leaves.iter().position(|l| *l == chain[0]) {
                                Some(n) => n,
                                None => {
                                    s.leaves.push(chain[0].clone());
                                    s.leaves.len() - 1
                                }
                            };
                            (Ok(n), chain.len())
                        }
                        Err(e) => (Err(e), 0),
                    };
                    s.log.push(Obs {
                        at,
                        result,
                        chain_len,
                    });
                    drop(s);
                    std::thread::sleep(CLIENT_PAUSE);
                }
            })
        };
        Handshaker {
            stop,
            seen,
            thread: Some(thread),
        }
    }

    fn distinct(&self) -> usize {
        self.seen.lock().unwrap().leaves.len()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().log.len()
    }

    /// Stops the thread and returns everything it saw.
    fn finish(mut self) -> Seen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("the handshake thread panicked");
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for Handshaker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The assertions every continuous-handshake test makes: no failure, every handshake
/// presented leaf + intermediate, leaves never went back to an older one, and they are
/// the installs of the ledger, in the ledger's order.
#[track_caller]
fn check_seen(sb: &Sandbox, seen: &Seen, min_distinct: usize, log: &str) {
    let failures = seen.failures();
    assert!(
        failures.is_empty(),
        "{} of {} handshakes failed:\n  {}\n--- daemon log ---\n{log}",
        failures.len(),
        seen.log.len(),
        seen.timeline()
    );
    assert!(
        seen.leaves.len() >= min_distinct,
        "only {} distinct leaves served in {} handshakes:\n  {}\n--- daemon log ---\n{log}",
        seen.leaves.len(),
        seen.log.len(),
        seen.timeline()
    );
    assert!(
        seen.log.iter().all(|o| o.chain_len == 2),
        "every handshake must present leaf + intermediate:\n  {}",
        seen.timeline()
    );
    // A new leaf is first served after the older one; while the server switches (the
    // old nginx worker or Apache child finishing), both may answer for a moment, but
    // once the newer one has been served for `TRANSITION`, the older never comes back.
    let first_seen: Vec<Duration> = (0..seen.leaves.len())
        .map(|n| {
            seen.log
                .iter()
                .find(|o| o.result == Ok(n))
                .map(|o| o.at)
                .unwrap()
        })
        .collect();
    for o in &seen.log {
        let Ok(n) = o.result else { continue };
        if let Some(newer) = first_seen.get(n + 1) {
            assert!(
                o.at < *newer + TRANSITION,
                "leaf#{n} served at {:?}, {:?} after leaf#{} first was (runs {:?}):\n  {}",
                o.at,
                o.at - *newer,
                n + 1,
                seen.runs(),
                seen.timeline()
            );
        }
    }
    for (n, first) in first_seen.iter().enumerate().skip(1) {
        let last_old = seen
            .log
            .iter()
            .filter(|o| o.result == Ok(n - 1))
            .map(|o| o.at)
            .max()
            .unwrap();
        eprintln!(
            "switch to leaf#{n}: old leaf still served for {:?} after the new one first was",
            last_old.saturating_sub(*first)
        );
    }
    // Each newer leaf is a later issuance.
    for w in seen.leaves.windows(2) {
        let (a, b) = (
            CertInfo::from_der(&w[0]).unwrap(),
            CertInfo::from_der(&w[1]).unwrap(),
        );
        assert!(
            a.not_before <= b.not_before && a.not_after < b.not_after,
            "leaf {} served before the older {}",
            a.serial,
            b.serial
        );
    }
    // Every served leaf was installed, in this order. The ledger records an install
    // once it is verified, so the newest one may be a moment behind what is served.
    let newest = serial_of(seen.leaves.last().unwrap());
    wait_until(Duration::from_secs(10), || {
        installed_serials(sb).contains(&newest)
    });
    let installed = installed_serials(sb);
    let mut from = 0;
    for leaf in &seen.leaves {
        let serial = serial_of(leaf);
        let at = installed[from..]
            .iter()
            .position(|s| *s == serial)
            .unwrap_or_else(|| {
                panic!("served serial {serial} is not a later install in the ledger: {installed:?}")
            });
        from += at + 1;
    }
}

/// `openssl s_client` trusting only `root`: the chain the server presents verifies and
/// names `SERVER_NAME`; returns the served leaf's serial.
#[track_caller]
fn s_client_verifies(connect: &str, root: &Path) -> String {
    let r = crate::support::servers::s_client(
        connect,
        root,
        &["-verify_hostname", SERVER_NAME, "-showcerts"],
    );
    assert!(
        r.stdout.contains("Verify return code: 0 (ok)"),
        "openssl s_client does not verify what is served: {r:?}"
    );
    let served = r.stdout.matches("-----BEGIN CERTIFICATE-----").count();
    assert_eq!(served, 2, "served chain = leaf + intermediate: {r:?}");
    let first = r
        .stdout
        .find("-----BEGIN CERTIFICATE-----")
        .map(|i| &r.stdout[i..])
        .unwrap();
    let der = CertificateDer::pem_slice_iter(first.as_bytes())
        .next()
        .unwrap()
        .unwrap();
    serial_of(&der)
}

// ---------------------------------------------------------------------------------------
// The daemon (as in daemon.rs)

// ---------------------------------------------------------------------------------------
// Tests

/// A 30 s certificate renewed at half its life, served by nginx while a client
/// handshakes every few milliseconds: two renewals, not one failed handshake.
#[test]
fn nginx_renewals_never_fail_a_handshake() {
    let sb = Sandbox::new();
    let cert = www(Layout::Nginx)
        .extra("lifetime: 30s")
        .extra("renew_before: 50%");
    bootstrap(&sb, &cert);
    let nginx = start_nginx(&sb, &cert);
    let root = sb.root_bundle();
    write_config(
        &sb,
        &[server_yaml(&nginx.server_spec("nginx"), None, None)],
        &[served_by(&cert, "nginx", &nginx.connect(), None)],
    );
    let client = TlsClient::new(&root, &nginx.connect());
    assert_eq!(client.leaf().unwrap(), leaf_on_disk(&sb, &cert));

    let mut d = Daemon::start_ready(&sb, &[]);
    let hs = Handshaker::start(client.clone());
    let t = Instant::now();
    let renewed_twice = wait_until(Duration::from_secs(45), || hs.distinct() >= 3);
    let elapsed = t.elapsed();
    let handshakes = hs.count();
    let seen = hs.finish();
    let log = d.log();
    assert!(
        renewed_twice,
        "fewer than 3 leaves served within 45 s:\n  {}\n--- daemon log ---\n{log}",
        seen.timeline()
    );
    eprintln!(
        "nginx: {} leaves served in {elapsed:?}, {handshakes} handshakes",
        seen.leaves.len()
    );
    check_seen(&sb, &seen, 3, &log);
    // The log line follows the handshake that proved the switch by a moment.
    let verified = |log: &str| log.lines().filter(|l| l.contains("verified")).count();
    wait_until(Duration::from_secs(10), || verified(&d.log()) >= 2);
    let log = d.log();
    assert!(
        verified(&log) >= 2,
        "the daemon logs a `verified` line per renewal:\n{log}"
    );
    assert!(d.alive(), "{log}");

    // Independent judges of the end state: openssl verifies what is served and what is
    // installed, and they are the same certificate.
    let served_serial = s_client_verifies(&nginx.connect(), &root);
    cert.files(&sb).check(&root, "sslserver");
    assert!(
        wait_until(Duration::from_secs(5), || {
            client.leaf().is_ok_and(|l| l == leaf_on_disk(&sb, &cert))
        }),
        "nginx does not serve the installed certificate (s_client saw {served_serial})"
    );
    assert!(nginx.error_log().lines().all(|l| !l.contains("[emerg]")));
}

/// The same with Apache, whose graceful restart may take a second: one renewal, not one
/// failed handshake.
#[test]
fn apache_renewal_never_fails_a_handshake() {
    let sb = Sandbox::new();
    let cert = www(Layout::Apache)
        .extra("lifetime: 30s")
        .extra("renew_before: 50%");
    bootstrap(&sb, &cert);
    let apache = start_apache(&sb, &cert);
    let root = sb.root_bundle();
    write_config(
        &sb,
        &[server_yaml(&apache.server_spec("apache"), None, None)],
        &[served_by(&cert, "apache", &apache.connect(), None)],
    );
    let client = TlsClient::new(&root, &apache.connect());
    assert_eq!(client.leaf().unwrap(), leaf_on_disk(&sb, &cert));

    let mut d = Daemon::start_ready(&sb, &[]);
    let hs = Handshaker::start(client.clone());
    let t = Instant::now();
    let renewed = wait_until(Duration::from_secs(30), || hs.distinct() >= 2);
    let elapsed = t.elapsed();
    // Keep handshaking across the end of the graceful restart (old children finishing).
    let count = hs.count();
    wait_until(Duration::from_secs(3), || hs.count() >= count + 100);
    let seen = hs.finish();
    let log = d.log();
    assert!(
        renewed,
        "no renewal served within 30 s:\n  {}\n--- daemon log ---\n{log}\n--- apache error log ---\n{}",
        seen.timeline(),
        apache.error_log()
    );
    eprintln!(
        "apache: {} leaves served in {elapsed:?}, {} handshakes",
        seen.leaves.len(),
        seen.log.len()
    );
    check_seen(&sb, &seen, 2, &log);
    wait_until(Duration::from_secs(10), || d.log().contains("verified"));
    let log = d.log();
    assert!(
        log.lines().any(|l| l.contains("verified")),
        "no `verified` line:\n{log}"
    );
    assert!(d.alive(), "{log}");
    s_client_verifies(&apache.connect(), &root);
    cert.files(&sb).check(&root, "sslserver");
}

/// nginx's config is broken when a renewal comes: the config test fails, the previous
/// files are put back byte for byte, nginx keeps serving the old certificate, status
/// says why, and the daemon carries on. Once the config is fixed, a renewal goes through.
#[test]
fn nginx_broken_config_rolls_back_and_keeps_serving() {
    let sb = Sandbox::new();
    let cert = www(Layout::Nginx);
    bootstrap(&sb, &cert);
    let nginx = start_nginx(&sb, &cert);
    let root = sb.root_bundle();
    write_config(
        &sb,
        &[server_yaml(&nginx.server_spec("nginx"), None, None)],
        &[served_by(&cert, "nginx", &nginx.connect(), None)],
    );
    let client = TlsClient::new(&root, &nginx.connect());
    let mut d = Daemon::start_ready(&sb, &[]);
    let old = leaf_on_disk(&sb, &cert);
    assert_eq!(client.leaf().unwrap(), old);
    let before = tls_snapshot(&sb);

    nginx.break_config();
    let r = sb.ck(&["renew", "--force", "www"]);
    r.expect_code(1)
        .stdout_has("config test of server `nginx` failed")
        .stdout_has("previous files restored")
        .stdout_has("certkeeper_test_broken_directive");
    before.assert_same(&tls_snapshot(&sb), "after the failed config test");
    for _ in 0..5 {
        assert_eq!(
            client.leaf().unwrap(),
            old,
            "nginx must still serve the old leaf"
        );
    }
    let row = sb.status_row("www");
    assert_eq!(row["last_result"]["event"], "failed", "{row}");
    let reason = row["last_result"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("config test"), "{row}");
    assert_eq!(row["state"], "ok", "the old pair is still valid: {row}");

    // The daemon saw the writes and the restore; it must neither die nor change
    // anything (a quiet window longer than its settle time).
    let quiet = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < quiet {
        assert!(d.alive(), "the daemon died:\n{}", d.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    before.assert_same(&tls_snapshot(&sb), "after the daemon looked");
    assert_eq!(client.leaf().unwrap(), old);

    nginx.fix_config();
    let r = sb.ck(&["renew", "--force", "www"]);
    r.ok().stdout_has("www: renewed");
    let new = leaf_on_disk(&sb, &cert);
    assert_ne!(new, old);
    assert!(
        client.wait_for(&new, Duration::from_secs(5)),
        "nginx does not serve the new leaf {}",
        describe(&new)
    );
    cert.files(&sb).check(&root, "sslserver");
    assert_eq!(sb.status_row("www")["last_result"]["event"], "installed");
    assert!(d.alive(), "{}", d.log());
}

/// A reload that does nothing: nginx keeps serving the old certificate, so the verify
/// fails; the previous files come back byte for byte and nginx still serves them.
#[test]
fn verify_failure_rolls_back() {
    let sb = Sandbox::new();
    let cert = www(Layout::Nginx);
    bootstrap(&sb, &cert);
    let nginx = start_nginx(&sb, &cert);
    let root = sb.root_bundle();
    write_config(
        &sb,
        &[server_yaml(
            &nginx.server_spec("nginx"),
            None,
            Some(&["/bin/true"]),
        )],
        &[served_by(&cert, "nginx", &nginx.connect(), Some("2s"))],
    );
    let client = TlsClient::new(&root, &nginx.connect());
    let old = leaf_on_disk(&sb, &cert);
    assert_eq!(client.leaf().unwrap(), old);
    let before = tls_snapshot(&sb);

    let t = Instant::now();
    let r = sb.ck(&["renew", "--force", "www"]);
    let took = t.elapsed();
    r.expect_code(1)
        .stdout_has(&format!("verify of {} failed", nginx.connect()))
        .stdout_has("previous files restored")
        .stdout_has("not the installed certificate");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(10),
        "verify waited {took:?} with a 2 s timeout"
    );
    before.assert_same(&tls_snapshot(&sb), "after the failed verify");
    assert_eq!(client.leaf().unwrap(), old, "nginx must serve the old leaf");
    cert.files(&sb).check(&root, "sslserver");
    let row = sb.status_row("www");
    assert_eq!(row["last_result"]["event"], "failed", "{row}");
    let reason = row["last_result"]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("verify"), "{row}");
    // The new pair was issued (and archived) but never recorded as installed.
    let installed = installed_serials(&sb);
    assert_eq!(installed, vec![serial_of(&old)], "{installed:?}");
}

/// The files on disk were replaced (by a newer valid pair of the same CA) but nginx was
/// never reloaded: the daemon notices at start that nginx serves something else and
/// reloads it.
#[test]
fn startup_reloads_a_server_that_serves_a_stale_certificate() {
    let sb = Sandbox::new();
    let cert = www(Layout::Nginx);
    bootstrap(&sb, &cert);
    let nginx = start_nginx(&sb, &cert);
    let root = sb.root_bundle();
    let client = TlsClient::new(&root, &nginx.connect());
    let a = leaf_on_disk(&sb, &cert);
    assert_eq!(client.leaf().unwrap(), a);

    // Install B without reloading nginx (as after a crash between install and reload).
    let plain = cert.clone().extra("reload: [nginx]");
    write_config(
        &sb,
        &[server_yaml(
            &nginx.server_spec("nginx"),
            None,
            Some(&["/bin/true"]),
        )],
        &[plain],
    );
    sb.ck(&["renew", "--force", "www"]).ok();
    let b = leaf_on_disk(&sb, &cert);
    assert_ne!(a, b);
    assert_eq!(client.leaf().unwrap(), a, "nginx was not reloaded");

    write_config(
        &sb,
        &[server_yaml(&nginx.server_spec("nginx"), None, None)],
        &[served_by(&cert, "nginx", &nginx.connect(), None)],
    );
    let t = Instant::now();
    let mut d = Daemon::start(&sb, &[]);
    assert!(
        client.wait_for(&b, Duration::from_secs(10)),
        "nginx still serves {} after 10 s, not {}:\n{}",
        describe(&client.leaf().unwrap()),
        describe(&b),
        d.log()
    );
    eprintln!(
        "stale nginx reloaded {:?} after the daemon started",
        t.elapsed()
    );
    assert!(d.wait_notify("READY=1", READY), "{}", d.log());
    let log = d.log();
    assert!(
        log.contains("does not serve the certificate on disk"),
        "the daemon says why it reloads:\n{log}"
    );
    // Repaired by a reload, not by a new issuance.
    assert_eq!(leaf_on_disk(&sb, &cert), b);
    assert_eq!(
        installed_serials(&sb),
        vec![serial_of(&a), serial_of(&b)],
        "{log}"
    );
    assert!(d.alive());
}

/// SIGTERM while the daemon is renewing (its config test is slow): it exits 0 within
/// 5 s, and nginx serves a valid certificate all along and afterwards, the one on disk.
#[test]
fn sigterm_during_a_renewal_exits_cleanly() {
    let sb = Sandbox::new();
    let cert = www(Layout::Nginx)
        .extra("lifetime: 30s")
        .extra("renew_before: 80%");
    bootstrap(&sb, &cert);
    let nginx = start_nginx(&sb, &cert);
    let root = sb.root_bundle();
    let spec = nginx.server_spec("nginx");
    let nginx_test = spec.test.clone().unwrap();
    let slow_test = vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        "sleep 1 && exec \"$@\"".to_string(),
        "slow-test".to_string(),
    ]
    .into_iter()
    .chain(nginx_test)
    .collect();
    write_config(
        &sb,
        &[server_yaml(&spec, Some(slow_test), None)],
        &[served_by(&cert, "nginx", &nginx.connect(), None)],
    );
    let client = TlsClient::new(&root, &nginx.connect());
    let first = leaf_on_disk(&sb, &cert);

    let mut d = Daemon::start_ready(&sb, &[]);
    let hs = Handshaker::start(client.clone());
    assert!(
        wait_until(Duration::from_secs(20), || d.log().contains("renewing")),
        "no renewal started:\n{}",
        d.log()
    );
    let t = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5));
    let took = t.elapsed();
    let log = d.log();
    let status = status.unwrap_or_else(|| panic!("still running 5 s after SIGTERM:\n{log}"));
    eprintln!("SIGTERM during a renewal: exited {status:?} after {took:?}");
    assert!(status.success(), "{status:?}\n{log}");
    assert!(log.contains("stopping"), "{log}");

    // Keep handshaking a little after the exit, then judge.
    let count = hs.count();
    wait_until(Duration::from_secs(2), || hs.count() >= count + 50);
    let seen = hs.finish();
    check_seen(&sb, &seen, 1, &log);
    let installed = leaf_on_disk(&sb, &cert);
    cert.files(&sb).check(&root, "sslserver");
    assert!(
        client.wait_for(&installed, Duration::from_secs(5)),
        "nginx does not serve the installed {} (first was {}):\n{log}",
        describe(&installed),
        describe(&first)
    );
    s_client_verifies(&nginx.connect(), &root);
    let leftovers: Vec<_> = fs::read_dir(sb.path("tls"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("certkeeper-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// SIGTERM while the daemon verifies three freshly installed certificates that nginx
/// never picks up (its reload does nothing; each verify would wait its 3 s timeout).
/// The daemon stops between certificates: it must not wait out the verify of every
/// certificate of the pass, and it must leave every pair whole or absent.
#[test]
fn sigterm_during_verifies_stops_between_certificates() {
    let sb = Sandbox::new();
    let cert = www(Layout::Nginx);
    bootstrap(&sb, &cert);
    let nginx = start_nginx(&sb, &cert);
    let root = sb.root_bundle();
    let others: Vec<CertDef> = ["a", "b", "c"]
        .iter()
        .map(|n| CertDef::new(n, Layout::Nginx))
        .collect();
    let mut certs = vec![cert.clone()];
    for c in &others {
        certs.push(c.clone().extra("reload: [nginx]").extra(&format!(
            "verify: {{ connect: {}, server_name: {}.example.internal, timeout: 3s }}",
            q(&nginx.connect()),
            c.name
        )));
    }
    write_config(
        &sb,
        &[server_yaml(
            &nginx.server_spec("nginx"),
            None,
            Some(&["/bin/true"]),
        )],
        &certs,
    );
    let client = TlsClient::new(&root, &nginx.connect());
    let served = leaf_on_disk(&sb, &cert);

    // The first pass installs a, b and c, "reloads" nginx, then verifies each in turn.
    let mut d = Daemon::start(&sb, &[]);
    assert!(
        wait_until(Duration::from_secs(20), || d.log().contains("reloaded")),
        "no reload:\n{}",
        d.log()
    );
    let t = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(30));
    let took = t.elapsed();
    let log = d.log();
    eprintln!("SIGTERM during verifies: exited {status:?} after {took:?}");
    let status = status.unwrap_or_else(|| panic!("still running 30 s after SIGTERM:\n{log}"));
    assert!(status.success(), "{status:?}\n{log}");
    // Every pair is whole or absent, and nginx serves what it served.
    for c in &others {
        let f = c.files(&sb);
        if f.cert.exists() || f.key_file.exists() {
            f.check(&root, "sslserver");
        }
    }
    assert_eq!(client.leaf().unwrap(), served);
    cert.files(&sb).check(&root, "sslserver");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} to stop after SIGTERM (verify after verify):\n{log}"
    );
}
