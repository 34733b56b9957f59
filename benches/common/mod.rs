//! What the bench binaries share: the machine's CPU, a field of `/proc/PID/status`,
//! and the daemon started until it says READY=1 on a NOTIFY_SOCKET, then stopped.

#![allow(dead_code)]

use std::fs;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The program as shipped: `cargo build --release --locked`, built on first use in a
/// target directory of its own (`target/shipped`). Not Cargo's copy for the benches:
/// that one is built with the dev-dependencies' features, so its functions have other
/// names than the shipped program's and the hot-code layout (see `build.rs`) misses
/// them.
pub fn bin() -> &'static str {
    static BIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let fallback = env!("CARGO_BIN_EXE_certkeeper").to_string();
        let Some(cargo) = std::env::var_os("CARGO") else {
            eprintln!("CARGO is not set: measuring {fallback}, built for the benches");
            return fallback;
        };
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target/tmp")
            .join("shipped");
        eprintln!(
            "building the shipped program (cargo build --release --locked) in {}",
            target.display()
        );
        let status = Command::new(cargo)
            .args([
                "build",
                "--release",
                "--locked",
                "--quiet",
                "--bin",
                "certkeeper",
            ])
            .arg("--target-dir")
            .arg(&target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build --release failed");
        target
            .join("release")
            .join("certkeeper")
            .to_string_lossy()
            .into_owned()
    })
}

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
    let mut child = Command::new(bin())
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
