//! End-to-end tests of the ACME issuer against Pebble (Let's Encrypt's test server, the
//! Debian package `pebble`). Each test starts its own Pebble on ports picked free at run
//! time, with a listener certificate from certkeeper's own CA, and stops it by the pid
//! it started. Pebble's root changes on every start: it is fetched from `/roots/0`.

use crate::support::servers::{free_port, wait_for, TestCa};
use crate::support::*;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PEBBLE: &str = "/usr/bin/pebble";

/// Four ports free at once (so no two are the same).
fn distinct_free_ports() -> [u16; 4] {
    let held: Vec<std::net::TcpListener> = (0..4)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().unwrap().port())
}

/// A private Pebble: `dir` holds its config, listener certificate and log.
pub(crate) struct Pebble {
    child: Child,
    pub dir: PathBuf,
    port: u16,
    mgmt_port: u16,
    /// Where Pebble's VA connects for http-01 (certkeeper's standalone responder).
    http_port: u16,
    /// Trust for Pebble's HTTPS listener (certkeeper's test CA root).
    listener_ca: PathBuf,
    /// How it was started, to start it again.
    env: Vec<(&'static str, String)>,
    /// Where its VA asks DNS questions (`-dnsserver`), if not the system's resolvers.
    dns: Option<String>,
}

impl Pebble {
    pub(crate) fn start(dir: &Path, always_valid: bool) -> Pebble {
        Pebble::start_with(dir, always_valid, 0, None)
    }

    /// A Pebble that validates for real and asks `dns` (`HOST:PORT`) its DNS questions.
    pub(crate) fn start_with_dns(dir: &Path, dns: &str) -> Pebble {
        Pebble::launch(dir, false, 0, None, Some(dns.to_string()))
    }

    /// `nonce_reject`: the share (percent) of requests Pebble answers with badNonce;
    /// `eab`: (kid, base64url HMAC key) to require External Account Binding.
    fn start_with(
        dir: &Path,
        always_valid: bool,
        nonce_reject: u32,
        eab: Option<(&str, &str)>,
    ) -> Pebble {
        Pebble::launch(dir, always_valid, nonce_reject, eab, None)
    }

    fn launch(
        dir: &Path,
        always_valid: bool,
        nonce_reject: u32,
        eab: Option<(&str, &str)>,
        dns: Option<String>,
    ) -> Pebble {
        fs::create_dir_all(dir).unwrap();
        let ca = TestCa::new(dir);
        let pair = ca.issue_for(&["localhost", "127.0.0.1"]);
        let cert = dir.join("listener.crt");
        let key = dir.join("listener.key");
        fs::write(&cert, pair.fullchain_pem()).unwrap();
        fs::write(&key, &pair.key_pem).unwrap();
        let listener_ca = dir.join("ca").join("root.crt");
        assert!(listener_ca.exists(), "{}", listener_ca.display());
        let mut env = vec![
            ("PEBBLE_WFE_NONCEREJECT", nonce_reject.to_string()),
            ("PEBBLE_VA_NOSLEEP", "1".to_string()),
        ];
        if always_valid {
            env.push(("PEBBLE_VA_ALWAYS_VALID", "1".into()));
        }
        if dns.is_some() {
            // Every order validates its challenges (Pebble reuses half of the valid
            // authorizations by default), so each DNS-01 test sees its records used.
            env.push(("PEBBLE_AUTHZREUSE", "0".into()));
        }
        // A port picked free can be taken by another test before Pebble binds it:
        // Pebble then exits, and starts again on other ports.
        for attempt in 1.. {
            let [port, mgmt_port, http_port, tls_port] = distinct_free_ports();
            let mut config = serde_json::json!({
                "pebble": {
                    "listenAddress": format!("127.0.0.1:{port}"),
                    "managementListenAddress": format!("127.0.0.1:{mgmt_port}"),
                    "certificate": cert,
                    "privateKey": key,
                    "httpPort": http_port,
                    "tlsPort": tls_port,
                    "ocspResponderURL": "",
                    "externalAccountBindingRequired": false
                }
            });
            if let Some((kid, key)) = eab {
                config["pebble"]["externalAccountBindingRequired"] = true.into();
                config["pebble"]["externalAccountMACKeys"] = serde_json::json!({ kid: key });
            }
            fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
            let child = Pebble::spawn(dir, &env, dns.as_deref());
            let mut p = Pebble {
                child,
                dir: dir.to_path_buf(),
                port,
                mgmt_port,
                http_port,
                listener_ca: listener_ca.clone(),
                env: env.clone(),
                dns: dns.clone(),
            };
            match p.wait_listening() {
                Ok(()) => return p,
                Err(log) if attempt < 3 => eprintln!("pebble exited ({log}); again on other ports"),
                Err(log) => panic!("pebble exited three times: {log}"),
            }
        }
        unreachable!()
    }

    fn spawn(dir: &Path, env: &[(&'static str, String)], dns: Option<&str>) -> Child {
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("pebble.log"))
            .unwrap();
        let mut cmd = Command::new(PEBBLE);
        if let Some(dns) = dns {
            cmd.args(["-dnsserver", dns]);
        }
        cmd.arg("-config")
            .arg(dir.join("pebble.json"))
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        cmd.spawn().expect("start pebble")
    }

    /// Waits until Pebble listens; Err with the end of its log when it exited first.
    fn wait_listening(&mut self) -> Result<(), String> {
        let mut exited = false;
        let listening = wait_until(Duration::from_secs(20), || {
            exited = matches!(self.child.try_wait(), Ok(Some(_)));
            exited
                || TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                    && TcpStream::connect(("127.0.0.1", self.mgmt_port)).is_ok()
        });
        let log = || {
            let log = fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        };
        if exited {
            return Err(log());
        }
        assert!(
            listening,
            "timed out after 20 s waiting for pebble to listen: {}",
            log()
        );
        Ok(())
    }

    /// Stops Pebble (a CA that is down); `restart` brings it back.
    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops Pebble and starts it again on the same ports: its accounts, orders and
    /// root are gone (it keeps everything in memory), as with a CA that reset its
    /// database.
    fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        wait_for(Duration::from_secs(10), "pebble to stop listening", || {
            TcpStream::connect(("127.0.0.1", self.port)).is_err()
        });
        self.child = Pebble::spawn(&self.dir, &self.env, self.dns.as_deref());
        if let Err(log) = self.wait_listening() {
            panic!("pebble exited at its restart: {log}");
        }
    }

    pub(crate) fn directory(&self) -> String {
        format!("https://127.0.0.1:{}/dir", self.port)
    }

    /// Pebble's current root (it changes on every start), written to `root.pem`.
    pub(crate) fn root(&self) -> PathBuf {
        let out = Command::new("curl")
            .args([
                "-sSfk",
                &format!("https://127.0.0.1:{}/roots/0", self.mgmt_port),
            ])
            .output()
            .expect("run curl");
        assert!(out.status.success(), "fetch pebble root: {out:?}");
        let p = self.dir.join("pebble-root.pem");
        fs::write(&p, &out.stdout).unwrap();
        p
    }

    /// What Pebble's management API says of `serial` ("Valid", "Revoked").
    fn status_of(&self, serial: &str) -> String {
        let out = Command::new("curl")
            .args([
                "-sSfk",
                &format!(
                    "https://127.0.0.1:{}/cert-status-by-serial/{serial}",
                    self.mgmt_port
                ),
            ])
            .output()
            .expect("run curl");
        assert!(out.status.success(), "cert status of {serial}: {out:?}");
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["Status"].as_str().unwrap_or_default().to_string()
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(self.dir.join("pebble.log")).unwrap_or_default()
    }

    /// The `issuers:` section for this Pebble, with a standalone http-01 responder.
    fn issuers_yaml(&self, name: &str) -> String {
        self.issuers_yaml_with(
            name,
            &format!(
                "        http01: {{ standalone: \"127.0.0.1:{}\" }}\n",
                self.http_port
            ),
        )
    }

    /// The `issuers:` section for this Pebble with `challenge` (lines under `challenge:`).
    pub(crate) fn issuers_yaml_with(&self, name: &str, challenge: &str) -> String {
        format!(
            "issuers:\n  {name}:\n    acme:\n      directory: {}\n      ca_bundle: {}\n      \
             contact: [mailto:ops@example.com]\n      challenge:\n{challenge}",
            self.directory(),
            self.listener_ca.display(),
        )
    }
}

impl Drop for Pebble {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn config_with(sb: &Sandbox, certs: &[CertDef], issuers: &str) {
    let mut yaml = header();
    for c in certs {
        yaml.push_str(&c.yaml());
    }
    yaml.push_str(issuers);
    sb.write_config(&yaml);
}

/// `local` (for `localhost`) from `pebble`, with `extra` lines, configured in `sb`.
fn local_from(sb: &Sandbox, pebble: &Pebble, extra: &[&str]) -> CertDef {
    let mut acme = CertDef::new("local", Layout::Nginx)
        .sans(&["localhost"])
        .extra("issuer: pebble");
    for e in extra {
        acme = acme.extra(e);
    }
    config_with(
        sb,
        std::slice::from_ref(&acme),
        &pebble.issuers_yaml("pebble"),
    );
    acme
}

/// openssl verify (not -x509_strict: Pebble's CA certificates are its own business).
pub(crate) fn verify_pebble(root: &Path, files: &Installed) {
    openssl(&[
        "verify",
        "-no-CAfile",
        "-no-CApath",
        "-no-CAstore",
        "-CAfile",
        path_str(root),
        "-untrusted",
        path_str(&files.untrusted),
        "-purpose",
        "sslserver",
        path_str(&files.cert),
    ])
    .ok();
    assert_eq!(
        pubkey_of_key(&files.key_file),
        pubkey_of_cert(&files.cert),
        "key and certificate do not match"
    );
}

#[test]
fn acme_issues_renews_with_the_same_account_and_internal_keeps_working() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), true);
    let acme = CertDef::new("web", Layout::Nginx)
        .sans(&["web.example.com", "www.example.com"])
        .extra("issuer: pebble");
    let internal = CertDef::new("inner", Layout::Apache);
    config_with(
        &sb,
        &[acme.clone(), internal.clone()],
        &pebble.issuers_yaml("pebble"),
    );

    let t = Instant::now();
    let r = sb.renew_all();
    eprintln!("first ACME issuance: {:?}", t.elapsed());
    assert_eq!(r.code, 0, "{r:?}\n--- pebble log ---\n{}", pebble.log());
    assert!(r.line_for("web").contains("renewed"), "{r:?}");
    assert!(r.line_for("inner").contains("renewed"), "{r:?}");

    // The ACME chain verifies against Pebble's root; the leaf names what we asked.
    let root = pebble.root();
    let files = acme.files(&sb);
    verify_pebble(&root, &files);
    let text = cert_text(&files.cert);
    assert!(text.contains("DNS:web.example.com"), "{text}");
    assert!(text.contains("DNS:www.example.com"), "{text}");
    assert_eq!(
        pem_blocks(&files.cert, "CERTIFICATE").len(),
        2,
        "leaf + intermediate"
    );
    // The internal CA certificate in the same config is unaffected.
    internal.files(&sb).check(&sb.root_bundle(), "sslserver");

    // The account is stored once, private, and reused.
    let account = sb.state_dir().join("acme/pebble/account.json");
    assert_eq!(mode(&account), 0o600);
    let account_before = fs::read(&account).unwrap();
    let serial_before = files.serial();

    // A second plain pass leaves it alone (it is from its issuer and not due).
    let r = sb.renew_all();
    r.ok();
    assert!(!r.line_for("web").contains("renewed"), "{r:?}");

    let t = Instant::now();
    let r = sb.ck(&["renew", "--all", "--force"]);
    eprintln!("forced ACME reissue: {:?}", t.elapsed());
    assert_eq!(r.code, 0, "{r:?}\n--- pebble log ---\n{}", pebble.log());
    assert!(r.line_for("web").contains("renewed"), "{r:?}");
    verify_pebble(&root, &files);
    assert_ne!(files.serial(), serial_before, "a new serial");
    assert_eq!(
        fs::read(&account).unwrap(),
        account_before,
        "the same account is reused"
    );
    // One account registration in Pebble's log at most (it logs new accounts).
    let ledger = sb.ledger();
    assert_eq!(count_events(&ledger, "issued", Some("web")), 2);
    assert!(ledger
        .iter()
        .any(|e| e["name"] == "web" && e["issuer"] == "pebble"));
}

/// A pass restores the stored account once (trust roots read, directory fetched) and
/// uses it for every certificate it orders.
#[test]
fn acme_a_pass_restores_its_account_once_for_all_its_certificates() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), true);
    let certs: Vec<CertDef> = (0..3)
        .map(|i| {
            CertDef::new(&format!("web{i}"), Layout::Nginx)
                .sans(&[&format!("web{i}.example.com")])
                .extra("issuer: pebble")
        })
        .collect();
    config_with(&sb, &certs, &pebble.issuers_yaml("pebble"));
    let r = sb.renew_all();
    assert_eq!(r.code, 0, "{r:?}\n--- pebble log ---\n{}", pebble.log());
    let config = sb.config();
    let out = sb
        .command(&["renew", "--all", "--force", "-c", &config])
        .env("CERTKEEPER_LOG", "info,certkeeper::issuer=debug")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(log.matches("renewing").count(), 3, "{log}");
    assert_eq!(
        log.matches("restored the ACME account").count(),
        1,
        "one restore for three orders: {log}"
    );
    for c in &certs {
        verify_pebble(&pebble.root(), &c.files(&sb));
    }
}

#[test]
fn unreachable_acme_directory_fails_clearly_and_keeps_the_old_pair() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), true);
    let acme = CertDef::new("web", Layout::Separate)
        .sans(&["web.example.com"])
        .extra("issuer: pebble");
    config_with(
        &sb,
        std::slice::from_ref(&acme),
        &pebble.issuers_yaml("pebble"),
    );
    sb.renew_all().ok();
    let files = acme.files(&sb);
    let before: Vec<Vec<u8>> = files.paths().iter().map(|p| fs::read(p).unwrap()).collect();

    // Same config, but the CA is gone: a port nobody listens on.
    let dead = format!("https://127.0.0.1:{}/dir", free_port());
    let issuers = pebble
        .issuers_yaml("pebble")
        .replace(&pebble.directory(), &dead);
    config_with(&sb, std::slice::from_ref(&acme), &issuers);
    let t = Instant::now();
    let r = sb.ck(&["renew", "--all", "--force"]);
    eprintln!("unreachable CA failed after {:?}", t.elapsed());
    eprintln!("{}", r.all());
    r.expect_code(1);
    assert!(r.all().contains(&dead), "the message names the CA: {r:?}");
    assert!(
        r.all().contains("web"),
        "the message names the certificate: {r:?}"
    );
    let after: Vec<Vec<u8>> = files.paths().iter().map(|p| fs::read(p).unwrap()).collect();
    assert_eq!(before, after, "the old pair is kept");
}

#[test]
fn acme_real_http01_validation_with_standalone_responder() {
    let sb = Sandbox::new();
    // No PEBBLE_VA_ALWAYS_VALID: Pebble's VA fetches the token from 127.0.0.1:httpPort.
    let pebble = Pebble::start(&sb.path("pebble"), false);
    let acme = local_from(&sb, &pebble, &[]);
    let t = Instant::now();
    let r = sb.renew_all();
    eprintln!("real http-01 issuance: {:?}", t.elapsed());
    assert_eq!(r.code, 0, "{r:?}\n--- pebble log ---\n{}", pebble.log());
    verify_pebble(&pebble.root(), &acme.files(&sb));
    assert!(
        pebble.log().contains("set VALID by completed challenge"),
        "Pebble really validated: {}",
        pebble.log()
    );
    // The responder is gone once the order is done.
    assert!(TcpStream::connect(("127.0.0.1", pebble.http_port)).is_err());
}

/// Pebble's default: 5 % of requests are refused with badNonce, as real CAs sometimes do.
/// Every renewal must still succeed (the client retries with the fresh nonce).
#[test]
fn acme_survives_bad_nonce_rejections() {
    let sb = Sandbox::new();
    let pebble = Pebble::start_with(&sb.path("pebble"), true, 5, None);
    let acme = CertDef::new("web", Layout::Nginx)
        .sans(&["web.example.com"])
        .extra("issuer: pebble");
    config_with(
        &sb,
        std::slice::from_ref(&acme),
        &pebble.issuers_yaml("pebble"),
    );
    sb.renew_all().ok();
    let root = pebble.root();
    let mut serials = vec![acme.files(&sb).serial()];
    for _ in 0..4 {
        sb.ck(&["renew", "--force", "web"]).ok();
        serials.push(acme.files(&sb).serial());
    }
    serials.sort();
    serials.dedup();
    assert_eq!(
        serials.len(),
        5,
        "every forced renewal gives a new certificate"
    );
    verify_pebble(&root, &acme.files(&sb));
}

/// The daemon issues from the ACME CA on its own (the issuer runs on the daemon's
/// blocking pool, bridged to its runtime) and reports READY=1 afterwards.
#[test]
fn the_daemon_issues_from_the_acme_ca() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), true);
    let acme = CertDef::new("web", Layout::Apache)
        .sans(&["web.example.com"])
        .extra("issuer: pebble");
    let internal = CertDef::new("api", Layout::Nginx);
    config_with(
        &sb,
        &[acme.clone(), internal.clone()],
        &pebble.issuers_yaml("pebble"),
    );
    let mut d = crate::support::daemon::Daemon::start(&sb, &[]);
    assert!(
        d.wait_notify("READY=1", Duration::from_secs(60)),
        "no READY=1: {}\n{}",
        d.log(),
        pebble.log()
    );
    verify_pebble(&pebble.root(), &acme.files(&sb));
    internal.files(&sb).check(&sb.root_bundle(), "sslserver");
    let status = sb.ck(&["status", "--json"]);
    let rows: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    let web = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "web")
        .unwrap();
    assert_eq!(web["issuer"], "pebble", "{web}");
    assert_eq!(web["state"], "ok", "{web}");
    assert!(
        status.stdout.contains("\"issuer\": \"internal\""),
        "{}",
        status.stdout
    );
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
}

/// A CA that requires External Account Binding refuses an account without it, and
/// accepts one bound with the configured key id and HMAC key.
#[test]
fn external_account_binding_is_used_when_configured() {
    const KID: &str = "kid-1";
    const KEY: &str = "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W";
    let sb = Sandbox::new();
    let pebble = Pebble::start_with(&sb.path("pebble"), true, 0, Some((KID, KEY)));
    let acme = CertDef::new("web", Layout::Nginx)
        .sans(&["web.example.com"])
        .extra("issuer: pebble");
    config_with(
        &sb,
        std::slice::from_ref(&acme),
        &pebble.issuers_yaml("pebble"),
    );
    let r = sb.renew_all();
    r.expect_code(1).stdout_has(&pebble.directory());
    assert!(r.all().to_lowercase().contains("external"), "{r:?}");
    assert!(!acme.files(&sb).cert.exists());

    let key_file = sb.path("eab.key");
    fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let issuers = pebble.issuers_yaml("pebble").replace(
        "      challenge:",
        &format!(
            "      eab: {{ kid: {KID}, hmac_key_file: {} }}\n      challenge:",
            key_file.display()
        ),
    );
    config_with(&sb, std::slice::from_ref(&acme), &issuers);
    sb.renew_all().ok();
    verify_pebble(&pebble.root(), &acme.files(&sb));
}

/// http-01 through a webroot served by a web server that is already running: certkeeper
/// only writes the token file (and removes it afterwards); Pebble really validates.
#[test]
fn acme_webroot_challenge_is_served_by_the_existing_web_server() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), false);
    let webroot = sb.path("www");
    fs::create_dir_all(&webroot).unwrap();
    // A plain static web server on Pebble's http-01 port, serving the webroot.
    let access_log = sb.path("web.log");
    let mut web = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &pebble.http_port.to_string(),
            "--bind",
            "127.0.0.1",
            "--directory",
        ])
        .arg(&webroot)
        .stdout(Stdio::null())
        .stderr(fs::File::create(&access_log).unwrap())
        .spawn()
        .expect("start a static web server");
    wait_for(Duration::from_secs(10), "the web server to listen", || {
        TcpStream::connect(("127.0.0.1", pebble.http_port)).is_ok()
    });
    let acme = CertDef::new("local", Layout::Nginx)
        .sans(&["localhost"])
        .extra("issuer: pebble");
    let issuers = pebble.issuers_yaml("pebble").replace(
        &format!("{{ standalone: \"127.0.0.1:{}\" }}", pebble.http_port),
        &format!("{{ webroot: {} }}", webroot.display()),
    );
    assert!(issuers.contains("webroot"), "{issuers}");
    config_with(&sb, std::slice::from_ref(&acme), &issuers);
    let r = sb.renew_all();
    let log = fs::read_to_string(&access_log).unwrap_or_default();
    let _ = web.kill();
    let _ = web.wait();
    assert_eq!(
        r.code,
        0,
        "{r:?}\n--- pebble ---\n{}\n--- web ---\n{log}",
        pebble.log()
    );
    verify_pebble(&pebble.root(), &acme.files(&sb));
    assert!(log.contains("GET /.well-known/acme-challenge/"), "{log}");
    assert!(
        pebble.log().contains("set VALID by completed challenge"),
        "{}",
        pebble.log()
    );
    let left: Vec<_> = fs::read_dir(webroot.join(".well-known/acme-challenge"))
        .map(|d| d.flatten().collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "token files must be removed: {left:?}");
}

/// An ACME certificate served by nginx is judged against the roots its clients trust:
/// the system store by default, where Pebble's root is not (named, `status --check`
/// exits 1, the pair stays), and `verify.roots` when the clients trust a private CA.
#[test]
fn acme_served_chain_is_judged_against_the_system_store_or_verify_roots() {
    use crate::support::servers::{server_yaml, Nginx};
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), false);
    let acme = CertDef::new("local", Layout::Nginx)
        .sans(&["localhost"])
        .extra("issuer: pebble");
    let issuers = pebble.issuers_yaml("pebble");
    config_with(&sb, std::slice::from_ref(&acme), &issuers);
    sb.renew_all().ok();
    let f = acme.files(&sb);
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, f.key.as_ref().unwrap());
    let root = pebble.root();
    let write = |roots: &str| {
        let cert = acme.clone().extra("reload: [web]").extra(&format!(
            "verify: {{ connect: \"{}\", server_name: localhost{roots} }}",
            nginx.connect()
        ));
        let yaml = header().replace(
            "certificates:\n",
            &format!(
                "servers:\n{}certificates:\n{}{issuers}",
                server_yaml(&nginx.server_spec("web"), None, None),
                cert.yaml()
            ),
        );
        sb.write_config(&yaml);
    };
    write("");
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok()
        .stderr_has("the served chain does not lead to the system's trusted roots");
    sb.ck(&["status", "--check"])
        .expect_code(1)
        .stdout_has("local: unverified: ");
    write(&format!(", roots: \"{}\"", root.display()));
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok();
    assert!(!r.stderr.contains("clients refuse"), "{r:?}");
    sb.ck(&["status", "--check"]).ok();
}

/// The CA forgot the account (Pebble restarted: a reset database): the next renewal
/// registers a new account with the same contact, keeps the old credentials as
/// `account.json.previous`, orders again and succeeds; the renewal after uses the new
/// account without registering again.
#[test]
fn acme_a_ca_that_forgot_the_account_gets_a_new_one_and_the_renewal_succeeds() {
    let sb = Sandbox::new();
    let mut pebble = Pebble::start(&sb.path("pebble"), true);
    let acme = local_from(&sb, &pebble, &[]);
    sb.renew_all().ok();
    assert!(
        !sb.state_dir().join("ca").exists(),
        "an ACME-only configuration created an internal CA"
    );
    let account = sb.state_dir().join("acme/pebble/account.json");
    let first = fs::read_to_string(&account).unwrap();
    pebble.restart();
    let r = sb.ck(&["renew", "--all", "--force"]);
    eprintln!("account recovery, the log:\n{}", r.stderr);
    r.ok()
        .stderr_has("the ACME CA no longer knows the stored account");
    assert_eq!(
        fs::read_to_string(account.with_extension("json.previous")).unwrap(),
        first
    );
    let second = fs::read_to_string(&account).unwrap();
    assert_ne!(second, first);
    assert_eq!(mode(&account), 0o600);
    verify_pebble(&pebble.root(), &acme.files(&sb));
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok();
    assert!(!r.stderr.contains("no longer knows"), "{r:?}");
    assert!(!r.stderr.contains("registered an ACME account"), "{r:?}");
    assert_eq!(fs::read_to_string(&account).unwrap(), second);
}

/// `ca revoke` on a serial the ACME CA issued revokes it there (Pebble's management API
/// says Revoked), never on the internal CA's CRL, and reissues the certificate;
/// `certkeeper revoke NAME` does the same for the certificate in place.
#[test]
fn acme_revocation_happens_at_the_acme_ca_and_never_on_the_internal_crl() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), true);
    let acme = CertDef::new("local", Layout::Nginx)
        .sans(&["localhost"])
        .extra("issuer: pebble");
    // An internal certificate too: there is an internal CA, and a CRL to look at.
    let inside = CertDef::new("inside", Layout::Nginx).sans(&["inside.example.internal"]);
    config_with(&sb, &[acme.clone(), inside], &pebble.issuers_yaml("pebble"));
    sb.renew_all().ok();
    let f = acme.files(&sb);
    // Serials as certkeeper prints them: lower-case hex without leading zeros.
    let norm = |s: String| s.trim_start_matches('0').to_ascii_lowercase();
    let first = norm(f.serial());
    assert_eq!(pebble.status_of(&first), "Valid");
    let r = sb.ck(&["ca", "revoke", &first, "--reason", "key-compromise"]);
    r.ok()
        .stdout_has(&format!(
            "revoked serial {first} (`local`) at the ACME CA `pebble`"
        ))
        .stdout_has("reissued `local`");
    assert_eq!(pebble.status_of(&first), "Revoked");
    let second = norm(f.serial());
    assert_ne!(second, first);
    verify_pebble(&pebble.root(), &f);
    // Never on the internal CA's CRLs.
    let crl = sb.ck(&["ca", "crl"]);
    crl.ok();
    let crl_file = sb.path("crl.pem");
    fs::write(&crl_file, &crl.stdout).unwrap();
    let text = openssl(&["crl", "-noout", "-text", "-in", path_str(&crl_file)]);
    text.ok();
    let listed: Vec<String> = text
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|s| s.trim_start_matches('0').to_ascii_lowercase())
        .collect();
    assert!(!listed.contains(&first), "{listed:?}");
    // Again: already revoked, nothing sent, nothing reissued.
    sb.ck(&["ca", "revoke", &first])
        .ok()
        .stdout_has("was already revoked at the ACME CA `pebble`");
    assert_eq!(norm(f.serial()), second);
    // `revoke NAME`: the certificate in place, wherever it came from.
    sb.ck(&["revoke", "local"]).ok().stdout_has(&format!(
        "revoked serial {second} (`local`) at the ACME CA `pebble`"
    ));
    assert_eq!(pebble.status_of(&second), "Revoked");
    assert_ne!(norm(f.serial()), second);
    // The account's credentials are lost: a new account could not revoke what the old
    // one ordered, so the request is signed with the certificate's own key.
    let third = norm(f.serial());
    fs::remove_file(sb.state_dir().join("acme/pebble/account.json")).unwrap();
    let r = sb.ck(&["revoke", "local"]);
    r.ok()
        .stderr_has("revoking with the certificate's own key")
        .stdout_has(&format!(
            "revoked serial {third} (`local`) at the ACME CA `pebble`"
        ));
    assert_eq!(pebble.status_of(&third), "Revoked");
    // And for an internal one: its CRL.
    let inside_serial = norm(CertDef::new("inside", Layout::Nginx).files(&sb).serial());
    sb.ck(&["revoke", "inside"])
        .ok()
        .stdout_has(&format!("revoked serial {inside_serial} (`inside`)\n"));
    let crl = sb.ck(&["ca", "crl"]);
    fs::write(&crl_file, &crl.stdout).unwrap();
    let text = openssl(&["crl", "-noout", "-text", "-in", path_str(&crl_file)]);
    let listed: Vec<String> = text
        .stdout
        .lines()
        .filter_map(|l| l.trim().strip_prefix("Serial Number: "))
        .map(|s| s.trim_start_matches('0').to_ascii_lowercase())
        .collect();
    assert!(listed.contains(&inside_serial), "{listed:?}");
    sb.ck(&["revoke", "nobody"]).expect_code(2);
}

/// An IP address SAN is ordered as an `ip` identifier (RFC 8738) and lands in the
/// certificate beside the DNS name.
#[test]
fn acme_orders_ip_address_names() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), true);
    let acme = CertDef::new("local", Layout::Nginx)
        .sans(&["localhost", "127.0.0.1"])
        .extra("issuer: pebble");
    config_with(
        &sb,
        std::slice::from_ref(&acme),
        &pebble.issuers_yaml("pebble"),
    );
    sb.renew_all().ok();
    let f = acme.files(&sb);
    verify_pebble(&pebble.root(), &f);
    let text = cert_text(&f.cert);
    assert!(text.contains("IP Address:127.0.0.1"), "{text}");
    assert!(text.contains("DNS:localhost"), "{text}");
}

/// `fallback: [internal]`: while the ACME CA is down, a certificate with most of its
/// life left fails and keeps its pair; once only `fallback_before` of its life is left
/// (here: always), the internal CA issues it, said in the log and the ledger; when the
/// ACME CA is back, the next renewal goes back to it.
#[test]
fn acme_a_failing_ca_gives_way_to_the_fallback_issuer_and_back() {
    let sb = Sandbox::new();
    let mut pebble = Pebble::start(&sb.path("pebble"), true);
    let acme = local_from(&sb, &pebble, &["fallback: [internal]"]);
    let issuers = pebble.issuers_yaml("pebble");
    sb.renew_all().ok();
    let f = acme.files(&sb);
    verify_pebble(&pebble.root(), &f);
    let first = f.serial();
    pebble.stop();
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.expect_code(1);
    assert!(!r.all().contains("fallback issuer"), "{r:?}");
    assert_eq!(f.serial(), first, "the working pair stays");
    // Late in its life (here: from its first day), the internal CA takes over.
    let late = acme.clone().extra("fallback_before: 3650d");
    config_with(&sb, std::slice::from_ref(&late), &issuers);
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok()
        .stderr_has("issued by the fallback issuer `internal` because `pebble` failed");
    assert_ne!(f.serial(), first);
    f.check(&sb.root_bundle(), "sslserver");
    let installed = sb
        .ledger()
        .into_iter()
        .rfind(|e| e["event"] == "installed")
        .unwrap();
    assert_eq!(installed["issuer"], "internal", "{installed}");
    // A second pass while the CA is still down changes nothing new: the fallback pair
    // stays (the attempt to go back fails).
    let on_fallback = f.serial();
    let r = sb.ck(&["renew", "--all"]);
    r.expect_code(1).stdout_has(
        "issued by the fallback issuer `internal`: going back to the configured issuer",
    );
    // The fallback pair was fresh, so no second fallback either.
    assert_eq!(f.serial(), on_fallback);
    // `status` names the state; `--check` calls for attention.
    let row = sb.status_row("local");
    assert_eq!(row["state"], "fallback", "{row}");
    assert!(
        row["detail"]
            .as_str()
            .unwrap()
            .contains("going back to `pebble`"),
        "{row}"
    );
    sb.ck(&["status", "--check"]).expect_code(1);
    // The ACME CA is back: the next renewal returns to it.
    pebble.restart();
    let r = sb.ck(&["renew", "--all"]);
    r.ok();
    verify_pebble(&pebble.root(), &f);
    assert_ne!(f.serial(), on_fallback);
    assert_eq!(sb.status_row("local")["state"], "ok");
}

/// What the ARI responder answers for `renewalInfo`.
#[derive(Clone)]
enum Ari {
    /// A window from `.0` to `.1` days from now.
    Window(i64, i64),
    /// HTTP 500.
    Broken,
}

/// A small ACME Renewal Information responder on loopback, in front of a Pebble that
/// has none: it serves Pebble's directory with a `renewalInfo` URL of its own (every
/// other URL stays Pebble's), and answers `GET /ari/ID` as told, with a Retry-After.
struct AriResponder {
    port: u16,
    mode: std::sync::Arc<std::sync::Mutex<Ari>>,
    asked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl AriResponder {
    fn start(pebble: &Pebble) -> AriResponder {
        let out = Command::new("curl")
            .args(["-sSfk", &pebble.directory()])
            .output()
            .expect("run curl");
        assert!(out.status.success(), "pebble directory: {out:?}");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut dir: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        dir["renewalInfo"] = format!("https://127.0.0.1:{port}/ari").into();
        // Profiles as Let's Encrypt lists them (Pebble ignores an order's `profile`).
        dir["meta"]["profiles"] = serde_json::json!({
            "shortlived": "6-day certificates",
            "tlsserver": "server authentication only"
        });
        let dir = dir.to_string();
        let certs: Vec<rustls::pki_types::CertificateDer<'static>> = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::CertificateDer::pem_file_iter(pebble.dir.join("listener.crt"))
                .unwrap()
                .map(|c| c.unwrap())
                .collect()
        };
        let key = {
            use rustls::pki_types::pem::PemObject;
            rustls::pki_types::PrivateKeyDer::from_pem_file(pebble.dir.join("listener.key"))
                .unwrap()
        };
        let config = std::sync::Arc::new(
            rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
                rustls::crypto::aws_lc_rs::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
        );
        let mode = std::sync::Arc::new(std::sync::Mutex::new(Ari::Window(30, 31)));
        let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (m, a) = (mode.clone(), asked.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                    continue;
                };
                let mut tls = rustls::StreamOwned::new(conn, stream);
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                use std::io::{Read, Write};
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&request).to_string();
                let path = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let (status, body) = if path == "/dir" {
                    ("200 OK", dir.clone())
                } else if let Some(id) = path.strip_prefix("/ari/") {
                    a.lock().unwrap().push(id.to_string());
                    match m.lock().unwrap().clone() {
                        Ari::Window(from, to) => {
                            let now = time::OffsetDateTime::now_utc();
                            let t = |d: i64| {
                                (now + time::Duration::days(d))
                                    .format(&time::format_description::well_known::Rfc3339)
                                    .unwrap()
                            };
                            (
                                "200 OK",
                                serde_json::json!({"suggestedWindow": {"start": t(from), "end": t(to)}})
                                    .to_string(),
                            )
                        }
                        Ari::Broken => ("500 Internal Server Error", "{}".to_string()),
                    }
                } else {
                    ("404 Not Found", "{}".to_string())
                };
                let _ = write!(
                    tls,
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nRetry-After: 3600\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            }
        });
        AriResponder { port, mode, asked }
    }

    fn set(&self, mode: Ari) {
        *self.mode.lock().unwrap() = mode;
    }
}

/// ARI (RFC 9773) against a responder of our own: a window in the future defers the
/// renewal (and is kept, not asked again until the CA's Retry-After); a window in the
/// past renews at once, ordering with `replaces`; a responder that fails leaves the
/// decision to `renew_before`.
#[test]
fn acme_renewal_information_decides_when_to_renew() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), true);
    let ari = AriResponder::start(&pebble);
    let acme = CertDef::new("local", Layout::Nginx)
        .sans(&["localhost"])
        .extra("issuer: pebble");
    let issuers = pebble.issuers_yaml("pebble").replace(
        &pebble.directory(),
        &format!("https://127.0.0.1:{}/dir", ari.port),
    );
    config_with(&sb, std::slice::from_ref(&acme), &issuers);
    sb.renew_all().ok();
    let f = acme.files(&sb);
    let first = f.serial();
    let answers = sb.state_dir().join("ari.json");
    // A window a month away: kept, nothing renewed, not asked again.
    let r = sb.ck(&["renew", "--all"]);
    r.ok().stderr_has("the ACME CA suggests a renewal window");
    assert_eq!(f.serial(), first);
    assert_eq!(ari.asked.lock().unwrap().len(), 1);
    let kept: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&answers).unwrap()).unwrap();
    assert_eq!(
        kept["local"]["serial"],
        first.trim_start_matches('0').to_ascii_lowercase().as_str(),
        "{kept}"
    );
    sb.ck(&["renew", "--all"]).ok();
    assert_eq!(
        ari.asked.lock().unwrap().len(),
        1,
        "asked before its Retry-After"
    );
    // `status` shows the window, where it comes from, and the renewal point in it.
    let row = sb.status_row("local");
    let w = &row["renewal_window"];
    assert!(w["start"].is_string() && w["end"].is_string(), "{row}");
    assert!(
        w["source"]
            .as_str()
            .unwrap()
            .contains("renewal information"),
        "{row}"
    );
    let next = time::OffsetDateTime::parse(
        row["next_renewal"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let start = time::OffsetDateTime::parse(
        w["start"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(next >= start, "{row}");
    sb.ck(&["status"]).ok().stdout_has("(ARI)");
    // The CA moves the window into the past (a mass revocation): at the next poll (its
    // time has come: the kept answer is gone) the certificate is renewed at once, as a
    // replacement of the old one.
    ari.set(Ari::Window(-2, -1));
    fs::remove_file(&answers).unwrap();
    let r = sb.ck(&["renew", "--all"]);
    r.ok()
        .stderr_has("inside the renewal window the ACME CA suggests")
        // Debian's Pebble ignores `replaces` (it has no ARI): certkeeper sent it, saw the
        // order come back without it, and ordered again without it.
        .stderr_has("did not take `replaces` (ARI) on the order; ordering without it");
    let second = f.serial();
    assert_ne!(second, first);
    verify_pebble(&pebble.root(), &f);
    let installed = sb
        .ledger()
        .into_iter()
        .rfind(|e| e["event"] == "installed")
        .unwrap();
    assert_eq!(installed["reason"], "ari", "{installed}");
    // A responder that fails: renew_before decides (the certificate is new: kept).
    ari.set(Ari::Broken);
    fs::remove_file(&answers).ok();
    let r = sb.ck(&["renew", "--all"]);
    r.ok()
        .stderr_has("no renewal information from the ACME CA; renew_before decides");
    assert_eq!(f.serial(), second);
    let row = sb.status_row("local");
    assert!(
        row["renewal_window"]["source"]
            .as_str()
            .unwrap()
            .contains("renew_before decides"),
        "{row}"
    );
}

/// `profile:` is checked against the profiles the CA's directory lists: a CA that lists
/// none (Pebble 2.4) or not this one refuses clearly before any order; one it lists is
/// sent with the order (a certificate's own profile wins over its issuer's).
#[test]
fn acme_profiles_are_ordered_only_when_the_ca_lists_them() {
    let sb = Sandbox::new();
    let pebble = Pebble::start(&sb.path("pebble"), true);
    let stub = AriResponder::start(&pebble);
    let with_profile = |directory: &str, issuer_profile: &str, cert_profile: Option<&str>| {
        let mut acme = CertDef::new("local", Layout::Nginx)
            .sans(&["localhost"])
            .extra("issuer: pebble");
        if let Some(p) = cert_profile {
            acme = acme.extra(&format!("profile: {p}"));
        }
        let issuers = pebble
            .issuers_yaml("pebble")
            .replace(&pebble.directory(), directory)
            .replace(
                "      challenge:\n",
                &format!("      profile: {issuer_profile}\n      challenge:\n"),
            );
        config_with(&sb, std::slice::from_ref(&acme), &issuers);
        acme
    };
    let stub_dir = format!("https://127.0.0.1:{}/dir", stub.port);

    let acme = with_profile(&pebble.directory(), "tlsserver", None);
    let r = sb.renew_all();
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.all()
            .contains("has no profile `tlsserver` (it lists no profiles in its directory)"),
        "{r:?}"
    );
    assert!(!acme.files(&sb).cert.exists());

    with_profile(&stub_dir, "tlsserver", Some("classic"));
    let r = sb.renew_all();
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.all()
            .contains("has no profile `classic` (it offers shortlived, tlsserver)"),
        "{r:?}"
    );
    assert!(!acme.files(&sb).cert.exists());

    with_profile(&stub_dir, "tlsserver", Some("shortlived"));
    let r = sb.renew_all();
    r.ok().stderr_has("ordered with an ACME profile");
    assert!(r.stderr.contains("profile=shortlived"), "{r:?}");
    verify_pebble(&pebble.root(), &acme.files(&sb));

    with_profile(&stub_dir, "tlsserver", None);
    let r = sb.ck(&["renew", "--force", "local"]);
    r.ok();
    assert!(r.stderr.contains("profile=tlsserver"), "{r:?}");
}
