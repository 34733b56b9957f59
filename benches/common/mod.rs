//! What the bench binaries share: the machine's CPU, a field of `/proc/PID/status`,
//! and the daemon started until it says READY=1 on a NOTIFY_SOCKET, then stopped.

#![allow(dead_code)]

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_certkeeper");

/// The CPU model from /proc/cpuinfo.
pub fn cpu_model() -> String {
    fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

/// A number field of /proc/PID/status (`VmHWM:` in KiB, `voluntary_ctxt_switches:`),
/// 0 when it cannot be read.
pub fn proc_status(pid: u32, field: &str) -> u64 {
    fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// `certkeeper run -c CONFIG` with a NOTIFY_SOCKET in `dir`, returned once it has said
/// READY=1 (at most 30 minutes), with how long that took.
pub fn start_daemon(dir: &Path, config: &Path) -> (Child, Duration) {
    let sock = dir.join("notify.sock");
    let _ = fs::remove_file(&sock);
    let notify = UnixDatagram::bind(&sock).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(1800)))
        .unwrap();
    let start = Instant::now();
    let mut child = Command::new(BIN)
        .args(["run", "-c"])
        .arg(config)
        .env("NOTIFY_SOCKET", &sock)
        .env("CERTKEEPER_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("READY=1") => {
                return (child, start.elapsed());
            }
            Ok(_) => {}
            Err(e) => {
                stop(&mut child);
                panic!("no READY=1 within 30 minutes: {e}");
            }
        }
    }
}

/// SIGTERM to a child we started, then wait (SIGKILL after 20 s).
pub fn stop(child: &mut Child) {
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
