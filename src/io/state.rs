//! The state directory: the lock that serializes writers, the archive of recent pairs
//! (bounded: the installed pair plus `archive.keep` superseded ones per certificate), and
//! the ledger (one JSON line per issuance, install, failure; rotated by size, never left
//! with a torn line that later appends build on).
//!
//! Writers hold the state lock; readers (`status`) do not, and must never block or fail
//! because of the ledger: damaged lines are reported and skipped. Nothing here knows
//! about layouts, servers or issuers.

use crate::fsutil::{ensure_dir, remove_stale_temp_files, sync_dir, FileSpec, FsError};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::SystemTime;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The ledger rotates when an append would take `ledger.jsonl` over this size.
pub const DEFAULT_LEDGER_CAP: u64 = 10 * 1024 * 1024;
/// How many rotated ledgers are kept (`ledger.jsonl.1` is the newest of them).
pub const LEDGER_GENERATIONS: usize = 3;
/// The file in `archive/NAME/` naming the serial that is installed.
const INSTALLED_MARKER: &str = "installed";
/// Present in the state directory while a process holds the state lock. Found when the
/// lock is taken, it says that the last holder stopped while holding it (killed, or the
/// host went down), so that what its interrupted writes left is looked for then, and
/// only then: a walk of the whole archive costs seconds with ten thousand certificates.
pub const HELD_MARKER: &str = "lock.held";
/// Suffix of an archived pair that is being removed (renamed first, so that a crash
/// never leaves half a pair that looks whole).
const PRUNED_SUFFIX: &str = ".pruned";
/// An archive copy being written (`archive/NAME/.SERIAL.new`), until it is durable.
const STAGING_SUFFIX: &str = ".new";
/// An archived pair: `archive/NAME/SERIAL.pem`, one file (mode 0600) holding the leaf,
/// the chain and the key. Archives written before hold a directory `SERIAL/` with
/// `cert.pem`, `chain.pem` and `key.pem`; both are read.
const PAIR_SUFFIX: &str = ".pem";
/// How `name` and `event` start in a ledger line, for [`quick_field`].
const NAME_KEY: &str = "\"name\":\"";
const EVENT_KEY: &str = "\"event\":\"";

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
    /// `ledger.jsonl` rotates when an append would take it over this many bytes.
    ledger_cap: u64,
    /// The serial of each certificate's last `installed` ledger entry, read at most once
    /// and only for archives made before install markers existed.
    installed_in_ledger: OnceLock<HashMap<String, String>>,
}

/// What `archive/NAME/` holds.
#[derive(Default)]
struct Archived {
    /// The pairs (files `SERIAL.pem`, or directories `SERIAL/` of earlier versions):
    /// each entry's name and its serial.
    pairs: Vec<(String, String)>,
    /// Pairs whose removal (or archiving) was interrupted, by name.
    leftovers: Vec<String>,
}

/// Held while writing state or installing files; released on drop.
pub struct StateLock {
    /// `HELD_MARKER`, removed before the lock is released (None when it could not be
    /// made).
    marker: Option<PathBuf>,
    /// The state directory, locked.
    _lock: nix::fcntl::Flock<fs::File>,
}

impl Drop for StateLock {
    fn drop(&mut self) {
        // Runs before the fields drop: the marker goes while the lock is still held.
        if let Some(marker) = &self.marker {
            if let Err(e) = fs::remove_file(marker) {
                tracing::warn!(path = %marker.display(), error = %e, "cannot remove the marker of a held state lock");
            }
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LedgerEntry {
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    /// `issued`, `installed`, `failed`, `ca-init`, `revoked`.
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub not_after: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sans: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
    /// Why it happened (`due`, `missing`...) or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// What else happened, e.g. a reload skipped because the server is not running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl LedgerEntry {
    pub fn new(time: OffsetDateTime, event: &str) -> LedgerEntry {
        LedgerEntry {
            time,
            event: event.to_string(),
            name: None,
            serial: None,
            issuer: None,
            not_after: None,
            sans: Vec::new(),
            files: Vec::new(),
            reason: None,
            note: None,
        }
    }
}

fn io_err<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// The directories in `dir` (links are not followed); none when it cannot be listed.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Who holds the flock on `dir`, from /proc/locks: `pid 123 (certkeeper) since 0:00:05`.
fn lock_holder(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).ok()?;
    let (major, minor) = (
        nix::sys::stat::major(meta.dev()),
        nix::sys::stat::minor(meta.dev()),
    );
    let locks = fs::read_to_string("/proc/locks").ok()?;
    for line in locks.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF`
        let Some(at) = f.iter().position(|x| *x == "FLOCK") else {
            continue;
        };
        let (Some(pid), Some(id)) = (f.get(at + 3), f.get(at + 4)) else {
            continue;
        };
        let parts: Vec<&str> = id.split(':').collect();
        if parts.len() != 3 {
            continue;
        }
        let same = u64::from_str_radix(parts[0], 16).ok() == Some(major)
            && u64::from_str_radix(parts[1], 16).ok() == Some(minor)
            && parts[2].parse::<u64>().ok() == Some(meta.ino());
        if same {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            return Some(format!("pid {pid} ({})", comm.trim()));
        }
    }
    None
}

impl StateDir {
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
            ledger_cap: DEFAULT_LEDGER_CAP,
            installed_in_ledger: OnceLock::new(),
        }
    }

    /// The same state directory with another ledger size cap (tests use small ones).
    pub fn with_ledger_cap(mut self, cap: u64) -> StateDir {
        self.ledger_cap = cap;
        self
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.jsonl")
    }

    /// Every ledger file that may exist, newest first: `ledger.jsonl`, `.1`, `.2`, `.3`.
    pub fn ledger_paths(&self) -> Vec<PathBuf> {
        std::iter::once(self.ledger_path())
            .chain((1..=LEDGER_GENERATIONS).map(|i| self.rotated_path(i)))
            .collect()
    }

    fn rotated_path(&self, generation: usize) -> PathBuf {
        self.root.join(format!("ledger.jsonl.{generation}"))
    }

    /// Where the archived pair `serial` of `name` is: `archive/NAME/SERIAL.pem`, or the
    /// directory `archive/NAME/SERIAL/` an earlier version wrote; the file when neither
    /// exists.
    pub fn archived_path(&self, name: &str, serial: &str) -> PathBuf {
        let dir = self.root.join("archive").join(name);
        let file = dir.join(format!("{serial}{PAIR_SUFFIX}"));
        let old = dir.join(serial);
        if fs::symlink_metadata(&file).is_err() && fs::symlink_metadata(&old).is_ok() {
            return old;
        }
        file
    }

    /// The archived pair `serial` of `name`: its certificates (leaf first) as PEM, and
    /// its key as PEM. None when it is not archived or cannot be read; nothing is
    /// followed through a link.
    pub fn archived_pair(&self, name: &str, serial: &str) -> Option<(Vec<u8>, Zeroizing<String>)> {
        if !is_plain_component(name) || !is_plain_component(serial) {
            return None;
        }
        let read = |p: &Path| {
            crate::fsread::read_regular(p, crate::fsread::PEM_MAX)
                .ok()
                .and_then(|b| String::from_utf8(b.to_vec()).ok())
                .map(Zeroizing::new)
        };
        let path = self.archived_path(name, serial);
        if path.extension().is_some_and(|e| *e == PAIR_SUFFIX[1..]) {
            let text = read(&path)?;
            let mut certs = String::new();
            let mut key = Zeroizing::new(String::new());
            for block in pem::parse_many(text.as_bytes()).ok()? {
                let encoded = pem::encode(&block);
                if block.tag() == "CERTIFICATE" {
                    certs.push_str(&encoded);
                } else {
                    key.push_str(&encoded);
                }
            }
            return Some((certs.into_bytes(), key));
        }
        let cert = read(&path.join("cert.pem"))?;
        let chain = read(&path.join("chain.pem")).unwrap_or_default();
        let key = read(&path.join("key.pem"))?;
        Some((format!("{}{}", *cert, *chain).into_bytes(), key))
    }

    /// Creates the state directory (0700) if it is missing.
    /// Refuses one that others may write (see [`crate::fsutil::unsafe_dir`]).
    pub fn create(&self) -> Result<(), FsError> {
        ensure_dir(&self.root, 0o700)?;
        match crate::fsutil::unsafe_dir(&self.root) {
            Some(problem) => Err(FsError::UnsafeDir {
                path: self.root.clone(),
                problem,
            }),
            None => Ok(()),
        }
    }

    /// Takes the exclusive lock, waiting for another certkeeper process to finish.
    pub fn lock(&self) -> Result<StateLock, FsError> {
        use nix::fcntl::{Flock, FlockArg};
        self.create()?;
        // The lock is taken on the state directory itself: a lock file could be deleted
        // from under its holder, letting a second writer lock a new one.
        let dir = fs::File::open(&self.root).map_err(|source| FsError::Io {
            path: self.root.clone(),
            action: "cannot open the state directory to lock it",
            source,
        })?;
        let started = std::time::Instant::now();
        let locked = match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
            Ok(l) => l,
            Err((dir, _)) => {
                // Wait on a thread of its own, saying every few seconds who holds it.
                let (tx, rx) = std::sync::mpsc::channel();
                std::thread::spawn(move || {
                    let _ = tx.send(Flock::lock(dir, FlockArg::LockExclusive));
                });
                loop {
                    let holder = lock_holder(&self.root).unwrap_or_else(|| "unknown".into());
                    tracing::info!(path = %self.root.display(), %holder, waiting_s = started.elapsed().as_secs(), "another certkeeper holds the state lock; waiting");
                    match rx.recv_timeout(std::time::Duration::from_secs(5)) {
                        Ok(Ok(l)) => break l,
                        Ok(Err((_, errno))) => {
                            return Err(FsError::Io {
                                path: self.root.clone(),
                                action: "cannot lock",
                                source: std::io::Error::from(errno),
                            })
                        }
                        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                            return Err(FsError::Io {
                                path: self.root.clone(),
                                action: "cannot lock",
                                source: std::io::Error::other("the waiting thread ended"),
                            })
                        }
                    }
                }
            }
        };
        let marker = self.root.join(HELD_MARKER);
        if fs::symlink_metadata(&marker).is_ok() {
            let removed = self.remove_stale_temp_files();
            tracing::info!(
                removed,
                "the last certkeeper process to hold the state lock stopped while holding it; removed the temporary files its writes left"
            );
        }
        // Not fsynced: a journaling filesystem commits metadata in order, so a crash
        // that keeps a later temporary file of this holder keeps the marker too.
        let marker = match OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&marker)
        {
            Ok(_) => Some(marker),
            Err(e) => {
                tracing::warn!(path = %marker.display(), error = %e, "cannot mark the state lock as held");
                None
            }
        };
        Ok(StateLock {
            marker,
            _lock: locked,
        })
    }

    /// Removes the temporary files (`.NAME.certkeeper-tmp-RANDOM`) that interrupted
    /// writes left in the state directory and anywhere in the archive (`archive/NAME/`,
    /// and the `SERIAL/` directories of earlier versions). The caller holds the state
    /// lock.
    pub fn remove_stale_temp_files(&self) -> usize {
        let mut removed = remove_stale_temp_files(&self.root);
        let archive = self.root.join("archive");
        for name in subdirs(&archive) {
            removed += remove_stale_temp_files(&name);
            for pair in subdirs(&name) {
                removed += remove_stale_temp_files(&pair);
            }
        }
        removed
    }

    /// Keeps a copy of a new pair in `archive/NAME/SERIAL.pem`. The pairs' modification
    /// times order them: the new one is made newer than every other pair of `name`, even
    /// on a coarse or stepped clock.
    pub fn archive(
        &self,
        name: &str,
        serial: &str,
        cert_pem: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<PathBuf, FsError> {
        self.stage_archive(name, serial, cert_pem, chain_pem, key_pem)?
            .publish(self)
    }

    /// Writes a new pair's archive copy to `archive/NAME/.SERIAL.new`, to be put in
    /// place by [`StagedArchive::publish`] once its files are durable (at once outside a
    /// group commit; at the batch's barrier inside one).
    pub fn stage_archive(
        &self,
        name: &str,
        serial: &str,
        cert_pem: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<StagedArchive, FsError> {
        let dir = self.root.join("archive").join(name);
        // Made 0700 where missing, and never through a link: a link planted in the
        // archive is refused, whatever it points at.
        let parent = crate::fsutil::Dir::reach(&dir, Some(0o700))?;
        let staging = format!(".{serial}{STAGING_SUFFIX}");
        if !parent.made() && parent.stat_at(staging.as_ref())?.is_some() {
            // What an interrupted archive of this serial left.
            remove_entry(&dir.join(&staging))?;
        }
        // One file, mode 0600 from its first byte: the leaf, the chain, then the key.
        let mut bytes = Zeroizing::new(String::with_capacity(
            cert_pem.len() + chain_pem.len() + key_pem.len(),
        ));
        bytes.push_str(cert_pem);
        bytes.push_str(chain_pem);
        bytes.push_str(key_pem);
        let spec = FileSpec {
            path: dir.join(&staging),
            bytes: Zeroizing::new(std::mem::take(&mut *bytes).into_bytes()),
            mode: 0o600,
            uid: None,
            gid: None,
            follow_symlinks: false,
        };
        if let Err(e) = parent
            .create_file(std::ffi::OsStr::new(&staging), &spec)
            .and_then(|()| parent.sync())
        {
            let _ = fs::remove_file(dir.join(&staging));
            return Err(e);
        }
        Ok(StagedArchive {
            fresh: parent.made(),
            serial: serial.to_string(),
            parent,
            staging,
        })
    }

    /// `archive/NAME/`, opened without following a link on the way (a batch keeps
    /// it); None when it does not exist.
    fn archive_dir(&self, name: &str) -> Result<Option<crate::fsutil::Dir>, FsError> {
        let dir = self.root.join("archive").join(name);
        match crate::fsutil::Dir::reach(&dir, None) {
            Ok(d) => Ok(Some(d)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Remembers that the archived pair `serial` is the one installed for `name`
    /// (`archive/NAME/installed`), so that pruning never removes it.
    pub fn mark_installed(&self, name: &str, serial: &str) -> Result<(), FsError> {
        crate::fsutil::GroupCommit::durable(|| self.stage_marker(name, serial)?.publish())
    }

    /// Many markers at once inside `group` (a group commit): each written beside its
    /// place, one flush, then each renamed in place (flushed at `group`'s next barrier).
    /// One result per item.
    pub fn mark_installed_all(
        &self,
        group: &crate::fsutil::GroupCommit,
        marks: &[(&str, &str)],
    ) -> Vec<Result<(), FsError>> {
        let staged: Vec<_> = marks
            .iter()
            .map(|(name, serial)| self.stage_marker(name, serial))
            .collect();
        if let Err(e) = group.barrier() {
            let e = std::sync::Arc::new(e);
            return staged
                .iter()
                .map(|_| {
                    Err(FsError::Io {
                        path: self.root.join("archive"),
                        action: "cannot flush the install markers",
                        source: io::Error::other(e.to_string()),
                    })
                })
                .collect();
        }
        staged
            .into_iter()
            .map(|m| m.and_then(StagedMarker::publish))
            .collect()
    }

    /// Writes `serial` to a temporary file beside `archive/NAME/installed`.
    fn stage_marker(&self, name: &str, serial: &str) -> Result<StagedMarker, FsError> {
        let dir = self.root.join("archive").join(name);
        let marker = dir.join(INSTALLED_MARKER);
        if !is_plain_component(serial) || !is_plain_component(name) {
            return Err(FsError::Io {
                path: marker,
                action: "refusing to mark an install",
                source: io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("`{name}`/`{serial}` is not a certificate name and serial"),
                ),
            });
        }
        let tmp = crate::fsutil::temp_name(Path::new(INSTALLED_MARKER));
        let spec = FileSpec {
            path: dir.join(&tmp),
            bytes: Zeroizing::new(format!("{serial}\n").into_bytes()),
            mode: 0o600,
            uid: None,
            gid: None,
            follow_symlinks: false,
        };
        let parent = crate::fsutil::Dir::reach(&dir, Some(0o700))?;
        parent.create_file(tmp.as_os_str(), &spec)?;
        Ok(StagedMarker { parent, tmp })
    }

    /// The serial of the pair installed for `name`: the install marker, or for an
    /// archive made before markers existed, the last `installed` entry of the ledger.
    pub fn installed_serial(&self, name: &str) -> Option<String> {
        self.marked_serial(name)
            .or_else(|| self.installed_in_ledger(name))
    }

    /// Whether `serial` is an earlier pair of `name`'s than the one installed last: both
    /// are in the archive and `serial`'s was archived before. Two `stat`s and the
    /// marker; None when the marker or either pair is not there.
    pub fn reverted_from(&self, name: &str, serial: &str) -> Option<String> {
        let installed = self.marked_serial(name)?;
        if installed == serial || !is_plain_component(serial) {
            return None;
        }
        let age = |s: &str| {
            fs::symlink_metadata(self.archived_path(name, s))
                .and_then(|m| m.modified())
                .ok()
        };
        (age(serial)? < age(&installed)?).then_some(installed)
    }

    fn marked_serial(&self, name: &str) -> Option<String> {
        let marker = self.root.join("archive").join(name).join(INSTALLED_MARKER);
        match fs::read_to_string(&marker) {
            Ok(text) if is_plain_component(text.trim()) => Some(text.trim().to_string()),
            Ok(_) => {
                tracing::warn!(path = %marker.display(), "install marker is damaged; using the ledger instead");
                None
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => {
                tracing::warn!(path = %marker.display(), error = %e, "cannot read the install marker; using the ledger instead");
                None
            }
        }
    }

    fn installed_in_ledger(&self, name: &str) -> Option<String> {
        self.installed_in_ledger
            .get_or_init(|| self.last_installed_serials())
            .get(name)
            .cloned()
    }

    /// Removes archived pairs of `name` beyond the installed one (see
    /// [`StateDir::installed_serial`]), the one `on_disk` (the serial the installed files
    /// hold, when known) and the `keep` newest others. Returns how many pairs were
    /// removed. The caller holds the state lock.
    pub fn prune_archive(
        &self,
        name: &str,
        keep: usize,
        on_disk: Option<&str>,
    ) -> Result<usize, FsError> {
        self.prune_archive_with(name, keep, || on_disk.map(str::to_string))
    }

    /// [`StateDir::prune_archive`], with the serial on disk asked of `on_disk` only when
    /// the archive holds more pairs than it keeps (reading the installed files costs
    /// more than the rest of a prune that removes nothing).
    pub fn prune_archive_with(
        &self,
        name: &str,
        keep: usize,
        on_disk: impl FnOnce() -> Option<String>,
    ) -> Result<usize, FsError> {
        let Some(dir) = self.archive_dir(name)? else {
            return Ok(0);
        };
        let Archived {
            pairs,
            mut leftovers,
        } = archived_in(&dir)?;
        // No more pairs than are kept anyway: none goes, whichever is installed.
        if pairs.len() <= keep && leftovers.is_empty() {
            return Ok(0);
        }
        let mut pairs = pair_times(&dir, pairs)?;
        let installed = match self.marked_serial(name) {
            Some(serial) => Some(serial),
            None => {
                let serial = self.installed_in_ledger(name);
                // Remembered, so that the ledger is not searched again.
                if let Some(Err(e)) = serial.as_deref().map(|s| self.mark_installed(name, s)) {
                    tracing::warn!(certificate = %name, error = %e, "cannot write the install marker");
                }
                serial
            }
        };
        let on_disk = on_disk();
        let protected: HashSet<&str> = installed
            .as_deref()
            .into_iter()
            .chain(on_disk.as_deref())
            .collect();
        // Newest first; equal times (coarse clocks) in a stable order.
        pairs.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| b.1.cmp(&a.1)));
        let doomed: Vec<&String> = pairs
            .iter()
            .map(|(_, serial)| serial)
            .filter(|s| !protected.contains(s.as_str()))
            .skip(keep)
            .collect();
        if doomed.is_empty() && leftovers.is_empty() {
            return Ok(0);
        }
        for serial in &doomed {
            let from = pair_entry(&dir, serial)?;
            let to = format!(".{serial}{PRUNED_SUFFIX}");
            dir.rename(from.as_ref(), to.as_ref())?;
            leftovers.push(to);
        }
        for leftover in &leftovers {
            remove_entry(&dir.path().join(leftover))?;
        }
        dir.sync()?;
        if !doomed.is_empty() {
            tracing::info!(certificate = %name, removed = doomed.len(), kept = pairs.len() - doomed.len(), "pruned the archive");
        }
        Ok(doomed.len())
    }

    /// Appends one line to the ledger and fsyncs it. The line is written whole or not at
    /// all: a failed or short write is cut back off, so a full disk can fail an append
    /// but never leaves a partial line. `ledger.jsonl` rotates first when this append
    /// would take it over the cap. The caller holds the state lock.
    pub fn record(&self, entry: &LedgerEntry) -> Result<(), FsError> {
        self.record_all(std::slice::from_ref(entry))
    }

    /// [`StateDir::record`] for several entries: their lines in one append, all or none.
    pub fn record_all(&self, entries: &[LedgerEntry]) -> Result<(), FsError> {
        if entries.is_empty() {
            return Ok(());
        }
        // The state lock keeps other processes out; this keeps the daemon's concurrent
        // passes from interleaving a rotation or a truncate-back with an append.
        static APPEND: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = APPEND.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.ledger_path();
        let mut line: Vec<u8> = Vec::new();
        for entry in entries {
            serde_json::to_writer(&mut line, entry).expect("ledger entries serialize");
            line.push(b'\n');
        }
        // Inside a batch the ledger stays open from one append to the next, unless
        // something else in this process wrote to it since (the state lock keeps other
        // processes out): its size is then known, and its last line is ours, whole.
        let kept = crate::fsutil::take_kept_file(&path)
            .filter(|k| k.stamp == LEDGER_WRITES.load(std::sync::atomic::Ordering::SeqCst));
        let (mut file, mut size, mut dev) = match kept {
            Some(k) => (k.file, k.size, k.dev),
            None => {
                let (file, size, dev) = open_ledger_sized(&path)?;
                let size = repair_tail(&file, &path, size, dev)?;
                (file, size, dev)
            }
        };
        if size > 0 && size + line.len() as u64 > self.ledger_cap {
            drop(file);
            self.rotate()?;
            (file, size, dev) = open_ledger_sized(&path)?;
        }
        // Counted before the write: a failed append, cut back or not, is a change too.
        let stamp = LEDGER_WRITES.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        append_whole(&file, &path, size, &line, dev)?;
        if size == 0 {
            // A new file: its name must survive a power loss as well as its first line.
            if let Err(e) = sync_dir(&self.root) {
                tracing::warn!(error = %e, "the new ledger file may not survive a power loss");
            }
        }
        if crate::fsutil::in_batch() {
            crate::fsutil::keep_file(
                &path,
                crate::fsutil::KeptFile {
                    file,
                    dev,
                    size: size + line.len() as u64,
                    stamp,
                },
            );
        }
        Ok(())
    }

    /// `ledger.jsonl` → `.1` → `.2` → `.3`; the oldest is dropped. A crash between two
    /// renames leaves a gap in the numbers, which readers and the next rotation accept.
    fn rotate(&self) -> Result<(), FsError> {
        for generation in (1..LEDGER_GENERATIONS).rev() {
            let from = self.rotated_path(generation);
            match fs::rename(&from, self.rotated_path(generation + 1)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&from, "cannot rotate the ledger")(e)),
            }
        }
        let current = self.ledger_path();
        fs::rename(&current, self.rotated_path(1))
            .map_err(io_err(&current, "cannot rotate the ledger"))?;
        sync_dir(&self.root)?;
        tracing::info!(path = %current.display(), cap = self.ledger_cap, "rotated the ledger");
        Ok(())
    }

    /// Every ledger entry, oldest first, across the rotated files. Lines that do not
    /// parse (a torn last line after a crash) are reported and skipped.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        let mut out = Vec::new();
        for path in self.ledger_paths().iter().rev() {
            let Some(text) = read_ledger_file(path) else {
                continue;
            };
            let lines = Lines::new(&text);
            for (number, line) in lines.forward() {
                if let Some(e) = parse_line(path, number, line, lines.is_torn(number)) {
                    out.push(e);
                }
            }
        }
        out
    }

    /// The newest ledger entry of each certificate. Reads the newest file first, each
    /// from its end, and parses only the newest line of each name: a name's older lines
    /// are recognized by a cheap search and skipped.
    pub fn last_events(&self) -> HashMap<String, LedgerEntry> {
        let mut out: HashMap<String, LedgerEntry> = HashMap::new();
        for path in self.ledger_paths() {
            let Some(text) = read_ledger_file(&path) else {
                continue;
            };
            let lines = Lines::new(&text);
            for (number, line) in lines.backward() {
                if quick_field(line, NAME_KEY).is_some_and(|n| out.contains_key(n)) {
                    continue;
                }
                let Some(e) = parse_line(&path, number, line, lines.is_torn(number)) else {
                    continue;
                };
                if let Some(name) = e.name.clone() {
                    out.entry(name).or_insert(e);
                }
            }
        }
        out
    }

    /// The serial of each certificate's last `installed` entry, from every ledger file.
    fn last_installed_serials(&self) -> HashMap<String, String> {
        let mut out = HashMap::new();
        for path in self.ledger_paths() {
            let Some(text) = read_ledger_file(&path) else {
                continue;
            };
            let lines = Lines::new(&text);
            for (number, line) in lines.backward() {
                if quick_field(line, EVENT_KEY).is_some_and(|e| e != "installed")
                    || quick_field(line, NAME_KEY).is_some_and(|n| out.contains_key(n))
                {
                    continue;
                }
                let Some(e) = parse_line(&path, number, line, lines.is_torn(number)) else {
                    continue;
                };
                if let (Some(name), Some(serial), "installed") = (e.name, e.serial, &*e.event) {
                    out.entry(name).or_insert(serial);
                }
            }
        }
        out
    }
}

/// A name or serial that is one ordinary path component.
/// An install marker written beside its place.
struct StagedMarker {
    parent: crate::fsutil::Dir,
    tmp: PathBuf,
}

impl StagedMarker {
    /// Renames it in place; its data must be durable by now.
    fn publish(self) -> Result<(), FsError> {
        let result = self
            .parent
            .rename(self.tmp.as_os_str(), std::ffi::OsStr::new(INSTALLED_MARKER))
            .and_then(|()| self.parent.sync());
        if result.is_err() {
            let _ = self.parent.unlink(self.tmp.as_os_str());
        }
        result
    }
}

/// A pair's archive copy written but not yet in place (see [`StateDir::stage_archive`]).
pub struct StagedArchive {
    /// `archive/NAME/` was made for this copy: no other pair is there.
    fresh: bool,
    serial: String,
    parent: crate::fsutil::Dir,
    staging: String,
}

impl StagedArchive {
    /// Renames the copy to `archive/NAME/SERIAL.pem` and makes it the newest of `name`'s
    /// pairs. Its data must be durable by now (a group commit's barrier).
    pub fn publish(self, _state: &StateDir) -> Result<PathBuf, FsError> {
        let dir = &self.parent;
        let file = format!("{}{PAIR_SUFFIX}", self.serial);
        let path = dir.path().join(&file);
        if self.fresh {
            // The directory was made for this copy: nothing to move aside or to be
            // newer than.
            dir.rename(self.staging.as_ref(), file.as_ref())?;
            dir.sync()?;
            return Ok(path);
        }
        // What is there already (nothing followed); the same serial archived before is
        // moved aside (not by an issuance: serials are new).
        let (same, others): (Vec<_>, Vec<_>) = archived_in(dir)?
            .pairs
            .into_iter()
            .partition(|(_, serial)| *serial == self.serial);
        // The file, or else the directory of an earlier version (as `archived_path`).
        let existing = same
            .iter()
            .find(|(entry, _)| *entry == file)
            .or(same.first())
            .map(|(entry, _)| entry.clone());
        if let Some(existing) = existing {
            let aside = format!(".{}{PRUNED_SUFFIX}", self.serial);
            if dir.stat_at(aside.as_ref())?.is_some() {
                remove_entry(&dir.path().join(&aside))?;
            }
            dir.rename(existing.as_ref(), aside.as_ref())?;
        }
        dir.rename(self.staging.as_ref(), file.as_ref())?;
        dir.sync()?;
        if others.is_empty() {
            // Nothing to be newer than: the first pair of this certificate.
            return Ok(path);
        }
        let newest_other = pair_times(dir, others)?.into_iter().map(|(t, _)| t).max();
        let own = dir
            .stat_at(file.as_ref())?
            .ok_or_else(|| io_err(&path, "cannot inspect")(io::ErrorKind::NotFound.into()))?
            .modified;
        if let Some(newest) = newest_other.filter(|t| own <= *t) {
            dir.open_read(file.as_ref())
                .and_then(|f| f.set_modified(newest + std::time::Duration::from_micros(1)))
                .map_err(io_err(&path, "cannot set the time of an archived pair"))?;
        }
        Ok(path)
    }
}

/// What the archive directory `dir` (`archive/NAME/`) holds: its pairs with their
/// times, and what interrupted writes left. Nothing in it is followed: a link there is
/// nothing certkeeper made.
fn archived_in(dir: &crate::fsutil::Dir) -> Result<Archived, FsError> {
    use crate::fsutil::Kind;
    let mut found = Archived::default();
    for (entry, kind) in dir.entries()? {
        let Ok(file_name) = entry.into_string() else {
            continue;
        };
        if !matches!(kind, Kind::Dir | Kind::File) {
            continue;
        }
        if file_name.starts_with('.') {
            if file_name.ends_with(PRUNED_SUFFIX) || file_name.ends_with(STAGING_SUFFIX) {
                found.leftovers.push(file_name);
            }
            continue;
        }
        let serial = match (kind == Kind::Dir, file_name.strip_suffix(PAIR_SUFFIX)) {
            (true, _) => file_name.clone(),
            (false, Some(serial)) => serial.to_string(),
            // The install marker, or a file certkeeper did not write.
            (false, None) => continue,
        };
        found.pairs.push((file_name, serial));
    }
    Ok(found)
}

/// The pairs of `found` with their times, in `dir`; a pair gone since it was listed
/// is left out.
fn pair_times(
    dir: &crate::fsutil::Dir,
    found: Vec<(String, String)>,
) -> Result<Vec<(SystemTime, String)>, FsError> {
    let mut out = Vec::with_capacity(found.len());
    for (entry, serial) in found {
        if let Some(meta) = dir.stat_at(entry.as_ref())? {
            out.push((meta.modified, serial));
        }
    }
    Ok(out)
}

/// The entry of the archived pair `serial` in `dir`: `SERIAL.pem`, or the directory
/// `SERIAL` an earlier version wrote.
fn pair_entry(dir: &crate::fsutil::Dir, serial: &str) -> Result<String, FsError> {
    let file = format!("{serial}{PAIR_SUFFIX}");
    if dir.stat_at(file.as_ref())?.is_none() && dir.stat_at(serial.as_ref())?.is_some() {
        return Ok(serial.to_string());
    }
    Ok(file)
}

/// Removes an archive entry: a pair's file, or a directory an earlier version wrote.
fn remove_entry(path: &Path) -> Result<(), FsError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    result.map_err(io_err(path, "cannot remove an archived pair"))
}

fn is_plain_component(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains('/') && !s.contains('\0')
}

/// Appends to any ledger by this process, counted: a ledger kept open by a batch is
/// good for its next append only if no other append came in between.
static LEDGER_WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The ledger opened for appending, with its size and device.
fn open_ledger_sized(path: &Path) -> Result<(fs::File, u64, u64), FsError> {
    use std::os::unix::fs::MetadataExt;
    let file = open_ledger(path)?;
    let meta = file
        .metadata()
        .map_err(io_err(path, "cannot inspect the ledger"))?;
    Ok((file, meta.len(), meta.dev()))
}

fn open_ledger(path: &Path) -> Result<fs::File, FsError> {
    OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path, "cannot open the ledger"))
}

/// Writes `line` with one `write` on the O_APPEND descriptor and fsyncs it; on any
/// failure the file is cut back to `size`, what it was before.
fn append_whole(
    file: &fs::File,
    path: &Path,
    size: u64,
    line: &[u8],
    dev: u64,
) -> Result<(), FsError> {
    let written = loop {
        match (&*file).write(line) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            other => break other,
        }
    };
    let result = match written {
        Ok(n) if n == line.len() => crate::fsutil::data_sync_or_defer(file, Some(dev)),
        Ok(n) => Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!(
                "short write, {n} of {} bytes (is the disk full?)",
                line.len()
            ),
        )),
        Err(e) => Err(e),
    };
    let Err(source) = result else {
        return Ok(());
    };
    match file.set_len(size).and_then(|()| file.sync_data()) {
        Ok(()) => Err(FsError::Io {
            path: path.to_path_buf(),
            action: "cannot append to the ledger (nothing was written)",
            source,
        }),
        Err(cut) => {
            tracing::error!(path = %path.display(), error = %cut, "cannot cut a failed append back off the ledger; the next append will");
            Err(FsError::Io {
                path: path.to_path_buf(),
                action: "cannot append to the ledger",
                source,
            })
        }
    }
}

/// Makes sure the ledger ends with a newline before an append: a last line without one
/// (a crash or power loss mid-append) is completed when it is a whole entry, and
/// otherwise cut off with a warning, so every line stays one JSON entry. Returns the
/// size after the repair.
fn repair_tail(file: &fs::File, path: &Path, size: u64, dev: u64) -> Result<u64, FsError> {
    if size == 0 {
        return Ok(0);
    }
    let mut last = [0u8; 1];
    file.read_exact_at(&mut last, size - 1)
        .map_err(io_err(path, "cannot read the ledger"))?;
    if last[0] == b'\n' {
        return Ok(size);
    }
    // Find where the last line starts, reading backwards.
    let mut start = 0u64;
    let mut end = size;
    let mut buf = vec![0u8; 8192];
    while end > 0 {
        let from = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..(end - from) as usize];
        file.read_exact_at(chunk, from)
            .map_err(io_err(path, "cannot read the ledger"))?;
        if let Some(i) = chunk.iter().rposition(|&b| b == b'\n') {
            start = from + i as u64 + 1;
            break;
        }
        end = from;
    }
    let mut tail = vec![0u8; (size - start) as usize];
    file.read_exact_at(&mut tail, start)
        .map_err(io_err(path, "cannot read the ledger"))?;
    let line = torn_line_number(path, start);
    if serde_json::from_slice::<LedgerEntry>(&tail).is_ok() {
        tracing::warn!(path = %path.display(), line, "the ledger's last line has no newline (an append was interrupted); completing it");
        append_whole(file, path, size, b"\n", dev)?;
        return Ok(size + 1);
    }
    tracing::warn!(
        path = %path.display(),
        line,
        bytes = tail.len(),
        torn = %String::from_utf8_lossy(&tail[..tail.len().min(200)]),
        "the ledger's last line is torn (an append was interrupted); cutting it off before appending"
    );
    file.set_len(start)
        .and_then(|()| file.sync_data())
        .map_err(io_err(path, "cannot cut a torn line off the ledger"))?;
    Ok(start)
}

/// The 1-based number of the line starting at byte `start` (only after a crash).
fn torn_line_number(path: &Path, start: u64) -> usize {
    fs::read(path)
        .map(|b| {
            b[..(start as usize).min(b.len())]
                .iter()
                .filter(|&&c| c == b'\n')
                .count()
                + 1
        })
        .unwrap_or(0)
}

/// A whole ledger file as text (checked once, not line by line; bytes that are not
/// UTF-8 are replaced); a missing file is normal (not rotated yet), others are reported.
fn read_ledger_file(path: &Path) -> Option<String> {
    match fs::read(path) {
        Ok(bytes) => Some(
            String::from_utf8(bytes)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the ledger");
            None
        }
    }
}

/// The lines of one ledger file, with their 1-based numbers.
struct Lines<'a> {
    lines: Vec<&'a str>,
    /// The file does not end with a newline: its last line is torn.
    torn_tail: bool,
}

impl<'a> Lines<'a> {
    fn new(text: &'a str) -> Lines<'a> {
        let torn_tail = !text.is_empty() && !text.ends_with('\n');
        let body = text.strip_suffix('\n').unwrap_or(text);
        let lines = if text.is_empty() {
            Vec::new()
        } else {
            body.split('\n').collect()
        };
        Lines { lines, torn_tail }
    }

    fn is_torn(&self, number: usize) -> bool {
        self.torn_tail && number == self.lines.len()
    }

    fn forward(&self) -> impl DoubleEndedIterator<Item = (usize, &'a str)> + '_ {
        self.lines.iter().enumerate().map(|(i, l)| (i + 1, *l))
    }

    fn backward(&self) -> impl Iterator<Item = (usize, &'a str)> + '_ {
        self.forward().rev()
    }
}

/// One ledger line, or None (reported) when it is torn or not a ledger entry.
fn parse_line(path: &Path, number: usize, line: &str, torn: bool) -> Option<LedgerEntry> {
    if line.is_empty() {
        return None;
    }
    match serde_json::from_str::<LedgerEntry>(line) {
        Ok(e) => {
            if torn {
                tracing::warn!(path = %path.display(), line = number, "the ledger's last line has no newline (an append was interrupted); it is whole and is used");
            }
            Some(e)
        }
        Err(err) if torn => {
            tracing::warn!(path = %path.display(), line = number, error = %err, "the ledger's last line is torn (an append was interrupted); skipped, the next append cuts it off");
            None
        }
        Err(err) => {
            tracing::warn!(path = %path.display(), line = number, error = %err, "a ledger line is not a ledger entry; skipped");
            None
        }
    }
}

/// The value of a top-level string field as certkeeper writes it (`key` is `"field":"`,
/// no spaces, no escapes in the value), found without parsing the line. Inside JSON
/// strings every quote is escaped, so the key cannot match inside a value. None when
/// absent or escaped: the caller then parses the line.
fn quick_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    let rest = &line[at..];
    let end = rest.find('"')?;
    let value = &rest[..end];
    (!value.contains('\\')).then_some(value)
}

#[cfg(test)]
mod tests;
