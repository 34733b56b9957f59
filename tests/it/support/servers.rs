//! Private nginx and Apache instances for integration tests, set up as
//! /work/shared/TESTING-NOTES.md describes: everything (config, pid, lock, temp paths,
//! logs) inside the test's own directory, listening on 127.0.0.1 on a port picked free
//! at run time, stopped by the pid it started. Also test certificates from certkeeper's
//! own internal CA, and `wait_for`. Never touches the system's servers.

#![allow(dead_code)]

use certkeeper::config::{CaSpec, ServerKind, ServerSpec};
use certkeeper::issuer::{make_csr, InternalCa, IssueRequest, Issuer};
use certkeeper::keys::PrivateKey;
use certkeeper::model::{KeyType, San, Usage};
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use time::OffsetDateTime;

pub const NGINX: &str = "/usr/sbin/nginx";
pub const APACHE: &str = "/usr/sbin/apache2";
pub const APACHE_MODULES: &str = "/usr/lib/apache2/modules";
/// The name test servers answer to and test certificates are issued for.
pub const SERVER_NAME: &str = "www.example.internal";

/// How long a server may take to start or stop.
const START_DEADLINE: Duration = Duration::from_secs(15);
const STOP_DEADLINE: Duration = Duration::from_secs(10);

pub use super::wait_for;

// ---------------------------------------------------------------------------------
// Configuration snippets

/// A YAML double-quoted string (JSON's escapes are YAML's).
pub fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

pub fn yaml_list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|s| q(s)).collect::<Vec<_>>().join(", ")
    )
}

/// One `servers:` entry for a harness server: its type, pid file and config test
/// exactly as the harness's `server_spec` gives them, and an optional `test:` or
/// `reload:` override.
pub fn server_yaml(
    spec: &ServerSpec,
    test: Option<Vec<String>>,
    reload: Option<&[&str]>,
) -> String {
    let kind = match spec.kind {
        ServerKind::Nginx => "nginx",
        ServerKind::Apache => "apache",
        other => panic!("not a harness server: {other:?}"),
    };
    let pid_file = spec.pid_file.as_ref().expect("the harness sets pid_file");
    let mut y = format!(
        "  {}:\n    type: {kind}\n    pid_file: {}\n",
        spec.name,
        q(&pid_file.display().to_string())
    );
    if let Some(test) = test.or_else(|| spec.test.clone()) {
        y.push_str(&format!("    test: {}\n", yaml_list(&test)));
    }
    if let Some(reload) = reload {
        let reload: Vec<String> = reload.iter().map(|s| s.to_string()).collect();
        y.push_str(&format!("    reload: {}\n", yaml_list(&reload)));
    }
    y
}

/// A port on 127.0.0.1 that was free a moment ago (bound and released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn write_file(path: &Path, content: &str, mode: u32) {
    let _ = fs::remove_file(path);
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(content.as_bytes())
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

pub fn read_or_empty(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

/// Whether a process is gone: no such pid, or a zombie nobody has reaped yet (a
/// daemonized server's parent is init, which may not reap quickly in a container).
pub fn process_gone(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return true;
    }
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z"),
        Err(_) => true,
    }
}

/// Makes this test process the "child subreaper": servers that daemonize (fork and let
/// the launcher exit) become our children instead of init's, so `stop_pid` can reap
/// them. Without it they stay zombies where init does not reap (as in some containers).
pub fn adopt_daemons() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            eprintln!("cannot become child subreaper ({e}); stopped servers may stay zombies");
        }
    });
}

/// Collects the exit status of a daemon we adopted (only that pid; never `wait(-1)`,
/// which would steal the statuses of children std::process waits for).
fn reap(pid: i32) {
    let _ = nix::sys::wait::waitpid(
        Pid::from_raw(pid),
        Some(nix::sys::wait::WaitPidFlag::WNOHANG),
    );
}

/// The process name the kernel reports for `pid` (/proc/PID/comm).
pub fn comm(pid: i32) -> String {
    read_or_empty(Path::new(&format!("/proc/{pid}/comm")))
        .trim()
        .to_string()
}

// ---------------------------------------------------------------------------------
// Certificates

/// A throw-away internal CA in `dir/ca`.
pub struct TestCa {
    ca: InternalCa,
}

/// One issued certificate: leaf, the intermediates to serve with it, and its key.
pub struct Pair {
    pub leaf_der: Vec<u8>,
    pub leaf_pem: String,
    pub chain_pem: String,
    pub key_pem: String,
    pub serial: String,
    pub fingerprint: String,
}

impl TestCa {
    pub fn new(dir: &Path) -> TestCa {
        let spec = CaSpec {
            organization: "certkeeper tests".into(),
            common_name: "certkeeper Test CA".into(),
            key: KeyType::EcdsaP256,
            root_lifetime: Duration::from_secs(10 * 365 * 86400),
            intermediate_lifetime: Duration::from_secs(3 * 365 * 86400),
            ..CaSpec::default()
        };
        let ca = InternalCa::init(&spec, &dir.join("ca"), OffsetDateTime::now_utc())
            .expect("create the test CA");
        TestCa { ca }
    }

    /// A server certificate for `SERVER_NAME`.
    pub fn issue(&self) -> Pair {
        self.issue_for(&[SERVER_NAME])
    }

    pub fn issue_for(&self, names: &[&str]) -> Pair {
        let key = PrivateKey::generate(KeyType::EcdsaP256).expect("generate a key");
        let req = IssueRequest {
            name: "test".into(),
            common_name: names[0].into(),
            sans: names
                .iter()
                .map(|n| San::parse(n).expect("a SAN"))
                .collect(),
            usage: Usage::Server,
            lifetime: Duration::from_secs(90 * 86400),
            profile: None,
        };
        let csr = make_csr(&key, &req).expect("make a CSR");
        let issued = self
            .ca
            .issue(&csr, &req, OffsetDateTime::now_utc())
            .expect("issue");
        Pair {
            leaf_der: issued.leaf.der.clone(),
            leaf_pem: issued.leaf.to_pem(),
            chain_pem: issued.chain.iter().map(|c| c.to_pem()).collect(),
            key_pem: key.pem().to_string(),
            serial: issued.leaf.serial.clone(),
            fingerprint: issued.leaf.fingerprint.clone(),
        }
    }
}

impl Pair {
    /// Leaf followed by intermediates.
    pub fn fullchain_pem(&self) -> String {
        format!("{}{}", self.leaf_pem, self.chain_pem)
    }

    /// nginx layout: `cert` holds leaf + intermediates; `key` mode 0600.
    pub fn write_nginx(&self, cert: &Path, key: &Path) {
        write_file(cert, &self.fullchain_pem(), 0o644);
        write_file(key, &self.key_pem, 0o600);
    }

    /// Apache layout: leaf, intermediates and key in three files.
    pub fn write_apache(&self, cert: &Path, chain: &Path, key: &Path) {
        write_file(cert, &self.leaf_pem, 0o644);
        write_file(chain, &self.chain_pem, 0o644);
        write_file(key, &self.key_pem, 0o600);
    }
}

// ---------------------------------------------------------------------------------
// Shared start/stop logic

/// A private nginx or Apache once started (the mTLS tests build theirs on it too);
/// stopped when dropped.
pub struct Instance {
    pub what: &'static str,
    pub dir: PathBuf,
    pub config: PathBuf,
    pub pid_file: PathBuf,
    pub error_log: PathBuf,
    pub port: u16,
    pub pid: i32,
    /// The configuration as first written, for `fix_config`.
    pub good_config: String,
}

impl Instance {
    /// Runs `start` (which daemonizes), then waits until the pid file names a live
    /// process and the port accepts connections. `render(port)` gives the config text.
    /// Retries with another port when the chosen one was taken in between.
    pub fn start(
        what: &'static str,
        dir: &Path,
        config: PathBuf,
        pid_file: PathBuf,
        error_log: PathBuf,
        render: impl Fn(u16) -> String,
        start: impl Fn() -> Command,
    ) -> Instance {
        adopt_daemons();
        for attempt in 1..=3 {
            let port = free_port();
            let text = render(port);
            write_file(&config, &text, 0o644);
            let start_log = dir.join("logs/start.out");
            let out = File::create(&start_log).expect("start log");
            let status = start()
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup"))
                .stderr(out)
                .status()
                .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
            let logs = || {
                format!(
                    "--- start output ---\n{}--- {} ---\n{}",
                    read_or_empty(&start_log),
                    error_log.display(),
                    read_or_empty(&error_log)
                )
            };
            if !status.success() {
                if attempt < 3 && logs().contains("Address already in use") {
                    continue;
                }
                panic!("{what} did not start ({status}):\n{}", logs());
            }
            let mut pid = 0;
            let started = Instant::now();
            loop {
                if pid == 0 {
                    pid = read_or_empty(&pid_file).trim().parse().unwrap_or(0);
                }
                if pid > 1 && TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                if pid > 1 && process_gone(pid) {
                    panic!(
                        "{what} (pid {pid}) exited right after starting:\n{}",
                        logs()
                    );
                }
                if started.elapsed() > START_DEADLINE {
                    if pid > 1 {
                        stop_pid(what, pid);
                    }
                    panic!(
                        "{what} did not listen on 127.0.0.1:{port} within {START_DEADLINE:?}:\n{}",
                        logs()
                    );
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            return Instance {
                what,
                dir: dir.to_path_buf(),
                config,
                pid_file,
                error_log,
                port,
                pid,
                good_config: text,
            };
        }
        unreachable!()
    }

    pub fn break_config(&self, line: &str) {
        write_file(
            &self.config,
            &format!("{}\n{line}\n", self.good_config),
            0o644,
        );
    }

    pub fn fix_config(&self) {
        write_file(&self.config, &self.good_config, 0o644);
    }

    /// Writes `edit` of the good configuration in its place (nothing reloads).
    pub fn rewrite(&self, edit: impl FnOnce(&str) -> String) {
        write_file(&self.config, &edit(&self.good_config), 0o644);
    }

    pub fn error_log(&self) -> String {
        read_or_empty(&self.error_log)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        stop_pid(self.what, self.pid);
    }
}

/// Stops the server whose master we started: SIGTERM, wait, then SIGKILL to its
/// process group (a daemonized master leads its own session, so that is the master and
/// its workers and nothing else). Checks the name first, in case the pid was reused.
pub fn stop_pid(what: &str, pid: i32) {
    if pid <= 1 || process_gone(pid) {
        reap(pid);
        return;
    }
    let name = comm(pid);
    if !["nginx", "apache2", "httpd"].contains(&name.as_str()) {
        eprintln!("not stopping pid {pid}: it is `{name}` now, not {what}");
        return;
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_DEADLINE;
    while !process_gone(pid) {
        if Instant::now() >= deadline {
            eprintln!("{what} (pid {pid}) ignored SIGTERM for {STOP_DEADLINE:?}; killing it");
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            // No panics here: this runs in Drop, possibly while a test is unwinding.
            let deadline = Instant::now() + STOP_DEADLINE;
            while !process_gone(pid) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    reap(pid);
}

/// Makes `dir` traversable by the unprivileged worker processes.
pub fn open_dir(dir: &Path) {
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).expect("chmod");
}

// ---------------------------------------------------------------------------------
// nginx

/// A private nginx serving `SERVER_NAME` over TLS from the given certificate and key.
pub struct Nginx {
    inst: Instance,
}

impl Nginx {
    pub fn start(dir: &Path, cert: &Path, key: &Path) -> Nginx {
        for sub in ["logs", "run", "tmp"] {
            fs::create_dir_all(dir.join(sub)).expect("create nginx dirs");
        }
        open_dir(dir);
        let d = dir.display().to_string();
        let user = if is_root() {
            "user nobody nogroup;\n"
        } else {
            ""
        };
        let (cert, key) = (cert.display().to_string(), key.display().to_string());
        let render = |port: u16| {
            format!(
                r#"# A private nginx for certkeeper's tests.
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
        location / {{ return 200 "ok\n"; }}
    }}
}}
"#
            )
        };
        let prefix = format!("{d}/");
        let config = dir.join("nginx.conf");
        let error_log = dir.join("logs/error.log");
        let args = [
            "-p".to_string(),
            prefix,
            "-e".into(),
            error_log.display().to_string(),
            "-c".into(),
            config.display().to_string(),
        ];
        let inst = Instance::start(
            "nginx",
            dir,
            config,
            dir.join("run/nginx.pid"),
            error_log,
            render,
            move || {
                let mut c = Command::new(NGINX);
                c.args(&args);
                c
            },
        );
        Nginx { inst }
    }

    pub fn port(&self) -> u16 {
        self.inst.port
    }

    /// `127.0.0.1:PORT`, as `verify.connect` would say.
    pub fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.inst.port)
    }

    pub fn pid(&self) -> i32 {
        self.inst.pid
    }

    pub fn pid_file(&self) -> &Path {
        &self.inst.pid_file
    }

    pub fn dir(&self) -> &Path {
        &self.inst.dir
    }

    pub fn error_log(&self) -> String {
        self.inst.error_log()
    }

    /// The `servers:` entry certkeeper would use for this instance.
    pub fn server_spec(&self, name: &str) -> ServerSpec {
        let d = self.inst.dir.display().to_string();
        ServerSpec {
            name: name.into(),
            kind: ServerKind::Nginx,
            pid_file: Some(self.inst.pid_file.clone()),
            binary: None,
            config: None,
            unit: None,
            test: Some(
                [
                    NGINX,
                    "-p",
                    &format!("{d}/"),
                    "-e",
                    &format!("{d}/logs/error.log"),
                    "-t",
                    "-q",
                    "-c",
                    &format!("{d}/nginx.conf"),
                ]
                .map(String::from)
                .to_vec(),
            ),
            reload: None,
            timeout: certkeeper::config::DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// Makes `nginx -t` fail with an unknown directive.
    pub fn break_config(&self) {
        self.inst
            .break_config("certkeeper_test_broken_directive on;");
    }

    pub fn fix_config(&self) {
        self.inst.fix_config();
    }

    /// Rewrites the configuration to read `cert` and `key` instead of `from_cert` and
    /// `from_key` (as someone editing the vhost by hand would); nothing reloads.
    pub fn point_at(&self, from_cert: &Path, from_key: &Path, cert: &Path, key: &Path) {
        let text = self
            .inst
            .good_config
            .replace(
                &from_cert.display().to_string(),
                &cert.display().to_string(),
            )
            .replace(&from_key.display().to_string(), &key.display().to_string());
        write_file(&self.inst.config, &text, 0o644);
    }

    /// Reloads nginx as someone would by hand (SIGHUP to the master).
    pub fn reload_by_hand(&self) {
        kill(Pid::from_raw(self.pid()), Signal::SIGHUP).expect("SIGHUP nginx");
    }

    /// Writes `edit` of the good configuration in its place (nothing reloads).
    pub fn rewrite(&self, edit: impl FnOnce(&str) -> String) {
        self.inst.rewrite(edit);
    }
}

// ---------------------------------------------------------------------------------
// Apache

/// A private Apache (event MPM) serving `SERVER_NAME` over TLS, with the certificate,
/// chain and key in three files (certkeeper's `apache` layout).
pub struct Apache {
    inst: Instance,
}

impl Apache {
    pub fn start(dir: &Path, cert: &Path, chain: &Path, key: &Path) -> Apache {
        for sub in ["logs", "run", "htdocs"] {
            fs::create_dir_all(dir.join(sub)).expect("create apache dirs");
        }
        open_dir(dir);
        open_dir(&dir.join("htdocs"));
        write_file(&dir.join("htdocs/index.html"), "ok\n", 0o644);
        let d = dir.display().to_string();
        let user = if is_root() {
            "User www-data\nGroup www-data\n"
        } else {
            ""
        };
        let (cert, chain, key) = (
            cert.display().to_string(),
            chain.display().to_string(),
            key.display().to_string(),
        );
        let render = |port: u16| {
            format!(
                r#"# A private Apache for certkeeper's tests.
ServerRoot "{d}"
ServerName {SERVER_NAME}
PidFile {d}/run/apache2.pid
DefaultRuntimeDir {d}/run
ErrorLog {d}/logs/error.log
LogLevel warn
LoadModule mpm_event_module {APACHE_MODULES}/mod_mpm_event.so
LoadModule authz_core_module {APACHE_MODULES}/mod_authz_core.so
LoadModule socache_shmcb_module {APACHE_MODULES}/mod_socache_shmcb.so
LoadModule ssl_module {APACHE_MODULES}/mod_ssl.so
LoadModule dir_module {APACHE_MODULES}/mod_dir.so
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
    SSLCertificateChainFile {chain}
    SSLCertificateKeyFile {key}
</VirtualHost>
"#
            )
        };
        let config = dir.join("apache2.conf");
        let args = [
            "-d".to_string(),
            d.clone(),
            "-f".into(),
            config.display().to_string(),
            "-k".into(),
            "start".into(),
        ];
        let inst = Instance::start(
            "apache",
            dir,
            config,
            dir.join("run/apache2.pid"),
            dir.join("logs/error.log"),
            render,
            move || {
                let mut c = Command::new(APACHE);
                c.args(&args);
                c
            },
        );
        Apache { inst }
    }

    pub fn port(&self) -> u16 {
        self.inst.port
    }

    pub fn connect(&self) -> String {
        format!("127.0.0.1:{}", self.inst.port)
    }

    pub fn pid(&self) -> i32 {
        self.inst.pid
    }

    pub fn pid_file(&self) -> &Path {
        &self.inst.pid_file
    }

    pub fn dir(&self) -> &Path {
        &self.inst.dir
    }

    pub fn error_log(&self) -> String {
        self.inst.error_log()
    }

    pub fn server_spec(&self, name: &str) -> ServerSpec {
        let d = self.inst.dir.display().to_string();
        ServerSpec {
            name: name.into(),
            kind: ServerKind::Apache,
            pid_file: Some(self.inst.pid_file.clone()),
            binary: None,
            config: None,
            unit: None,
            test: Some(
                [APACHE, "-d", &d, "-f", &format!("{d}/apache2.conf"), "-t"]
                    .map(String::from)
                    .to_vec(),
            ),
            reload: None,
            timeout: certkeeper::config::DEFAULT_COMMAND_TIMEOUT,
        }
    }

    /// Makes `apache2 -t` fail with an unknown directive.
    pub fn break_config(&self) {
        self.inst.break_config("CertkeeperTestBrokenDirective on");
    }

    pub fn fix_config(&self) {
        self.inst.fix_config();
    }

    /// Writes `edit` of the good configuration in its place (nothing reloads).
    pub fn rewrite(&self, edit: impl FnOnce(&str) -> String) {
        self.inst.rewrite(edit);
    }
}

/// A self-signed certificate for `names` (and its key), valid from `from` to `until`
/// days from now (negative: in the past), as PEM files `dir/stem.crt` and `.key`.
pub fn self_signed_for(
    dir: &Path,
    stem: &str,
    names: &[&str],
    from: i64,
    until: i64,
) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("a key");
    let mut p =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, names[0]);
    let now = OffsetDateTime::now_utc();
    p.not_before = now + time::Duration::days(from);
    p.not_after = now + time::Duration::days(until);
    let cert = p.self_signed(&key).expect("self-sign");
    let (c, k) = (
        dir.join(format!("{stem}.crt")),
        dir.join(format!("{stem}.key")),
    );
    write_file(&c, &cert.pem(), 0o644);
    write_file(&k, &key.serialize_pem(), 0o600);
    (c, k)
}

/// One full TLS handshake with `config` to `addr` for `SERVER_NAME`, each step bounded
/// by `limit`; the certificates the server presented (leaf first).
pub fn tls_handshake(
    config: std::sync::Arc<rustls::ClientConfig>,
    addr: std::net::SocketAddr,
    limit: Duration,
) -> Result<Vec<Vec<u8>>, String> {
    let name = rustls::pki_types::ServerName::try_from(SERVER_NAME).unwrap();
    let mut conn =
        rustls::ClientConnection::new(config, name).map_err(|e| format!("client setup: {e}"))?;
    let mut sock = TcpStream::connect_timeout(&addr, limit).map_err(|e| format!("connect: {e}"))?;
    sock.set_read_timeout(Some(limit)).unwrap();
    sock.set_write_timeout(Some(limit)).unwrap();
    sock.set_nodelay(true).unwrap();
    while conn.is_handshaking() {
        let (read, written) = conn
            .complete_io(&mut sock)
            .map_err(|e| format!("handshake: {e}"))?;
        if read == 0 && written == 0 && conn.is_handshaking() {
            return Err("handshake: the server closed the connection".into());
        }
    }
    let chain: Vec<Vec<u8>> = conn
        .peer_certificates()
        .ok_or("no certificate presented")?
        .iter()
        .map(|c| c.to_vec())
        .collect();
    conn.send_close_notify();
    let _ = conn.complete_io(&mut sock);
    Ok(chain)
}

/// A self-signed certificate for `SERVER_NAME` (and its key), valid for `days`.
pub fn self_signed(dir: &Path, stem: &str, days: u32) -> (PathBuf, PathBuf) {
    self_signed_for(dir, stem, &[SERVER_NAME], 0, i64::from(days))
}

/// `openssl s_client` to `connect` asking for `SERVER_NAME`, trusting only `root` and
/// refusing what does not verify, with `extra` arguments. Its exit code says whether it
/// accepted: it may print "Verify return code: 0 (ok)" after refusing.
pub fn s_client(connect: &str, root: &Path, extra: &[&str]) -> crate::support::Run {
    let root = root.display().to_string();
    let mut args = vec![
        "s_client",
        "-connect",
        connect,
        "-servername",
        SERVER_NAME,
        "-verify_return_error",
        "-no-CApath",
        "-no-CAstore",
        "-CAfile",
        &root,
    ];
    args.extend(extra);
    crate::support::openssl(&args)
}

/// The serial of the leaf served for `SERVER_NAME` at `connect`, if one is.
pub fn served_serial(connect: &str) -> Option<String> {
    certkeeper::verify::served_leaf(connect, SERVER_NAME, Duration::from_secs(2))
        .ok()
        .and_then(|der| certkeeper::x509::CertInfo::from_der(&der).ok())
        .map(|c| c.serial)
}
