//! Web-server effects: run a server's own configuration test and ask it to reload
//! (a command, `systemctl reload`, or a signal to the master process named in its pid
//! file, after checking that the pid really is that server). Blocking: the daemon calls
//! these from `spawn_blocking`. It does not decide *when* to reload, and never touches
//! certificate files.

use crate::config::{ServerKind, ServerSpec};
use crate::fsread::{read_text, ReadError, PID_FILE_MAX};
use crate::process::{self, show_command, Finished, RunError};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("server `{server}`: config test `{command}` failed ({status}):\n{output}\nthe server was not reloaded; fix what the test reports, then retry")]
    ConfigTest {
        server: String,
        command: String,
        status: ExitStatus,
        /// The last lines of stdout and stderr, trimmed.
        output: String,
    },
    #[error("server `{server}`: reload command `{command}` failed ({status}):\n{output}\ncheck the server's state and logs; its old configuration may still be running")]
    ReloadCommand {
        server: String,
        command: String,
        status: ExitStatus,
        output: String,
    },
    #[error("server `{server}`: `{command}` did not finish within {}s and was killed; output so far:\n{output}\nfind out why it hangs (run it by hand)", after.as_secs())]
    Timeout {
        server: String,
        command: String,
        after: Duration,
        output: String,
    },
    #[error("server `{server}`: cannot start `{program}`: {source}; {hint}")]
    Spawn {
        server: String,
        program: String,
        hint: String,
        #[source]
        source: io::Error,
    },
    #[error("server `{server}`: {what} is an empty command; give the program and its arguments as a list")]
    EmptyCommand { server: String, what: &'static str },
    #[error("server `{server}`: no pid file and no reload command; set servers.{server}.pid_file (where the {daemon} master writes its pid) or servers.{server}.reload")]
    NoPidFile {
        server: String,
        daemon: &'static str,
    },
    #[error("server `{server}`: a systemd server needs `unit:`; set servers.{server}.unit (e.g. haproxy.service) or servers.{server}.reload")]
    NoUnit { server: String },
    #[error("server `{server}`: a command server needs `reload:`; set servers.{server}.reload to the command that reloads it")]
    NoReloadCommand { server: String },
    #[error("server `{server}`: pid file {} does not exist: is {daemon} running? Start it, or point servers.{server}.pid_file at the file its `pid` setting names", path.display())]
    PidFileMissing {
        server: String,
        path: PathBuf,
        daemon: &'static str,
    },
    #[error("server `{server}`: cannot read the pid file: {source}; it must be a regular file certkeeper may read (certkeeper must run as root to signal {daemon})")]
    PidFileUnreadable {
        server: String,
        path: PathBuf,
        daemon: &'static str,
        #[source]
        source: ReadError,
    },
    #[error("server `{server}`: pid file {} holds {}, not a process id; restart {daemon} so it rewrites it, or fix servers.{server}.pid_file", path.display(), if content.is_empty() { "nothing".to_string() } else { format!("`{content}`") })]
    PidFileInvalid {
        server: String,
        path: PathBuf,
        daemon: &'static str,
        content: String,
    },
    #[error("server `{server}`: pid file {} names pid {pid}; certkeeper never signals pid 0 or 1 (the process group or init); fix servers.{server}.pid_file", path.display())]
    PidUnsafe {
        server: String,
        path: PathBuf,
        pid: i32,
    },
    #[error("server `{server}`: stale pid file {}: no process {pid} exists, so {daemon} is not running; start {daemon} (it will pick up the installed certificate)", path.display())]
    StalePid {
        server: String,
        path: PathBuf,
        pid: i32,
        daemon: &'static str,
    },
    #[error("server `{server}`: pid {pid} in {} is `{comm}`{}, not {daemon}; refusing to signal it. The pid file is stale (its pid was reused) or the wrong file: restart {daemon} or fix servers.{server}.pid_file", path.display(), exe.as_ref().map(|e| format!(" ({e})")).unwrap_or_default())]
    NotTheServer {
        server: String,
        path: PathBuf,
        pid: i32,
        /// The process name from /proc/PID/comm.
        comm: String,
        /// Its executable, when readable.
        exe: Option<String>,
        daemon: &'static str,
    },
    #[error("server `{server}`: cannot send {signal} to {daemon} (pid {pid}): {source}; run certkeeper as root or as the server's user")]
    Signal {
        server: String,
        pid: i32,
        signal: Signal,
        daemon: &'static str,
        #[source]
        source: Errno,
    },
}

/// Runs the server's configuration test: `test:` when set, otherwise `nginx -t -q` or
/// `apachectl -t` (with `-c`/`-f` when `config:` is set). Systemd and command servers
/// without `test:` have nothing to test and pass.
/// Killed after `servers.NAME.timeout`: `nginx -t` takes milliseconds; a minute means
/// something hangs (DNS look-ups in the config, a stuck `systemctl`).
pub fn config_test(spec: &ServerSpec) -> Result<(), ServerError> {
    config_test_within(spec, spec.timeout)
}

fn config_test_within(spec: &ServerSpec, timeout: Duration) -> Result<(), ServerError> {
    let Some((argv, hint_field)) = test_command(spec) else {
        return Ok(());
    };
    let done = run(&spec.name, "test", hint_field, &argv, timeout)?;
    if done.status.success() {
        Ok(())
    } else {
        Err(ServerError::ConfigTest {
            server: spec.name.clone(),
            command: show_command(&argv),
            status: done.status,
            output: done.output,
        })
    }
}

/// The config test command and the config field that chose its program; None when
/// there is nothing to test.
fn test_command(spec: &ServerSpec) -> Option<(Vec<String>, &'static str)> {
    match (&spec.test, spec.kind) {
        (Some(test), _) => Some((test.clone(), "test")),
        (None, ServerKind::Nginx) => {
            let mut argv = vec![binary(spec, "/usr/sbin/nginx"), "-t".into(), "-q".into()];
            if let Some(config) = &spec.config {
                argv.extend(["-c".into(), config.display().to_string()]);
            }
            Some((argv, "binary"))
        }
        (None, ServerKind::Apache) => {
            let mut argv = vec![binary(spec, "/usr/sbin/apachectl"), "-t".into()];
            if let Some(config) = &spec.config {
                argv.extend(["-f".into(), config.display().to_string()]);
            }
            Some((argv, "binary"))
        }
        (None, ServerKind::Systemd | ServerKind::Command) => None,
    }
}

/// Asks the server to load its configuration and certificates again: `reload:` when
/// set, otherwise SIGHUP (nginx) or SIGUSR1 (Apache graceful restart) to the pid in
/// `pid_file`, or `systemctl reload UNIT`. Does not run the config test first.
pub fn reload(spec: &ServerSpec) -> Result<(), ServerError> {
    reload_within(spec, spec.timeout)
}

fn reload_within(spec: &ServerSpec, timeout: Duration) -> Result<(), ServerError> {
    let argv = match (&spec.reload, spec.kind) {
        (Some(cmd), _) => cmd.clone(),
        (None, ServerKind::Nginx | ServerKind::Apache) => {
            let target = Target::of(spec);
            let Some(pid_file) = &spec.pid_file else {
                return Err(ServerError::NoPidFile {
                    server: spec.name.clone(),
                    daemon: target.daemon,
                });
            };
            let pid = checked_pid(&spec.name, pid_file, &target)?;
            return kill(Pid::from_raw(pid), target.signal).map_err(|source| ServerError::Signal {
                server: spec.name.clone(),
                pid,
                signal: target.signal,
                daemon: target.daemon,
                source,
            });
        }
        (None, ServerKind::Systemd) => {
            let Some(unit) = &spec.unit else {
                return Err(ServerError::NoUnit {
                    server: spec.name.clone(),
                });
            };
            vec!["systemctl".into(), "reload".into(), unit.clone()]
        }
        (None, ServerKind::Command) => {
            return Err(ServerError::NoReloadCommand {
                server: spec.name.clone(),
            })
        }
    };
    let done = run(&spec.name, "reload", "reload", &argv, timeout)?;
    if done.status.success() {
        Ok(())
    } else {
        Err(ServerError::ReloadCommand {
            server: spec.name.clone(),
            command: show_command(&argv),
            status: done.status,
            output: done.output,
        })
    }
}

/// Why a server has nothing to reload: it is not running, so it will read the installed
/// files when it starts. Only what certkeeper can know for sure counts: a pid file that
/// is missing, empty or names no live process, or a systemd unit that is not active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotRunning {
    NoPidFile { path: PathBuf },
    EmptyPidFile { path: PathBuf },
    NoProcess { path: PathBuf, pid: i32 },
    UnitInactive { unit: String, state: String },
}

impl std::fmt::Display for NotRunning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotRunning::NoPidFile { path } => {
                write!(f, "pid file {} does not exist", path.display())
            }
            NotRunning::EmptyPidFile { path } => write!(f, "pid file {} is empty", path.display()),
            NotRunning::NoProcess { path, pid } => {
                write!(
                    f,
                    "pid file {} names pid {pid}, which has exited",
                    path.display()
                )
            }
            NotRunning::UnitInactive { unit, state } => write!(f, "unit {unit} is {state}"),
        }
    }
}

/// Whether `spec`'s server runs, as far as can be told: `Err` when it certainly does not
/// (see `NotRunning`); `Ok` when it runs or when there is no way to know (a `command`
/// server, a reload command without a pid file). A pid file that names another program
/// is not "not running" but a reload error: it may be the wrong file.
pub fn running(spec: &ServerSpec) -> Result<(), NotRunning> {
    match spec.kind {
        ServerKind::Nginx | ServerKind::Apache => {
            let Some(path) = &spec.pid_file else {
                return Ok(());
            };
            let text = match read_text(path, PID_FILE_MAX) {
                Ok(t) => t,
                Err(e) if e.is_not_found() => {
                    return Err(NotRunning::NoPidFile { path: path.clone() })
                }
                Err(_) => return Ok(()),
            };
            if text.trim().is_empty() {
                // `nginx -t` leaves an empty pid file behind when none exists.
                return Err(NotRunning::EmptyPidFile { path: path.clone() });
            }
            let Some(pid) = parse_pid(&text).filter(|p| *p > 1) else {
                return Ok(());
            };
            let proc_dir = PathBuf::from(format!("/proc/{pid}"));
            if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) || is_zombie(&proc_dir) {
                return Err(NotRunning::NoProcess {
                    path: path.clone(),
                    pid,
                });
            }
            Ok(())
        }
        ServerKind::Systemd => {
            let Some(unit) = &spec.unit else {
                return Ok(());
            };
            let argv: Vec<String> = vec!["systemctl".into(), "is-active".into(), unit.clone()];
            match run(&spec.name, "is-active", "unit", &argv, spec.timeout) {
                Ok(done) => {
                    let state = done.output.lines().last().unwrap_or("").trim().to_string();
                    // Only states that certainly mean "no process to reload".
                    if ["inactive", "failed", "dead"].contains(&state.as_str()) {
                        Err(NotRunning::UnitInactive {
                            unit: unit.clone(),
                            state,
                        })
                    } else {
                        Ok(())
                    }
                }
                // No systemctl, or it hangs: let the reload itself report the problem.
                Err(_) => Ok(()),
            }
        }
        ServerKind::Command => Ok(()),
    }
}

fn binary(spec: &ServerSpec, default: &str) -> String {
    spec.binary
        .as_ref()
        .map(|b| b.display().to_string())
        .unwrap_or_else(|| default.to_string())
}

/// Which process a pid file must name and how to reload it.
struct Target {
    daemon: &'static str,
    signal: Signal,
    /// Process names (/proc/PID/comm or the executable's file name) that count as the
    /// server.
    names: Vec<String>,
}

impl Target {
    fn of(spec: &ServerSpec) -> Target {
        let (daemon, signal, names): (_, _, &[&str]) = match spec.kind {
            ServerKind::Apache => ("apache", Signal::SIGUSR1, &["apache2", "httpd"]),
            _ => ("nginx", Signal::SIGHUP, &["nginx"]),
        };
        let mut names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        // A server built elsewhere (`binary: /opt/openresty/bin/openresty`) runs under
        // its own name.
        if let Some(file) = spec.binary.as_ref().and_then(|b| b.file_name()) {
            names.push(file.to_string_lossy().into_owned());
        }
        Target {
            daemon,
            signal,
            names,
        }
    }

    fn matches(&self, name: &str) -> bool {
        self.names.iter().any(|n| {
            n == name
                // comm is cut to 15 bytes.
                || (name.len() == 15 && n.starts_with(name))
        })
    }
}

/// Reads the pid file and checks that it names a live process that is the server.
/// (A pid could still be reused between this check and the signal; the window is
/// microseconds, against the hours a stale pid file can lie around.)
fn checked_pid(server: &str, path: &Path, target: &Target) -> Result<i32, ServerError> {
    let text = match read_text(path, PID_FILE_MAX) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => {
            return Err(ServerError::PidFileMissing {
                server: server.into(),
                path: path.into(),
                daemon: target.daemon,
            })
        }
        Err(source) => {
            return Err(ServerError::PidFileUnreadable {
                server: server.into(),
                path: path.into(),
                daemon: target.daemon,
                source,
            })
        }
    };
    let pid = parse_pid(&text).ok_or_else(|| ServerError::PidFileInvalid {
        server: server.into(),
        path: path.into(),
        daemon: target.daemon,
        content: text.trim().chars().take(40).collect(),
    })?;
    if pid <= 1 {
        return Err(ServerError::PidUnsafe {
            server: server.into(),
            path: path.into(),
            pid,
        });
    }
    let stale = || ServerError::StalePid {
        server: server.into(),
        path: path.into(),
        pid,
        daemon: target.daemon,
    };
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return Err(stale());
    }
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    let comm = match std::fs::read_to_string(proc_dir.join("comm")) {
        Ok(c) => c.trim_end_matches('\n').to_string(),
        // It exited between the two looks.
        Err(_) => return Err(stale()),
    };
    if is_zombie(&proc_dir) {
        return Err(stale());
    }
    // The executable is only readable with enough privilege; comm always is.
    let exe = std::fs::read_link(proc_dir.join("exe")).ok().map(|p| {
        let p = p.to_string_lossy();
        p.strip_suffix(" (deleted)").unwrap_or(&p).to_string()
    });
    let exe_name = exe
        .as_deref()
        .and_then(|e| Path::new(e).file_name())
        .map(|n| n.to_string_lossy().into_owned());
    if target.matches(&comm) || exe_name.as_deref().is_some_and(|n| target.matches(n)) {
        return Ok(pid);
    }
    Err(ServerError::NotTheServer {
        server: server.into(),
        path: path.into(),
        pid,
        comm,
        exe,
        daemon: target.daemon,
    })
}

/// A pid file's content: one decimal number, surrounding whitespace allowed.
fn parse_pid(text: &str) -> Option<i32> {
    let t = text.trim();
    if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    t.parse().ok()
}

/// A zombie has exited; only its parent has not collected it yet.
fn is_zombie(proc_dir: &Path) -> bool {
    std::fs::read_to_string(proc_dir.join("stat"))
        .ok()
        .and_then(|s| {
            // The state follows the `(comm)` field, which may itself contain spaces.
            let after = &s[s.rfind(')')? + 1..];
            after.split_whitespace().next().map(|st| st == "Z")
        })
        .unwrap_or(false)
}

/// Runs `argv` through the common runner (own process group, killed at `timeout`) and
/// gives its errors the server's name. `hint_field` names the config field that chose
/// the program, for the "cannot start" message.
fn run(
    server: &str,
    what: &'static str,
    hint_field: &str,
    argv: &[String],
    timeout: Duration,
) -> Result<Finished, ServerError> {
    process::run(argv, process::NO_ENV, timeout).map_err(|e| match e {
        RunError::Empty => ServerError::EmptyCommand {
            server: server.into(),
            what,
        },
        RunError::Spawn { program, source } => {
            let hint = if source.kind() == io::ErrorKind::NotFound {
                format!("it is not installed or not on PATH; install it or give its full path in servers.{server}.{hint_field}")
            } else {
                format!("check that it is executable, or change servers.{server}.{hint_field}")
            };
            ServerError::Spawn {
                server: server.into(),
                program,
                hint,
                source,
            }
        }
        RunError::TimedOut {
            command,
            after,
            output,
        } => ServerError::Timeout {
            server: server.into(),
            command,
            after,
            output,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Child, Command};
    use std::thread;
    use std::time::Instant;

    fn nginx(pid_file: &Path) -> ServerSpec {
        ServerSpec {
            name: "web".into(),
            kind: ServerKind::Nginx,
            pid_file: Some(pid_file.to_path_buf()),
            binary: None,
            config: None,
            unit: None,
            test: None,
            reload: None,
            timeout: crate::config::DEFAULT_COMMAND_TIMEOUT,
        }
    }

    fn command(test: Option<&[&str]>, reload: Option<&[&str]>) -> ServerSpec {
        let v = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        ServerSpec {
            name: "proxy".into(),
            kind: ServerKind::Command,
            pid_file: None,
            binary: None,
            config: None,
            unit: None,
            test: test.map(v),
            reload: reload.map(v),
            timeout: crate::config::DEFAULT_COMMAND_TIMEOUT,
        }
    }

    fn pid_file_with(dir: &Path, content: &str) -> PathBuf {
        let p = dir.join("server.pid");
        std::fs::write(&p, content).unwrap();
        p
    }

    /// A child that is killed and reaped when the test ends, pass or fail.
    struct Reaped(Child);
    impl Drop for Reaped {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn parses_pid_files() {
        assert_eq!(parse_pid("1234\n"), Some(1234));
        assert_eq!(parse_pid("  42  "), Some(42));
        for bad in ["", "\n", "abc", "12 34", "-5", "+5", "1.5", "99999999999"] {
            assert_eq!(parse_pid(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn refuses_a_pid_that_is_not_nginx() {
        // The test binary itself: alive, ours, and certainly not nginx.
        let dir = tempfile::tempdir().unwrap();
        let me = std::process::id();
        let path = pid_file_with(dir.path(), &format!("{me}\n"));
        let err = reload(&nginx(&path)).unwrap_err();
        match &err {
            ServerError::NotTheServer { pid, comm, .. } => {
                assert_eq!(*pid, me as i32);
                assert!(!comm.contains("nginx"), "{comm}");
            }
            other => panic!("expected NotTheServer, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("not nginx; refusing to signal it"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn refuses_a_stale_pid() {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let path = pid_file_with(dir.path(), &pid.to_string());
        let err = reload(&nginx(&path)).unwrap_err();
        assert!(
            matches!(err, ServerError::StalePid { pid: p, .. } if p == pid as i32),
            "{err:?}"
        );
        assert!(err.to_string().contains("stale pid file"), "{err}");
    }

    #[test]
    fn a_zombie_counts_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        let child = Reaped(Command::new("true").spawn().unwrap());
        let pid = child.0.id() as i32;
        // Not reaped yet: wait until it has exited and is a zombie.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !is_zombie(Path::new(&format!("/proc/{pid}"))) {
            assert!(Instant::now() < deadline, "child never exited");
            thread::sleep(Duration::from_millis(2));
        }
        let path = pid_file_with(dir.path(), &pid.to_string());
        let err = reload(&nginx(&path)).unwrap_err();
        assert!(matches!(err, ServerError::StalePid { .. }), "{err:?}");
    }

    #[test]
    fn refuses_garbage_missing_and_unsafe_pid_files() {
        let dir = tempfile::tempdir().unwrap();
        for content in ["", "nginx\n", "-1", "12 13"] {
            let path = pid_file_with(dir.path(), content);
            let err = reload(&nginx(&path)).unwrap_err();
            assert!(
                matches!(err, ServerError::PidFileInvalid { .. }),
                "{content:?}: {err:?}"
            );
        }
        for content in ["0", "1\n"] {
            let path = pid_file_with(dir.path(), content);
            let err = reload(&nginx(&path)).unwrap_err();
            assert!(
                matches!(err, ServerError::PidUnsafe { .. }),
                "{content:?}: {err:?}"
            );
        }
        let missing = dir.path().join("absent.pid");
        let err = reload(&nginx(&missing)).unwrap_err();
        assert!(matches!(err, ServerError::PidFileMissing { .. }), "{err:?}");
        assert!(
            err.to_string().contains(&format!(
                "pid file {} does not exist: is nginx running?",
                missing.display()
            )),
            "{err}"
        );
    }

    #[test]
    fn a_server_without_a_live_process_is_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pid");
        assert_eq!(
            running(&nginx(&missing)),
            Err(NotRunning::NoPidFile {
                path: missing.clone()
            })
        );
        // `nginx -t` leaves an empty pid file when nginx is stopped.
        let empty = pid_file_with(dir.path(), "\n");
        assert!(matches!(
            running(&nginx(&empty)),
            Err(NotRunning::EmptyPidFile { .. })
        ));
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        let stale = pid_file_with(dir.path(), &pid.to_string());
        assert_eq!(
            running(&nginx(&stale)),
            Err(NotRunning::NoProcess {
                path: stale.clone(),
                pid: pid as i32
            })
        );
        let msg = running(&nginx(&stale)).unwrap_err().to_string();
        assert!(msg.contains("which has exited"), "{msg}");
        // A live process counts as running, whoever it is: whether it is the server
        // is for the reload to check (and refuse).
        let me = pid_file_with(dir.path(), &std::process::id().to_string());
        assert_eq!(running(&nginx(&me)), Ok(()));
        // Garbage is not "not running" but an error the reload reports.
        let garbage = pid_file_with(dir.path(), "nginx");
        assert_eq!(running(&nginx(&garbage)), Ok(()));
        // Nothing to know about a command server.
        assert_eq!(running(&command(None, Some(&["true"]))), Ok(()));
    }

    #[test]
    fn apache_accepts_its_names_and_a_configured_binary() {
        let mut spec = nginx(Path::new("/x"));
        spec.kind = ServerKind::Apache;
        let t = Target::of(&spec);
        assert_eq!(t.signal, Signal::SIGUSR1);
        assert!(t.matches("apache2") && t.matches("httpd") && !t.matches("nginx"));
        spec.kind = ServerKind::Nginx;
        spec.binary = Some("/opt/openresty/nginx/sbin/openresty-custom-build".into());
        let t = Target::of(&spec);
        assert!(t.matches("nginx"));
        // comm is truncated to 15 bytes.
        assert!(t.matches("openresty-custo"));
        assert!(!t.matches("openresty"));
    }

    #[test]
    fn a_failing_test_reports_its_output_and_status() {
        let spec = command(
            Some(&[
                "sh",
                "-c",
                "echo checking; echo 'bad directive on line 3' >&2; exit 3",
            ]),
            None,
        );
        match config_test(&spec).unwrap_err() {
            ServerError::ConfigTest {
                server,
                command,
                status,
                output,
            } => {
                assert_eq!(server, "proxy");
                assert!(command.starts_with("sh -c 'echo checking;"), "{command}");
                assert_eq!(status.code(), Some(3));
                assert_eq!(output, "checking\nbad directive on line 3");
            }
            other => panic!("expected ConfigTest, got {other:?}"),
        }
        config_test(&command(Some(&["true"]), None)).unwrap();
        // Nothing to test.
        config_test(&command(None, Some(&["true"]))).unwrap();
    }

    #[test]
    fn output_keeps_the_last_lines() {
        let spec = command(Some(&["sh", "-c", "seq 1 100; exit 1"]), None);
        let ServerError::ConfigTest { output, .. } = config_test(&spec).unwrap_err() else {
            panic!("expected ConfigTest");
        };
        let expected: Vec<String> = (81..=100).map(|i| i.to_string()).collect();
        assert_eq!(output, expected.join("\n"));
    }

    #[test]
    fn a_missing_program_is_named() {
        let spec = command(Some(&["/nonexistent/haproxy", "-c"]), None);
        let err = config_test(&spec).unwrap_err();
        assert!(matches!(err, ServerError::Spawn { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("cannot start `/nonexistent/haproxy`"), "{msg}");
        assert!(msg.contains("servers.proxy.test"), "{msg}");
    }

    #[test]
    fn a_hanging_config_test_is_a_timeout_error() {
        // Killing the whole process group is the runner's (see `process`); here, that
        // the server names it as a timeout with the output so far.
        let spec = command(Some(&["sh", "-c", "echo started; sleep 30"]), None);
        let started = Instant::now();
        let err = config_test_within(&spec, Duration::from_millis(300)).unwrap_err();
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        match &err {
            ServerError::Timeout { output, after, .. } => {
                assert_eq!(output, "started");
                assert_eq!(*after, Duration::from_millis(300));
            }
            other => panic!("expected Timeout, got {other:?}"),
        }
        assert!(err.to_string().contains("was killed"), "{err}");
    }

    #[test]
    fn reload_commands_run_and_failures_carry_output() {
        reload(&command(None, Some(&["true"]))).unwrap();
        let err = reload(&command(
            None,
            Some(&["sh", "-c", "echo no such unit >&2; exit 5"]),
        ))
        .unwrap_err();
        match err {
            ServerError::ReloadCommand { status, output, .. } => {
                assert_eq!(status.code(), Some(5));
                assert_eq!(output, "no such unit");
            }
            other => panic!("expected ReloadCommand, got {other:?}"),
        }
        let err = reload(&command(None, None)).unwrap_err();
        assert!(
            matches!(err, ServerError::NoReloadCommand { .. }),
            "{err:?}"
        );
        let err = reload(&command(None, Some(&[]))).unwrap_err();
        assert!(matches!(err, ServerError::EmptyCommand { .. }), "{err:?}");
    }

    #[test]
    fn default_test_commands() {
        let argv = |spec: &ServerSpec| test_command(spec).map(|(a, _)| a.join(" "));
        let mut spec = nginx(Path::new("/x"));
        assert_eq!(argv(&spec).unwrap(), "/usr/sbin/nginx -t -q");
        spec.binary = Some("/opt/nginx/sbin/nginx".into());
        spec.config = Some("/etc/nginx/other.conf".into());
        assert_eq!(
            argv(&spec).unwrap(),
            "/opt/nginx/sbin/nginx -t -q -c /etc/nginx/other.conf"
        );
        spec.kind = ServerKind::Apache;
        spec.binary = None;
        assert_eq!(
            argv(&spec).unwrap(),
            "/usr/sbin/apachectl -t -f /etc/nginx/other.conf"
        );
        spec.test = Some(vec!["check".into(), "--all".into()]);
        assert_eq!(argv(&spec).unwrap(), "check --all");
        assert_eq!(argv(&command(None, Some(&["true"]))), None);
        let mut systemd = command(None, None);
        systemd.kind = ServerKind::Systemd;
        assert_eq!(argv(&systemd), None);
    }
}
