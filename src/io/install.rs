//! Installing a certificate's files so that they form a matching pair at every instant:
//! while an install runs, after a SIGKILL or a power loss at any point of it, and after a
//! rollback. Also the rollback itself, and the directories the daemon must watch.
//!
//! Layouts of several files (nginx, apache, separate) live in a store of the certificate
//! next to its `key` file (the most private directory of the pair), `DIR/.certkeeper/NAME/`;
//! the configured paths are symlinks into it, made once:
//!
//! ```text
//! DIR/www.crt -> .certkeeper/www/current/cert.pem   (an absolute target when the live
//! DIR/www.key -> .certkeeper/www/current/key.pem     path is in another directory)
//! DIR/.certkeeper/www/current -> 5f3a…              (replaced by one rename)
//! DIR/.certkeeper/www/5f3a…/cert.pem key.pem        (the pair being served)
//! DIR/.certkeeper/www/91c0…/cert.pem key.pem        (the previous pair, for rollback)
//! ```
//!
//! A new pair is written into a directory of its own (every file created with its owner
//! and mode before the first byte, fsynced, then the directories), and `current` is
//! swapped in one `rename`: every live path changes at the same instant. Live paths that
//! are still regular files (every install made before the store existed) are migrated
//! without a moment of mismatch: the pair they show is copied into the store first and
//! `current` pointed at it, each live path is then swapped for its link (same bytes, mode
//! and owner before and after), and only then does `current` move to the new pair.
//!
//! `combined` and `pkcs12` (one file each) do not use the store: a rename over the one
//! file is already atomic, and the file stays a plain file that the daemon's directory
//! watch sees. A certificate with a symlink of the user's own at a live path (allowed by
//! `follow_symlinks`) is written through that link file by file, as before the store.
//!
//! Must not: follow a symlink inside the store that it did not make; write through a
//! link at a live path that is not its own unless `follow_symlinks` says so; take away a
//! complete pair without putting a complete pair in its place.

use crate::config::CertSpec;
use crate::fsutil::{self, io_err, FileSpec, FsError};
use crate::model::Layout;
use std::fs::{self, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The directory, next to each certificate file, that holds the stores.
pub const STORE_DIR: &str = ".certkeeper";
/// The link in a store that names the pair being served.
const CURRENT: &str = "current";

/// What a rollback did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RolledBack {
    /// The previous pair is served again.
    Restored,
    /// There was no complete previous pair (a first install, or files were missing):
    /// the new, valid pair stays, since a missing file is worse than a new one.
    KeptNew,
}

/// A pair that `install` put in place, with what it replaced.
#[derive(Debug)]
pub struct Installed {
    how: How,
}

#[derive(Debug)]
enum How {
    /// In the store: `current` now names `new`; `previous` is the complete pair it
    /// named before (after a migration: the copy of the old files).
    Store {
        store: Store,
        new: String,
        previous: Option<String>,
    },
    /// Plain files (`combined`, or written through the user's own links), each with
    /// what it held before.
    Files { files: Vec<Previous> },
}

/// What one plain file held before it was replaced.
#[derive(Debug)]
struct Previous {
    /// The path that was written (a link's target when written through a link).
    target: PathBuf,
    /// Bytes, mode and owner; None when the file did not exist.
    content: Option<FileSpec>,
}

/// The store of a certificate: `DIR/.certkeeper/NAME`, DIR being its `cert` file's.
pub fn store_dir(spec: &CertSpec) -> PathBuf {
    store_parent(spec).join(STORE_DIR).join(&spec.name)
}

/// Whether this certificate's layout keeps its files in the store.
pub fn uses_store(spec: &CertSpec) -> bool {
    !matches!(spec.files.layout(), Layout::Combined | Layout::Pkcs12)
}

/// The directory of the store the daemon should watch besides the live paths'
/// directories: the one of the pair being served (a write through a live link changes
/// a file there, which a watch on the live path's directory does not see; its removal
/// shows there too). One watch per certificate: with thousands of certificates every
/// watch counts at start-up. It changes with every install: ask again after each
/// pass. None for layouts that do not use the store, or before the first install.
pub fn watch_dir(spec: &CertSpec) -> Option<PathBuf> {
    if !uses_store(spec) {
        return None;
    }
    let store = Store::of(spec);
    match store.current() {
        Ok(Some(current)) if is_real_dir(&store.dir) => Some(store.dir.join(current)),
        _ => None,
    }
}

/// Whether `dir` is this certificate's store (`store_dir`), without making its path.
pub fn is_store_dir(spec: &CertSpec, dir: &Path) -> bool {
    uses_store(spec)
        && dir.file_name() == Some(std::ffi::OsStr::new(&spec.name))
        && dir.parent().is_some_and(|p| {
            p.file_name() == Some(std::ffi::OsStr::new(STORE_DIR))
                && p.parent() == Some(store_parent(spec))
        })
}

/// The target a live path's link has when certkeeper made it: relative when the live
/// path is in the store's directory (the key's), absolute otherwise.
pub fn link_target(spec: &CertSpec, field: &str, live: &Path) -> PathBuf {
    let rel = Path::new(STORE_DIR)
        .join(&spec.name)
        .join(CURRENT)
        .join(store_file(field));
    if live.parent() == Some(store_parent(spec)) {
        rel
    } else {
        store_parent(spec).join(rel)
    }
}

/// Checks, without writing anything, that `install` could write this certificate's
/// files: no link at a live path that is not ours (unless `follow_symlinks`), nothing
/// but files where files go, directories that exist or can be made, and a store with
/// nothing in it that certkeeper did not make.
pub fn preflight(spec: &CertSpec) -> Result<(), FsError> {
    preflight_live(spec, true).map(|_| ())
}

/// [`preflight`], with what is at each live path, in the order of `paths()`. Without
/// `follow_symlinks`, each live path's directory is reached as a handle (checked for
/// links on the way once per batch, see [`fsutil::Batch`]) and looked at through it.
/// `store`: the store is checked too (an install checks it itself as it opens it).
fn preflight_live(spec: &CertSpec, store: bool) -> Result<Vec<(&Path, Live)>, FsError> {
    let mut through_links = false;
    let mut out = Vec::new();
    for (field, path) in spec.files.paths() {
        let dir = match spec.follow_symlinks {
            true => LiveDir::Unknown,
            false => live_dir(path)?,
        };
        let live = match &dir {
            LiveDir::Open(dir, name) => classify_at(spec, field, path, dir, name)?,
            LiveDir::Absent => Live::Missing,
            LiveDir::Unknown => classify(spec, field, path)?,
        };
        match live {
            Live::Foreign => {
                fsutil::preflight(path, spec.follow_symlinks)?;
                through_links = true;
            }
            Live::Other => {
                return Err(FsError::NotAFile {
                    path: path.to_path_buf(),
                })
            }
            // The directory was opened (it exists), or the walk to it found real
            // directories up to the first that is missing (it can be made).
            Live::Missing | Live::File | Live::Ours if !matches!(dir, LiveDir::Unknown) => {}
            Live::Missing | Live::File | Live::Ours => fsutil::check_parent(path)?,
        }
        out.push((path, live));
    }
    if store && uses_store(spec) && !through_links {
        check_store(spec)?;
    }
    Ok(out)
}

/// A live path's directory, as [`live_dir`] found it.
enum LiveDir<'a> {
    /// Opened, with the file's name in it.
    Open(fsutil::Dir, &'a std::ffi::OsStr),
    /// Not there yet: every directory on the way up to the first missing one is a
    /// real directory (no link, nothing else), so it can be made.
    Absent,
    /// Not looked at this way: the paths are checked one by one.
    Unknown,
}

/// The directory of the live path `path`, reached without following a link on the
/// way (a link there is refused by name, as `check_no_links` does).
fn live_dir(path: &Path) -> Result<LiveDir<'_>, FsError> {
    let Some(name) = path.file_name() else {
        fsutil::check_no_links(path)?;
        return Ok(LiveDir::Unknown);
    };
    match fsutil::Dir::reach(path.parent().unwrap_or(Path::new("/")), None) {
        Ok(dir) => Ok(LiveDir::Open(dir, name)),
        // The walk opened each directory before the missing one without following
        // a link: what `check_no_links` and `check_parent` would ask is answered.
        Err(e) if e.is_not_found() => Ok(LiveDir::Absent),
        Err(e) => Err(e),
    }
}

/// Installs `files` (as `layout::render` makes them, each at one of `spec`'s paths) as
/// the pair `serial`. On error nothing a server would read has changed: the live paths
/// show the pair they showed before (after a migration, through their new links).
pub fn install(spec: &CertSpec, serial: &str, files: &[FileSpec]) -> Result<Installed, FsError> {
    prepare(spec, serial, files)?.publish()
}

/// A new pair written beside the served one, not yet served: [`Prepared::publish`]
/// makes it the served pair in one step. Inside a group commit, the barrier between
/// the two makes its files durable first (for many certificates at once).
#[derive(Debug)]
pub struct Prepared {
    how: Ready,
}

#[derive(Debug)]
enum Ready {
    /// Plain files are written and renamed in place at once (no store).
    Done(Installed),
    /// The pair directory `new` is written; `current` still names `previous`.
    Store {
        store: Store,
        new: String,
        previous: Option<String>,
    },
}

impl Prepared {
    /// Serves the new pair: `current` renamed to it (the store), or nothing left to do.
    pub fn publish(self) -> Result<Installed, FsError> {
        match self.how {
            Ready::Done(installed) => Ok(installed),
            Ready::Store {
                store,
                new,
                previous,
            } => {
                store.point_current(&new)?;
                Ok(Installed {
                    how: How::Store {
                        store,
                        new,
                        previous,
                    },
                })
            }
        }
    }
}

/// Writes a new pair for `spec` without serving it yet (see [`Prepared`]).
pub fn prepare(spec: &CertSpec, serial: &str, files: &[FileSpec]) -> Result<Prepared, FsError> {
    match prepare_once(spec, serial, files) {
        // A directory removed while the batch worked in it (an operator's `rm -rf` of
        // the directory this install restores): reached again from the root and made
        // anew, once.
        Err(e) if e.is_not_found() => {
            tracing::debug!(certificate = %spec.name, error = %e, "a directory was removed during the install; trying once more");
            fsutil::forget_dirs();
            prepare_once(spec, serial, files)
        }
        prepared => prepared,
    }
}

fn prepare_once(spec: &CertSpec, serial: &str, files: &[FileSpec]) -> Result<Prepared, FsError> {
    // The store is checked as it is opened, before anything is written there: a link
    // or a file where its directories go and a `current` that is not ours are refused
    // by `Store::open` and `Store::current` with the errors `check_store` gives.
    let seen = preflight_live(spec, false)?;
    let mut fields: Vec<(&'static str, &FileSpec, Live)> = Vec::new();
    for f in files {
        let (field, live) = spec
            .files
            .paths()
            .into_iter()
            .zip(&seen)
            .find(|((_, p), _)| *p == f.path)
            .map(|((field, _), (_, live))| (field, *live))
            .expect("the layout renders only the certificate's own paths");
        fields.push((field, f, live));
    }
    let done = |installed| Prepared {
        how: Ready::Done(installed),
    };
    // Plain files are renamed into place one by one: each flushed at once.
    if fields.iter().any(|(_, _, l)| *l == Live::Foreign) {
        return fsutil::GroupCommit::durable(|| write_files(&fields, true)).map(done);
    }
    if !uses_store(spec) {
        return fsutil::GroupCommit::durable(|| write_files(&fields, false)).map(done);
    }
    install_in_store(spec, serial, &fields)
}

impl Installed {
    /// Puts the previous pair back when there was a complete one (one rename for the
    /// store), and otherwise keeps the new pair. An error leaves the new pair in place.
    pub fn roll_back(&self) -> Result<RolledBack, FsError> {
        match &self.how {
            How::Store {
                store,
                new,
                previous,
            } => {
                let Some(previous) = previous.as_ref().filter(|p| store.complete(p)) else {
                    return Ok(RolledBack::KeptNew);
                };
                store.point_current(previous)?;
                store.remove_pair(new);
                Ok(RolledBack::Restored)
            }
            How::Files { files } => {
                if files.iter().any(|p| p.content.is_none()) {
                    return Ok(RolledBack::KeptNew);
                }
                for p in files.iter().rev() {
                    p.restore()?;
                }
                Ok(RolledBack::Restored)
            }
        }
    }

    /// Keeps the new pair for good: the store keeps it and the previous pair (until the
    /// next install that is kept) and deletes every other pair, including what
    /// interrupted installs left.
    pub fn commit(self) -> Result<(), FsError> {
        match self.how {
            How::Store {
                store,
                new,
                previous,
            } => {
                let mut keep = vec![new];
                keep.extend(previous);
                store.prune(&keep)
            }
            How::Files { .. } => Ok(()),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Live paths

/// What is at a live path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Live {
    Missing,
    File,
    /// A link certkeeper made: exactly the target `link_target` gives.
    Ours,
    /// Any other link.
    Foreign,
    /// A directory, a socket, ...
    Other,
}

fn classify(spec: &CertSpec, field: &str, path: &Path) -> Result<Live, FsError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Live::Missing),
        Err(e) => Err(io_err(path, "cannot inspect")(e)),
        Ok(m) if m.file_type().is_symlink() => {
            let target = fs::read_link(path).map_err(io_err(path, "cannot read link"))?;
            Ok(classify_link(spec, field, path, &target))
        }
        Ok(m) if m.is_file() => Ok(Live::File),
        Ok(_) => Ok(Live::Other),
    }
}

/// [`classify`] for the entry `name` of `dir`, the live path `path`'s directory.
fn classify_at(
    spec: &CertSpec,
    field: &str,
    path: &Path,
    dir: &fsutil::Dir,
    name: &std::ffi::OsStr,
) -> Result<Live, FsError> {
    use fsutil::Kind;
    Ok(match dir.stat_at(name)?.map(|e| e.kind) {
        None => Live::Missing,
        // Removed between the two looks: missing, as the next look would find it.
        Some(Kind::Link) => match dir.read_link_at(name) {
            Ok(target) => classify_link(spec, field, path, &target),
            Err(e) if e.is_not_found() => Live::Missing,
            Err(e) => return Err(e),
        },
        Some(Kind::File) => Live::File,
        Some(_) => Live::Other,
    })
}

/// What a link at a live path is, by its target.
fn classify_link(spec: &CertSpec, field: &str, path: &Path, target: &Path) -> Live {
    if target == link_target(spec, field, path) {
        Live::Ours
    } else if is_store_link(target) {
        // A link certkeeper made into another store (the certificate was renamed or its
        // key moved): nothing the user made; replaced like a missing file.
        Live::Missing
    } else {
        Live::Foreign
    }
}

/// Whether a link's target has the shape of certkeeper's own links:
/// `[…/].certkeeper/NAME/current/FILE.pem`.
pub fn is_store_link(target: &Path) -> bool {
    let parts: Vec<&std::ffi::OsStr> = target.iter().collect();
    let n = parts.len();
    n >= 4
        && parts[n - 4] == STORE_DIR
        && parts[n - 2] == CURRENT
        && ["cert.pem", "chain.pem", "fullchain.pem", "key.pem"]
            .iter()
            .any(|f| parts[n - 1] == *f)
}

/// Puts our link at `live` (a link made beside it, renamed over it; made in place
/// when nothing was there: `missing`); `follow`: the user allows links among its
/// directories. Returns the directory, which the caller fsyncs (once for all the
/// links it makes there).
fn link(live: &Path, target: &Path, follow: bool, missing: bool) -> Result<fsutil::Dir, FsError> {
    let (dir, name) = match follow {
        true => fsutil::Dir::of_file(live, 0o755, true)?,
        false => {
            let name = live.file_name().ok_or_else(|| FsError::NotAFile {
                path: live.to_path_buf(),
            })?;
            let parent = live.parent().unwrap_or(Path::new("/"));
            (fsutil::Dir::reach(parent, Some(0o755))?, name)
        }
    };
    match missing {
        true => dir.put_link(name, target)?,
        false => dir.replace_link(name, target)?,
    }
    Ok(dir)
}

/// Reads a file, with its mode and owner, without following a link at its last
/// component; None when missing.
fn read_nofollow(path: &Path) -> Result<Option<FileSpec>, FsError> {
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(
            nix::fcntl::OFlag::O_NOFOLLOW.bits()
                | nix::fcntl::OFlag::O_NONBLOCK.bits()
                | nix::fcntl::OFlag::O_CLOEXEC.bits(),
        )
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(path, "cannot read")(e)),
    };
    let meta = file.metadata().map_err(io_err(path, "cannot inspect"))?;
    if !meta.is_file() {
        return Err(FsError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mut bytes = Zeroizing::new(Vec::with_capacity(meta.len() as usize));
    file.read_to_end(&mut bytes)
        .map_err(io_err(path, "cannot read"))?;
    Ok(Some(as_spec(path, bytes, &meta)))
}

/// A file's bytes, mode and owner as a `FileSpec` for `path`.
fn as_spec(path: &Path, bytes: Zeroizing<Vec<u8>>, meta: &Metadata) -> FileSpec {
    FileSpec {
        path: path.to_path_buf(),
        bytes,
        mode: meta.mode() & 0o7777,
        uid: Some(meta.uid()),
        gid: Some(meta.gid()),
        follow_symlinks: false,
    }
}

// ---------------------------------------------------------------------------------------
// Plain files: `combined`, and pairs written through the user's own links

/// Writes each file by rename, in the order given (the key first). `through_links`:
/// a foreign link at a live path is written through (one level, as `follow_symlinks`
/// has always meant); our own link is replaced by the file. When one write fails, the
/// files already written are put back.
fn write_files(
    fields: &[(&'static str, &FileSpec, Live)],
    through_links: bool,
) -> Result<Installed, FsError> {
    let mut done: Vec<Previous> = Vec::new();
    for (_, f, live) in fields {
        let target = if *live == Live::Foreign && through_links {
            fsutil::resolve_target(&f.path, true)?
        } else {
            f.path.clone()
        };
        // Our own link here (the layout was one of the store's) has no previous pair
        // of this layout behind it.
        let content = match live {
            Live::Ours => None,
            _ => read_nofollow(&target)?,
        };
        let previous = Previous { target, content };
        if let Err(e) = fsutil::replace_with(&previous.target, f) {
            for p in done.iter().rev() {
                if let Err(re) = p.restore_or_remove() {
                    tracing::error!(path = %p.target.display(), error = %re, "could not restore a file after a failed install");
                }
            }
            return Err(e);
        }
        done.push(previous);
    }
    Ok(Installed {
        how: How::Files { files: done },
    })
}

impl Previous {
    fn restore(&self) -> Result<(), FsError> {
        match &self.content {
            Some(spec) => fsutil::replace_with(&self.target, spec),
            None => Ok(()),
        }
    }

    /// Undoes one write of an install that failed half-way.
    fn restore_or_remove(&self) -> Result<(), FsError> {
        if self.content.is_some() {
            return self.restore();
        }
        match fs::remove_file(&self.target) {
            Ok(()) => fsutil::sync_dir(self.target.parent().unwrap_or(Path::new("/"))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.target, "cannot remove")(e)),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The store

/// Where the store lives: beside the key, the most private file of the pair, so that a
/// protected key directory (`/etc/ssl/private`, 0710) keeps protecting the key; beside
/// the certificate for layouts without a key file.
fn store_parent(spec: &CertSpec) -> &Path {
    spec.files
        .key()
        .unwrap_or(spec.files.cert())
        .parent()
        .unwrap_or(Path::new("/"))
}

/// The file name of a field inside a pair's directory.
fn store_file(field: &str) -> &'static str {
    match field {
        "cert" => "cert.pem",
        "chain" => "chain.pem",
        "fullchain" => "fullchain.pem",
        _ => "key.pem",
    }
}

fn is_real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
}

/// A pair directory's name: one plain component that is not hidden.
fn pair_name(s: &str) -> bool {
    !s.is_empty() && !s.starts_with('.') && !s.contains('/') && s != CURRENT
}

fn store_error(path: &Path, problem: &'static str) -> FsError {
    FsError::Store {
        path: path.to_path_buf(),
        problem,
    }
}

/// `.certkeeper` and the store are real directories or absent; `current`, when
/// present, is a link to a pair directory of the store.
fn check_store(spec: &CertSpec) -> Result<(), FsError> {
    // Through a handle: `.certkeeper` and the store are opened without following a link
    // (nor above them, unless `follow_symlinks`), and a link or a file there is refused
    // by name.
    let store = Store::of(spec);
    match store.handle() {
        Ok(handle) => store.current_in(&handle).map(|_| ()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

#[derive(Debug)]
struct Store {
    dir: PathBuf,
    /// The files a complete pair holds (`cert.pem`, `key.pem`, ...).
    files: Vec<&'static str>,
    /// Whether the directories above `.certkeeper` may be reached through links (the
    /// certificate's `follow_symlinks`); the store's own never are.
    follow: bool,
    /// The store's directory was made by this install: it holds only what the install
    /// puts there (nothing to list for leftovers, no `current` before it makes one).
    fresh: bool,
}

impl Store {
    /// The store of `spec`, as a path: nothing is read or made.
    fn of(spec: &CertSpec) -> Store {
        Store {
            dir: store_dir(spec),
            files: spec
                .files
                .layout()
                .needs()
                .iter()
                .map(|f| store_file(f))
                .collect(),
            follow: spec.follow_symlinks,
            fresh: false,
        }
    }

    /// The store's directory, opened without following a link inside the store (nor
    /// above it, unless `follow`): every file and link is made through this.
    fn handle(&self) -> Result<fsutil::Dir, FsError> {
        self.reach(None)
    }

    /// The store's directory as [`Store::handle`] opens it; with `create`, made where
    /// missing. Without `follow`, reached from the handles of the batch (see
    /// [`fsutil::Dir::reach`]); a link or a file where `.certkeeper` or the store
    /// should be is refused as what it is.
    fn reach(&self, create: Option<u32>) -> Result<fsutil::Dir, FsError> {
        let top = self.dir.parent().expect("under .certkeeper");
        let reached = if self.follow {
            let parent = top.parent().expect("beside a certificate file");
            match create {
                Some(mode) => fsutil::Dir::open_or_create(parent, mode, true),
                None => fsutil::Dir::open(parent, true),
            }
            .and_then(|parent| parent.subdir(STORE_DIR, create))
            .and_then(|top| {
                top.subdir(
                    self.dir
                        .file_name()
                        .and_then(|n| n.to_str())
                        .expect("a certificate name"),
                    create,
                )
            })
        } else {
            fsutil::Dir::reach(&self.dir, create)
        };
        reached.map_err(|e| match e {
            FsError::LinkInPath { link, .. } if link == top || link == self.dir => {
                store_error(&link, "is a symbolic link")
            }
            FsError::NotADirectory { path } if path == top || path == self.dir => {
                store_error(&path, "is not a directory")
            }
            e => e,
        })
    }

    /// Makes the store's directories (0755: servers that read the public certificate
    /// as another user must traverse them) where missing, following no link.
    fn open(spec: &CertSpec) -> Result<Store, FsError> {
        let mut store = Store::of(spec);
        store.fresh = store.reach(Some(0o755))?.made();
        Ok(store)
    }

    /// The pair `current` names, when that directory exists. A `current` that is not a
    /// link to a pair directory of this store was not made by certkeeper: refused.
    fn current(&self) -> Result<Option<String>, FsError> {
        match self.handle() {
            Ok(store) => self.current_in(&store),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Store::current`], looked up through the store's handle.
    fn current_in(&self, store: &fsutil::Dir) -> Result<Option<String>, FsError> {
        let link = self.dir.join(CURRENT);
        match store.stat_at(CURRENT.as_ref())? {
            None => return Ok(None),
            Some(e) if e.kind != fsutil::Kind::Link => {
                return Err(store_error(&link, "is not a symbolic link"))
            }
            Some(_) => {}
        }
        let target = store.read_link_at(CURRENT.as_ref())?;
        let name = target
            .to_str()
            .filter(|n| pair_name(n))
            .ok_or_else(|| store_error(&link, "points outside the store"))?;
        match store.stat_at(name.as_ref())? {
            None => Ok(None),
            Some(e) if e.kind == fsutil::Kind::Dir => Ok(Some(name.to_string())),
            Some(_) => Err(store_error(&self.dir.join(name), "is not a directory")),
        }
    }

    /// Whether a pair directory holds every file of the pair, each a regular file.
    fn complete(&self, name: &str) -> bool {
        let pair = self.handle().and_then(|store| store.subdir(name, None));
        !self.files.is_empty()
            && pair.is_ok_and(|pair| {
                self.files.iter().all(|f| {
                    pair.stat_at(f.as_ref())
                        .is_ok_and(|e| e.is_some_and(|e| e.kind == fsutil::Kind::File))
                })
            })
    }

    /// A free name for a new pair directory, `base` or `base-N`. A leftover directory of
    /// an interrupted install under that name is removed; the ones in `keep` never are.
    fn fresh_name(&self, base: &str, keep: &[&str]) -> Result<String, FsError> {
        let base = if pair_name(base) { base } else { "pair" };
        for i in 0.. {
            let name = if i == 0 {
                base.to_string()
            } else {
                format!("{base}-{i}")
            };
            if keep.contains(&name.as_str()) {
                continue;
            }
            if self.fresh {
                // Only what this install made is there, and it is in `keep`.
                return Ok(name);
            }
            let path = self.dir.join(&name);
            let found = match self.handle()?.stat_at(name.as_ref()) {
                Ok(e) => Ok(e.map(|e| e.kind == fsutil::Kind::Dir)),
                Err(FsError::Io { source, .. }) => Err(source),
                Err(e) => return Err(e),
            };
            match found {
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(name),
                Ok(None) => return Ok(name),
                Err(e) => return Err(io_err(&path, "cannot inspect")(e)),
                Ok(Some(true)) => {
                    fs::remove_dir_all(&path).map_err(io_err(&path, "cannot remove"))?;
                    return Ok(name);
                }
                Ok(Some(false)) => {
                    fs::remove_file(&path).map_err(io_err(&path, "cannot remove"))?;
                    return Ok(name);
                }
            }
        }
        unreachable!("an unbounded search ends")
    }

    /// Writes a pair directory: each file created with owner and mode before its first
    /// byte and fsynced, then the directory and the store fsynced. On error the
    /// directory is removed again.
    fn write_pair(&self, name: &str, files: &[(&'static str, &FileSpec)]) -> Result<(), FsError> {
        let store = self.handle()?;
        let pair = store.make_dir(name, 0o755)?;
        let result = (|| {
            for (file, spec) in files {
                pair.create_file(std::ffi::OsStr::new(file), spec)?;
            }
            pair.sync()?;
            store.sync()
        })();
        if result.is_err() {
            let _ = fs::remove_dir_all(self.dir.join(name));
        }
        result
    }

    /// Points `current` at `name`: a new link renamed over the old one (one atomic
    /// step; in a store this install made, made in place), then the store fsynced.
    fn point_current(&self, name: &str) -> Result<(), FsError> {
        let store = self.handle()?;
        let current = std::ffi::OsStr::new(CURRENT);
        match self.fresh {
            true => store.put_link(current, Path::new(name))?,
            false => store.replace_link(current, Path::new(name))?,
        }
        store.sync()
    }

    /// Reads one file of a pair directory (no link followed).
    fn read(&self, name: &str, file: &str) -> Result<Option<FileSpec>, FsError> {
        read_nofollow(&self.dir.join(name).join(file))
    }

    fn remove_pair(&self, name: &str) {
        let dir = self.dir.join(name);
        if let Err(e) = fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot remove a pair that is no longer used");
        }
    }

    /// Removes every pair directory not in `keep` (superseded pairs, and what
    /// interrupted installs left) and stray temporary links.
    fn prune(&self, keep: &[String]) -> Result<(), FsError> {
        if self.fresh {
            // Made by this install: it holds the new pair and what it replaced, no more.
            return Ok(());
        }
        // One listing through the store's handle for both.
        let store = self.handle()?;
        for (name, kind) in store.entries()? {
            let Some(name) = name.to_str() else { continue };
            if kind == fsutil::Kind::Link && is_temp_name(name) {
                let _ = store.unlink(name.as_ref());
            } else if kind == fsutil::Kind::Dir
                && pair_name(name)
                && !keep.iter().any(|k| k == name)
            {
                self.remove_pair(name);
            }
        }
        Ok(())
    }

    /// Removes the temporary links a killed install left (only names it makes itself;
    /// the caller holds the state lock, so no live install owns them).
    fn remove_temp_links(&self) {
        let Ok(store) = self.handle() else { return };
        for (name, kind) in store.entries().unwrap_or_default() {
            if kind == fsutil::Kind::Link && name.to_str().is_some_and(is_temp_name) {
                let _ = store.unlink(&name);
            }
        }
    }
}

/// Whether `name` is one certkeeper gives its temporary files and links.
fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(".certkeeper-tmp-")
}

/// The serial of the first certificate in `bytes`, to name a migrated pair after.
fn serial_in(bytes: &[u8]) -> Option<String> {
    crate::x509::parse_pem(bytes)
        .ok()?
        .into_iter()
        .find_map(|item| match item {
            crate::x509::PemItem::Cert(c) => Some(c.serial),
            _ => None,
        })
}

/// Copies the pair the live paths show (plain files, or links into the store) into a
/// pair directory of the store and points `current` at it; returns its name.
fn migrate(
    spec: &CertSpec,
    store: &Store,
    fields: &[(&'static str, &FileSpec, Live)],
    previous: Option<&str>,
) -> Result<String, FsError> {
    let mut copies: Vec<(&'static str, FileSpec)> = Vec::new();
    for (field, f, live) in fields {
        let file = store_file(field);
        let content = match live {
            Live::File => read_nofollow(&f.path)?,
            Live::Ours => match previous {
                Some(current) => store.read(current, file)?,
                None => None,
            },
            _ => None,
        };
        if let Some(copy) = content {
            copies.push((file, copy));
        }
    }
    let base = copies
        .iter()
        .find(|(file, _)| *file == "cert.pem")
        .and_then(|(_, c)| serial_in(&c.bytes))
        .unwrap_or_else(|| "pair".to_string());
    let keep: Vec<&str> = previous.into_iter().collect();
    let name = store.fresh_name(&base, &keep)?;
    let refs: Vec<(&'static str, &FileSpec)> = copies.iter().map(|(n, s)| (*n, s)).collect();
    store.write_pair(&name, &refs)?;
    store.point_current(&name)?;
    tracing::info!(certificate = %spec.name, pair = %name, store = %store.dir.display(), "moved the installed files into the store");
    Ok(name)
}

fn install_in_store(
    spec: &CertSpec,
    serial: &str,
    fields: &[(&'static str, &FileSpec, Live)],
) -> Result<Prepared, FsError> {
    let mut store = Store::open(spec)?;
    let mut previous = None;
    if !store.fresh {
        store.remove_temp_links();
        previous = store.current()?;
    }

    // Migration: a live path that is a plain file shows part of the old pair. Copy the
    // pair the live paths show into the store and point `current` at it; then every
    // link made below shows what its path showed before. Flushed step by step: the
    // copy must be durable before `current` names it.
    if fields.iter().any(|(_, _, l)| *l == Live::File) {
        previous = Some(fsutil::GroupCommit::durable(|| {
            migrate(spec, &store, fields, previous.as_deref())
        })?);
        // The copy may be incomplete (then not kept as the previous pair): the next
        // prune looks at what the store holds.
        store.fresh = false;
    }
    let mut linked: Vec<fsutil::Dir> = Vec::new();
    for (field, f, live) in fields {
        if *live != Live::Ours {
            let dir = link(
                &f.path,
                &link_target(spec, field, &f.path),
                spec.follow_symlinks,
                *live == Live::Missing,
            )?;
            if !linked.iter().any(|d| d.path() == dir.path()) {
                linked.push(dir);
            }
        }
    }
    // The links must last before `current` moves on to the new pair.
    for dir in linked {
        dir.sync()?;
    }

    let keep: Vec<&str> = previous.iter().map(String::as_str).collect();
    let new = store.fresh_name(serial, &keep)?;
    let files: Vec<(&'static str, &FileSpec)> = fields
        .iter()
        .map(|(field, f, _)| (store_file(field), *f))
        .collect();
    store.write_pair(&new, &files)?;
    let previous = previous.filter(|p| store.complete(p));
    Ok(Prepared {
        how: Ready::Store {
            store,
            new,
            previous,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::Permissions;
    use std::os::unix::fs::PermissionsExt;

    /// A certificate of `layout` named `www` whose files are in `dir` (the key in
    /// `key_dir` when given), parsed from YAML like any configuration.
    fn spec_in(dir: &Path, layout: &str, key_dir: Option<&Path>, extra: &str) -> CertSpec {
        let d = dir.display();
        let k = key_dir.unwrap_or(dir).display();
        let files = match layout {
            "nginx" => format!("{{ layout: nginx, cert: {d}/www.crt, key: {k}/www.key }}"),
            "apache" => format!(
                "{{ layout: apache, cert: {d}/www.crt, chain: {d}/www.chain.crt, key: {k}/www.key }}"
            ),
            "separate" => format!(
                "{{ layout: separate, cert: {d}/www.crt, chain: {d}/www.chain.crt, fullchain: {d}/www.full.crt, key: {k}/www.key }}"
            ),
            _ => format!("{{ layout: combined, cert: {d}/www.pem }}"),
        };
        let yaml = format!(
            "state_dir: {d}/state\ncertificates:\n  - name: www\n    sans: [www.example.internal]\n    files: {files}\n{extra}"
        );
        let mut config = crate::config::parse(&yaml, Path::new("test.yaml")).expect("valid");
        config.certificates.remove(0)
    }

    fn spec(dir: &Path, layout: &str) -> CertSpec {
        spec_in(dir, layout, None, "")
    }

    /// The files of pair `tag` for `spec`: every byte names the tag and the field, so
    /// that a mixed pair shows.
    fn files(spec: &CertSpec, tag: &str) -> Vec<FileSpec> {
        spec.files
            .paths()
            .into_iter()
            .map(|(field, p)| FileSpec {
                path: p.to_path_buf(),
                bytes: Zeroizing::new(format!("{tag} {field}\n").into_bytes()),
                mode: if field == "key" { 0o600 } else { 0o644 },
                uid: None,
                gid: None,
                follow_symlinks: spec.follow_symlinks,
            })
            .collect()
    }

    /// What every live path shows, in the order of `paths()`.
    fn shown(spec: &CertSpec) -> Vec<String> {
        spec.files
            .paths()
            .into_iter()
            .map(|(_, p)| fs::read_to_string(p).unwrap_or_else(|_| "missing".into()))
            .collect()
    }

    fn pair(spec: &CertSpec, tag: &str) -> Vec<String> {
        spec.files
            .paths()
            .into_iter()
            .map(|(field, _)| format!("{tag} {field}\n"))
            .collect()
    }

    fn pair_dirs(spec: &CertSpec) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(store_dir(spec))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n != CURRENT)
            .collect();
        names.sort();
        names
    }

    /// Every path under `root` with a link's target or a file's bytes and mode.
    fn tree(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut entries: Vec<_> = fs::read_dir(root).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.file_type().is_symlink() {
                out.push(format!(
                    "{} -> {}",
                    p.display(),
                    fs::read_link(&p).unwrap().display()
                ));
            } else if m.is_dir() {
                out.push(format!("{}/ {:o}", p.display(), m.mode() & 0o7777));
                out.extend(tree(&p));
            } else {
                let bytes = fs::read_to_string(&p).unwrap();
                out.push(format!("{} {:o} {bytes:?}", p.display(), m.mode() & 0o7777));
            }
        }
        out
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o7777
    }

    fn is_link(p: &Path) -> bool {
        fs::symlink_metadata(p).unwrap().file_type().is_symlink()
    }

    #[test]
    fn first_install_makes_the_store_and_relative_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        for layout in ["nginx", "apache", "separate"] {
            let s = spec(&dir, layout);
            let i = install(&s, "aa01", &files(&s, "A")).unwrap();
            assert_eq!(shown(&s), pair(&s, "A"), "{layout}");
            for (field, p) in s.files.paths() {
                assert_eq!(
                    fs::read_link(p).unwrap(),
                    Path::new(".certkeeper/www/current").join(store_file(field))
                );
                let want = if field == "key" { 0o600 } else { 0o644 };
                assert_eq!(mode(p), want, "{}", p.display());
            }
            assert_eq!(
                fs::read_link(store_dir(&s).join(CURRENT)).unwrap(),
                Path::new("aa01")
            );
            assert_eq!(mode(&dir.join(STORE_DIR)), 0o755);
            assert_eq!(mode(&store_dir(&s)), 0o755);
            assert_eq!(mode(&store_dir(&s).join("aa01")), 0o755);
            // Nothing to go back to: the new pair stays.
            assert_eq!(i.roll_back().unwrap(), RolledBack::KeptNew);
            assert_eq!(shown(&s), pair(&s, "A"));
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn a_new_pair_replaces_the_old_one_and_rolls_back_in_one_step() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path(), "separate");
        install(&s, "aa", &files(&s, "A"))
            .unwrap()
            .commit()
            .unwrap();
        install(&s, "bb", &files(&s, "B"))
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(pair_dirs(&s), ["aa", "bb"], "the previous pair is kept");
        let before = tree(tmp.path());
        let c = install(&s, "cc", &files(&s, "C")).unwrap();
        assert_eq!(shown(&s), pair(&s, "C"));
        assert_eq!(c.roll_back().unwrap(), RolledBack::Restored);
        assert_eq!(shown(&s), pair(&s, "B"));
        // Everything is as it was before the install that was rolled back.
        assert_eq!(tree(tmp.path()), before);
        // A kept install drops what is older than its previous pair.
        install(&s, "dd", &files(&s, "D"))
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(pair_dirs(&s), ["bb", "dd"]);
        assert_eq!(shown(&s), pair(&s, "D"));
    }

    #[test]
    fn plain_files_are_migrated_with_their_bytes_modes_and_a_rollback() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path(), "apache");
        for (field, p) in s.files.paths() {
            fs::write(p, format!("OLD {field}\n")).unwrap();
            fs::set_permissions(p, Permissions::from_mode(0o640)).unwrap();
        }
        let i = install(&s, "bb", &files(&s, "B")).unwrap();
        assert_eq!(shown(&s), pair(&s, "B"));
        for (_, p) in s.files.paths() {
            assert!(is_link(p), "{}", p.display());
        }
        assert_eq!(i.roll_back().unwrap(), RolledBack::Restored);
        assert_eq!(shown(&s), pair(&s, "OLD"));
        for (_, p) in s.files.paths() {
            assert_eq!(mode(p), 0o640, "the old mode comes back with the old pair");
        }
        // The old files had no certificate to name the pair after.
        assert_eq!(pair_dirs(&s), ["pair"]);
    }

    #[test]
    fn an_incomplete_old_pair_is_not_restored() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path(), "nginx");
        fs::write(s.files.cert(), "OLD cert\n").unwrap();
        let i = install(&s, "bb", &files(&s, "B")).unwrap();
        assert_eq!(i.roll_back().unwrap(), RolledBack::KeptNew);
        assert_eq!(shown(&s), pair(&s, "B"));
        i.commit().unwrap();
        assert_eq!(pair_dirs(&s), ["bb"]);
    }

    #[test]
    fn a_replaced_or_deleted_link_is_made_again() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path(), "nginx");
        install(&s, "aa", &files(&s, "A"))
            .unwrap()
            .commit()
            .unwrap();
        let key = s.files.key().unwrap().to_path_buf();
        fs::remove_file(&key).unwrap();
        // Someone put a plain copy of the certificate where the link was.
        let copy = fs::read(s.files.cert()).unwrap();
        fs::remove_file(s.files.cert()).unwrap();
        fs::write(s.files.cert(), copy).unwrap();
        let i = install(&s, "bb", &files(&s, "B")).unwrap();
        assert!(is_link(&key) && is_link(s.files.cert()));
        assert_eq!(shown(&s), pair(&s, "B"));
        // The pair the live paths showed (the certificate only) was not complete.
        assert_eq!(i.roll_back().unwrap(), RolledBack::KeptNew);
    }

    #[test]
    fn a_key_in_another_directory_keeps_the_store_beside_it() {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        let private = tmp.path().join("private");
        let s = spec_in(&certs, "nginx", Some(&private), "");
        install(&s, "aa", &files(&s, "A")).unwrap();
        let key = s.files.key().unwrap().to_path_buf();
        // The key stays in its own (private) directory; the certificate points there.
        assert_eq!(
            fs::read_link(&key).unwrap(),
            Path::new(".certkeeper/www/current/key.pem")
        );
        assert_eq!(
            fs::read_link(s.files.cert()).unwrap(),
            private.join(".certkeeper/www/current/cert.pem")
        );
        assert!(!certs.join(STORE_DIR).exists());
        assert_eq!(mode(&key), 0o600);
        assert_eq!(shown(&s), pair(&s, "A"));
        // Our own links are not "unexpected symlinks".
        preflight(&s).unwrap();
        install(&s, "bb", &files(&s, "B")).unwrap();
        assert_eq!(shown(&s), pair(&s, "B"));
    }

    #[test]
    fn links_into_the_store_of_a_renamed_certificate_are_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let old = spec_in(tmp.path(), "nginx", None, "");
        install(&old, "aa", &files(&old, "A")).unwrap();
        // The same paths under another name: the old links are certkeeper's, not the
        // user's, and are replaced rather than refused.
        let mut renamed = old.clone();
        renamed.name = "web".into();
        preflight(&renamed).unwrap();
        install(&renamed, "bb", &files(&renamed, "B")).unwrap();
        assert_eq!(shown(&renamed), pair(&renamed, "B"));
        assert_eq!(
            fs::read_link(renamed.files.cert()).unwrap(),
            Path::new(".certkeeper/web/current/cert.pem")
        );
        assert!(is_store_link(Path::new(
            "/x/.certkeeper/www/current/key.pem"
        )));
        assert!(!is_store_link(Path::new(
            "/x/.certkeeper/www/current/other"
        )));
        assert!(!is_store_link(Path::new("/etc/ssl/real.crt")));
    }

    #[test]
    fn foreign_links_are_refused_or_written_through() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real.crt");
        fs::write(&real, "OLD cert\n").unwrap();
        let s = spec(tmp.path(), "nginx");
        std::os::unix::fs::symlink(&real, s.files.cert()).unwrap();
        let err = install(&s, "aa", &files(&s, "A")).unwrap_err();
        assert!(matches!(err, FsError::Symlink { .. }), "{err}");
        assert!(!tmp.path().join(STORE_DIR).exists(), "nothing written");
        assert!(!s.files.key().unwrap().exists());

        let s = spec_in(tmp.path(), "nginx", None, "    follow_symlinks: true\n");
        fs::write(s.files.key().unwrap(), "OLD key\n").unwrap();
        let i = install(&s, "aa", &files(&s, "A")).unwrap();
        assert!(is_link(s.files.cert()), "the user's link stays");
        assert_eq!(fs::read_to_string(&real).unwrap(), "A cert\n");
        assert!(!tmp.path().join(STORE_DIR).exists(), "no store");
        assert_eq!(i.roll_back().unwrap(), RolledBack::Restored);
        assert_eq!(fs::read_to_string(&real).unwrap(), "OLD cert\n");
        assert_eq!(shown(&s), pair(&s, "OLD"));
    }

    #[test]
    fn links_inside_the_store_that_we_did_not_make_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path(), "nginx");
        install(&s, "aa", &files(&s, "A")).unwrap();
        let current = store_dir(&s).join(CURRENT);
        fs::remove_file(&current).unwrap();
        std::os::unix::fs::symlink(tmp.path(), &current).unwrap();
        let err = install(&s, "bb", &files(&s, "B")).unwrap_err();
        assert!(matches!(err, FsError::Store { .. }), "{err}");
        assert!(
            err.to_string().contains("points outside the store"),
            "{err}"
        );

        let other = tempfile::tempdir().unwrap();
        let s = spec(other.path(), "apache");
        let elsewhere = other.path().join("elsewhere");
        fs::create_dir(&elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, other.path().join(STORE_DIR)).unwrap();
        let err = preflight(&s).unwrap_err();
        assert!(err.to_string().contains("is a symbolic link"), "{err}");
        assert!(install(&s, "aa", &files(&s, "A")).is_err());
        assert_eq!(fs::read_dir(&elsewhere).unwrap().count(), 0);
    }

    #[test]
    fn a_store_behind_a_linked_directory_is_used_only_when_links_are_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, tmp.path().join("linked")).unwrap();
        let linked = tmp.path().join("linked");
        for batch in [false, true] {
            let _batch = batch.then(fsutil::Batch::begin);
            // (The configuration refuses it already; the install must too.)
            let mut s = spec_in(&linked, "nginx", None, "    follow_symlinks: true\n");
            s.follow_symlinks = false;
            let err = install(&s, "aa", &files(&s, "A")).unwrap_err();
            assert!(matches!(err, FsError::LinkInPath { .. }), "{err}");
            assert!(!real.join(STORE_DIR).exists(), "nothing written");
        }
        let s = spec_in(&linked, "nginx", None, "    follow_symlinks: true\n");
        install(&s, "aa", &files(&s, "A"))
            .unwrap()
            .commit()
            .unwrap();
        let i = install(&s, "bb", &files(&s, "B")).unwrap();
        assert_eq!(shown(&s), pair(&s, "B"));
        assert!(real.join(".certkeeper/www/bb/key.pem").is_file());
        assert_eq!(i.roll_back().unwrap(), RolledBack::Restored);
        assert_eq!(shown(&s), pair(&s, "A"));
    }

    #[test]
    fn a_directory_removed_under_a_batch_is_made_again() {
        let tmp = tempfile::tempdir().unwrap();
        let tls = tmp.path().join("tls");
        for layout in ["nginx", "combined"] {
            let s = spec(&tls, layout);
            let _batch = fsutil::Batch::begin();
            install(&s, "aa", &files(&s, "A"))
                .unwrap()
                .commit()
                .unwrap();
            // The batch holds handles to `tls` and the store: both removed now.
            fs::remove_dir_all(&tls).unwrap();
            install(&s, "bb", &files(&s, "B"))
                .unwrap()
                .commit()
                .unwrap();
            assert_eq!(shown(&s), pair(&s, "B"), "{layout}");
        }
    }

    #[test]
    fn combined_stays_one_plain_file() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path(), "combined");
        let first = install(&s, "aa", &files(&s, "A")).unwrap();
        assert_eq!(first.roll_back().unwrap(), RolledBack::KeptNew);
        assert!(!is_link(s.files.cert()));
        let i = install(&s, "bb", &files(&s, "B")).unwrap();
        assert_eq!(shown(&s), pair(&s, "B"));
        assert_eq!(i.roll_back().unwrap(), RolledBack::Restored);
        assert_eq!(shown(&s), pair(&s, "A"));
        assert!(!tmp.path().join(STORE_DIR).exists());
        assert!(watch_dir(&s).is_none());
        assert!(!is_store_dir(&s, &store_dir(&s)));
    }

    #[test]
    fn leftovers_of_a_killed_install_are_removed_by_the_next_kept_one() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path(), "nginx");
        install(&s, "aa", &files(&s, "A"))
            .unwrap()
            .commit()
            .unwrap();
        let store = store_dir(&s);
        // A half-written pair and a temporary link, as a SIGKILL leaves them.
        fs::create_dir(store.join("dead")).unwrap();
        fs::write(store.join("dead/key.pem"), "half").unwrap();
        std::os::unix::fs::symlink("dead", store.join(".current.certkeeper-tmp-0a0b")).unwrap();
        install(&s, "bb", &files(&s, "B"))
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(pair_dirs(&s), ["aa", "bb"]);
        assert_eq!(shown(&s), pair(&s, "B"));
    }

    #[test]
    fn watch_dir_names_the_served_pair() {
        let tmp = tempfile::tempdir().unwrap();
        let s = spec(tmp.path(), "apache");
        assert_eq!(watch_dir(&s), None, "no store yet");
        install(&s, "aa", &files(&s, "A")).unwrap();
        assert_eq!(watch_dir(&s), Some(store_dir(&s).join("aa")));
        install(&s, "bb", &files(&s, "B")).unwrap();
        assert_eq!(watch_dir(&s), Some(store_dir(&s).join("bb")));
        assert!(is_store_dir(&s, &store_dir(&s)));
        assert!(!is_store_dir(&s, &store_dir(&s).join("bb")));
        assert!(!is_store_dir(
            &s,
            &tmp.path().join("other").join(STORE_DIR).join(&s.name)
        ));
        let mut other = s.clone();
        other.name = "other".into();
        assert!(!is_store_dir(&other, &store_dir(&s)));
    }
}
