//! DNS-01 end to end: Pebble validates for real, asking its DNS questions either to
//! `pebble-challtestsrv` (records written by the `command` provider through its HTTP API)
//! or to a private BIND 9 (records written by RFC 2136 updates signed with TSIG). Each
//! test starts its own servers on ports picked free at run time and stops them by pid.

use crate::acme::{config_with, verify_pebble, Pebble};
use crate::support::servers::{free_port, wait_for, write_file};
use crate::support::*;
use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `pebble-challtestsrv`: a DNS server whose records are set over HTTP.
struct ChallTestSrv {
    child: Child,
    dns_port: u16,
    mgmt_port: u16,
}

impl ChallTestSrv {
    fn start(dir: &Path) -> ChallTestSrv {
        fs::create_dir_all(dir).unwrap();
        let (dns_port, mgmt_port) = (free_udp_port(), free_port());
        let log = fs::File::create(dir.join("challtestsrv.log")).unwrap();
        let child = Command::new("/usr/bin/pebble-challtestsrv")
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns_port}"),
                "-management",
                &format!("127.0.0.1:{mgmt_port}"),
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start pebble-challtestsrv");
        let s = ChallTestSrv {
            child,
            dns_port,
            mgmt_port,
        };
        wait_for(Duration::from_secs(10), "challtestsrv to listen", || {
            TcpStream::connect(("127.0.0.1", s.mgmt_port)).is_ok()
                && TcpStream::connect(("127.0.0.1", s.dns_port)).is_ok()
        });
        s
    }

    fn dns(&self) -> String {
        format!("127.0.0.1:{}", self.dns_port)
    }

    fn post(&self, path: &str, body: serde_json::Value) {
        let out = Command::new("curl")
            .args([
                "-sSf",
                "-d",
                &body.to_string(),
                &format!("http://127.0.0.1:{}{path}", self.mgmt_port),
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{path}: {out:?}");
    }
}

impl Drop for ChallTestSrv {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free for both TCP and UDP on 127.0.0.1 (DNS listens on both).
fn free_udp_port() -> u16 {
    loop {
        let p = free_port();
        if std::net::UdpSocket::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
}

/// A private BIND 9: two primary zones (`example.test`, and `acme-delegated.test` where
/// `_acme-challenge.deleg.example.test` points), updates allowed with one TSIG key; and
/// a second BIND as the recursive resolver a CA asks (an authoritative server does not
/// follow a CNAME into another zone; a resolver does).
struct Bind {
    child: Child,
    resolver: Child,
    dir: PathBuf,
    port: u16,
    resolver_port: u16,
    /// The key as `tsig-keygen` writes it (a `key` clause), also read by certkeeper.
    key_file: PathBuf,
}

impl Bind {
    fn start(dir: &Path) -> Bind {
        fs::create_dir_all(dir).unwrap();
        let port = free_udp_port();
        let key = Command::new("tsig-keygen")
            .args(["-a", "hmac-sha256", "certkeeper."])
            .output()
            .expect("run tsig-keygen (bind9)");
        assert!(key.status.success(), "{key:?}");
        let key_file = dir.join("tsig.key");
        write_file(&key_file, &String::from_utf8_lossy(&key.stdout), 0o600);
        let d = dir.display();
        let mut conf = format!(
            "options {{\n  directory \"{d}\";\n  listen-on port {port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  pid-file \"{d}/named.pid\";\n  session-keyfile \"{d}/session.key\";\n  recursion no;\n  dnssec-validation no;\n}};\ncontrols {{ }};\ninclude \"{}\";\n",
            key_file.display()
        );
        for (zone, extra) in [
            (
                "example.test",
                "_acme-challenge.deleg IN CNAME deleg.acme-delegated.test.\n",
            ),
            ("acme-delegated.test", ""),
        ] {
            fs::write(
                dir.join(format!("{zone}.zone")),
                format!(
                    "$TTL 60\n@ IN SOA ns.{zone}. hostmaster.{zone}. 1 60 60 600 60\n@ IN NS ns.{zone}.\nns IN A 127.0.0.1\n{extra}"
                ),
            )
            .unwrap();
            conf.push_str(&format!(
                "zone \"{zone}\" {{ type primary; file \"{d}/{zone}.zone\"; allow-update {{ key \"certkeeper.\"; }}; }};\n"
            ));
        }
        let child = named(dir, "named", &conf);
        let resolver_port = free_udp_port();
        let r = dir.join("resolver");
        fs::create_dir_all(&r).unwrap();
        let r = r.display();
        let mut conf = format!(
            "options {{\n  directory \"{r}\";\n  listen-on port {resolver_port} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  pid-file \"{r}/named.pid\";\n  session-keyfile \"{r}/session.key\";\n  recursion yes;\n  allow-query {{ 127.0.0.1; }};\n  dnssec-validation no;\n}};\ncontrols {{ }};\n"
        );
        for zone in ["example.test", "acme-delegated.test"] {
            conf.push_str(&format!(
                "zone \"{zone}\" {{ type forward; forward only; forwarders {{ 127.0.0.1 port {port}; }}; }};\n"
            ));
        }
        let resolver = named(&dir.join("resolver"), "resolver", &conf);
        let b = Bind {
            child,
            resolver,
            dir: dir.to_path_buf(),
            port,
            resolver_port,
            key_file,
        };
        wait_for(Duration::from_secs(20), "named to load its zones", || {
            b.dig("example.test", "SOA").contains("ns.example.test.")
                && dig(&b.resolver(), "ns.example.test", "A").contains("127.0.0.1")
        });
        b
    }

    /// The recursive resolver (`HOST:PORT`).
    fn resolver(&self) -> String {
        format!("127.0.0.1:{}", self.resolver_port)
    }

    fn dns(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// `dig +short` at this server.
    fn dig(&self, name: &str, t: &str) -> String {
        dig(&self.dns(), name, t)
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("named.log")).unwrap_or_default()
    }
}

impl Drop for Bind {
    fn drop(&mut self) {
        for c in [&mut self.child, &mut self.resolver] {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `named` in the foreground with `conf` written to `dir/NAME.conf`, logging to
/// `dir/NAME.log`.
fn named(dir: &Path, name: &str, conf: &str) -> Child {
    let file = dir.join(format!("{name}.conf"));
    fs::write(&file, conf).unwrap();
    let log = fs::File::create(dir.join(format!("{name}.log"))).unwrap();
    Command::new("/usr/sbin/named")
        .args(["-g", "-c"])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start named (bind9)")
}

/// `dig +short NAME TYPE` at `server` (`HOST:PORT`).
fn dig(server: &str, name: &str, t: &str) -> String {
    let (host, port) = server.rsplit_once(':').unwrap();
    let out = Command::new("dig")
        .args([
            "+short",
            "+time=2",
            "+tries=2",
            &format!("@{host}"),
            "-p",
            port,
            name,
            t,
        ])
        .output()
        .expect("run dig (bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The names of one wildcard certificate: a plain name, a wildcard (its record shares
/// `_acme-challenge.example.test` with nothing else) and a name whose challenge is
/// delegated by a CNAME to another zone.
const SANS: &[&str] = &["www.example.test", "*.example.test", "deleg.example.test"];

fn wild(extra: &[&str]) -> CertDef {
    let quoted: Vec<String> = SANS.iter().map(|s| format!("\"{s}\"")).collect();
    let quoted: Vec<&str> = quoted.iter().map(String::as_str).collect();
    let mut c = CertDef::new("wild", Layout::Nginx)
        .sans(&quoted)
        .extra("issuer: pebble");
    for e in extra {
        c = c.extra(e);
    }
    c
}

/// The command provider, with challtestsrv as the DNS the CA asks: a wildcard and a
/// CNAME-delegated name are issued, each record is written where the CNAME points,
/// visible before the CA looks, and removed afterwards.
#[test]
fn dns01_command_provider_issues_a_wildcard_and_a_cname_delegated_name() {
    let sb = Sandbox::new();
    let dns = ChallTestSrv::start(&sb.path("challtestsrv"));
    dns.post(
        "/set-cname",
        serde_json::json!({"host": "_acme-challenge.deleg.example.test.", "target": "deleg.acme-delegated.test."}),
    );
    let pebble = Pebble::start_with_dns(&sb.path("pebble"), &dns.dns());
    let calls = sb.path("hook.log");
    let hook = sb.path("dns-hook");
    write_file(
        &hook,
        &format!(
            "#!/bin/sh\nset -e\necho \"$CERTKEEPER_DNS_ACTION $CERTKEEPER_DNS_NAME $CERTKEEPER_DNS_DOMAIN\" >> {calls}\n\
             case \"$CERTKEEPER_DNS_ACTION\" in\n\
             present) curl -sSf -d \"{{\\\"host\\\":\\\"$CERTKEEPER_DNS_NAME\\\",\\\"value\\\":\\\"$CERTKEEPER_DNS_VALUE\\\"}}\" http://127.0.0.1:{m}/set-txt ;;\n\
             cleanup) curl -sSf -d \"{{\\\"host\\\":\\\"$CERTKEEPER_DNS_NAME\\\"}}\" http://127.0.0.1:{m}/clear-txt ;;\n\
             esac\n",
            calls = calls.display(),
            m = dns.mgmt_port
        ),
        0o755,
    );
    let cert = wild(&[]);
    let challenge = format!(
        "        dns01:\n          command: [{}]\n          resolvers: [\"{}\"]\n          propagation_timeout: 20s\n",
        hook.display(),
        dns.dns()
    );
    config_with(
        &sb,
        std::slice::from_ref(&cert),
        &pebble.issuers_yaml_with("pebble", &challenge),
    );
    let t = Instant::now();
    let r = sb.renew_all();
    eprintln!(
        "DNS-01 issuance (command provider, 3 names): {:?}",
        t.elapsed()
    );
    assert_eq!(r.code, 0, "{r:?}\n--- pebble log ---\n{}", pebble.log());
    let files = cert.files(&sb);
    verify_pebble(&pebble.root(), &files);
    let text = openssl(&[
        "x509",
        "-noout",
        "-ext",
        "subjectAltName",
        "-in",
        path_str(&files.cert),
    ])
    .ok()
    .stdout
    .clone();
    for san in SANS {
        assert!(text.contains(&format!("DNS:{san}")), "{san} in {text}");
    }
    // Each record was written once and removed once, the delegated one at the target.
    let log = fs::read_to_string(&calls).unwrap();
    let mut lines: Vec<&str> = log.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "cleanup _acme-challenge.example.test. example.test",
            "cleanup _acme-challenge.www.example.test. www.example.test",
            "cleanup deleg.acme-delegated.test. deleg.example.test",
            "present _acme-challenge.example.test. example.test",
            "present _acme-challenge.www.example.test. www.example.test",
            "present deleg.acme-delegated.test. deleg.example.test",
        ],
        "{log}"
    );
    r.stderr_has("DNS-01 record written at the CNAME's target");
    r.stderr_has("DNS-01 records visible");
    for name in [
        "_acme-challenge.www.example.test",
        "deleg.acme-delegated.test",
    ] {
        assert_eq!(dig(&dns.dns(), name, "TXT"), "", "{name} removed");
    }
}

/// A record that never shows up fails the order after `propagation_timeout`, and a
/// failing command fails it at once with its output; both clean up what they wrote and
/// keep the old pair (none here: nothing is installed).
#[test]
fn dns01_failures_are_named_cleaned_up_and_install_nothing() {
    let sb = Sandbox::new();
    let dns = ChallTestSrv::start(&sb.path("challtestsrv"));
    let pebble = Pebble::start_with_dns(&sb.path("pebble"), &dns.dns());
    let calls = sb.path("hook.log");
    let hook = sb.path("dns-hook");
    let cert = wild(&[]);
    let config = |exit: u32| {
        // `present` writes nothing (a provider that lies), or fails.
        write_file(
            &hook,
            &format!(
                "#!/bin/sh\necho \"$CERTKEEPER_DNS_ACTION $CERTKEEPER_DNS_NAME\" >> {}\n[ \"$CERTKEEPER_DNS_ACTION\" = cleanup ] && exit 0\necho 'zone example.test: permission denied' >&2\nexit {exit}\n",
                calls.display()
            ),
            0o755,
        );
        let challenge = format!(
            "        dns01:\n          command: [{}]\n          resolvers: [\"{}\"]\n          propagation_timeout: 2s\n",
            hook.display(),
            dns.dns()
        );
        config_with(
            &sb,
            std::slice::from_ref(&cert),
            &pebble.issuers_yaml_with("pebble", &challenge),
        );
    };

    config(0);
    let t = Instant::now();
    let r = sb.renew_all();
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "gave up after the propagation timeout: {:?}",
        t.elapsed()
    );
    assert!(r.all().contains("not visible within"), "{r:?}");
    let log = fs::read_to_string(&calls).unwrap();
    assert_eq!(log.matches("present ").count(), 3, "{log}");
    assert_eq!(
        log.matches("cleanup ").count(),
        3,
        "every record written is removed: {log}"
    );
    assert!(!cert.files(&sb).cert.exists(), "nothing installed");

    fs::remove_file(&calls).unwrap();
    config(3);
    let r = sb.renew_all();
    assert_ne!(r.code, 0, "{r:?}");
    assert!(
        r.all().contains("permission denied"),
        "the command's output is in the message: {r:?}"
    );
    let log = fs::read_to_string(&calls).unwrap();
    assert_eq!(
        log.matches("present ").count(),
        1,
        "stops at the first failure: {log}"
    );
    assert_eq!(
        log.matches("cleanup ").count(),
        0,
        "nothing was written, nothing to remove: {log}"
    );
    assert!(!cert.files(&sb).cert.exists(), "nothing installed");
}

/// RFC 2136 against a real BIND 9 with a TSIG key: the wildcard, the plain name and
/// the CNAME-delegated name are written by signed updates (the delegated one in the
/// other zone), validated by Pebble asking BIND, and deleted afterwards. A wrong key
/// is refused by BIND and named in the error.
#[test]
fn dns01_rfc2136_with_tsig_against_bind() {
    let sb = Sandbox::new();
    let bind = Bind::start(&sb.path("bind"));
    let pebble = Pebble::start_with_dns(&sb.path("pebble"), &bind.resolver());
    let cert = wild(&[]);
    let challenge = |key: &Path| {
        format!(
            "        dns01:\n          rfc2136:\n            server: \"{}\"\n            key_name: certkeeper.\n            key_secret_file: {}\n          resolvers: [\"{}\"]\n          propagation_timeout: 20s\n",
            bind.dns(),
            key.display(),
            bind.dns()
        )
    };
    config_with(
        &sb,
        std::slice::from_ref(&cert),
        &pebble.issuers_yaml_with("pebble", &challenge(&bind.key_file)),
    );
    let t = Instant::now();
    let r = sb.renew_all();
    eprintln!("DNS-01 issuance (RFC 2136, 3 names): {:?}", t.elapsed());
    assert_eq!(
        r.code,
        0,
        "{r:?}\n--- pebble log ---\n{}\n--- named log ---\n{}",
        pebble.log(),
        bind.log()
    );
    verify_pebble(&pebble.root(), &cert.files(&sb));
    let named = bind.log();
    assert!(named.contains("signer \"certkeeper\" approved"), "{named}");
    assert!(named.contains("updating zone 'acme-delegated.test/IN': adding an RR at 'deleg.acme-delegated.test' TXT"), "{named}");
    assert!(
        named.contains("updating zone 'example.test/IN': deleting an RR at _acme-challenge.www.example.test TXT"),
        "{named}"
    );
    for name in [
        "_acme-challenge.www.example.test",
        "_acme-challenge.example.test",
        "deleg.acme-delegated.test",
    ] {
        assert_eq!(bind.dig(name, "TXT"), "", "{name} removed");
    }

    // Another secret under the same key name: BIND refuses the update.
    let wrong = sb.path("wrong.key");
    write_file(
        &wrong,
        "c29tZSBvdGhlciBzZWNyZXQgb2YgMzIgYnl0ZXMgISE=\n",
        0o600,
    );
    config_with(
        &sb,
        std::slice::from_ref(&cert),
        &pebble.issuers_yaml_with("pebble", &challenge(&wrong)),
    );
    let before = fs::read(cert.files(&sb).cert).unwrap();
    let r = sb.ck(&["renew", "--force", "wild"]);
    assert_ne!(r.code, 0, "{r:?}");
    assert!(r.all().contains("NOTAUTH"), "{r:?}");
    assert_eq!(
        fs::read(cert.files(&sb).cert).unwrap(),
        before,
        "the old pair is kept"
    );
}
