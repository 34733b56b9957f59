//! Every read is bounded and typed: a FIFO, `/dev/zero` (through a link) or a file over
//! its size cap, put where certkeeper reads (a managed certificate, a `watch:` entry, the
//! configuration, an `inspect` argument), is a clear error naming the path within a
//! second, never a hang; the daemon reports it and still stops on SIGTERM. Also: a user
//! who may not read the configuration is told so, and temporary files a killed writer
//! left in the archive are removed by the next one.
//!
//! Every command runs under a deadline and is killed past it, so a regression fails
//! the test instead of hanging the suite. Directory snapshots are not used here: they
//! read every file, FIFOs included.

use crate::support::daemon::{wait_until, Daemon};
use crate::support::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a command that meets a hostile file may take (a second is the goal; CI runs
/// on two noisy cores).
const QUICK: Duration = Duration::from_secs(2);
/// Past this a command is taken to hang: it is killed and the test fails.
const HANG: Duration = Duration::from_secs(20);

/// Runs `cmd` to its end, or kills it after `HANG`; returns its result and how long it
/// took.
#[track_caller]
fn run_timed(what: String, mut cmd: Command, dir: &Path) -> (Run, Duration) {
    let out = dir.join("timed.stdout");
    let err = dir.join("timed.stderr");
    cmd.stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("spawn certkeeper");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if started.elapsed() > HANG {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{what}` hangs: killed after {HANG:?}\n{}",
                fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let took = started.elapsed();
    let run = Run {
        what,
        code: status.code().unwrap_or(-1),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    };
    (run, took)
}

/// `certkeeper ARGS...` (exactly as given), which must end within `QUICK`.
#[track_caller]
fn quick(sb: &Sandbox, args: &[&str]) -> Run {
    let what = format!("certkeeper {}", args.join(" "));
    let (run, took) = run_timed(what.clone(), sb.command(args), sb.dir());
    println!("{what}: {} ms", took.as_millis());
    assert!(took < QUICK, "`{what}` took {took:?}: {run:?}");
    run
}

/// `certkeeper ARGS... -c CONFIG`, which must end within `QUICK`.
#[track_caller]
fn quick_ck(sb: &Sandbox, args: &[&str]) -> Run {
    let config = sb.config();
    let mut all = args.to_vec();
    all.extend(["-c", &config]);
    quick(sb, &all)
}

fn mkfifo(p: &Path) {
    nix::unistd::mkfifo(p, nix::sys::stat::Mode::from_bits_truncate(0o644)).expect("mkfifo");
}

/// A link to `/dev/zero` at `p`.
fn dev_zero(p: &Path) {
    std::os::unix::fs::symlink("/dev/zero", p).expect("symlink to /dev/zero");
}

fn text(p: &Path) -> String {
    p.display().to_string()
}

/// `www` (nginx) with a FIFO at its certificate path, `zero` (combined) with a link to
/// `/dev/zero` at its only path, and a watched certificate that is a FIFO. Returns the
/// three paths. (A watched link to `/dev/zero` beside `zero` would be refused as one
/// file under two names, so that one has a world of its own.)
fn hostile_world(sb: &Sandbox) -> [PathBuf; 3] {
    let www = CertDef::new("www", Layout::Nginx);
    let zero = CertDef::new("zero", Layout::Combined).extra("follow_symlinks: true");
    let mut yaml = header();
    yaml.push_str(&www.yaml());
    yaml.push_str(&zero.yaml());
    yaml.push_str("  - name: pipe\n    watch: $DIR/tls/pipe.crt\n");
    sb.write_config(&yaml);
    fs::create_dir_all(sb.path("tls")).unwrap();
    let paths = [
        www.files(sb).cert,
        zero.files(sb).cert,
        sb.path("tls/pipe.crt"),
    ];
    mkfifo(&paths[0]);
    dev_zero(&paths[1]);
    mkfifo(&paths[2]);
    paths
}

/// A watched certificate that is a link to `/dev/zero`; returns its path.
fn watched_dev_zero(sb: &Sandbox) -> PathBuf {
    let mut yaml = header();
    yaml.push_str("  - name: dev\n    watch: $DIR/tls/dev.crt\n");
    sb.write_config(&yaml);
    fs::create_dir_all(sb.path("tls")).unwrap();
    let p = sb.path("tls/dev.crt");
    dev_zero(&p);
    p
}

/// The `status --json` row of `name`, from a run that must be quick.
#[track_caller]
fn quick_row(sb: &Sandbox, name: &str) -> serde_json::Value {
    let r = quick_ck(sb, &["status", "--json"]);
    r.ok();
    let rows: serde_json::Value = serde_json::from_str(&r.stdout).expect("status --json");
    rows.as_array()
        .unwrap()
        .iter()
        .find(|row| row["name"] == name)
        .unwrap_or_else(|| panic!("no row {name}: {rows}"))
        .clone()
}

#[test]
fn a_fifo_or_dev_zero_at_a_managed_or_watched_path_is_reported_at_once() {
    let sb = Sandbox::new();
    let [www, zero, pipe] = hostile_world(&sb);
    let fifo = "is a FIFO, not a regular file";
    let device = "is a character device, not a regular file";
    let other = Sandbox::new();
    let dev = watched_dev_zero(&other);

    for (sb, name, path, state, words) in [
        (&sb, "www", &www, "damaged", fifo),
        (&sb, "zero", &zero, "damaged", device),
        (&sb, "pipe", &pipe, "unreadable", fifo),
        (&other, "dev", &dev, "unreadable", device),
    ] {
        let row = quick_row(sb, name);
        assert_eq!(row["state"], state, "{row}");
        let detail = row["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains(&text(path)) && detail.contains(words),
            "{name}: {row}"
        );
    }

    // The table of `status` and the plan of `check` say the same.
    for args in [&["status", "--wide"][..], &["check"]] {
        quick_ck(&sb, args)
            .ok()
            .stdout_has(&format!("{} is damaged: it {fifo}", text(&www)))
            .stdout_has(&format!("{} is damaged: it {device}", text(&zero)))
            .stdout_has(&format!("{}: {fifo}", text(&pipe)));
        quick_ck(&other, args)
            .ok()
            .stdout_has(&format!("{}: {device}", text(&dev)));
    }

    // `renew` fails both, naming the path, and leaves them as they were.
    let r = quick_ck(&sb, &["renew", "--all"]);
    r.expect_code(1);
    assert!(
        r.line_for("www").contains(&text(&www)) && r.line_for("www").contains(fifo),
        "{r:?}"
    );
    assert!(r.line_for("zero").contains("/dev/zero"), "{r:?}");
    assert!(fs::symlink_metadata(&www).unwrap().file_type().is_fifo());
    assert_eq!(fs::read_link(&zero).unwrap(), Path::new("/dev/zero"));
}

#[test]
fn a_fifo_or_dev_zero_as_the_configuration_is_refused_at_once() {
    let sb = Sandbox::new();
    let fifo = sb.path("fifo.yaml");
    mkfifo(&fifo);
    let zero = sb.path("zero.yaml");
    dev_zero(&zero);
    for (config, words) in [
        (&fifo, "is a FIFO, not a regular file"),
        (&zero, "is a character device, not a regular file"),
    ] {
        let config = text(config);
        for args in [
            &["check", "-c", &config][..],
            &["status", "-c", &config],
            &["renew", "--all", "-c", &config],
            &["run", "-c", &config],
        ] {
            let r = quick(&sb, args);
            r.expect_code(2)
                .stderr_has(&format!("cannot read the configuration: {config}: {words}"));
            assert!(!r.stderr.contains("in the configuration"), "{r:?}");
        }
    }
}

#[test]
fn fifos_and_dev_zero_given_to_inspect_are_errors() {
    let sb = Sandbox::new();
    let fifo = sb.path("fifo.pem");
    mkfifo(&fifo);
    let zero = sb.path("zero.pem");
    dev_zero(&zero);
    let r = quick(&sb, &["inspect", &text(&fifo), &text(&zero), "/dev/zero"]);
    r.expect_code(1)
        .stdout_has(&format!(
            "{}: ERROR: it is a FIFO, not a regular file",
            text(&fifo)
        ))
        .stdout_has(&format!(
            "{}: ERROR: it is a character device, not a regular file",
            text(&zero)
        ))
        .stdout_has("/dev/zero: ERROR: it is a character device, not a regular file");
}

#[test]
fn files_over_their_cap_are_refused_without_being_read_whole() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    sb.write_certs(std::slice::from_ref(&www));
    fs::create_dir_all(sb.path("tls")).unwrap();
    // 2 MiB that look like a certificate.
    let line = format!("{}\n", "A".repeat(63));
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    while pem.len() < (2 << 20) - 64 {
        pem.push_str(&line);
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem.push_str(&"\n".repeat((2 << 20) - pem.len()));
    fs::write(www.files(&sb).cert, &pem).unwrap();
    let r = quick_ck(&sb, &["status", "--wide"]);
    r.ok().stdout_has(&format!(
        "{} is damaged: it is 2 MiB, more than the 1 MiB certkeeper reads from such a file",
        text(&www.files(&sb).cert)
    ));
    let r = quick(&sb, &["inspect", &text(&www.files(&sb).cert)]);
    r.expect_code(1)
        .stdout_has("it is 2 MiB, more than the 1 MiB");

    // A configuration of 5 MiB (a valid one, padded with comments).
    let mut yaml = fs::read_to_string(sb.config_path()).unwrap();
    let comment = format!("# {}\n", "x".repeat(97));
    while yaml.len() < 5 << 20 {
        yaml.push_str(&comment);
    }
    yaml.truncate(5 << 20);
    fs::write(sb.config_path(), &yaml).unwrap();
    let r = quick_ck(&sb, &["check"]);
    r.expect_code(2).stderr_has(&format!(
        "cannot read the configuration: {}: is 5 MiB, more than the 4 MiB certkeeper reads from such a file",
        sb.config()
    ));
}

#[test]
fn the_daemon_reports_fifos_never_blocks_on_them_and_stops_on_sigterm() {
    let sb = Sandbox::new();
    let [www, zero, pipe] = hostile_world(&sb);
    let started = Instant::now();
    let mut d = Daemon::start_ready(&sb, &[]);
    println!("READY=1 after {} ms", started.elapsed().as_millis());
    let log_has = |d: &Daemon, words: &[String]| {
        let log = d.log();
        words.iter().all(|w| log.contains(w.as_str()))
    };
    let expected = [
        format!(
            "{} is damaged: it is a FIFO, not a regular file",
            text(&www)
        ),
        format!("{} is damaged: it is a character device", text(&zero)),
        format!("{}: is a FIFO, not a regular file", text(&pipe)),
    ];
    assert!(
        wait_until(Duration::from_secs(5), || log_has(&d, &expected)),
        "{}",
        d.log()
    );
    // `status` beside it says so too.
    quick_ck(&sb, &["status", "--wide"])
        .ok()
        .stdout_has(&format!("{} is damaged: it is a FIFO", text(&www)));

    // The configuration replaced by a FIFO: read on the change, refused, kept.
    let config = sb.config_path();
    let fifo = sb.path("config.fifo");
    mkfifo(&fifo);
    fs::rename(&fifo, &config).unwrap();
    let refused = format!(
        "cannot read the configuration: {}: is a FIFO, not a regular file",
        text(&config)
    );
    assert!(
        wait_until(Duration::from_secs(10), || d.log().contains(&refused)),
        "{}",
        d.log()
    );
    // And on SIGHUP.
    let before = d.log().matches("keeping the running one").count();
    d.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || d
            .log()
            .matches("keeping the running one")
            .count()
            > before),
        "{}",
        d.log()
    );
    assert!(d.alive(), "{}", d.log());

    let asked = Instant::now();
    d.signal(nix::sys::signal::Signal::SIGTERM);
    let status = d.wait_exit(Duration::from_secs(5));
    println!("stopped {} ms after SIGTERM", asked.elapsed().as_millis());
    let status = status.unwrap_or_else(|| panic!("no exit 5 s after SIGTERM:\n{}", d.log()));
    assert!(status.success(), "{status:?}\n{}", d.log());
}

#[test]
fn a_daemon_with_a_fifo_as_its_configuration_exits_at_once() {
    let sb = Sandbox::new();
    mkfifo(&sb.config_path());
    let mut d = Daemon::start(&sb, &[]);
    let status = d
        .wait_exit(QUICK)
        .unwrap_or_else(|| panic!("still running:\n{}", d.log()));
    assert_eq!(status.code(), Some(2), "{}", d.log());
    assert!(
        d.log().contains("is a FIFO, not a regular file"),
        "{}",
        d.log()
    );
}

#[test]
fn status_by_a_user_who_may_not_read_the_configuration_says_so() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: only root can run certkeeper as another user");
        return;
    }
    let sb = Sandbox::new();
    sb.write_certs(&[CertDef::new("www", Layout::Nginx)]);
    // The sandbox may be entered by anyone; the configuration is root's alone.
    fs::set_permissions(sb.dir(), fs::Permissions::from_mode(0o755)).unwrap();
    set_mode(&sb.config_path(), 0o600);
    for args in [&["status"][..], &["check"]] {
        let config = sb.config();
        let mut all = args.to_vec();
        all.extend(["-c", &config]);
        let mut cmd = sb.command(&all);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                let nobody = nix::unistd::Gid::from_raw(65534);
                nix::unistd::setgroups(&[])?;
                nix::unistd::setgid(nobody)?;
                nix::unistd::setuid(nix::unistd::Uid::from_raw(65534))?;
                Ok(())
            });
        }
        cmd.stdin(Stdio::null());
        let what = format!("certkeeper {} as uid 65534", all.join(" "));
        let (r, _) = run_timed(what, cmd, sb.dir());
        r.expect_code(2).stderr_has(&format!(
            "cannot read the configuration: {config}: permission denied (certkeeper runs as uid 65534)"
        ));
        assert!(!r.stderr.contains("in the configuration"), "{r:?}");
    }
}

#[test]
fn temporary_files_a_killed_renew_left_in_the_archive_are_removed_by_the_next() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx).extra("reload: [web]");
    // The config test holds `renew` (and so the state lock) long enough to kill it.
    sb.write_config_with(
        "",
        &["  web:\n    type: command\n    test: [sleep, '4']\n    reload: ['true']\n".into()],
        std::slice::from_ref(&www),
    );
    let held = sb.state_dir().join("lock.held");
    let archive = sb.state_dir().join("archive/www");
    let mut renew = sb.spawn(&["renew", "--all"]);
    let is_pair = |p: &std::path::Path| p.is_file() && p.extension().is_some_and(|e| e == "pem");
    let key_archived = || {
        fs::read_dir(&archive)
            .map(|entries| entries.flatten().any(|e| is_pair(&e.path())))
            .unwrap_or(false)
    };
    assert!(
        wait_until(Duration::from_secs(20), || held.exists() && key_archived()),
        "renew never got to its config test"
    );
    renew.kill().unwrap();
    renew.wait().unwrap();
    assert!(held.exists(), "a killed holder leaves its marker");

    let pair = fs::read_dir(&archive)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| is_pair(p))
        .unwrap();
    let leftovers = [
        archive.join(".0a0b.new.certkeeper-tmp-0a1b2c3d4e5f"),
        archive.join(".installed.certkeeper-tmp-0a1b2c3d4e5f"),
        sb.state_dir()
            .join(".observed.json.certkeeper-tmp-0a1b2c3d4e5f"),
    ];
    for p in &leftovers {
        fs::write(p, "half written").unwrap();
    }
    // Anything else with a similar name stays.
    let kept = archive.join("notes.certkeeper-tmp-but-not-hidden");
    fs::write(&kept, "mine").unwrap();

    sb.ck(&["renew", "--all"])
        .ok()
        .stderr_has("stopped while holding it");
    for p in &leftovers {
        assert!(!p.exists(), "{} is left", p.display());
    }
    assert!(kept.exists());
    assert!(is_pair(&pair), "the archived pair must stay");
    assert!(!held.exists(), "the marker goes with the lock");
    www.files(&sb).check(&sb.root_bundle(), "sslserver");
}

#[test]
fn a_stopped_daemon_leaves_no_marker_and_the_next_start_walks_nothing() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx);
    sb.write_certs(std::slice::from_ref(&www));
    let mut d = Daemon::start_ready(&sb, &[]);
    d.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(d.wait_exit(Duration::from_secs(5)).is_some(), "{}", d.log());
    assert!(!sb.state_dir().join("lock.held").exists());
    let leftover = sb
        .state_dir()
        .join("archive/www/.installed.certkeeper-tmp-0a1b2c3d4e5f");
    fs::write(&leftover, "x").unwrap();
    let r = sb.ck(&["renew", "--all"]);
    r.ok();
    // Nobody died holding the lock: the archive is not walked (that costs seconds
    // with ten thousand certificates).
    assert!(!r.stderr.contains("stopped while holding it"), "{r:?}");
    assert!(leftover.exists());
}
