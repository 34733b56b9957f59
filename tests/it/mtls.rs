//! Mutual TLS end to end: certkeeper's `trust:` targets (CA bundle and CRLs), client
//! certificates from `certkeeper issue --client`, and `certkeeper ca revoke`, judged by
//! real, private nginx and Apache instances that require client certificates, by `curl`
//! as the client, and by `openssl verify`.
//!
//! Each test has its own sandbox, its own server on a free 127.0.0.1 port (picked at run
//! time) and, where it needs one, its own daemon; it polls with deadlines and stops only
//! the processes it started, by pid.
//!
//! What the servers need (found while writing these tests, nginx 1.22 / Apache 2.4 with
//! OpenSSL 3.0):
//! - Both look up the client's issuers in their CA file and also accept intermediates
//!   the client sends. With `contents: roots`, a client that sends only its leaf is
//!   refused ("unable to verify the first certificate"); with `contents: chain` (root +
//!   intermediate) it is accepted. `certkeeper issue` writes leaf + intermediate into
//!   NAME.crt and curl sends all of it, so both work here: nginx is tested with `chain`,
//!   Apache with `roots`.
//! - With `ssl_verify_depth 2` + `ssl_crl` (nginx) or `SSLCARevocationCheck chain`
//!   (Apache), a CRL is needed for every CA level of the chain: with only the
//!   intermediate's CRL every client is refused ("unable to get certificate CRL"). That is
//!   why `contents: crl` holds the intermediate's and the root's CRL.
//! - nginx finishes the handshake and answers HTTP 400 for a missing, foreign or revoked
//!   client certificate (its error log says why, e.g. "(23:certificate revoked)").
//!   Apache aborts the handshake instead (curl exit 56 with TLS 1.3, 35 with TLS 1.2).
//! - Both read the CA file and the CRL file only when they (re)load their configuration:
//!   a new CRL takes effect after the reload certkeeper sends (SIGHUP / SIGUSR1).

use crate::support::daemon::Daemon;
use crate::support::servers::{is_root, open_dir, read_or_empty, write_file, Instance, TestCa};
use crate::support::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NGINX: &str = "/usr/sbin/nginx";
const APACHE: &str = "/usr/sbin/apache2";
const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
/// The name the test servers answer to; `www` is issued for it.
const SERVER_NAME: &str = "www.example.internal";

/// nginx applies a new CRL within milliseconds of SIGHUP (its old worker may answer a
/// few more requests); an Apache graceful restart often takes about a second.
const NGINX_SWITCH: Duration = Duration::from_secs(5);
const APACHE_SWITCH: Duration = Duration::from_secs(10);
/// How long the daemon may take for its first pass, and to repair a deleted file.
const DAEMON_START: Duration = Duration::from_secs(20);
const DAEMON_REPAIR: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Private nginx and Apache that require client certificates

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Nginx,
    Apache,
}

impl Kind {
    /// The server's name in `servers:` (and its type).
    fn name(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Apache => "apache",
        }
    }

    fn layout(self) -> Layout {
        match self {
            Kind::Nginx => Layout::Nginx,
            Kind::Apache => Layout::Apache,
        }
    }

    /// What `clients-ca.pem` holds (see the module comment: both work).
    fn ca_contents(self) -> &'static str {
        match self {
            Kind::Nginx => "chain",
            Kind::Apache => "roots",
        }
    }

    fn switch_deadline(self) -> Duration {
        match self {
            Kind::Nginx => NGINX_SWITCH,
            Kind::Apache => APACHE_SWITCH,
        }
    }
}

/// The files a server is configured with.
struct ServedFiles {
    cert: PathBuf,
    chain: Option<PathBuf>,
    key: PathBuf,
    client_ca: PathBuf,
    crl: PathBuf,
}

struct WebServer {
    kind: Kind,
    inst: Instance,
}

impl WebServer {
    /// Starts the server (see `Instance::start`). Also writes `configtest.sh`, the
    /// `test:` command certkeeper is given: it logs each run to `configtests.log`, then
    /// runs the real test.
    fn start(kind: Kind, dir: &Path, files: &ServedFiles) -> WebServer {
        for sub in ["logs", "run", "tmp", "htdocs"] {
            fs::create_dir_all(dir.join(sub)).expect("create server dirs");
        }
        open_dir(dir);
        open_dir(&dir.join("htdocs"));
        write_file(&dir.join("htdocs/index.html"), "ok\n", 0o644);
        let d = dir.display().to_string();
        let (conf, pid_file, error_log) = match kind {
            Kind::Nginx => (
                dir.join("nginx.conf"),
                dir.join("run/nginx.pid"),
                dir.join("logs/error.log"),
            ),
            Kind::Apache => (
                dir.join("apache2.conf"),
                dir.join("run/apache2.pid"),
                dir.join("logs/error.log"),
            ),
        };
        let c = conf.display().to_string();
        let (binary, test, start): (&str, String, Vec<String>) = match kind {
            Kind::Nginx => (
                NGINX,
                format!("{NGINX} -p {d}/ -e {d}/logs/error.log -t -q -c {c}"),
                [
                    "-p",
                    &format!("{d}/"),
                    "-e",
                    &format!("{d}/logs/error.log"),
                    "-c",
                    &c,
                ]
                .map(String::from)
                .to_vec(),
            ),
            Kind::Apache => (
                APACHE,
                format!("{APACHE} -d {d} -f {c} -t"),
                ["-d", &d, "-f", &c, "-k", "start"]
                    .map(String::from)
                    .to_vec(),
            ),
        };
        write_file(
            &dir.join("configtest.sh"),
            &format!("#!/bin/sh\necho test >> {d}/configtests.log\nexec {test}\n"),
            0o755,
        );
        let inst = Instance::start(
            kind.name(),
            dir,
            conf,
            pid_file,
            error_log,
            |port| match kind {
                Kind::Nginx => nginx_conf(&d, port, files),
                Kind::Apache => apache_conf(&d, port, files),
            },
            move || {
                let mut cmd = Command::new(binary);
                cmd.args(&start);
                cmd
            },
        );
        WebServer { kind, inst }
    }

    /// The `servers:` entry: type, pid file and the counting config test.
    fn server_yaml(&self) -> String {
        format!(
            "  {name}:\n    type: {name}\n    pid_file: {pid}\n    test: [/bin/sh, {test}]\n",
            name = self.kind.name(),
            pid = q(path_str(&self.inst.pid_file)),
            test = q(path_str(&self.inst.dir.join("configtest.sh"))),
        )
    }

    /// How many config tests certkeeper ran.
    fn config_tests(&self) -> usize {
        read_or_empty(&self.inst.dir.join("configtests.log"))
            .lines()
            .count()
    }

    /// How many reload signals the master received, from its error log.
    fn reloads(&self) -> usize {
        let needle = match self.kind {
            Kind::Nginx => "signal 1 (SIGHUP) received",
            Kind::Apache => "SIGUSR1 received",
        };
        self.error_log()
            .lines()
            .filter(|l| l.contains(needle))
            .count()
    }

    fn error_log(&self) -> String {
        self.inst.error_log()
    }

    /// Makes the server's config test fail (an unknown directive).
    fn break_config(&self) {
        self.inst.break_config(match self.kind {
            Kind::Nginx => "certkeeper_test_broken_directive on;",
            Kind::Apache => "CertkeeperTestBrokenDirective on",
        });
    }

    fn fix_config(&self) {
        self.inst.fix_config();
    }
}

fn nginx_conf(d: &str, port: u16, f: &ServedFiles) -> String {
    let user = if is_root() {
        "user nobody nogroup;\n"
    } else {
        ""
    };
    format!(
        r#"# A private nginx requiring client certificates, for certkeeper's tests.
{user}worker_processes 1;
pid {d}/run/nginx.pid;
lock_file {d}/run/nginx.lock;
error_log {d}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    server {{
        listen 127.0.0.1:{port} ssl;
        server_name {SERVER_NAME};
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_verify_client on;
        ssl_client_certificate {ca};
        ssl_crl {crl};
        ssl_verify_depth 2;
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#,
        cert = f.cert.display(),
        key = f.key.display(),
        ca = f.client_ca.display(),
        crl = f.crl.display(),
    )
}

fn apache_conf(d: &str, port: u16, f: &ServedFiles) -> String {
    let user = if is_root() {
        "User www-data\nGroup www-data\n"
    } else {
        ""
    };
    let chain = f
        .chain
        .as_ref()
        .map(|c| format!("    SSLCertificateChainFile {}\n", c.display()))
        .unwrap_or_default();
    let m = APACHE_MODULES;
    format!(
        r#"# A private Apache requiring client certificates, for certkeeper's tests.
ServerRoot "{d}"
ServerName {SERVER_NAME}
PidFile {d}/run/apache2.pid
DefaultRuntimeDir {d}/run
ErrorLog {d}/logs/error.log
LogLevel notice ssl:info
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule socache_shmcb_module {m}/mod_socache_shmcb.so
LoadModule ssl_module {m}/mod_ssl.so
LoadModule dir_module {m}/mod_dir.so
{user}Mutex pthread default
StartServers 1
ServerLimit 4
ThreadsPerChild 4
MinSpareThreads 1
MaxSpareThreads 8
MaxRequestWorkers 16
Listen 127.0.0.1:{port} https
SSLSessionCache shmcb:{d}/run/ssl_scache(512000)
<Directory />
    Require all denied
</Directory>
DocumentRoot {d}/htdocs
<Directory {d}/htdocs>
    Require all granted
</Directory>
DirectoryIndex index.html
<VirtualHost 127.0.0.1:{port}>
    ServerName {SERVER_NAME}
    SSLEngine on
    SSLProtocol -all +TLSv1.2 +TLSv1.3
    SSLCertificateFile {cert}
{chain}    SSLCertificateKeyFile {key}
    SSLVerifyClient require
    SSLVerifyDepth 2
    SSLCACertificateFile {ca}
    SSLCARevocationFile {crl}
    SSLCARevocationCheck chain
</VirtualHost>
"#,
        cert = f.cert.display(),
        key = f.key.display(),
        ca = f.client_ca.display(),
        crl = f.crl.display(),
    )
}

// ---------------------------------------------------------------------------------------
// Configurations, client certificates, requests

/// A YAML double-quoted string (JSON's escapes are YAML's).
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

const CA_HEADER: &str = "state_dir: $DIR/state\n\
                         ca:\n  organization: Test Org\n  common_name: Test CA\n";

/// One `trust:` list item.
fn trust_yaml(path: &str, contents: &str, reload: Option<&str>, run: Option<&str>) -> String {
    let mut y = format!("  - path: {path}\n    contents: {contents}\n");
    if let Some(r) = reload {
        y.push_str(&format!("    reload: [{r}]\n"));
    }
    if let Some(r) = run {
        y.push_str(&format!("    run: {r}\n"));
    }
    y
}

/// The mutual-TLS configuration of the server tests: `www` for the server, the client
/// CA file and the CRL file. Without `server` (bootstrap: the server is not running
/// yet, so it cannot be reloaded) nothing is reloaded.
fn write_mtls_config(sb: &Sandbox, kind: Kind, server: Option<&WebServer>) {
    let mut y = CA_HEADER.to_string();
    let reload = server.map(|s| s.kind.name());
    if let Some(s) = server {
        y.push_str("servers:\n");
        y.push_str(&s.server_yaml());
    }
    y.push_str("certificates:\n");
    let mut www = www_def(kind);
    if let Some(r) = reload {
        www = www.extra(&format!("reload: [{r}]"));
    }
    y.push_str(&www.yaml());
    y.push_str("trust:\n");
    y.push_str(&trust_yaml(
        "$DIR/tls/clients-ca.pem",
        kind.ca_contents(),
        reload,
        None,
    ));
    y.push_str(&trust_yaml("$DIR/tls/clients.crl", "crl", reload, None));
    sb.write_config(&y);
    sb.ck(&["check"]).ok();
}

fn www_def(kind: Kind) -> CertDef {
    CertDef::new("www", kind.layout()).sans(&[SERVER_NAME])
}

/// A client certificate and its key.
#[derive(Clone, Debug)]
struct Client {
    name: String,
    cert: PathBuf,
    key: PathBuf,
    /// As `certkeeper issue` printed it.
    serial: String,
}

/// `certkeeper issue --client` (plus `extra` flags) into `$DIR/clients`.
#[track_caller]
fn issue(sb: &Sandbox, name: &str, extra: &[&str]) -> Client {
    let out = sb.path("clients");
    let san = format!("{name}.clients.example.internal");
    let mut args = vec![
        "issue",
        "--name",
        name,
        "--san",
        &san,
        "--out",
        path_str(&out),
    ];
    args.extend(extra);
    let r = sb.ck(&args);
    r.ok();
    let printed: String = r
        .stdout
        .split_once("serial ")
        .map(|(_, rest)| rest.chars().take_while(|c| c.is_ascii_hexdigit()).collect())
        .unwrap_or_else(|| panic!("`issue` printed no serial: {r:?}"));
    let c = Client {
        name: name.to_string(),
        cert: out.join(format!("{name}.crt")),
        key: out.join(format!("{name}.key")),
        serial: printed,
    };
    assert_eq!(
        c.serial,
        serial(&c.cert),
        "the serial `issue` printed is not the certificate's (openssl)"
    );
    assert_eq!(
        pem_blocks(&c.cert, "CERTIFICATE").len(),
        2,
        "{}.crt holds leaf + intermediate",
        name
    );
    assert_eq!(mode(&c.key), 0o600, "mode of {}", c.key.display());
    c
}

#[track_caller]
fn issue_client(sb: &Sandbox, name: &str) -> Client {
    issue(sb, name, &["--client"])
}

/// Client certificates our servers must not accept: one from another certkeeper CA
/// whose root and intermediate have exactly the names of ours (only the signatures
/// differ), and a self-signed one made by openssl.
fn strangers(sb: &Sandbox) -> Vec<Client> {
    let foreign = Sandbox::new();
    foreign.write_config(&format!("{CA_HEADER}certificates: []\n"));
    let mut twin = issue_client(&foreign, "twin");
    let dir = sb.path("clients");
    fs::create_dir_all(&dir).unwrap();
    for (from, to) in [
        (&twin.cert, dir.join("twin.crt")),
        (&twin.key, dir.join("twin.key")),
    ] {
        fs::copy(from, &to).expect("copy the foreign client certificate");
    }
    twin.cert = dir.join("twin.crt");
    twin.key = dir.join("twin.key");

    let key = dir.join("selfsigned.key");
    let cert = dir.join("selfsigned.crt");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        path_str(&key),
        "-out",
        path_str(&cert),
        "-subj",
        "/O=Test Org/CN=selfsigned.clients.example.internal",
        "-days",
        "2",
        "-addext",
        "extendedKeyUsage=clientAuth",
    ])
    .ok();
    let selfsigned = Client {
        name: "selfsigned".into(),
        serial: serial(&cert),
        cert,
        key,
    };
    vec![twin, selfsigned]
}

/// What a server did with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Http(u16),
    /// The server aborted the TLS handshake: curl exit 35 (SSL connect error, a TLS 1.2
    /// alert) or 56 (receive failure: with TLS 1.3 the server's alert about the client
    /// certificate arrives after the client's handshake is done).
    HandshakeFailed(i32),
}

/// `GET https://SERVER_NAME:PORT/` with curl, trusting only `root` for the server, with
/// `client`'s certificate (leaf + intermediate, all sent) when given. Any failure other
/// than a refused handshake (server certificate not trusted, no connection, timeout)
/// fails the test, so that "turned away" is never an accident.
fn request(port: u16, root: &Path, client: Option<&Client>) -> Answer {
    let mut cmd = Command::new("curl");
    cmd.env("SSL_CERT_FILE", "/dev/null")
        .env("SSL_CERT_DIR", "/nonexistent")
        .stdin(Stdio::null())
        .args(["--http1.1", "-sS", "--max-time", "5", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--cacert", path_str(root)])
        .args(["--resolve", &format!("{SERVER_NAME}:{port}:127.0.0.1")]);
    if let Some(c) = client {
        cmd.args(["--cert", path_str(&c.cert), "--key", path_str(&c.key)]);
    }
    cmd.arg(format!("https://{SERVER_NAME}:{port}/"));
    let out = cmd.output().expect("run curl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match out.status.code() {
        Some(0) => Answer::Http(
            stdout
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("curl printed no status code: {stdout:?}")),
        ),
        Some(code @ (35 | 56)) => Answer::HandshakeFailed(code),
        other => panic!(
            "curl failed for a reason other than a refused client certificate ({other:?}): {stderr}"
        ),
    }
}

fn who(c: Option<&Client>) -> String {
    c.map(|c| format!("client `{}`", c.name))
        .unwrap_or_else(|| "no client certificate".into())
}

/// nginx answers 400; Apache aborts the handshake (or answers 400/403).
fn turned_away(kind: Kind, a: &Answer) -> bool {
    match kind {
        Kind::Nginx => *a == Answer::Http(400),
        Kind::Apache => matches!(
            a,
            Answer::HandshakeFailed(_) | Answer::Http(400) | Answer::Http(403)
        ),
    }
}

#[track_caller]
fn assert_accepted(s: &WebServer, root: &Path, c: &Client) {
    let a = request(s.inst.port, root, Some(c));
    assert_eq!(
        a,
        Answer::Http(200),
        "{} should be let in by {:?}; error log:\n{}",
        who(Some(c)),
        s.kind,
        s.error_log()
    );
}

#[track_caller]
fn assert_turned_away(s: &WebServer, root: &Path, c: Option<&Client>) {
    let a = request(s.inst.port, root, c);
    assert!(
        turned_away(s.kind, &a),
        "{} should be turned away by {:?}, got {a:?}",
        who(c),
        s.kind
    );
}

/// Identity and modification time of a file: equal means not rewritten.
#[track_caller]
fn stamp(p: &Path) -> (u64, i64, i64) {
    let m = fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.ino(), m.mtime(), m.mtime_nsec())
}

/// `certkeeper ca crl` output.
#[track_caller]
fn ca_crl(sb: &Sandbox) -> String {
    let r = sb.ck(&["ca", "crl"]);
    r.ok();
    r.stdout
}

/// `openssl crl -text` of the `i`-th CRL in a file.
#[track_caller]
fn crl_text(p: &Path, i: usize) -> String {
    let blocks = pem_blocks(p, "X509 CRL");
    let one = p.with_extension(format!("crl{i}.pem"));
    fs::write(&one, &blocks[i]).unwrap();
    let r = openssl(&["crl", "-in", path_str(&one), "-noout", "-text"]);
    r.ok();
    let _ = fs::remove_file(&one);
    r.stdout
}

/// `openssl verify` of `leaf` with CRL checks at every level.
fn verify_with_crl(ca: &Path, crl: &Path, leaf: &Path) -> Run {
    openssl(&[
        "verify",
        "-x509_strict",
        "-no-CAfile",
        "-no-CApath",
        "-no-CAstore",
        "-CAfile",
        path_str(ca),
        "-crl_check_all",
        "-CRLfile",
        path_str(crl),
        "-purpose",
        "sslclient",
        path_str(leaf),
    ])
}

// ---------------------------------------------------------------------------------------
// 1 and 2: a web server requiring client certificates, kept current by certkeeper

/// Everything a server scenario has set up.
struct World {
    sb: Sandbox,
    server: WebServer,
    root: PathBuf,
    ca_file: PathBuf,
    crl_file: PathBuf,
}

/// Bootstrap: `renew --all` with a config that reloads nothing (the server is not
/// running yet), start the server on the files, then switch to the full config.
fn world(kind: Kind) -> World {
    let sb = Sandbox::new();
    // Apache's workers read htdocs/index.html below the sandbox.
    open_dir(sb.dir());
    write_mtls_config(&sb, kind, None);
    sb.renew_all().ok();
    let root = sb.root_bundle();
    let ca_file = sb.path("tls/clients-ca.pem");
    let crl_file = sb.path("tls/clients.crl");
    for p in [&ca_file, &crl_file] {
        assert_eq!(mode(p), 0o644, "mode of {}", p.display());
    }
    let www = www_def(kind).files(&sb);
    www.check(&root, "sslserver");
    let served = ServedFiles {
        cert: www.cert.clone(),
        chain: www.chain.clone(),
        key: www.key_file.clone(),
        client_ca: ca_file.clone(),
        crl: crl_file.clone(),
    };
    let server = WebServer::start(kind, &sb.path(kind.name()), &served);
    write_mtls_config(&sb, kind, Some(&server));
    World {
        sb,
        server,
        root,
        ca_file,
        crl_file,
    }
}

fn server_requires_certificates_from_the_ca_and_honours_revocations(kind: Kind) {
    let World {
        sb,
        server,
        root,
        ca_file,
        crl_file,
    } = world(kind);
    let name = kind.name();

    // With the full config nothing is due: no file written, no config test, no reload.
    let trust = [&ca_file, &crl_file];
    let before: Vec<_> = trust.iter().map(|p| stamp(p)).collect();
    sb.renew_all().ok().stdout_has("www: ok");
    assert_eq!(trust.iter().map(|p| stamp(p)).collect::<Vec<_>>(), before);
    assert_eq!(
        server.config_tests(),
        0,
        "a pass with nothing new tested {name}"
    );
    assert_eq!(
        server.reloads(),
        0,
        "a pass with nothing new reloaded {name}"
    );

    let alice = issue_client(&sb, "alice");
    let bob = issue_client(&sb, "bob");
    assert_accepted(&server, &root, &alice);
    assert_accepted(&server, &root, &bob);
    assert_turned_away(&server, &root, None);
    for stranger in strangers(&sb) {
        assert_turned_away(&server, &root, Some(&stranger));
    }
    assert!(
        !server.error_log().contains("certificate revoked"),
        "nothing is revoked yet:\n{}",
        server.error_log()
    );

    // Revoke alice: the CRL file is rewritten, the server tested and reloaded once.
    let ca_stamp = stamp(&ca_file);
    let crl_stamp = stamp(&crl_file);
    let r = sb.ck(&["ca", "revoke", &alice.serial, "--reason", "key-compromise"]);
    r.ok()
        .stdout_has(&format!("revoked serial {}", alice.serial))
        .stdout_has("(`alice`)")
        .stdout_has(&format!("reloaded `{name}`"));
    assert_eq!(stamp(&ca_file), ca_stamp, "the CA file did not change");
    assert_ne!(
        stamp(&crl_file),
        crl_stamp,
        "the CRL file was not rewritten"
    );
    assert_eq!(mode(&crl_file), 0o644, "mode of {}", crl_file.display());
    assert_eq!(
        pem_blocks(&crl_file, "X509 CRL").len(),
        2,
        "the CRL file holds the intermediate's and the root's CRL"
    );
    assert_eq!(fs::read_to_string(&crl_file).unwrap(), ca_crl(&sb));
    assert!(
        crl_text(&crl_file, 0).contains(&alice.serial.to_ascii_uppercase()),
        "the intermediate's CRL lists alice:\n{}",
        crl_text(&crl_file, 0)
    );
    assert_eq!(server.config_tests(), 1, "one config test for the revoke");
    poll(
        Duration::from_secs(5),
        "the reload signal to be logged",
        || match server.reloads() {
            1 => Ok(()),
            n => Err(format!("{n} reloads logged")),
        },
    );

    let steady = std::cell::Cell::new(0u32);
    let took = {
        let start = Instant::now();
        poll(
            kind.switch_deadline(),
            "the revoked client to be turned away",
            || {
                // After a reload the old worker may still answer for a while with the
                // old CRL: wait until the refusal is steady (10 in a row).
                let a = request(server.inst.port, &root, Some(&alice));
                match a {
                    Answer::Http(200) => {
                        steady.set(0);
                        Err("still let in (HTTP 200)".into())
                    }
                    a if turned_away(kind, &a) => {
                        steady.set(steady.get() + 1);
                        if steady.get() >= 10 {
                            Ok(())
                        } else {
                            Err(format!("turned away {} time(s) in a row", steady.get()))
                        }
                    }
                    a => panic!("unexpected answer to the revoked client: {a:?}"),
                }
            },
        );
        start.elapsed()
    };
    eprintln!("{name}: revoked client steadily turned away {took:?} after the revoke returned");
    assert_accepted(&server, &root, &bob);
    assert_turned_away(&server, &root, Some(&alice));
    assert_turned_away(&server, &root, None);
    assert_accepted(&server, &root, &bob);
    let log = server.error_log();
    assert!(
        log.contains("certificate revoked"),
        "{name} should log why it refused alice:\n{log}"
    );

    // Another pass changes nothing: no trust file rewritten, no config test, no reload.
    let before: Vec<_> = trust.iter().map(|p| stamp(p)).collect();
    let (tests, reloads) = (server.config_tests(), server.reloads());
    sb.renew_all().ok().stdout_has("www: ok");
    assert_eq!(
        trust.iter().map(|p| stamp(p)).collect::<Vec<_>>(),
        before,
        "a pass with nothing new rewrote a trust file"
    );
    assert_eq!(
        server.config_tests(),
        tests,
        "a pass with nothing new tested {name}"
    );
    assert_eq!(
        server.reloads(),
        reloads,
        "a pass with nothing new reloaded {name}"
    );
    assert_accepted(&server, &root, &bob);

    // A pass that renews `www` and rewrites both (deleted) trust files: one config
    // test, one reload, and the same trust material as before.
    let contents: Vec<_> = trust.iter().map(|p| fs::read(p).unwrap()).collect();
    for p in trust {
        fs::remove_file(p).unwrap();
    }
    sb.ck(&["renew", "--all", "--force"])
        .ok()
        .stdout_has("www: renewed");
    for (p, want) in trust.iter().zip(&contents) {
        assert_eq!(&fs::read(p).unwrap(), want, "{} restored", p.display());
        assert_eq!(mode(p), 0o644, "mode of {}", p.display());
    }
    assert_eq!(
        server.config_tests(),
        tests + 1,
        "one config test for a renewal and two trust files"
    );
    poll(
        Duration::from_secs(5),
        "the reload signal to be logged",
        || match server.reloads() {
            n if n == reloads + 1 => Ok(()),
            n => Err(format!("{} reloads logged", n - reloads)),
        },
    );
    assert_accepted(&server, &root, &bob);
    assert_turned_away(&server, &root, Some(&alice));
    assert_eq!(
        server.reloads(),
        reloads + 1,
        "one reload for the whole pass"
    );
}

#[test]
fn nginx_requires_client_certificates_and_honours_revocations() {
    server_requires_certificates_from_the_ca_and_honours_revocations(Kind::Nginx);
}

#[test]
fn apache_requires_client_certificates_and_honours_revocations() {
    server_requires_certificates_from_the_ca_and_honours_revocations(Kind::Apache);
}

#[test]
fn a_revocation_that_could_not_reach_nginx_is_reported_and_retried() {
    let kind = Kind::Nginx;
    let World {
        sb, server, root, ..
    } = world(kind);
    let alice = issue_client(&sb, "alice");
    assert_accepted(&server, &root, &alice);

    let mut wrong = Vec::new();
    server.break_config();
    let r = sb.ck(&["ca", "revoke", &alice.serial]);
    if r.code != 1 {
        wrong.push(format!(
            "`ca revoke` exited {} although nginx's config test failed and nginx was not \
             reloaded (want 1: a runtime failure):\n{r:?}",
            r.code
        ));
    }
    if r.stdout.contains("reloaded `nginx`") {
        wrong.push(format!(
            "`ca revoke` claims a reload that did not happen:\n{r:?}"
        ));
    }
    assert_eq!(server.config_tests(), 1, "the revoke ran the config test");
    assert_eq!(
        server.reloads(),
        0,
        "a failing config test must stop the reload"
    );
    assert_eq!(
        request(server.inst.port, &root, Some(&alice)),
        Answer::Http(200),
        "nginx still runs its old configuration, with the old CRL"
    );

    // Once the operator fixed nginx.conf, the next pass must finish the job.
    server.fix_config();
    let r = sb.renew_all();
    r.ok();
    let tests = server.config_tests();
    if tests != 2 {
        wrong.push(format!(
            "after the config was fixed, `renew --all` ran {} config test(s) instead of \
             retrying the pending reload:\n{r:?}",
            tests - 1
        ));
    }
    let start = Instant::now();
    let mut last = request(server.inst.port, &root, Some(&alice));
    while !turned_away(kind, &last) && start.elapsed() < NGINX_SWITCH {
        std::thread::sleep(Duration::from_millis(20));
        last = request(server.inst.port, &root, Some(&alice));
    }
    if !turned_away(kind, &last) {
        wrong.push(format!(
            "nginx still accepts the revoked client certificate ({last:?}) after the \
             revoke and a successful `renew --all`"
        ));
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

// ---------------------------------------------------------------------------------------
// 3. openssl as the judge of client certificates and CRLs

#[test]
fn client_certificates_and_crls_satisfy_openssl() {
    let sb = Sandbox::new();
    let mut y = CA_HEADER.to_string();
    y.push_str("trust:\n");
    y.push_str(&trust_yaml("$DIR/tls/chain.pem", "chain", None, None));
    y.push_str(&trust_yaml("$DIR/tls/clients.crl", "crl", None, None));
    y.push_str("certificates: []\n");
    sb.write_config(&y);
    sb.ck(&["check"]).ok();
    sb.renew_all().ok();
    let root = sb.root_bundle();
    let chain = sb.path("tls/chain.pem");
    let crl = sb.path("tls/clients.crl");
    assert_eq!(
        pem_blocks(&chain, "CERTIFICATE").len(),
        2,
        "root + intermediate"
    );
    assert_eq!(mode(&chain), 0o644);
    assert_eq!(mode(&crl), 0o644);

    let c1 = issue_client(&sb, "c1");
    let c2 = issue_client(&sb, "c2");
    let both = issue(&sb, "both", &["--client", "--server"]);
    for c in [&c1, &c2] {
        verify(&root, &c.cert, &c.cert, "sslclient").ok();
        let r = verify(&root, &c.cert, &c.cert, "sslserver");
        assert_ne!(
            r.code, 0,
            "a client-only certificate passed as a server's: {r:?}"
        );
        assert!(r.all().contains("unsuitable certificate purpose"), "{r:?}");
    }
    verify(&root, &both.cert, &both.cert, "sslclient").ok();
    verify(&root, &both.cert, &both.cert, "sslserver").ok();

    // Before any revocation every certificate passes the CRL checks.
    for c in [&c1, &c2, &both] {
        verify_with_crl(&chain, &crl, &c.cert).ok();
    }

    // Revoke c1 by the serial as `openssl x509 -serial` prints it (upper case).
    let openssl_serial = openssl(&["x509", "-in", path_str(&c1.cert), "-noout", "-serial"])
        .stdout
        .trim()
        .trim_start_matches("serial=")
        .to_string();
    assert_eq!(openssl_serial, c1.serial.to_ascii_uppercase());
    sb.ck(&[
        "ca",
        "revoke",
        &openssl_serial,
        "--reason",
        "key-compromise",
    ])
    .ok()
    .stdout_has(&format!("revoked serial {}", c1.serial));

    let r = verify_with_crl(&chain, &crl, &c1.cert);
    assert_ne!(r.code, 0, "the revoked certificate still verifies: {r:?}");
    assert!(r.all().contains("certificate revoked"), "{r:?}");
    verify_with_crl(&chain, &crl, &c2.cert).ok();
    verify_with_crl(&chain, &crl, &both.cert).ok();

    // The file holds what `ca crl` prints: the intermediate's CRL, then the root's,
    // each signed by its CA, the first listing c1 with its reason.
    assert_eq!(fs::read_to_string(&crl).unwrap(), ca_crl(&sb));
    let leaf_crl = crl_text(&crl, 0);
    let root_crl = crl_text(&crl, 1);
    assert!(
        leaf_crl.contains("Issuer: O = Test Org, CN = Test CA Intermediate"),
        "{leaf_crl}"
    );
    assert!(leaf_crl.contains(&openssl_serial), "{leaf_crl}");
    assert!(leaf_crl.contains("Key Compromise"), "{leaf_crl}");
    assert!(
        !leaf_crl.contains(&c2.serial.to_ascii_uppercase()),
        "{leaf_crl}"
    );
    assert!(
        root_crl.contains("Issuer: O = Test Org, CN = Test CA Root"),
        "{root_crl}"
    );
    assert!(root_crl.contains("No Revoked Certificates"), "{root_crl}");
    for i in 0..2 {
        let one = sb.path(&format!("crl{i}.pem"));
        fs::write(&one, &pem_blocks(&crl, "X509 CRL")[i]).unwrap();
        let r = openssl(&[
            "crl",
            "-in",
            path_str(&one),
            "-noout",
            "-CAfile",
            path_str(&chain),
        ]);
        r.ok();
        assert!(r.all().contains("verify OK"), "CRL {i}: {r:?}");
    }
}

// ---------------------------------------------------------------------------------------
// 4. ca revoke: unknown serials and repeated revocations

#[test]
fn revoking_an_unknown_serial_changes_nothing_and_revoking_twice_is_harmless() {
    let sb = Sandbox::new();
    let mut y = CA_HEADER.to_string();
    y.push_str("trust:\n");
    y.push_str(&trust_yaml("$DIR/tls/clients.crl", "crl", None, None));
    y.push_str("certificates: []\n");
    sb.write_config(&y);
    sb.renew_all().ok();
    let alice = issue_client(&sb, "alice");
    let crl = sb.path("tls/clients.crl");

    let before = sb.snapshot();
    // Not issued here: a made-up serial, alice's with a byte more, the intermediate's
    // (a CA certificate, not something `ca revoke` revokes).
    let intermediate = serial(&sb.state_dir().join("ca/intermediate.crt"));
    for bad in ["deadbeef", &format!("{}00", alice.serial), &intermediate] {
        let r = sb.ck(&["ca", "revoke", bad]);
        r.expect_code(2).stderr_has("was not issued by this CA");
        before.assert_same(&sb.snapshot(), &format!("`ca revoke {bad}`"));
    }
    let r = sb.ck(&["ca", "revoke", &alice.serial, "--reason", "bored"]);
    r.expect_code(2).stderr_has("not a revocation reason");
    before.assert_same(&sb.snapshot(), "`ca revoke` with a bad reason");

    sb.ck(&["ca", "revoke", &alice.serial])
        .ok()
        .stdout_has(&format!("revoked serial {}", alice.serial));
    assert!(crl_text(&crl, 0).contains(&alice.serial.to_ascii_uppercase()));
    assert_eq!(count_events(&sb.ledger(), "revoked", Some("alice")), 1);
    let once = sb.snapshot();
    let crl_stamp = stamp(&crl);

    // Again, spelled as openssl prints serials with colons: nothing more to do.
    let upper = alice.serial.to_ascii_uppercase();
    let colons: Vec<&str> = (0..upper.len())
        .step_by(2)
        .map(|i| &upper[i..(i + 2).min(upper.len())])
        .collect();
    let r = sb.ck(&["ca", "revoke", &colons.join(":")]);
    r.ok().stdout_has("already revoked");
    assert!(r.stdout.contains(&alice.serial), "{r:?}");
    once.assert_same(&sb.snapshot(), "a second revocation of the same serial");
    assert_eq!(
        stamp(&crl),
        crl_stamp,
        "the CRL file was rewritten for nothing"
    );
    assert_eq!(count_events(&sb.ledger(), "revoked", Some("alice")), 1);
}

/// The CRL number of the first CRL in a file.
#[track_caller]
fn crl_number(p: &Path) -> u128 {
    let text = crl_text(p, 0);
    let after = text
        .split_once("X509v3 CRL Number:")
        .unwrap_or_else(|| panic!("no CRL number:\n{text}"))
        .1;
    after
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unreadable CRL number:\n{text}"))
}

#[test]
fn every_new_crl_has_a_higher_crl_number() {
    let sb = Sandbox::new();
    let mut y = CA_HEADER.to_string();
    y.push_str("trust:\n");
    y.push_str(&trust_yaml("$DIR/tls/clients.crl", "crl", None, None));
    y.push_str("certificates: []\n");
    sb.write_config(&y);
    sb.renew_all().ok();
    let crl = sb.path("tls/clients.crl");
    let a = issue_client(&sb, "a");
    let b = issue_client(&sb, "b");
    // Start right after a second begins, so that both revocations usually fall into it
    // (the numbers must increase either way).
    poll(Duration::from_secs(2), "the start of a second", || {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        if t.subsec_millis() < 100 {
            Ok(())
        } else {
            Err(format!("{} ms into the second", t.subsec_millis()))
        }
    });
    let first = crl_number(&crl);
    sb.ck(&["ca", "revoke", &a.serial]).ok();
    let second = crl_number(&crl);
    sb.ck(&["ca", "revoke", &b.serial]).ok();
    let third = crl_number(&crl);
    let text = crl_text(&crl, 0);
    assert!(
        text.contains(&a.serial.to_ascii_uppercase())
            && text.contains(&b.serial.to_ascii_uppercase()),
        "{text}"
    );
    assert!(
        first < second && second < third,
        "CRL numbers must increase with every new CRL: {first}, {second}, {third}"
    );
}

// ---------------------------------------------------------------------------------------
// 5. The daemon keeps the trust files

#[test]
fn the_daemon_restores_a_deleted_crl_and_follows_revocations() {
    let sb = Sandbox::new();
    let runs = sb.path("crl-runs.log");
    let mut y = CA_HEADER.to_string();
    y.push_str("trust:\n");
    y.push_str(&trust_yaml("$DIR/tls/clients-ca.pem", "chain", None, None));
    y.push_str(&trust_yaml(
        "$DIR/tls/clients.crl",
        "crl",
        None,
        Some(&format!(
            "[/bin/sh, -c, {}]",
            q(&format!("echo ran >> {}", path_str(&runs)))
        )),
    ));
    y.push_str("certificates: []\n");
    sb.write_config(&y);
    sb.ck(&["check"]).ok();
    let ca_file = sb.path("tls/clients-ca.pem");
    let crl = sb.path("tls/clients.crl");
    let run_count = || read_or_empty(&runs).lines().count();

    let daemon = Daemon::start(&sb, &[]);
    poll(DAEMON_START, "the daemon to write the trust files", || {
        if ca_file.exists() && crl.exists() && run_count() == 1 {
            Ok(())
        } else {
            Err(format!(
                "ca file {}, crl {}, {} run(s); log:\n{}",
                ca_file.exists(),
                crl.exists(),
                run_count(),
                daemon.log()
            ))
        }
    });
    let content = fs::read(&crl).unwrap();
    assert_eq!(mode(&crl), 0o644);
    let ca_stamp = stamp(&ca_file);

    // Deleted: written again, same content (nothing was revoked, the CRLs are fresh).
    fs::remove_file(&crl).unwrap();
    let took = {
        let start = Instant::now();
        poll(
            DAEMON_REPAIR,
            "the daemon to restore the CRL file",
            || match fs::read(&crl) {
                Ok(b) if b == content => Ok(()),
                Ok(_) => Err("different content".into()),
                Err(e) => Err(format!("{e}; log:\n{}", daemon.log())),
            },
        );
        start.elapsed()
    };
    eprintln!("daemon: deleted CRL file restored after {took:?}");
    assert_eq!(mode(&crl), 0o644);
    poll(
        DAEMON_REPAIR,
        "the CRL target's command to run again",
        || match run_count() {
            2 => Ok(()),
            n => Err(format!("{n} run(s)")),
        },
    );
    assert_eq!(
        stamp(&ca_file),
        ca_stamp,
        "the CA file was rewritten for nothing"
    );

    // `issue` and `ca revoke` beside the running daemon.
    let carol = issue_client(&sb, "carol");
    sb.ck(&["ca", "revoke", &carol.serial])
        .ok()
        .stdout_has(&format!("revoked serial {}", carol.serial));
    assert!(crl_text(&crl, 0).contains(&carol.serial.to_ascii_uppercase()));
    assert_eq!(mode(&crl), 0o644);
    let r = verify_with_crl(&ca_file, &crl, &carol.cert);
    assert!(r.all().contains("certificate revoked"), "{r:?}");
    poll(
        DAEMON_REPAIR,
        "the CRL target's command to run after the revoke",
        || match run_count() {
            3 => Ok(()),
            n => Err(format!("{n} run(s)")),
        },
    );

    daemon.stop();
    // The daemon did not put an older CRL back.
    assert!(crl_text(&crl, 0).contains(&carol.serial.to_ascii_uppercase()));
    assert_eq!(fs::read_to_string(&crl).unwrap(), ca_crl(&sb));
    assert_eq!(run_count(), 3, "the CRL command ran for nothing");
}

// ---------------------------------------------------------------------------------------
// verify.client_cert: the check after a reload presents a managed client certificate

/// The server configuration plus `probe`, a managed client certificate, and `www`
/// verified at the server presenting it.
fn write_probe_config(sb: &Sandbox, server: &WebServer) {
    let name = server.kind.name();
    let mut y = CA_HEADER.to_string();
    y.push_str("servers:\n");
    y.push_str(&server.server_yaml());
    y.push_str("certificates:\n");
    let www = www_def(server.kind)
        .extra(&format!("reload: [{name}]"))
        .extra(&format!(
            "verify: {{ connect: \"127.0.0.1:{}\", client_cert: probe, timeout: 5s }}",
            server.inst.port
        ));
    y.push_str(&www.yaml());
    let probe = CertDef::new("probe", Layout::Nginx)
        .sans(&["probe.clients.example.internal"])
        .usage("client");
    y.push_str(&probe.yaml());
    y.push_str("trust:\n");
    y.push_str(&trust_yaml(
        "$DIR/tls/clients-ca.pem",
        server.kind.ca_contents(),
        Some(name),
        None,
    ));
    y.push_str(&trust_yaml("$DIR/tls/clients.crl", "crl", Some(name), None));
    sb.write_config(&y);
    sb.ck(&["check"]).ok();
}

#[test]
fn mtls_verify_presents_the_client_certificate_and_names_a_refusal() {
    let w = world(Kind::Apache);
    let sb = &w.sb;
    write_probe_config(sb, &w.server);
    sb.renew_all().ok();
    // Apache requires a client certificate: presenting `probe`, the check passes.
    let r = sb.ck(&["renew", "www", "--force"]);
    r.ok();
    assert!(!r.stderr.contains("refused"), "{r:?}");
    assert!(!r.stderr.contains("clients refuse"), "{r:?}");
    sb.ck(&["status", "--check"]).ok();
    // Apache trusts another CA for its clients now: `probe` is refused, and named.
    let theirs = TestCa::new(&sb.path("theirs"));
    let their_root = sb.path("their-root.pem");
    let pair = theirs.issue();
    write_file(&their_root, &pair.chain_pem, 0o644);
    let ca_file = w.ca_file.display().to_string();
    let their = their_root.display().to_string();
    w.server.inst.rewrite(|good| good.replace(&ca_file, &their));
    let old = www_def(Kind::Apache).files(sb).serial();
    let r = sb.ck(&["renew", "www", "--force"]);
    r.expect_code(1)
        .stderr_has("refused the client certificate `probe`");
    assert_eq!(
        www_def(Kind::Apache).files(sb).serial(),
        old,
        "rolled back to the pair that was served"
    );
    // Trusting certkeeper's CA again, all is well.
    w.server.inst.fix_config();
    sb.ck(&["renew", "www", "--force"]).ok();
    sb.ck(&["status", "--check"]).ok();
}
