//! Fleet-scale benchmark (a bench binary, not a test): `cargo bench --bench fleet`.
//!
//! Runs the release binary against fleets of N certificates (default 100, 1,000 and
//! 10,000; `CERTKEEPER_BENCH_SIZES`) and prints each figure next to its floor or
//! baseline measured in the same invocation, interleaved, medians of 3:
//! 1. mass issuance: `renew --all` of N new P-256 certificates vs a group-committed
//!    I/O floor (the same files, sizes, modes, links, renames and ledger lines, no
//!    crypto, on one thread; and, for a fair reading, on as many threads as
//!    certkeeper stores a batch on) and vs an rcgen crypto floor (key generation +
//!    signing a leaf, on one thread and on all cores); file operations counted with
//!    strace when it exists;
//! 2. the daemon started with N missing (until READY=1) vs `renew --all`;
//! 3. `renew --all` of 50 RSA-2048 certificates vs generating 50 RSA-2048 keys (and
//!    signing their leaves) in parallel on all cores;
//! 4. cold start (no `observed.json`) and warm start with N valid certificates vs a
//!    single-pass scan (read every managed file once, parse and verify each leaf
//!    against the intermediate, on all cores);
//! 5. peak RSS (VmHWM) of warm start-up and of the N-missing batch;
//! 6. with a private nginx: `renew --force NAME` until a handshake shows the new
//!    certificate vs swapping the files and SIGHUP (medians of 15).
//!
//! Every tree stays until the end of the run (one directory under /var/tmp): on an
//! ext4 file system without a journal, creating files soon after deleting many is
//! slow, and deleting between steps would put that cost into the next figure. Targets
//! are reported as met or not met; nothing is asserted about them.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SerialNumber, SignatureAlgorithm, PKCS_ECDSA_P256_SHA256, PKCS_RSA_SHA256,
};

mod common;

use common::{bin, proc_status, stop};
const NGINX: &str = "/usr/sbin/nginx";
/// Interleaved rounds per figure (medians of these).
const ROUNDS: usize = 3;
/// Rounds of renew → served and of the bare reload.
const SERVED_ROUNDS: usize = 15;
/// Certificates in the RSA figure.
const RSA_COUNT: usize = 50;
/// Leaves per crypto-floor measurement.
const CRYPTO_COUNT: usize = 2000;
/// Set in the environment of a child copy of this binary that runs only the I/O
/// floor (`DIR|N|PROBE_DIR`), so strace counts its file operations as it counts
/// certkeeper's.
const FLOOR_CHILD: &str = "CERTKEEPER_FLEET_IO_FLOOR";

fn main() {
    if let Ok(spec) = std::env::var(FLOOR_CHILD) {
        let mut it = spec.split('|');
        let (dir, n, probe) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let threads = it.next().map_or(1, |t| t.parse().unwrap());
        let sample = Sample::read(Path::new(probe));
        io_floor(Path::new(dir), n.parse().unwrap(), &sample, threads);
        return;
    }
    if !std::env::args().any(|a| a == "--bench") {
        println!("fleet benchmark: skipped (run it with `cargo bench --bench fleet`)");
        return;
    }
    let sizes: Vec<usize> = std::env::var("CERTKEEPER_BENCH_SIZES")
        .unwrap_or_else(|_| "100,1000,10000".into())
        .split(',')
        .map(|s| s.trim().parse().expect("sizes are numbers"))
        .collect();
    let started = Instant::now();
    let run = tempfile::Builder::new()
        .prefix("certkeeper-fleet-")
        .tempdir_in(run_parent())
        .expect("a directory for the run");
    let root = run.path().to_path_buf();
    // nginx workers run as nobody and must traverse it.
    fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
    print_machine(&root);

    let mut table = Table::default();
    let probe = probe(&root);
    let sample = Sample::read(&probe);
    let ca = BenchCa::new();
    for &n in &sizes {
        fleet(&root, n, &sample, &ca, &mut table);
    }
    count_file_ops(&root, &sizes, &probe, &mut table);
    rsa(&root, &ca, &mut table);
    served(&root, &ca, &mut table);

    println!("\n== results ({} rounds interleaved, medians) ==", ROUNDS);
    table.print();
    let t = Instant::now();
    drop(run);
    println!(
        "\nbenchmark trees removed in {:.1} s; whole run {:.0} s",
        t.elapsed().as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// /var/tmp (the root file system here, not a tmpfs), else the target directory.
fn run_parent() -> PathBuf {
    let var_tmp = PathBuf::from("/var/tmp");
    if var_tmp.is_dir() {
        var_tmp
    } else {
        PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
    }
}

// ---------------------------------------------------------------------------------
// Machine

fn print_machine(root: &Path) {
    let cores = cores();
    let cpu = common::cpu_model();
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {cores} cores, {cpu}, {:.1} GB RAM, Linux {}",
        mem as f64 / 1048576.0,
        kernel.trim()
    );
    println!("benchmark trees: {} on {}", root.display(), mount_of(root));
    println!(
        "load average at start: {}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "strace: {}; nginx: {}",
        if Path::new("/usr/bin/strace").exists() {
            "yes"
        } else {
            "no"
        },
        if Path::new(NGINX).exists() {
            "yes"
        } else {
            "no"
        }
    );
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The file system type, device and options of the mount holding `path`, and for
/// ext4 whether it has a journal.
fn mount_of(path: &Path) -> String {
    let mounts = fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<Vec<&str>> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 4 || !path.starts_with(f[1]) {
            continue;
        }
        if best.as_ref().is_none_or(|b| f[1].len() >= b[1].len()) {
            best = Some(f);
        }
    }
    let Some(m) = best else {
        return "unknown file system".into();
    };
    let mut s = format!("{} ({} at {}, {})", m[2], m[0], m[1], m[3]);
    if m[2] == "ext4" {
        // A journal shows as /proc/fs/jbd2/DEVICE-INODE.
        let dev = m[0].rsplit('/').next().unwrap_or("");
        let journal = fs::read_dir("/proc/fs/jbd2").is_ok_and(|d| {
            d.flatten().any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{dev}-"))
            })
        });
        s.push_str(if journal {
            ", with a journal"
        } else {
            ", without a journal"
        });
    }
    s
}

// ---------------------------------------------------------------------------------
// Results

struct Row {
    figure: String,
    value: String,
    floor: String,
    ratio: Option<f64>,
    target: String,
    met: Option<bool>,
}

#[derive(Default)]
struct Table {
    rows: Vec<Row>,
}

impl Table {
    fn add(
        &mut self,
        figure: impl Into<String>,
        value: impl Into<String>,
        floor: impl Into<String>,
        ratio: Option<f64>,
        target: impl Into<String>,
        met: Option<bool>,
    ) {
        let row = Row {
            figure: figure.into(),
            value: value.into(),
            floor: floor.into(),
            ratio,
            target: target.into(),
            met,
        };
        println!(
            "  -> {} | {} | {} | {} | {} | {}",
            row.figure,
            row.value,
            row.floor,
            ratio_text(row.ratio),
            row.target,
            met_text(row.met)
        );
        self.rows.push(row);
    }

    fn print(&self) {
        let head = [
            "figure",
            "value",
            "floor / baseline (same run)",
            "ratio",
            "target",
            "met?",
        ];
        let cells: Vec<[String; 6]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.figure.clone(),
                    r.value.clone(),
                    r.floor.clone(),
                    ratio_text(r.ratio),
                    r.target.clone(),
                    met_text(r.met),
                ]
            })
            .collect();
        let mut w = head.map(|h| h.chars().count());
        for c in &cells {
            for (i, s) in c.iter().enumerate() {
                w[i] = w[i].max(s.chars().count());
            }
        }
        let line = |c: &[String]| {
            let mut s = String::from("|");
            for (i, x) in c.iter().enumerate() {
                let pad = w[i] - x.chars().count();
                let _ = write!(s, " {x}{} |", " ".repeat(pad));
            }
            s
        };
        println!("{}", line(&head.map(String::from)));
        println!(
            "|{}|",
            w.iter()
                .map(|n| "-".repeat(n + 2))
                .collect::<Vec<_>>()
                .join("|")
        );
        for c in &cells {
            println!("{}", line(c));
        }
    }
}

fn ratio_text(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.2}x")).unwrap_or_else(|| "—".into())
}

fn met_text(m: Option<bool>) -> String {
    match m {
        Some(true) => "met".into(),
        Some(false) => "NOT met".into(),
        None => "—".into(),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn list(v: &[f64], unit: &str) -> String {
    v.iter()
        .map(|x| format!("{x:.3}{unit}"))
        .collect::<Vec<_>>()
        .join(" / ")
}

// ---------------------------------------------------------------------------------
// Trees and the real binary

struct Tree {
    dir: PathBuf,
    config: PathBuf,
}

/// A tree with `n` managed certificates (nginx layout, four directories, one
/// `command` server) and its CA made with `ca init` (not timed).
fn tree(root: &Path, label: &str, n: usize, key: Option<&str>) -> Tree {
    let dir = root.join(label);
    fs::create_dir_all(&dir).unwrap();
    for d in 0..4 {
        fs::create_dir_all(dir.join(format!("tls{d}"))).unwrap();
    }
    let mut y = format!(
        "state_dir: {d}/state\nservers:\n  web:\n    type: command\n    test: [/bin/true]\n    reload: [/bin/true]\ncertificates:\n",
        d = dir.display()
    );
    let key = key.map(|k| format!("    key: {k}\n")).unwrap_or_default();
    for i in 0..n {
        let sub = format!("{}/tls{}", dir.display(), i % 4);
        let _ = write!(
            y,
            "  - name: c{i}\n    sans: [c{i}.example.internal]\n{key}    files: {{ layout: nginx, cert: {sub}/c{i}.crt, key: {sub}/c{i}.key }}\n    reload: [web]\n"
        );
    }
    let config = dir.join("config.yaml");
    fs::write(&config, y).unwrap();
    certkeeper(&["ca", "init", "-c"], &config);
    Tree { dir, config }
}

/// Runs certkeeper to completion; panics with its output when it fails.
/// Pairs built and the microseconds it took, summed over the "new pairs built" lines
/// certkeeper logs at debug level (the in-process part of an issuance: keys, signing).
fn built(stderr: &str) -> (u64, u64) {
    let field = |line: &str, key: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    stderr
        .lines()
        .filter(|l| l.contains("new pairs built"))
        .fold((0, 0), |(p, us), l| {
            (p + field(l, "pairs="), us + field(l, "elapsed_us="))
        })
}

/// The in-process rates (pairs/s) of the last `renew --all` runs.
static BUILT: std::sync::Mutex<Vec<f64>> = std::sync::Mutex::new(Vec::new());

fn certkeeper(args: &[&str], config: &Path) -> Duration {
    let t = Instant::now();
    let out = Command::new(bin())
        .args(args)
        .arg(config)
        .env("CERTKEEPER_LOG", "warn,certkeeper::reconcile::issue=debug")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let took = t.elapsed();
    let (pairs, us) = built(&String::from_utf8_lossy(&out.stderr));
    if pairs > 0 && us > 0 {
        BUILT.lock().unwrap().push(pairs as f64 / (us as f64 / 1e6));
    }
    assert!(
        out.status.success(),
        "certkeeper {args:?} {} failed ({}):\n{}{}",
        config.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn renew_all(t: &Tree) -> Duration {
    certkeeper(&["renew", "--all", "-c"], &t.config)
}

struct Daemon {
    ready_after: Duration,
    /// VmHWM in KiB, read at READY=1.
    hwm_kb: u64,
    /// VmHWM in KiB once the daemon has settled (see [`settled_hwm`]): with what it does
    /// right after READY=1 (the stores' watches, one more look at files it made).
    settled_kb: u64,
}

/// Starts the daemon on `t`, waits for READY=1 on a NOTIFY_SOCKET, reads its peak RSS
/// and stops it.
fn daemon(t: &Tree) -> Daemon {
    let (mut child, ready_after) = common::start_daemon(&t.dir, &t.config);
    let hwm_kb = proc_status(child.id(), "VmHWM:");
    let settled_kb = settled_hwm(child.id());
    stop(&mut child);
    Daemon {
        ready_after,
        hwm_kb,
        settled_kb,
    }
}

/// VmHWM (KiB) once it has not grown for 2 s, looked at every 100 ms for at most 30 s.
fn settled_hwm(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = proc_status(pid, "VmHWM:");
    let mut since = Instant::now();
    while Instant::now() < deadline && since.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(100));
        let now = proc_status(pid, "VmHWM:");
        if now != last {
            (last, since) = (now, Instant::now());
        }
    }
    last
}

fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

// ---------------------------------------------------------------------------------
// The files one installed pair consists of, taken from a real run

/// A small real `renew --all` whose files give the I/O floor its sizes and modes.
fn probe(root: &Path) -> PathBuf {
    let t = tree(root, "probe", 4, None);
    renew_all(&t);
    t.dir
}

/// Bytes of one real pair: archive copy (one file), served pair, installed marker,
/// ledger lines.
struct Sample {
    archive: (Vec<u8>, u32),
    store: Vec<(String, Vec<u8>, u32)>,
    installed: Vec<u8>,
    issued_line: String,
    installed_line: String,
}

impl Sample {
    fn read(probe: &Path) -> Sample {
        let files = |dir: &Path| -> Vec<(String, Vec<u8>, u32)> {
            let pair = fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.is_dir() && !p.file_name().unwrap().to_string_lossy().starts_with('.'))
                .expect("a pair directory");
            let mut v: Vec<_> = fs::read_dir(&pair)
                .unwrap()
                .map(|e| {
                    let p = e.unwrap().path();
                    let mode = fs::metadata(&p).unwrap().permissions().mode() & 0o7777;
                    (
                        p.file_name().unwrap().to_string_lossy().to_string(),
                        fs::read(&p).unwrap(),
                        mode,
                    )
                })
                .collect();
            v.sort();
            v
        };
        let ledger = fs::read_to_string(probe.join("state/ledger.jsonl")).unwrap();
        let line = |event: &str| {
            ledger
                .lines()
                .find(|l| {
                    l.contains(&format!("\"event\":\"{event}\"")) && l.contains("\"name\":\"c0\"")
                })
                .unwrap_or_else(|| panic!("a ledger line `{event}` for c0"))
                .to_string()
        };
        let archived = fs::read_dir(probe.join("state/archive/c0"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|e| e == "pem"))
            .expect("an archived pair (SERIAL.pem)");
        Sample {
            archive: (
                fs::read(&archived).unwrap(),
                fs::metadata(&archived).unwrap().permissions().mode() & 0o7777,
            ),
            store: files(&probe.join("tls0/.certkeeper/c0")),
            installed: fs::read(probe.join("state/archive/c0/installed")).unwrap(),
            issued_line: line("issued"),
            installed_line: line("installed"),
        }
    }
}

// ---------------------------------------------------------------------------------
// I/O floor

fn mkdir(p: &Path, mode: u32) {
    fs::DirBuilder::new()
        .mode(mode)
        .create(p)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
}

fn create(p: &Path, bytes: &[u8], mode: u32) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(p)
        .unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
    f.write_all(bytes).unwrap();
}

fn syncfs(dir: &Path) {
    let f = File::open(dir).unwrap();
    assert_eq!(unsafe { libc::syncfs(f.as_raw_fd()) }, 0, "syncfs");
}

fn append(p: &Path, text: &str) {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(p)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// The durable file work of `renew --all` for `n` new pairs in `dir` (which has
/// `state/` and `tls0..3/`), group-committed, without crypto: for each pair the ledger's
/// `issued` line, the archive copy (one file) beside its place, the installed
/// marker beside its place, the served pair directory, the two user-path links and a
/// `current` link beside its place; one `syncfs`; the renames (archive copy, `current`,
/// marker); one `syncfs`; the `installed` ledger lines in one append. With `threads`
/// above one, the pairs are cut into that many shares, each done so on a thread of its
/// own (certkeeper stores a batch's shares on all cores).
fn io_floor(dir: &Path, n: usize, s: &Sample, threads: usize) -> Duration {
    let t = Instant::now();
    let state = dir.join("state");
    let archive = state.join("archive");
    mkdir(&archive, 0o700);
    for d in 0..4 {
        mkdir(&dir.join(format!("tls{d}/.certkeeper")), 0o755);
    }
    let share = n.div_ceil(threads.max(1));
    std::thread::scope(|scope| {
        for first in (0..n).step_by(share.max(1)) {
            let (state, archive) = (&state, &archive);
            scope
                .spawn(move || io_floor_share(dir, state, archive, first..n.min(first + share), s));
        }
    });
    t.elapsed()
}

/// The floor's work for the pairs `range` (see [`io_floor`]).
fn io_floor_share(
    dir: &Path,
    state: &Path,
    archive: &Path,
    range: std::ops::Range<usize>,
    s: &Sample,
) {
    let mut issued = String::new();
    let mut installed = String::new();
    let mut renames = Vec::with_capacity(3 * range.len());
    for i in range {
        let name = format!("c{i}");
        // Unique, serial-shaped names.
        let serial = format!(
            "{:032x}",
            (i as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
        );
        issued.push_str(&s.issued_line.replace("c0", &name));
        issued.push('\n');
        installed.push_str(&s.installed_line.replace("c0", &name));
        installed.push('\n');

        let a = archive.join(&name);
        mkdir(&a, 0o700);
        let new = a.join(format!(".{serial}.new"));
        create(&new, &s.archive.0, s.archive.1);
        create(&a.join(".installed.new"), &s.installed, 0o600);
        renames.push((new, a.join(format!("{serial}.pem"))));
        renames.push((a.join(".installed.new"), a.join("installed")));

        let tls = dir.join(format!("tls{}", i % 4));
        let store = tls.join(".certkeeper").join(&name);
        mkdir(&store, 0o755);
        let pair = store.join(&serial);
        mkdir(&pair, 0o755);
        for (file, bytes, mode) in &s.store {
            create(&pair.join(file), bytes, *mode);
        }
        symlink(
            format!(".certkeeper/{name}/current/key.pem"),
            tls.join(format!("{name}.key")),
        )
        .unwrap();
        symlink(
            format!(".certkeeper/{name}/current/cert.pem"),
            tls.join(format!("{name}.crt")),
        )
        .unwrap();
        symlink(&serial, store.join(".current.new")).unwrap();
        renames.push((store.join(".current.new"), store.join("current")));
    }
    append(&state.join("ledger.jsonl"), &issued);
    syncfs(dir);
    for (from, to) in &renames {
        fs::rename(from, to).unwrap();
    }
    syncfs(dir);
    append(&state.join("ledger.jsonl"), &installed);
}

/// A fresh directory shaped like a tree (state/ and four tls directories) for the floor.
fn floor_tree(root: &Path, label: &str) -> PathBuf {
    let dir = root.join(label);
    fs::create_dir_all(dir.join("state")).unwrap();
    fs::set_permissions(dir.join("state"), fs::Permissions::from_mode(0o700)).unwrap();
    for d in 0..4 {
        fs::create_dir_all(dir.join(format!("tls{d}"))).unwrap();
    }
    dir
}

// ---------------------------------------------------------------------------------
// Crypto floor: plain rcgen

/// A root and an intermediate (P-256) made in-process; the intermediate signs leaves.
struct BenchCa {
    issuer: Issuer<'static, KeyPair>,
    intermediate_pem: String,
}

impl BenchCa {
    fn new() -> BenchCa {
        let now = time::OffsetDateTime::now_utc();
        let ca_params = |cn: &str, constraints: BasicConstraints| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.is_ca = IsCa::Ca(constraints);
            p.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            p.not_before = now - time::Duration::hours(1);
            p.not_after = now + time::Duration::days(3 * 365);
            p
        };
        let root_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let root = Issuer::new(
            ca_params("fleet bench Root", BasicConstraints::Unconstrained),
            root_key,
        );
        let inter_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let inter_params = ca_params("fleet bench Intermediate", BasicConstraints::Constrained(0));
        let inter = inter_params.signed_by(&inter_key, &root).unwrap();
        BenchCa {
            issuer: Issuer::new(inter_params, inter_key),
            intermediate_pem: inter.pem(),
        }
    }

    /// What issuing one certificate costs in crypto: a new key, a signed leaf, both
    /// in PEM. Returns the leaf PEM and key PEM.
    fn leaf(&self, alg: &'static SignatureAlgorithm, name: &str) -> (String, String) {
        let key = KeyPair::generate_for(alg).unwrap();
        let now = time::OffsetDateTime::now_utc();
        let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).unwrap();
        serial[0] &= 0x7f;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.not_before = now - time::Duration::hours(1);
        p.not_after = now + time::Duration::days(90);
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// `count` leaves on `threads` threads (work shared through a counter): the elapsed time.
fn crypto_floor(
    ca: &BenchCa,
    alg: &'static SignatureAlgorithm,
    threads: usize,
    count: usize,
) -> Duration {
    let next = AtomicUsize::new(0);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                while next.fetch_add(1, Ordering::Relaxed) < count {
                    std::hint::black_box(ca.leaf(alg, "leaf.example.internal"));
                }
            });
        }
    });
    t.elapsed()
}

// ---------------------------------------------------------------------------------
// Single-pass scan floor

/// Reads every managed cert and key file of `t` once, parses each leaf and verifies
/// its signature against the intermediate, on all cores.
fn scan_floor(t: &Tree, n: usize) -> Duration {
    let inter_pem = fs::read(t.dir.join("state/ca/intermediate.crt")).unwrap();
    let start = Instant::now();
    let (_, inter) = x509_parser::pem::parse_x509_pem(&inter_pem).unwrap();
    let inter = inter.parse_x509().unwrap();
    let next = AtomicUsize::new(0);
    let bytes = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..cores() {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                let sub = t.dir.join(format!("tls{}", i % 4));
                let cert = fs::read(sub.join(format!("c{i}.crt"))).unwrap();
                let key = fs::read(sub.join(format!("c{i}.key"))).unwrap();
                let (_, pem) = x509_parser::pem::parse_x509_pem(&cert).unwrap();
                let leaf = pem.parse_x509().unwrap();
                leaf.verify_signature(Some(inter.public_key()))
                    .expect("leaf signed by the intermediate");
                bytes.fetch_add(cert.len() + key.len(), Ordering::Relaxed);
            });
        }
    });
    assert!(bytes.load(Ordering::Relaxed) > 0);
    start.elapsed()
}

// ---------------------------------------------------------------------------------
// 1, 2, 4, 5: one fleet size

fn fleet(root: &Path, n: usize, sample: &Sample, ca: &BenchCa, table: &mut Table) {
    BUILT.lock().unwrap().clear();
    println!("\n== {n} certificates ==");
    let threads = cores();
    let (mut cli, mut floor, mut dmn, mut dmn_rss, mut dmn_settled, mut c1, mut cn) =
        (vec![], vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut floor_par = vec![];
    let mut cli_trees = vec![];
    for round in 0..ROUNDS {
        // Trees made (and their CAs) before anything of the round is timed.
        let t_cli = tree(root, &format!("n{n}-cli{round}"), n, None);
        let t_dmn = tree(root, &format!("n{n}-daemon{round}"), n, None);
        let t_floor = floor_tree(root, &format!("n{n}-floor{round}"));
        let t_floor_par = floor_tree(root, &format!("n{n}-floor-par{round}"));
        for step in 0..6 {
            // syncfs flushes the whole file system: what the setup (or the step before)
            // left dirty is flushed first, so no step pays for another's writes.
            syncfs(root);
            match (step + round) % 6 {
                0 => cli.push(secs(renew_all(&t_cli))),
                1 => floor.push(secs(io_floor(&t_floor, n, sample, 1))),
                5 => floor_par.push(secs(io_floor(&t_floor_par, n, sample, threads))),
                2 => {
                    let d = daemon(&t_dmn);
                    dmn.push(secs(d.ready_after));
                    dmn_rss.push(mb(d.hwm_kb));
                    dmn_settled.push(mb(d.settled_kb));
                }
                3 => c1.push(
                    CRYPTO_COUNT as f64
                        / secs(crypto_floor(ca, &PKCS_ECDSA_P256_SHA256, 1, CRYPTO_COUNT)),
                ),
                _ => cn.push(
                    CRYPTO_COUNT as f64
                        / secs(crypto_floor(
                            ca,
                            &PKCS_ECDSA_P256_SHA256,
                            threads,
                            CRYPTO_COUNT,
                        )),
                ),
            }
        }
        println!(
            "round {}: renew --all {:.3} s, I/O floor {:.3} s ({:.3} s on {threads} threads), daemon to READY=1 {:.3} s ({:.1} MB peak at READY=1, {:.1} MB settled), crypto floor {:.0}/s on 1 thread, {:.0}/s on {threads}",
            round + 1,
            cli[round],
            floor[round],
            floor_par[round],
            dmn[round],
            dmn_rss[round],
            dmn_settled[round],
            c1[round],
            cn[round]
        );
        cli_trees.push(t_cli);
    }
    let (m_cli, m_floor, m_dmn) = (
        median(cli.clone()),
        median(floor.clone()),
        median(dmn.clone()),
    );
    let (m_c1, m_cn) = (median(c1), median(cn));
    let big = n == 10_000;
    let ratio = m_cli / m_floor;
    let mut met = ratio <= 1.5;
    let mut target = "≤ 1.5x I/O floor".to_string();
    if big {
        met &= m_cli < 10.0;
        target.push_str(", < 10 s");
    }
    table.add(
        format!("{n} P-256 renew --all (mass issuance)"),
        format!(
            "{:.3} s ({:.3} ms/cert) [{}]",
            m_cli,
            m_cli * 1000.0 / n as f64,
            list(&cli, "")
        ),
        format!("I/O floor {:.3} s [{}]", m_floor, list(&floor, "")),
        Some(ratio),
        target,
        Some(met),
    );
    // The floor's file work on as many threads as certkeeper stores shares on: what
    // the same parallelism gives the floor (no target; for a fair reading).
    let m_floor_par = median(floor_par.clone());
    table.add(
        format!("{n} P-256 renew --all vs the I/O floor on {threads} threads"),
        format!("{m_cli:.3} s"),
        format!(
            "I/O floor on {threads} threads {:.3} s [{}]",
            m_floor_par,
            list(&floor_par, "")
        ),
        Some(m_cli / m_floor_par),
        "—",
        None,
    );
    let crypto_all = n as f64 / m_cn;
    table.add(
        format!("{n} P-256 renew --all vs crypto floor"),
        format!("{m_cli:.3} s"),
        format!("{n} rcgen keys + leaves on {threads} cores {crypto_all:.3} s"),
        Some(m_cli / crypto_all),
        "— (see rate row)",
        None,
    );
    // What certkeeper itself says it took to build the pairs (keys, signing), from
    // its debug log of these runs.
    let rates = std::mem::take(&mut *BUILT.lock().unwrap());
    let rate = (!rates.is_empty()).then(|| median(rates.clone()));
    table.add(
        format!("{n}: in-process rate (pairs built/s, certkeeper's own count)"),
        rate.map(|r| {
            let each: Vec<String> = rates.iter().map(|x| format!("{x:.0}")).collect();
            format!("{r:.0} certs/s [{}]", each.join(" / "))
        })
        .unwrap_or_else(|| "n/a".into()),
        format!("rcgen crypto floor {m_cn:.0}/s on {threads} cores ({m_c1:.0}/s on 1)"),
        rate.map(|r| r / m_cn),
        "≥ 8,000/s on 2 cores",
        rate.map(|r| r >= 8000.0),
    );
    table.add(
        format!("{n} missing: daemon to READY=1"),
        format!("{:.3} s [{}]", m_dmn, list(&dmn, "")),
        format!("CLI renew --all {m_cli:.3} s"),
        Some(m_dmn / m_cli),
        "≤ 1.3x CLI",
        Some(m_dmn / m_cli <= 1.3),
    );
    let m_dmn_rss = median(dmn_rss.clone());
    let m_dmn_settled = median(dmn_settled.clone());
    let rss_batch_target = match n {
        10_000 => Some(40.0),
        100 => Some(8.0),
        _ => None,
    };
    // Judged on the settled peak, the larger: the batch is only over once the daemon
    // has looked at what it made.
    table.add(
        format!("{n} missing: daemon peak RSS (VmHWM at READY=1; settled)"),
        format!(
            "{m_dmn_rss:.1} MB; {m_dmn_settled:.1} MB [{}]",
            list(&dmn_settled, "")
        ),
        "—",
        None,
        rss_batch_target
            .map(|t| format!("≤ {t:.0} MB"))
            .unwrap_or_else(|| "—".into()),
        rss_batch_target.map(|t| m_dmn_settled <= t),
    );

    // Cold and warm start with n valid certificates, interleaved with the scan floor.
    let t = &cli_trees[0];
    let cache = t.dir.join("state/observed.json");
    let (mut scan, mut cold, mut cold_rss, mut warm, mut warm_rss, mut warm_settled) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    for round in 0..ROUNDS {
        for step in 0..3 {
            syncfs(root);
            match (step + round) % 3 {
                0 => scan.push(secs(scan_floor(t, n))),
                1 => {
                    let _ = fs::remove_file(&cache);
                    // The cache is saved after the start-up pass, which may be after
                    // READY=1; a start stopped before that leaves none, and the warm
                    // step then makes it first.
                    let d = daemon(t);
                    cold.push(secs(d.ready_after));
                    cold_rss.push(mb(d.hwm_kb));
                }
                _ => {
                    if !cache.exists() {
                        // First round: the cache is made by a start not counted.
                        daemon(t);
                    }
                    let d = daemon(t);
                    warm.push(secs(d.ready_after));
                    warm_rss.push(mb(d.hwm_kb));
                    warm_settled.push(mb(d.settled_kb));
                }
            }
        }
    }
    println!(
        "start-up with {n} valid: cold {} s ({} MB), warm {} s ({} MB at READY=1, {} MB settled), single-pass scan {} s",
        list(&cold, ""),
        list(&cold_rss, ""),
        list(&warm, ""),
        list(&warm_rss, ""),
        list(&warm_settled, ""),
        list(&scan, "")
    );
    let (m_scan, m_cold, m_warm) = (median(scan), median(cold), median(warm));
    let m_warm_rss = median(warm_rss.clone());
    let m_warm_settled = median(warm_settled.clone());
    table.add(
        format!("{n} valid: cold start (no observed.json)"),
        format!("{m_cold:.3} s, {:.1} MB peak", median(cold_rss)),
        format!("single-pass scan {m_scan:.3} s ({threads} cores)"),
        Some(m_cold / m_scan),
        "— (none stated)",
        None,
    );
    table.add(
        format!("{n} valid: warm start (observed.json)"),
        format!("{m_warm:.3} s"),
        format!("single-pass scan {m_scan:.3} s"),
        Some(m_warm / m_scan),
        if big { "< 0.25 s" } else { "—" },
        big.then_some(m_warm < 0.25),
    );
    let rss_start_target = match n {
        10_000 => Some(25.0),
        100 => Some(8.0),
        _ => None,
    };
    // Start-up is judged at READY=1; the settled peak (with the stores' watches) is
    // shown beside it.
    table.add(
        format!("{n} valid: warm start-up peak RSS (VmHWM at READY=1; settled)"),
        format!(
            "{m_warm_rss:.1} MB [{}]; {m_warm_settled:.1} MB",
            list(&warm_rss, "")
        ),
        "—",
        None,
        rss_start_target
            .map(|t| {
                if t < 10.0 {
                    format!("≤ {t:.0} MB")
                } else {
                    format!("< {t:.0} MB")
                }
            })
            .unwrap_or_else(|| "—".into()),
        rss_start_target.map(|t| {
            if t < 10.0 {
                m_warm_rss <= t
            } else {
                m_warm_rss < t
            }
        }),
    );
}

// ---------------------------------------------------------------------------------
// File operations counted by strace

/// `strace -c` of one `renew --all` and of the I/O floor (run in a child copy of
/// this binary) for the largest size up to 1,000: calls per certificate.
fn count_file_ops(root: &Path, sizes: &[usize], probe: &Path, table: &mut Table) {
    if !Path::new("/usr/bin/strace").exists() {
        println!("\nstrace not found: file operations not counted");
        return;
    }
    let n = sizes
        .iter()
        .copied()
        .filter(|&n| n <= 1000)
        .max()
        .unwrap_or_else(|| *sizes.iter().min().unwrap());
    println!("\n== file operations, strace -f -c, {n} new certificates ==");
    let strace = |out: &Path, cmd: &mut Command| {
        let mut c = Command::new("strace");
        c.args(["-f", "-c", "-e", "trace=%file,fsync,fdatasync,syncfs", "-o"])
            .arg(out)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            if let Some(v) = v {
                c.env(k, v);
            }
        }
        let st = c
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "strace {:?}", cmd.get_program());
        parse_strace(&fs::read_to_string(out).unwrap())
    };
    let t = tree(root, &format!("strace-cli-{n}"), n, None);
    let mut renew = Command::new(bin());
    renew
        .args(["renew", "--all", "-c"])
        .arg(&t.config)
        .env("CERTKEEPER_LOG", "warn");
    let real = strace(&root.join("strace-cli.txt"), &mut renew);
    let f = floor_tree(root, &format!("strace-floor-{n}"));
    let mut floor = Command::new(std::env::current_exe().unwrap());
    floor.env(
        FLOOR_CHILD,
        format!("{}|{n}|{}", f.display(), probe.display()),
    );
    let ideal = strace(&root.join("strace-floor.txt"), &mut floor);
    let show = |what: &str, counts: &[(String, u64)]| {
        let total: u64 = counts
            .iter()
            .filter(|(s, _)| !matches!(s.as_str(), "fsync" | "fdatasync" | "syncfs"))
            .map(|(_, c)| c)
            .sum();
        let mut parts: Vec<String> = counts
            .iter()
            .filter(|(s, _)| !matches!(s.as_str(), "fsync" | "fdatasync" | "syncfs"))
            .map(|(s, c)| format!("{s} {:.2}", *c as f64 / n as f64))
            .collect();
        parts.truncate(8);
        let get = |name: &str| {
            counts
                .iter()
                .find(|(s, _)| s == name)
                .map(|(_, c)| *c)
                .unwrap_or(0)
        };
        println!(
            "{what:<14} file ops per certificate {:.2} ({}); fsync {}, fdatasync {}, syncfs {} in all",
            total as f64 / n as f64,
            parts.join(", "),
            get("fsync"),
            get("fdatasync"),
            get("syncfs")
        );
        (
            total as f64 / n as f64,
            get("fsync") + get("fdatasync"),
            get("syncfs"),
        )
    };
    let (ops, fsyncs, syncfs) = show("renew --all:", &real);
    let (floor_ops, floor_fsyncs, floor_syncfs) = show("I/O floor:", &ideal);
    table.add(
        format!("{n} renew --all: file ops/cert (strace -c)"),
        format!("{ops:.1} /cert; fsync+fdatasync {fsyncs}, syncfs {syncfs}"),
        format!("I/O floor {floor_ops:.1} /cert; {floor_fsyncs}, {floor_syncfs}"),
        Some(ops / floor_ops),
        "— (count)",
        None,
    );
}

/// (syscall, calls), most calls first, from `strace -c` output.
fn parse_strace(text: &str) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 5 || f[0].starts_with('%') || f[0].starts_with('-') {
                return None;
            }
            let name = *f.last().unwrap();
            if name == "total" {
                return None;
            }
            Some((name.to_string(), f[3].parse().ok()?))
        })
        .collect();
    v.sort_by_key(|c| std::cmp::Reverse(c.1));
    v
}

// ---------------------------------------------------------------------------------
// 3. RSA

fn rsa(root: &Path, ca: &BenchCa, table: &mut Table) {
    println!("\n== {RSA_COUNT} RSA-2048 certificates ==");
    let threads = cores();
    let (mut cli, mut floor) = (vec![], vec![]);
    for round in 0..ROUNDS {
        let t = tree(root, &format!("rsa{round}"), RSA_COUNT, Some("rsa-2048"));
        for step in 0..2 {
            syncfs(root);
            if (step + round) % 2 == 0 {
                cli.push(secs(renew_all(&t)));
            } else {
                floor.push(secs(crypto_floor(ca, &PKCS_RSA_SHA256, threads, RSA_COUNT)));
            }
        }
    }
    println!(
        "renew --all {} s; parallel RSA keygen + sign on {threads} cores {} s",
        list(&cli, ""),
        list(&floor, "")
    );
    let (m_cli, m_floor) = (median(cli), median(floor));
    table.add(
        format!("{RSA_COUNT} RSA-2048 renew --all"),
        format!("{m_cli:.3} s"),
        format!("parallel keygen + sign {m_floor:.3} s ({threads} cores)"),
        Some(m_cli / m_floor),
        "≤ 1.3x keygen floor",
        Some(m_cli / m_floor <= 1.3),
    );
}

// ---------------------------------------------------------------------------------
// 6. renew → served with a private nginx

const SERVER_NAME: &str = "www.example.internal";

/// A private nginx (TESTING-NOTES: every path inside its directory), in the foreground
/// as our child so that it is stopped by its pid.
struct Nginx {
    child: Child,
    port: u16,
}

impl Nginx {
    fn args(dir: &Path) -> Vec<String> {
        vec![
            "-p".into(),
            format!("{}/", dir.display()),
            "-e".into(),
            dir.join("logs/error.log").display().to_string(),
            "-c".into(),
            dir.join("nginx.conf").display().to_string(),
        ]
    }

    fn start(dir: &Path, cert: &Path, key: &Path) -> Nginx {
        for sub in ["logs", "run", "tmp"] {
            fs::create_dir_all(dir.join(sub)).unwrap();
        }
        fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
        let user = if unsafe { libc::geteuid() } == 0 {
            "user nobody nogroup;\n"
        } else {
            ""
        };
        let d = dir.display();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let conf = format!(
            r#"{user}worker_processes 1;
pid {d}/run/nginx.pid;
lock_file {d}/run/nginx.lock;
error_log {d}/logs/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
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
"#,
            cert = cert.display(),
            key = key.display()
        );
        fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new(NGINX)
            .args(Self::args(dir))
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let nginx = Nginx { child, port };
        let deadline = Instant::now() + Duration::from_secs(15);
        while handshake(port).is_none() {
            assert!(
                Instant::now() < deadline,
                "nginx in {d} did not serve TLS within 15 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        nginx
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// The leaf (DER) that 127.0.0.1:`port` serves, or None when no handshake completed:
/// certkeeper's own served-chain capture, which records whatever is presented.
fn handshake(port: u16) -> Option<Vec<u8>> {
    certkeeper::verify::served_leaf(
        &format!("127.0.0.1:{port}"),
        SERVER_NAME,
        Duration::from_secs(2),
    )
    .ok()
}

/// Polls until `port` serves a leaf other than `old` (5 s deadline).
fn until_changed(port: u16, old: &[u8], start: Instant) -> Duration {
    let deadline = start + Duration::from_secs(5);
    loop {
        if handshake(port).is_some_and(|leaf| leaf != old) {
            return start.elapsed();
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 5 s"
        );
        std::thread::sleep(Duration::from_micros(500));
    }
}

fn served(root: &Path, ca: &BenchCa, table: &mut Table) {
    println!("\n== renew → served with nginx, {SERVED_ROUNDS} rounds ==");
    if !Path::new(NGINX).exists() {
        println!("{NGINX} not found: not measured");
        table.add(
            "renew --force → served (nginx)",
            "not measured",
            "no nginx",
            None,
            "≤ bare reload + 20 ms",
            None,
        );
        return;
    }
    let dir = root.join("served");
    let (ck, srv_ck, bare, srv_bare) = (
        dir.join("ck"),
        dir.join("nginx-ck"),
        dir.join("bare"),
        dir.join("nginx-bare"),
    );
    for d in [&dir, &ck, &bare] {
        fs::create_dir_all(d).unwrap();
        fs::set_permissions(d, fs::Permissions::from_mode(0o755)).unwrap();
    }

    // certkeeper's certificate: issued once without the server (nginx needs a
    // certificate to start), then renewed with a `type: nginx` server.
    let (cert, key) = (ck.join("www.crt"), ck.join("www.key"));
    let certificate = |reload: &str| {
        format!(
            "certificates:\n  - name: www\n    sans: [{SERVER_NAME}]\n    files: {{ layout: nginx, cert: {}, key: {} }}\n{reload}",
            cert.display(),
            key.display()
        )
    };
    let state = format!("state_dir: {}/state\n", ck.display());
    let init = ck.join("init.yaml");
    fs::write(&init, format!("{state}{}", certificate(""))).unwrap();
    let test: Vec<String> = std::iter::once(NGINX.to_string())
        .chain(Nginx::args(&srv_ck))
        .chain(["-t".into(), "-q".into()])
        .map(|a| serde_json::to_string(&a).unwrap())
        .collect();
    let config = ck.join("config.yaml");
    fs::write(
        &config,
        format!(
            "{state}servers:\n  web:\n    type: nginx\n    pid_file: {}\n    test: [{}]\n{}",
            srv_ck.join("run/nginx.pid").display(),
            test.join(", "),
            certificate("    reload: [web]\n")
        ),
    )
    .unwrap();
    certkeeper(&["ca", "init", "-c"], &config);
    certkeeper(&["renew", "--all", "-c"], &init);
    let nginx_ck = Nginx::start(&srv_ck, &cert, &key);

    // The bare floor: two pairs made in-process, served through `current` as
    // certkeeper serves its own; a swap is one rename of `current` and SIGHUP.
    for side in ["a", "b"] {
        let pair = bare.join(side);
        fs::create_dir_all(&pair).unwrap();
        let (leaf, k) = ca.leaf(&PKCS_ECDSA_P256_SHA256, SERVER_NAME);
        fs::write(
            pair.join("cert.pem"),
            format!("{leaf}{}", ca.intermediate_pem),
        )
        .unwrap();
        create(&pair.join("key.pem"), k.as_bytes(), 0o600);
    }
    symlink("a", bare.join("current")).unwrap();
    symlink("current/cert.pem", bare.join("live.crt")).unwrap();
    symlink("current/key.pem", bare.join("live.key")).unwrap();
    let nginx_bare = Nginx::start(&srv_bare, &bare.join("live.crt"), &bare.join("live.key"));
    let mut side = "a";

    let (mut renewed, mut reloaded) = (vec![], vec![]);
    for round in 0..SERVED_ROUNDS {
        for step in 0..2 {
            if (step + round) % 2 == 0 {
                let old = handshake(nginx_ck.port).expect("nginx serves");
                let start = Instant::now();
                certkeeper(&["renew", "--force", "www", "-c"], &config);
                renewed.push(secs(until_changed(nginx_ck.port, &old, start)));
            } else {
                let old = handshake(nginx_bare.port).expect("nginx serves");
                side = if side == "a" { "b" } else { "a" };
                let start = Instant::now();
                let tmp = bare.join(".current.new");
                symlink(side, &tmp).unwrap();
                fs::rename(&tmp, bare.join("current")).unwrap();
                unsafe {
                    libc::kill(nginx_bare.child.id() as libc::pid_t, libc::SIGHUP);
                }
                reloaded.push(secs(until_changed(nginx_bare.port, &old, start)));
            }
            // Let the old workers go before the next measurement.
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    let ms: Vec<f64> = renewed.iter().map(|s| s * 1000.0).collect();
    let bare_ms: Vec<f64> = reloaded.iter().map(|s| s * 1000.0).collect();
    println!("renew --force → served (ms): {}", list(&ms, ""));
    println!("swap + SIGHUP → served (ms): {}", list(&bare_ms, ""));
    let (m, b) = (median(ms), median(bare_ms));
    table.add(
        format!("renew --force → served (nginx, median of {SERVED_ROUNDS})"),
        format!("{m:.1} ms"),
        format!("swap + SIGHUP → served {b:.1} ms"),
        Some(m / b),
        "≤ bare reload + 20 ms",
        Some(m <= b + 20.0),
    );
}
