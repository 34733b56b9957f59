//! Daemon benchmark (a bench binary, not a test): `cargo bench --bench daemon`.
//!
//! For N managed certificates (default 1,000 and 10,000; `CERTKEEPER_BENCH_SIZES`):
//! 1. all N missing at once: daemon start until READY=1 (issue + install of all N), and
//!    how many config tests and reloads the one server got;
//! 2. all N valid: daemon start until READY=1 (start-up reconciliation), median of 3,
//!    with peak RSS; the baseline in the same run is reading every managed file once;
//! 3. for the largest N, CPU time and context switches of the idle daemon over
//!    `CERTKEEPER_BENCH_IDLE` seconds (default 60).

mod common;

use common::{cpu_model, proc_status};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("daemon benchmark: skipped (run it with `cargo bench --bench daemon`)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("CERTKEEPER_BENCH_SIZES")
        .unwrap_or_else(|_| "1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are numbers"))
        .collect();
    let idle: u64 = std::env::var("CERTKEEPER_BENCH_IDLE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    println!(
        "machine: {} cores, {}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        cpu_model()
    );
    let largest = *sizes.iter().max().unwrap();
    for n in sizes {
        bench(n, if n == largest { idle } else { 0 });
    }
}

fn write_config(dir: &Path, n: usize) -> PathBuf {
    let mut y = format!(
        "state_dir: {d}/state\nservers:\n  web:\n    type: command\n    test: [/bin/sh, -c, \"echo test >> {d}/server.log\"]\n    reload: [/bin/sh, -c, \"echo reload >> {d}/server.log\"]\ncertificates:\n",
        d = dir.display()
    );
    for i in 0..n {
        // Thousands of certificates usually share a few directories.
        let sub = format!("{}/tls{}", dir.display(), i % 4);
        y.push_str(&format!(
            "  - name: c{i}\n    sans: [c{i}.example.internal]\n    files: {{ layout: nginx, cert: {sub}/c{i}.crt, key: {sub}/c{i}.key }}\n    reload: [web]\n"
        ));
    }
    let p = dir.join("config.yaml");
    fs::write(&p, y).unwrap();
    p
}

struct Running {
    child: Child,
    ready_after: Duration,
}

fn start(dir: &Path, config: &Path) -> Running {
    let (child, ready_after) = common::start_daemon(dir, config);
    Running { child, ready_after }
}

fn stop(mut r: Running) {
    common::stop(&mut r.child);
}

/// CPU ticks (user + system, all threads) and context switches of the event-loop
/// thread (the main thread: every wake-up of the daemon goes through it).
fn cpu_and_switches(pid: u32) -> (u64, u64) {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    let switches = proc_status(pid, "voluntary_ctxt_switches:")
        + proc_status(pid, "nonvoluntary_ctxt_switches:");
    (ticks, switches)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn server_counts(dir: &Path) -> (usize, usize) {
    let t = fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    (
        t.lines().filter(|l| *l == "test").count(),
        t.lines().filter(|l| *l == "reload").count(),
    )
}

fn bench(n: usize, idle_secs: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let config = write_config(dir, n);
    println!("\n== {n} certificates ==");

    // 1. All due at once (missing): one pass issues and installs everything.
    let r = start(dir, &config);
    let (tests, reloads) = server_counts(dir);
    println!(
        "all {n} due at once: ready after {:.2} s ({:.2} ms per certificate); config tests: {tests}, reloads: {reloads}",
        r.ready_after.as_secs_f64(),
        r.ready_after.as_secs_f64() * 1000.0 / n as f64
    );
    stop(r);

    // 2. Start-up reconciliation of N valid certificates.
    let files: Vec<PathBuf> = (0..n)
        .flat_map(|i| {
            let sub = dir.join(format!("tls{}", i % 4));
            [sub.join(format!("c{i}.crt")), sub.join(format!("c{i}.key"))]
        })
        .collect();
    let mut base = Vec::new();
    let mut startup = Vec::new();
    let mut rss = Vec::new();
    let mut last = None;
    for round in 0..3 {
        let t = Instant::now();
        let bytes: usize = files.iter().map(|f| fs::read(f).unwrap().len()).sum();
        base.push(t.elapsed());
        assert!(bytes > 0);
        let r = start(dir, &config);
        startup.push(r.ready_after);
        rss.push(proc_status(r.child.id(), "VmHWM:"));
        if round == 2 && idle_secs > 0 {
            last = Some(r);
        } else {
            stop(r);
        }
    }
    let (tests2, reloads2) = server_counts(dir);
    let rounds: Vec<String> = startup
        .iter()
        .zip(&rss)
        .map(|(t, r)| format!("{:.3} s / {:.1} MB", t.as_secs_f64(), *r as f64 / 1024.0))
        .collect();
    println!(
        "start-up rounds (the first without the daemon's cache of checked files): {}",
        rounds.join(", ")
    );
    let (m, b) = (median(startup), median(base));
    rss.sort();
    println!(
        "start-up with {n} valid: median {:.3} s to READY=1 (baseline, reading every file once: {:.3} s; ratio {:.1}x); peak RSS median {:.1} MB; config tests/reloads since: {}/{}",
        m.as_secs_f64(),
        b.as_secs_f64(),
        m.as_secs_f64() / b.as_secs_f64().max(1e-9),
        rss[1] as f64 / 1024.0,
        tests2 - tests,
        reloads2 - reloads
    );

    // 3. Idle: CPU used and wake-ups over a minute.
    if let Some(r) = last {
        let pid = r.child.id();
        std::thread::sleep(Duration::from_secs(2)); // let the start-up's own file events settle
        let (c0, s0) = cpu_and_switches(pid);
        std::thread::sleep(Duration::from_secs(idle_secs));
        let (c1, s1) = cpu_and_switches(pid);
        println!(
            "idle for {idle_secs} s with {n} certificates: CPU {} ticks ({} ms), {} context switches of the event loop",
            c1 - c0,
            (c1 - c0) * 10,
            s1.saturating_sub(s0)
        );
        stop(r);
    }
}
