//! Running the real daemon in a sandbox: our own datagram socket as `NOTIFY_SOCKET`,
//! stderr to `daemon.log`, signals by pid, and a stop (kill) on drop.

use super::Sandbox;
use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a daemon may take to finish its first reconciliation.
pub const READY: Duration = Duration::from_secs(20);

pub use super::wait_until;

pub struct Daemon {
    pub child: Child,
    notify: UnixDatagram,
    log: PathBuf,
    /// Every notification received so far, in order.
    pub messages: Vec<String>,
}

impl Daemon {
    /// Starts `certkeeper run -c CONFIG EXTRA...`.
    pub fn start(sb: &Sandbox, extra: &[&str]) -> Daemon {
        Self::start_as(sb, &sb.config(), extra)
    }

    /// Starts `certkeeper run -c config.yaml` in the sandbox: a path with no
    /// directory part.
    pub fn start_relative(sb: &Sandbox) -> Daemon {
        Self::start_as(sb, "config.yaml", &[])
    }

    /// Starts `certkeeper run -c CONFIG` with `CERTKEEPER_LOG` set to `log`.
    pub fn start_logging(sb: &Sandbox, log: &str) -> Daemon {
        Self::start_with(sb, &sb.config(), &[], Some(log))
    }

    fn start_as(sb: &Sandbox, config: &str, extra: &[&str]) -> Daemon {
        Self::start_with(sb, config, extra, None)
    }

    fn start_with(sb: &Sandbox, config: &str, extra: &[&str], level: Option<&str>) -> Daemon {
        let sock = sb.path("notify.sock");
        let _ = fs::remove_file(&sock);
        let notify = UnixDatagram::bind(&sock).expect("bind notify socket");
        let log = sb.path("daemon.log");
        let mut args = vec!["run", "-c", config];
        args.extend(extra);
        let mut command = sb.command(&args);
        if let Some(level) = level {
            command.env("CERTKEEPER_LOG", level);
        }
        let child = command
            .env("NOTIFY_SOCKET", &sock)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("start the daemon");
        Daemon {
            child,
            notify,
            log,
            messages: Vec::new(),
        }
    }

    /// Starts the daemon and waits for READY=1.
    #[track_caller]
    pub fn start_ready(sb: &Sandbox, extra: &[&str]) -> Daemon {
        let mut d = Daemon::start(sb, extra);
        assert!(
            d.wait_notify("READY=1", READY),
            "no READY=1: {:?}\n{}",
            d.messages,
            d.log()
        );
        d
    }

    /// Waits for a notification containing `needle`.
    pub fn wait_notify(&mut self, needle: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut buf = [0u8; 4096];
        loop {
            if self.messages.iter().any(|m| m.contains(needle)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.notify
                .set_read_timeout(Some(left.min(Duration::from_millis(200))))
                .unwrap();
            if let Ok(n) = self.notify.recv(&mut buf) {
                self.messages
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig).unwrap();
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGTERM; the daemon must exit 0 within seconds.
    #[track_caller]
    pub fn stop(mut self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let status = self.wait_exit(Duration::from_secs(10));
        assert!(
            status.is_some_and(|s| s.success()),
            "the daemon did not exit 0 after SIGTERM ({status:?}):\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
