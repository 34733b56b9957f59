//! Integration tests of `certkeeper::server` (config test, reload) and
//! `certkeeper::verify` (what is really served) against real, private nginx and Apache
//! instances. Each test has its own directory, server, port and certificates, waits with
//! deadlines, and stops only the processes it started.

use crate::support::servers::{
    comm, process_gone, wait_for, Apache, Nginx, Pair, TestCa, SERVER_NAME,
};
use certkeeper::config::{ServerKind, ServerSpec};
use certkeeper::server::{config_test, reload, ServerError};
use certkeeper::verify::{served_leaf, wait_for_leaf, VerifyError};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

const HANDSHAKE: Duration = Duration::from_secs(5);
/// nginx serves a new certificate within milliseconds of SIGHUP; Apache's graceful
/// restart often takes about a second. Both get the same generous bound.
const SERVE_DEADLINE: Duration = Duration::from_secs(10);

struct NginxFiles {
    cert: PathBuf,
    key: PathBuf,
}

fn nginx_files(dir: &Path) -> NginxFiles {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    NginxFiles {
        cert: tls.join("www.crt"),
        key: tls.join("www.key"),
    }
}

struct ApacheFiles {
    cert: PathBuf,
    chain: PathBuf,
    key: PathBuf,
}

fn apache_files(dir: &Path) -> ApacheFiles {
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    ApacheFiles {
        cert: tls.join("www.crt"),
        chain: tls.join("www.chain.crt"),
        key: tls.join("www.key"),
    }
}

/// A child process that is killed and reaped when the test ends, pass or fail.
struct Bystander(Child);

impl Bystander {
    fn sleep() -> Bystander {
        let b = Bystander(
            Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("spawn sleep"),
        );
        // spawn() returns once the exec has begun, a moment before the kernel renames
        // the child: until then /proc/PID/comm still shows this test's thread name.
        let pid = b.pid() as i32;
        wait_for(Duration::from_secs(5), "`sleep` to be exec'd", || {
            comm(pid) == "sleep"
        });
        b
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn still_running(&mut self) -> bool {
        self.0.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for Bystander {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn short(pair: &Pair) -> String {
    format!("serial {}", pair.serial)
}

#[test]
fn nginx_reload_serves_the_new_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let files = nginx_files(tmp.path());
    let (a, b) = (ca.issue(), ca.issue());
    a.write_nginx(&files.cert, &files.key);
    let nginx = Nginx::start(&tmp.path().join("nginx"), &files.cert, &files.key);
    let spec = nginx.server_spec("nginx");

    let served = served_leaf(&nginx.connect(), SERVER_NAME, HANDSHAKE).unwrap();
    assert!(served == a.leaf_der, "nginx should serve A ({})", short(&a));

    b.write_nginx(&files.cert, &files.key);
    config_test(&spec).unwrap();
    let t = Instant::now();
    reload(&spec).unwrap();
    wait_for_leaf(&nginx.connect(), SERVER_NAME, &b.leaf_der, SERVE_DEADLINE).unwrap();
    eprintln!(
        "nginx: SIGHUP -> new certificate served in {:?}",
        t.elapsed()
    );
    // The master survived the reload.
    assert!(!process_gone(nginx.pid()));
    assert_eq!(
        std::fs::read_to_string(nginx.pid_file()).unwrap().trim(),
        nginx.pid().to_string()
    );
}

#[test]
fn nginx_config_test_reports_a_broken_config() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let files = nginx_files(tmp.path());
    let a = ca.issue();
    a.write_nginx(&files.cert, &files.key);
    let nginx = Nginx::start(&tmp.path().join("nginx"), &files.cert, &files.key);
    let spec = nginx.server_spec("web");

    config_test(&spec).unwrap();
    nginx.break_config();
    let err = config_test(&spec).unwrap_err();
    match &err {
        ServerError::ConfigTest {
            server,
            command,
            status,
            output,
        } => {
            assert_eq!(server, "web");
            assert!(command.starts_with("/usr/sbin/nginx -p "), "{command}");
            assert_eq!(status.code(), Some(1), "{output}");
            assert!(
                output.contains("unknown directive \"certkeeper_test_broken_directive\""),
                "{output}"
            );
            assert!(output.contains("nginx.conf:"), "names the file: {output}");
        }
        other => panic!("expected ConfigTest, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("server `web`: config test"), "{msg}");
    assert!(msg.contains("was not reloaded"), "{msg}");

    // The running server is untouched by a failed test.
    assert_eq!(
        served_leaf(&nginx.connect(), SERVER_NAME, HANDSHAKE).unwrap(),
        a.leaf_der
    );
    nginx.fix_config();
    config_test(&spec).unwrap();
}

#[test]
fn apache_graceful_restart_serves_the_new_certificate() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let files = apache_files(tmp.path());
    let (a, b) = (ca.issue(), ca.issue());
    a.write_apache(&files.cert, &files.chain, &files.key);
    let apache = Apache::start(
        &tmp.path().join("apache"),
        &files.cert,
        &files.chain,
        &files.key,
    );
    let spec = apache.server_spec("apache");

    let served = served_leaf(&apache.connect(), SERVER_NAME, HANDSHAKE).unwrap();
    assert!(
        served == a.leaf_der,
        "apache should serve A ({})",
        short(&a)
    );

    b.write_apache(&files.cert, &files.chain, &files.key);
    config_test(&spec).unwrap();
    let t = Instant::now();
    reload(&spec).unwrap();
    wait_for_leaf(&apache.connect(), SERVER_NAME, &b.leaf_der, SERVE_DEADLINE)
        .unwrap_or_else(|e| panic!("{e}\n--- error log ---\n{}", apache.error_log()));
    eprintln!(
        "apache: SIGUSR1 -> new certificate served in {:?}",
        t.elapsed()
    );
    assert!(!process_gone(apache.pid()));
}

#[test]
fn apache_config_test_reports_a_broken_config() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let files = apache_files(tmp.path());
    let a = ca.issue();
    a.write_apache(&files.cert, &files.chain, &files.key);
    let apache = Apache::start(
        &tmp.path().join("apache"),
        &files.cert,
        &files.chain,
        &files.key,
    );
    let spec = apache.server_spec("apache");

    config_test(&spec).unwrap();
    apache.break_config();
    match config_test(&spec).unwrap_err() {
        ServerError::ConfigTest { status, output, .. } => {
            assert!(!status.success());
            assert!(
                output.contains("Invalid command 'CertkeeperTestBrokenDirective'"),
                "{output}"
            );
        }
        other => panic!("expected ConfigTest, got {other:?}"),
    }
    assert_eq!(
        served_leaf(&apache.connect(), SERVER_NAME, HANDSHAKE).unwrap(),
        a.leaf_der
    );
    apache.fix_config();
    config_test(&spec).unwrap();
}

fn pid_spec(kind: ServerKind, pid_file: &Path) -> ServerSpec {
    ServerSpec {
        name: "web".into(),
        kind,
        pid_file: Some(pid_file.to_path_buf()),
        binary: None,
        config: None,
        unit: None,
        test: None,
        reload: None,
        timeout: certkeeper::config::DEFAULT_COMMAND_TIMEOUT,
    }
}

#[test]
fn reload_refuses_a_pid_that_is_not_the_server() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sleeper = Bystander::sleep();
    let pid_file = tmp.path().join("nginx.pid");
    std::fs::write(&pid_file, format!("{}\n", sleeper.pid())).unwrap();

    for (kind, daemon) in [(ServerKind::Nginx, "nginx"), (ServerKind::Apache, "apache")] {
        let err = reload(&pid_spec(kind, &pid_file)).unwrap_err();
        match &err {
            ServerError::NotTheServer { pid, comm, .. } => {
                assert_eq!(*pid as u32, sleeper.pid());
                assert_eq!(comm, "sleep");
            }
            other => panic!("expected NotTheServer, got {other:?}"),
        }
        let msg = err.to_string();
        let expected = format!("pid {} in {} is `sleep`", sleeper.pid(), pid_file.display());
        assert!(msg.contains(&expected), "{msg}");
        assert!(
            msg.contains(&format!("not {daemon}; refusing to signal it")),
            "{msg}"
        );
    }
    // SIGHUP or SIGUSR1 would have killed `sleep`.
    assert!(sleeper.still_running(), "the bystander was signalled");
}

#[test]
fn reload_refuses_a_stale_or_missing_pid_file() {
    let tmp = tempfile::tempdir().unwrap();
    let mut exited = Command::new("true").spawn().unwrap();
    let pid = exited.id();
    exited.wait().unwrap();
    let pid_file = tmp.path().join("nginx.pid");
    std::fs::write(&pid_file, format!("{pid}\n")).unwrap();

    let err = reload(&pid_spec(ServerKind::Nginx, &pid_file)).unwrap_err();
    assert!(
        matches!(err, ServerError::StalePid { pid: p, .. } if p as u32 == pid),
        "{err:?}"
    );
    assert!(err.to_string().contains("stale pid file"), "{err}");

    let missing = tmp.path().join("run/nginx.pid");
    let err = reload(&pid_spec(ServerKind::Nginx, &missing)).unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "pid file {} does not exist: is nginx running?",
            missing.display()
        )),
        "{err}"
    );
}

#[test]
fn reload_after_nginx_stopped_is_refused() {
    // A real nginx pid file left behind by a server that has gone.
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let files = nginx_files(tmp.path());
    ca.issue().write_nginx(&files.cert, &files.key);
    let nginx = Nginx::start(&tmp.path().join("nginx"), &files.cert, &files.key);
    let spec = nginx.server_spec("nginx");
    let (pid, pid_file) = (nginx.pid(), nginx.pid_file().to_path_buf());
    let saved = std::fs::read(&pid_file).unwrap();
    drop(nginx);
    assert!(process_gone(pid));
    // nginx removes its pid file on exit.
    assert!(!pid_file.exists());
    let err = reload(&spec).unwrap_err();
    assert!(matches!(err, ServerError::PidFileMissing { .. }), "{err:?}");
    std::fs::write(&pid_file, saved).unwrap();
    let err = reload(&spec).unwrap_err();
    assert!(matches!(err, ServerError::StalePid { .. }), "{err:?}");
}

#[test]
fn waiting_for_a_certificate_that_is_not_served_names_what_is() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let files = nginx_files(tmp.path());
    let (a, b) = (ca.issue(), ca.issue());
    a.write_nginx(&files.cert, &files.key);
    let nginx = Nginx::start(&tmp.path().join("nginx"), &files.cert, &files.key);

    let t = Instant::now();
    let err = wait_for_leaf(
        &nginx.connect(),
        SERVER_NAME,
        &b.leaf_der,
        Duration::from_millis(500),
    )
    .unwrap_err();
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(500), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    match &err {
        VerifyError::NotServed {
            found, expected, ..
        } => {
            let served = &found.served;
            assert!(served.contains(&a.serial), "{served}");
            assert!(served.contains(&a.fingerprint), "{served}");
            assert!(expected.contains(&b.serial), "{expected}");
        }
        other => panic!("expected NotServed, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains(&nginx.connect()), "{msg}");
    assert!(msg.contains("still serves serial"), "{msg}");
}

#[test]
fn waiting_on_a_server_that_is_down_reports_the_connection_error() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let files = nginx_files(tmp.path());
    let a = ca.issue();
    a.write_nginx(&files.cert, &files.key);
    let nginx = Nginx::start(&tmp.path().join("nginx"), &files.cert, &files.key);
    let connect = nginx.connect();
    drop(nginx);
    let err = wait_for_leaf(
        &connect,
        SERVER_NAME,
        &a.leaf_der,
        Duration::from_millis(300),
    )
    .unwrap_err();
    match &err {
        VerifyError::Unreachable { last, .. } => {
            assert!(matches!(**last, VerifyError::Connect { .. }), "{last:?}")
        }
        other => panic!("expected Unreachable, got {other:?}"),
    }
    assert!(err.to_string().contains(&a.serial), "{err}");
}

/// The served chain is what the layout installed: checked with `openssl s_client`, an
/// independent TLS client.
#[test]
fn apache_serves_leaf_and_chain_to_openssl() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = TestCa::new(tmp.path());
    let files = apache_files(tmp.path());
    let a = ca.issue();
    a.write_apache(&files.cert, &files.chain, &files.key);
    let apache = Apache::start(
        &tmp.path().join("apache"),
        &files.cert,
        &files.chain,
        &files.key,
    );
    let root = tmp.path().join("ca/root.crt");
    let out = Command::new("openssl")
        .args(["s_client", "-connect", &apache.connect()])
        .args(["-servername", SERVER_NAME, "-verify_return_error"])
        .args(["-no-CAfile", "-no-CApath", "-no-CAstore", "-CAfile"])
        .arg(&root)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("Verify return code: 0 (ok)"),
        "openssl s_client:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
