//! Bounded state over a long life: a thousand forced renewals through the library leave
//! the archive at `archive.keep` superseded pairs plus the installed one, the ledger
//! rotated under its cap, and `certkeeper status` (the real binary) still showing each
//! certificate's last result, also one whose last event is two rotations back.

use crate::support::*;
use certkeeper::reconcile::{renew, Outcome, RenewOptions};
use certkeeper::state::{LedgerEntry, DEFAULT_LEDGER_CAP};
use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Instant;
use time::{Duration, OffsetDateTime};

const RENEWALS: usize = 1000;
const KEEP: usize = 3;

/// Appends valid entries of certificates that are not configured until the ledger is
/// `target` bytes long, as years of other history would.
fn pad_ledger(path: &Path, target: u64, now: OffsetDateTime) {
    let size = fs::metadata(path).unwrap().len();
    let mut text = String::new();
    let mut i = 0;
    while size + (text.len() as u64) < target {
        let mut e = LedgerEntry::new(now, "failed");
        e.name = Some(format!("retired-{}", i % 5000));
        e.reason = Some(format!("due: issuer `fleet`: connection refused ({i})"));
        text.push_str(&serde_json::to_string(&e).unwrap());
        text.push('\n');
        i += 1;
    }
    let mut f = fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn renewed_serial(config: &certkeeper::config::Config, name: &str, now: OffsetDateTime) -> String {
    let opts = RenewOptions {
        force: true,
        ..Default::default()
    };
    let reports = renew(config, &[name.to_string()], &opts, now).expect("renew");
    match &reports[0].outcome {
        Outcome::Renewed { serial, .. } => serial.clone(),
        other => panic!("{name} was not renewed: {other:?}"),
    }
}

fn holds_name(path: &Path, name: &str) -> bool {
    fs::read_to_string(path).is_ok_and(|t| t.contains(&format!("\"name\":\"{name}\"")))
}

#[test]
fn a_thousand_forced_renewals_keep_the_archive_and_the_ledger_bounded() {
    let sb = Sandbox::new();
    let main = CertDef::new("main", Layout::Combined);
    let quiet = CertDef::new("quiet", Layout::Nginx);
    let yaml = format!(
        "archive: {{ keep: {KEEP} }}\n{}{}{}",
        header(),
        main.yaml(),
        quiet.yaml()
    );
    sb.write_config(&yaml);
    let config = certkeeper::config::load(&sb.config_path()).expect("config");
    assert_eq!(config.archive_keep, KEEP);
    let ledger = sb.state_dir().join("ledger.jsonl");
    let rotated = |g: usize| sb.state_dir().join(format!("ledger.jsonl.{g}"));
    // In the past, so that every certificate is valid when `status` looks.
    let t0 = OffsetDateTime::now_utc() - Duration::hours(2);

    // `quiet` is renewed once, then history piles up on top of it: twice the ledger is
    // padded to just under its cap, and `main`'s renewals push it over.
    let quiet_serial = renewed_serial(&config, "quiet", t0);
    let margin = 100_000;
    pad_ledger(&ledger, DEFAULT_LEDGER_CAP - margin, t0);
    let started = Instant::now();
    let mut serials = Vec::with_capacity(RENEWALS);
    for i in 0..RENEWALS {
        if i == RENEWALS / 2 {
            assert!(rotated(1).exists(), "no rotation in the first half");
            pad_ledger(&ledger, DEFAULT_LEDGER_CAP - margin, t0);
        }
        let now = t0 + Duration::seconds(1 + i as i64);
        serials.push(renewed_serial(&config, "main", now));
    }
    let took = started.elapsed();
    println!(
        "{RENEWALS} forced renewals took {took:?} ({:?} each)",
        took / RENEWALS as u32
    );

    // The archive: the installed pair and the KEEP pairs before it, nothing else.
    let archive = sb.state_dir().join("archive/main");
    let mut left: Vec<String> = fs::read_dir(&archive)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "installed")
        .map(|n| {
            n.strip_suffix(".pem")
                .expect("one file per pair")
                .to_string()
        })
        .collect();
    left.sort();
    let mut want: Vec<String> = serials[RENEWALS - 1 - KEEP..].to_vec();
    want.sort();
    assert_eq!(left.len(), KEEP + 1, "pairs left in archive/main");
    assert_eq!(left, want, "archived pairs of `main`");
    let installed = serials.last().unwrap();
    assert_eq!(
        fs::read_to_string(archive.join("installed"))
            .unwrap()
            .trim(),
        installed
    );
    assert_eq!(&main.files(&sb).serial(), installed, "serial on disk");
    for s in &want {
        // One file per pair, private: leaf, chain, key.
        let text = fs::read_to_string(archive.join(format!("{s}.pem"))).unwrap();
        assert_eq!(text.matches("BEGIN CERTIFICATE").count(), 2, "{s}");
        assert_eq!(text.matches("PRIVATE KEY-----").count(), 2, "{s}");
    }
    let keys = walk_count(&sb.state_dir().join("archive"), ".pem");
    assert_eq!(
        keys,
        KEEP + 2,
        "pairs left in the whole archive (main + quiet)"
    );

    // The ledger: rotated twice, every file under the cap and whole, `quiet` two back.
    for p in [ledger.clone(), rotated(1), rotated(2)] {
        let size = fs::metadata(&p).unwrap().len();
        assert!(size <= DEFAULT_LEDGER_CAP, "{}: {size} bytes", p.display());
        ledger_lines(&p);
    }
    assert!(!rotated(3).exists(), "only two rotations happened");
    assert!(holds_name(&rotated(2), "quiet") && !holds_name(&rotated(1), "quiet"));
    assert!(!holds_name(&ledger, "quiet"));
    let last_main = ledger_lines(&ledger);
    let last_main = last_main.last().unwrap();
    assert_eq!(last_main["event"], "installed");
    assert_eq!(&last_main["serial"], installed.as_str());

    // `status` (the real binary) shows both last results.
    let started = Instant::now();
    let r = sb.ck(&["status", "--json"]);
    let status_took = started.elapsed();
    r.ok();
    println!(
        "status over {} bytes of ledger took {status_took:?}",
        ledger_bytes(&sb)
    );
    let rows: serde_json::Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("status --json is not JSON ({e}): {r:?}"));
    let row = |name: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|row| row["name"] == name)
            .unwrap_or_else(|| panic!("no status row for {name}: {rows}"))
            .clone()
    };
    let main_row = row("main");
    assert_eq!(main_row["last_result"]["event"], "installed", "{main_row}");
    assert_eq!(
        main_row["last_result"]["serial"],
        installed.as_str(),
        "{main_row}"
    );
    let quiet_row = row("quiet");
    assert_eq!(
        quiet_row["last_result"]["event"], "installed",
        "{quiet_row}"
    );
    assert_eq!(
        quiet_row["last_result"]["serial"],
        quiet_serial.as_str(),
        "{quiet_row}"
    );
}

/// Every line of one ledger file is a JSON object, and the file ends with a newline.
fn ledger_lines(path: &Path) -> Vec<serde_json::Value> {
    crate::support::ledger(path)
}

fn ledger_bytes(sb: &Sandbox) -> u64 {
    fs::read_dir(sb.state_dir())
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().starts_with("ledger.jsonl"))
        .map(|e| e.metadata().unwrap().len())
        .sum()
}

/// How many files named `file` are under `dir`.
/// Files under `dir` whose names end with `suffix`.
fn walk_count(dir: &Path, suffix: &str) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += walk_count(&e.path(), suffix);
        } else if e.file_name().to_string_lossy().ends_with(suffix) {
            n += 1;
        }
    }
    n
}
