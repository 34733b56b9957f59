//! Crash-atomic pairs: `certkeeper renew --all --force` over a few hundred certificates
//! of every layout is killed (SIGKILL) at random moments, again and again, while a
//! reader thread checks at random moments, through the live paths, that every pair on
//! disk matches: the key belongs to the leaf, the chain and fullchain agree with the
//! certificate. After the last kill one `renew --all` completes and every pair verifies
//! with `openssl verify`.
//!
//! The reader cannot tell a torn pair from a read that straddled a legitimate swap by
//! one read of each file, so it reads A, then B, then A again, and counts an
//! inconsistency only when both reads of A are equal and do not go with B (and the same
//! with B, A, B).
//!
//! Installs that renamed the files of a pair one after the other fail this test: the
//! reader sees the new key beside the old certificate between two renames, and after a
//! kill there until the next run repairs it.

use crate::support::*;
use certkeeper::x509::{parse_pem, CertInfo, PemItem};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Certificates per layout (four layouts).
const PER_LAYOUT: usize = 60;
const KILLS: usize = 50;

/// A small deterministic generator (xorshift64*), seeded per run; the seed is printed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    std::env::var("CERTKEEPER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        })
}

/// One file of a pair, as read through its live path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Role {
    Key,
    Cert,
    Chain,
    Fullchain,
}

/// What the reader counts.
#[derive(Default)]
struct Counts {
    /// Certificates checked (every relation of the layout, both read orders).
    pairs: AtomicU64,
    /// Relation checks whose two reads of the same file were equal (decisive).
    decisive: AtomicU64,
    /// Relation checks that straddled a swap (the two reads differed): not judged.
    straddled: AtomicU64,
    inconsistent: AtomicU64,
    /// A file that was missing or did not parse.
    unreadable: AtomicU64,
}

/// Reads one file; Err when missing or not PEM.
fn read(p: &Path) -> Result<Vec<u8>, String> {
    let bytes = fs::read(p).map_err(|e| format!("{}: {e}", p.display()))?;
    parse_pem(&bytes).map_err(|e| format!("{}: {e}", p.display()))?;
    Ok(bytes)
}

fn certs_of(bytes: &[u8]) -> Vec<CertInfo> {
    parse_pem(bytes)
        .unwrap()
        .into_iter()
        .filter_map(|i| match i {
            PemItem::Cert(c) => Some(*c),
            _ => None,
        })
        .collect()
}

fn key_matches(key: &[u8], leaf_file: &[u8]) -> bool {
    let key = parse_pem(key).unwrap().into_iter().find_map(|i| match i {
        PemItem::Key(k) => Some(k),
        _ => None,
    });
    let leaf = certs_of(leaf_file).into_iter().next();
    matches!((key, leaf), (Some(k), Some(l)) if l.matches(&k))
}

/// Whether the content of file `a` (role `ra`) goes with the content of `b` (role `rb`).
fn agree(ra: Role, a: &[u8], rb: Role, b: &[u8]) -> bool {
    use Role::*;
    match (ra, rb) {
        (Key, Cert | Fullchain) => key_matches(a, b),
        (Cert | Fullchain, Key) => key_matches(b, a),
        // Apache and separate: the chain's first certificate issued the leaf.
        (Cert, Chain) | (Chain, Cert) => {
            let (cert, chain) = if ra == Cert { (a, b) } else { (b, a) };
            let (leaf, chain) = (certs_of(cert), certs_of(chain));
            leaf.len() == 1 && !chain.is_empty() && leaf[0].signed_by(&chain[0])
        }
        // Separate: fullchain = cert + chain, byte for byte.
        (Cert, Fullchain) => b.starts_with(a),
        (Fullchain, Cert) => a.starts_with(b),
        (Chain, Fullchain) => b.ends_with(a) && b.len() > a.len(),
        (Fullchain, Chain) => a.ends_with(b) && a.len() > b.len(),
        _ => unreachable!("no relation between {ra:?} and {rb:?}"),
    }
}

/// Something the reader found wrong.
enum Problem {
    /// Files that do not go together, each read twice the same around the other.
    Torn(String),
    /// A file missing or not PEM.
    Unreadable(String),
}

/// The files of one certificate and the relations between them that must hold.
struct Pair {
    name: String,
    files: Vec<(Role, PathBuf)>,
    relations: Vec<(usize, usize)>,
    combined: Option<PathBuf>,
}

impl Pair {
    fn of(def: &CertDef, sb: &Sandbox) -> Pair {
        let f = def.files(sb);
        let mut files = vec![(Role::Cert, f.cert.clone())];
        if let Some(c) = &f.chain {
            files.push((Role::Chain, c.clone()));
        }
        if let Some(c) = &f.fullchain {
            files.push((Role::Fullchain, c.clone()));
        }
        if let Some(k) = &f.key {
            files.push((Role::Key, k.clone()));
        }
        let mut relations = Vec::new();
        for i in 0..files.len() {
            for j in i + 1..files.len() {
                if files[i].0 != Role::Chain || files[j].0 != Role::Key {
                    relations.push((i, j));
                }
            }
        }
        Pair {
            name: def.name.clone(),
            combined: (def.layout == Layout::Combined).then(|| f.cert.clone()),
            files,
            relations,
        }
    }

    /// Checks every relation in both read orders; returns what was wrong, if anything.
    fn check(&self, counts: &Counts) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(p) = &self.combined {
            match read(p) {
                Ok(bytes) => {
                    counts.decisive.fetch_add(1, Ordering::Relaxed);
                    if !key_matches(&bytes, &bytes) {
                        problems.push(Problem::Torn(format!(
                            "{}: key and leaf differ",
                            p.display()
                        )));
                    }
                }
                Err(e) => problems.push(Problem::Unreadable(e)),
            }
        }
        for &(i, j) in &self.relations {
            for (x, y) in [(i, j), (j, i)] {
                let (rx, px) = &self.files[x];
                let (ry, py) = &self.files[y];
                let reads = (|| Ok::<_, String>((read(px)?, read(py)?, read(px)?)))();
                match reads {
                    Err(e) => problems.push(Problem::Unreadable(e)),
                    Ok((x1, _, x2)) if x1 != x2 => {
                        counts.straddled.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((x1, y, _)) => {
                        counts.decisive.fetch_add(1, Ordering::Relaxed);
                        if !agree(*rx, &x1, *ry, &y) {
                            problems.push(Problem::Torn(format!(
                                "{} ({rx:?}) does not go with {} ({ry:?})",
                                px.display(),
                                py.display()
                            )));
                        }
                    }
                }
            }
        }
        counts.pairs.fetch_add(1, Ordering::Relaxed);
        problems
    }
}

/// Replaces each live path by a regular file with the same bytes and mode (atomically,
/// by rename), as an install made before the store existed would have left it.
fn make_regular(paths: &[PathBuf]) {
    for p in paths {
        if !fs::symlink_metadata(p).unwrap().file_type().is_symlink() {
            continue;
        }
        let bytes = fs::read(p).unwrap();
        let m = mode(p);
        let tmp = p.with_extension("regular-tmp");
        fs::write(&tmp, bytes).unwrap();
        set_mode(&tmp, m);
        fs::rename(&tmp, p).unwrap();
    }
}

#[test]
fn pairs_stay_consistent_through_sigkill_at_random_moments() {
    let sb = Sandbox::new();
    let mut defs = Vec::new();
    for i in 0..PER_LAYOUT {
        // A .p12 file is one file renamed into place, as `combined` is; the readers
        // here check PEM files (pkcs12.rs checks .p12 files).
        for layout in Layout::ALL.into_iter().filter(|l| *l != Layout::Pkcs12) {
            defs.push(
                CertDef::new(&format!("c{i:03}-{}", layout.as_str()), layout)
                    .extra("lifetime: 2h")
                    .extra("renew_before: 20m"),
            );
        }
    }
    sb.write_certs(&defs);
    let t = Instant::now();
    sb.renew_all().ok();
    let full_run = t.elapsed();
    let root = sb.root_bundle();
    let pairs: Arc<Vec<Pair>> = Arc::new(defs.iter().map(|d| Pair::of(d, &sb)).collect());
    // Every other certificate starts as plain files: the killed runs also migrate.
    for d in defs.iter().step_by(2) {
        make_regular(&d.files(&sb).paths());
    }
    let mut rng = Rng(seed());
    eprintln!(
        "seed {} (CERTKEEPER_CRASH_SEED); {} certificates; a full run took {full_run:?}",
        rng.0,
        defs.len()
    );

    let counts = Arc::new(Counts::default());
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let reader = {
        let (pairs, counts, stop, seen) =
            (pairs.clone(), counts.clone(), stop.clone(), seen.clone());
        let mut rng = Rng(rng.next() | 1);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let p = &pairs[rng.below(pairs.len() as u64) as usize];
                for problem in p.check(&counts) {
                    let (counter, what) = match problem {
                        Problem::Torn(m) => (&counts.inconsistent, m),
                        Problem::Unreadable(m) => (&counts.unreadable, m),
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    let mut s = seen.lock().unwrap();
                    if s.len() < 20 {
                        s.push(format!("{}: {what}", p.name));
                    }
                }
                // Now and then let the killed runs have the core, so that checks land at
                // irregular moments of them.
                if rng.below(4) == 0 {
                    std::thread::yield_now();
                }
            }
        })
    };

    let config = sb.config();
    let budget = full_run.max(Duration::from_millis(200));
    let mut kills = 0;
    let mut completed = 0;
    for _ in 0..KILLS {
        let mut child = sb
            .command(&["renew", "--all", "--force", "-c", &config])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_micros(rng.below(budget.as_micros() as u64));
        let t = Instant::now();
        while t.elapsed() < delay && child.try_wait().unwrap().is_none() {
            std::thread::sleep(Duration::from_micros(500));
        }
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap();
            kills += 1;
        } else {
            completed += 1;
        }
        child.wait().unwrap();
    }
    let last = sb.renew_all();
    stop.store(true, Ordering::Relaxed);
    reader.join().unwrap();

    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "kills {kills} (runs that finished before their kill: {completed}); pairs checked {}, \
         relation checks {} decisive + {} straddling a swap; inconsistencies {}, unreadable files {}",
        c(&counts.pairs),
        c(&counts.decisive),
        c(&counts.straddled),
        c(&counts.inconsistent),
        c(&counts.unreadable),
    );
    let seen = seen.lock().unwrap();
    assert!(kills >= KILLS / 2, "too few runs were killed: {kills}");
    assert!(c(&counts.pairs) >= 1000, "the reader checked too little");
    assert_eq!(
        c(&counts.inconsistent),
        0,
        "torn pairs seen:\n{}",
        seen.join("\n")
    );
    assert_eq!(
        c(&counts.unreadable),
        0,
        "unreadable files seen:\n{}",
        seen.join("\n")
    );
    last.ok();
    for d in &defs {
        d.files(&sb).check(&root, "sslserver");
    }

    // One more complete run tidies every store: what the killed runs left (half-written
    // pairs, temporary links) is gone; the served pair and the previous one remain.
    sb.ck(&["renew", "--all", "--force"]).ok();
    for d in defs.iter().filter(|d| d.layout != Layout::Combined) {
        let store = sb.path(&format!("tls/.certkeeper/{}", d.name));
        let mut entries: Vec<String> = fs::read_dir(&store)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        assert_eq!(entries.len(), 3, "{}: {entries:?}", d.name);
        assert!(entries.contains(&"current".to_string()), "{entries:?}");
        assert!(
            entries.iter().all(|e| !e.contains("certkeeper-tmp")),
            "{entries:?}"
        );
        for p in d.files(&sb).paths() {
            assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
        }
    }
}

/// `certkeeper ca rotate` killed (SIGKILL) at random moments, again and again: the CA
/// is always whole, the one before or the one after (each rotation is one directory
/// exchange), never a mix; and afterwards it rotates and issues as usual.
#[test]
fn ca_rotation_survives_sigkill_at_random_moments() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Combined);
    sb.write_certs(std::slice::from_ref(&www));
    sb.renew_all().ok();
    let ca = sb.state_dir().join("ca");
    let generation = || -> u64 {
        fs::read(ca.join("generations.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
            .and_then(|v| v["intermediate"].as_u64())
            .unwrap_or(1)
    };
    let t = Instant::now();
    sb.ck(&["ca", "rotate"]).ok();
    let full = t.elapsed();
    let mut rng = Rng(seed());
    let (mut rotated, mut killed) = (0, 0);
    for _ in 0..30 {
        let before = generation();
        let mut child = sb.spawn(&["ca", "rotate"]);
        let at = Duration::from_micros(rng.below(full.as_micros() as u64 * 3 / 2 + 1));
        std::thread::sleep(at);
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        let _ = child.kill();
        let _ = child.wait();
        let after = generation();
        assert!(
            after == before || after == before + 1,
            "generation {before} became {after}"
        );
        rotated += (after > before) as usize;
        // Whole: it loads (keys match, intermediates signed by their roots), and the
        // issuing intermediate verifies under the root.
        sb.ck(&["ca", "show"]).ok();
        verify(
            &ca.join("root.crt"),
            &ca.join("intermediate.crt"),
            &ca.join("intermediate.crt"),
            "any",
        )
        .ok();
    }
    eprintln!("ca rotate killed {killed} times of 30 (a full run took {full:?}); {rotated} rotations completed");
    assert!(
        killed >= 5,
        "the kills came too late to test anything: {killed}"
    );
    // Afterwards: a rotation clears what a killed one left, and issuance goes on.
    sb.ck(&["ca", "rotate"]).ok();
    assert!(!sb.state_dir().join(".ca-next").exists());
    sb.ck(&["renew", "--all", "--force"]).ok();
    let f = www.files(&sb);
    let v = verify(&sb.root_bundle(), &f.cert, &f.cert, "sslserver");
    assert!(v.stdout.contains("OK"), "{v:?}");
}
