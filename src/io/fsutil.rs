//! Safe file writes: a temporary file in the target's directory, created with a
//! restrictive mode, given its final owner and mode, fsynced, renamed into place, and
//! the directory fsynced. Symlinks at targets are refused unless explicitly allowed.

use std::collections::HashMap;
use std::fs::{self, File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// One file to write.
#[derive(Clone)]
pub struct FileSpec {
    pub path: PathBuf,
    pub bytes: Zeroizing<Vec<u8>>,
    pub mode: u32,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub follow_symlinks: bool,
}

impl std::fmt::Debug for FileSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "FileSpec({}, mode {:o}, {} bytes)",
            self.path.display(),
            self.mode,
            self.bytes.len()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{path}: is a symbolic link; certkeeper does not write through links it was not told about (set follow_symlinks: true for this certificate, or replace the link with a file)")]
    Symlink { path: PathBuf },
    #[error("{link}: is a symbolic link on the way to {path}; certkeeper does not write through a linked directory it was not told about (write the real path, or set follow_symlinks: true for this certificate)")]
    LinkInPath { link: PathBuf, path: PathBuf },
    #[error("{path}: {problem}; certkeeper keeps its CA keys and archive there, so only the user it runs as may write it (chmod go-w {path})")]
    UnsafeDir { path: PathBuf, problem: String },
    #[error("{path}: exists and is not a regular file; remove it or choose another path")]
    NotAFile { path: PathBuf },
    #[error("{path}: is not a directory; create it or change the path that lives in it")]
    NotADirectory { path: PathBuf },
    #[error("{path}: {problem}, in certkeeper's store of installed pairs, where certkeeper follows no link it did not make; remove {path} (certkeeper puts back what it needs)")]
    Store {
        path: PathBuf,
        problem: &'static str,
    },
    #[error("{path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

impl FsError {
    /// Whether the file or directory acted on was not there: not made yet, or removed
    /// meanwhile by something else (an operator's `rm -rf`).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FsError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

pub(crate) fn io_err<'a>(
    path: &'a Path,
    action: &'static str,
) -> impl FnOnce(io::Error) -> FsError + 'a {
    move |source| FsError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

/// The path that will really be written: `path` itself, or, when it is a symlink and
/// links are allowed, the file it points to.
pub fn resolve_target(path: &Path, follow_symlinks: bool) -> Result<PathBuf, FsError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            if !follow_symlinks {
                return Err(FsError::Symlink {
                    path: path.to_path_buf(),
                });
            }
            let target = fs::read_link(path).map_err(io_err(path, "cannot read link"))?;
            let target = if target.is_absolute() {
                target
            } else {
                path.parent().unwrap_or(Path::new("/")).join(target)
            };
            // One level only: a chain of links is refused like any unexpected link.
            resolve_target(&target, false)
        }
        Ok(meta) if !meta.is_file() => Err(FsError::NotAFile {
            path: path.to_path_buf(),
        }),
        _ => Ok(path.to_path_buf()),
    }
}

/// Checks that `path` could be written, without writing anything: the target is not an
/// unexpected link or a directory, and its directory exists or can be created.
pub fn preflight(path: &Path, follow_symlinks: bool) -> Result<PathBuf, FsError> {
    let target = resolve_target(path, follow_symlinks)?;
    check_parent(&target)?;
    Ok(target)
}

/// Checks that the directory of `path` exists or can be created: its nearest existing
/// ancestor is a directory.
pub fn check_parent(path: &Path) -> Result<(), FsError> {
    let mut dir = path.parent().unwrap_or(Path::new("/"));
    loop {
        match fs::metadata(dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(FsError::NotADirectory {
                    path: dir.to_path_buf(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                dir = dir.parent().unwrap_or(Path::new("/"));
            }
            Err(e) => return Err(io_err(dir, "cannot inspect directory")(e)),
        }
    }
    Ok(())
}

/// `path` as the file system would resolve it when it is written: the longest prefix
/// that exists is resolved (symlinks and `..` included, as the kernel does), the rest is
/// normalized as written (it holds no link yet). Two spellings of one file give the
/// same answer, which is what "is this path inside the state directory" needs.
pub fn resolved(path: &Path) -> PathBuf {
    let mut existing = path.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        if let Ok(real) = fs::canonicalize(&existing) {
            let mut out = real;
            for part in rest.iter().rev() {
                match part.to_str() {
                    Some("..") => {
                        out.pop();
                    }
                    Some(".") => {}
                    _ => out.push(part),
                }
            }
            return out;
        }
        match existing.components().next_back() {
            Some(
                last @ (std::path::Component::Normal(_)
                | std::path::Component::ParentDir
                | std::path::Component::CurDir),
            ) => {
                rest.push(last.as_os_str().to_os_string());
                existing.pop();
            }
            _ => {
                // Nothing of it exists (or `..` ends it): normalize the whole of it.
                let mut out = PathBuf::new();
                for c in path.components() {
                    match c {
                        std::path::Component::ParentDir => {
                            out.pop();
                        }
                        std::path::Component::CurDir => {}
                        other => out.push(other),
                    }
                }
                return out;
            }
        }
    }
}

/// [`resolved`] for many paths that share directories (thousands of certificates in a
/// few): each directory is looked at once (`lstat`, and `readlink` for a link), where
/// `resolved` reads every link on the way again for each path. The answer is the same;
/// paths it does not shorten (relative, with `.` or `..`, a long chain of links) go to
/// `resolved` itself.
#[derive(Default)]
pub struct Resolver {
    dirs: HashMap<PathBuf, (PathBuf, bool)>,
}

/// See [`Resolver::locate`].
pub struct Located<'a> {
    /// The path itself when it is already where it is on disk (no copy of it).
    pub real: std::borrow::Cow<'a, Path>,
    pub id: Option<(u64, u64)>,
}

/// Directories remembered at most (then forgotten at once): the paths of one
/// certificate come one after another, and the shared directories are found again.
const RESOLVER_MEMORY: usize = 4096;
/// Links followed for one path, as the kernel allows (ELOOP beyond).
const MAX_LINKS: u32 = 40;

impl Resolver {
    pub fn resolve(&mut self, path: &Path) -> PathBuf {
        if self.dirs.len() > RESOLVER_MEMORY {
            self.dirs.clear();
        }
        match self.real(path, 0, false) {
            Some((real, _)) => real,
            None => resolved(path),
        }
    }

    /// Where the output `path` of a configuration is on disk: resolved as `resolved`
    /// does, except that a link at its last component is not followed when an install
    /// never writes through it: unless `follow` (such a link is replaced when it is
    /// certkeeper's, refused otherwise), or when `keep` accepts its target (a link
    /// certkeeper made into its own store, replaced). And the file's identity (device,
    /// inode) when it exists; the link's own for a link not followed.
    pub fn locate(
        &mut self,
        path: &Path,
        follow: bool,
        keep: impl Fn(&Path) -> bool,
    ) -> Located<'static> {
        if self.dirs.len() > RESOLVER_MEMORY {
            self.dirs.clear();
        }
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            if let Some((dir, _)) = self.real(parent, 0, true) {
                return locate_in(&dir, name, follow, &keep);
            }
        }
        Located {
            real: self.resolve(path).into(),
            id: file_identity(path),
        }
    }

    /// [`Resolver::locate`] of each of `paths` (with its `follow`): the directories
    /// resolved here, once each, then the files looked at on all cores (a configuration
    /// with thousands of certificates has tens of thousands of them).
    pub fn locate_all<'p>(
        &mut self,
        paths: &[(&'p Path, bool)],
        keep: impl Fn(&Path) -> bool + Sync,
    ) -> Vec<Located<'p>> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        // Directories told apart by their bytes, as in `parent_dirs`.
        let mut seen: HashMap<&std::ffi::OsStr, Option<usize>> = HashMap::new();
        let mut at: Vec<Option<usize>> = Vec::with_capacity(paths.len());
        for (path, _) in paths {
            let dir = match (path.parent(), path.file_name()) {
                (Some(parent), Some(_)) => *seen.entry(parent.as_os_str()).or_insert_with(|| {
                    if self.dirs.len() > RESOLVER_MEMORY {
                        self.dirs.clear();
                    }
                    let (real, _) = self.real(parent, 0, true)?;
                    dirs.push(real);
                    Some(dirs.len() - 1)
                }),
                _ => None,
            };
            at.push(dir);
        }
        // A directory that holds many of the paths is read once (its listing names each
        // entry with its inode and whether it is a link) instead of an `lstat` each;
        // one directory's listing at a time.
        use std::os::unix::ffi::OsStrExt;
        let mut in_dir: Vec<Vec<usize>> = vec![Vec::new(); dirs.len()];
        for (n, d) in at.iter().enumerate() {
            if let Some(d) = d {
                in_dir[*d].push(n);
            }
        }
        let mut found: Vec<Option<Located<'p>>> = Vec::with_capacity(paths.len());
        found.resize_with(paths.len(), || None);
        // Asked once, when a directory is to be read whole.
        let mut mounts: Option<Option<std::collections::HashSet<PathBuf>>> = None;
        for (d, jobs) in in_dir.iter().enumerate() {
            if jobs.len() < LIST_AT_LEAST {
                continue;
            }
            let names = jobs
                .iter()
                .filter_map(|n| Some(paths[*n].0.file_name()?.as_bytes()))
                .collect();
            let Some(mounts) = mounts.get_or_insert_with(mount_parents) else {
                continue;
            };
            let Some(listing) = Listing::read(&dirs[d], names, mounts) else {
                continue;
            };
            for &n in jobs {
                let (path, follow) = paths[n];
                let Some(name) = path.file_name() else {
                    continue;
                };
                let real = match path.parent() {
                    Some(p) if p.as_os_str() == dirs[d].as_os_str() => {
                        std::borrow::Cow::Borrowed(path)
                    }
                    _ => dirs[d].join(name).into(),
                };
                found[n] = match listing.entries.get(name.as_bytes()) {
                    Some(None) => Some(Located { real, id: None }),
                    // A link followed is read (`keep` looks at its target).
                    Some(Some((_, true))) if follow => None,
                    Some(Some((ino, _))) => Some(Located {
                        real,
                        id: Some((listing.dev, *ino)),
                    }),
                    None => None,
                };
            }
        }
        // The others, each looked at, on all cores.
        let rest: Vec<usize> = (0..paths.len()).filter(|n| found[*n].is_none()).collect();
        let looked = crate::par::map(&rest, 256, |n| {
            let (path, follow) = paths[*n];
            Some(locate_in(&dirs[at[*n]?], path.file_name()?, follow, &keep))
        });
        for (n, l) in rest.into_iter().zip(looked) {
            found[n] = l;
        }
        found
            .into_iter()
            .zip(paths)
            .map(|(l, (path, follow))| l.unwrap_or_else(|| self.locate(path, *follow, &keep)))
            .collect()
    }

    /// `path` resolved, and whether it exists; `hops` links followed so far;
    /// `remember`: a directory, kept. As `resolved` does, a link that leads nowhere is
    /// not followed (the path stays as written from there on).
    fn real(&mut self, path: &Path, hops: u32, remember: bool) -> Option<(PathBuf, bool)> {
        if let Some(r) = self.dirs.get(path) {
            return Some(r.clone());
        }
        let plain = path.is_absolute()
            && path.components().all(|c| {
                matches!(
                    c,
                    std::path::Component::RootDir | std::path::Component::Normal(_)
                )
            });
        if !plain || hops > MAX_LINKS {
            return None;
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Some((path.to_path_buf(), true));
        };
        let (dir, _) = self.real(parent, hops, true)?;
        let here = dir.join(name);
        let out = match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = fs::read_link(&here).ok()?;
                // Relative to the link's own (real) directory; an absolute one replaces it.
                match self.real(&dir.join(target), hops + 1, remember)? {
                    (real, true) => (real, true),
                    (_, false) => (here, false),
                }
            }
            Ok(_) => (here, true),
            Err(_) => (here, false),
        };
        if remember {
            self.dirs.insert(path.to_path_buf(), out.clone());
        }
        Some(out)
    }
}

/// Paths in one directory from which [`Resolver::locate_all`] reads the directory
/// whole rather than looking at each path.
const LIST_AT_LEAST: usize = 64;

/// What a directory's listing says of some names: each one's inode and whether it is a
/// link, as `lstat` would (the device is the directory's), or that it is absent.
struct Listing<'a> {
    dev: u64,
    entries: HashMap<&'a [u8], Option<(u64, bool)>>,
}

impl<'a> Listing<'a> {
    /// The listing of the real directory `dir` for the `wanted` names; None where a
    /// listing could say otherwise than `lstat`: a file system whose listings may give
    /// other inode numbers than `stat` (overlayfs, network file systems), an entry
    /// with a mount on it (`mount_parents`), an entry of unknown type; and where the
    /// directory holds far more than the paths wanted.
    fn read(
        dir: &Path,
        wanted: Vec<&'a [u8]>,
        mount_parents: &std::collections::HashSet<PathBuf>,
    ) -> Option<Listing<'a>> {
        use nix::sys::statfs::{statfs, EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC};
        use std::os::unix::fs::MetadataExt;
        let kind = statfs(dir).ok()?.filesystem_type();
        if ![EXT4_SUPER_MAGIC, TMPFS_MAGIC, XFS_SUPER_MAGIC].contains(&kind)
            || mount_parents.contains(dir)
        {
            return None;
        }
        let meta = fs::symlink_metadata(dir).ok()?;
        // A directory's size grows with its entries (tens of bytes each).
        if !meta.is_dir() || meta.size() > (wanted.len() as u64).saturating_mul(1024) {
            return None;
        }
        let mut d = nix::dir::Dir::open(
            dir,
            nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_NOFOLLOW
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .ok()?;
        let mut entries: HashMap<&[u8], Option<(u64, bool)>> =
            wanted.into_iter().map(|n| (n, None)).collect();
        for e in d.iter() {
            let e = e.ok()?;
            if let Some(slot) = entries.get_mut(e.file_name().to_bytes()) {
                let link = matches!(e.file_type()?, nix::dir::Type::Symlink);
                *slot = Some((e.ino(), link));
            }
        }
        Some(Listing {
            dev: meta.dev(),
            entries,
        })
    }
}

/// The directories that hold a mount point (`/proc/self/mountinfo`): in those, a
/// listing's inode is the one under the mount. None when that cannot be known.
fn mount_parents() -> Option<std::collections::HashSet<PathBuf>> {
    let text = fs::read_to_string("/proc/self/mountinfo").ok()?;
    Some(
        text.lines()
            .filter_map(|l| l.split(' ').nth(4))
            .filter_map(|at| {
                Path::new(&unescape_mount(at))
                    .parent()
                    .map(Path::to_path_buf)
            })
            .collect(),
    )
}

/// A mount point as `mountinfo` writes it: space, tab, newline and backslash as octal
/// escapes (`\040`).
fn unescape_mount(at: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;
    let b = at.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                out.push(((d[0] - b'0') << 6) | ((d[1] - b'0') << 3) | (d[2] - b'0'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(out)
}

/// [`Resolver::locate`] of `name` in the real directory `dir`.
fn locate_in(
    dir: &Path,
    name: &std::ffi::OsStr,
    follow: bool,
    keep: &impl Fn(&Path) -> bool,
) -> Located<'static> {
    use std::os::unix::fs::MetadataExt;
    let here = dir.join(name);
    let id = |m: &fs::Metadata| Some((m.dev(), m.ino()));
    match fs::symlink_metadata(&here) {
        Ok(m) if m.file_type().is_symlink() => {
            if !follow || fs::read_link(&here).is_ok_and(|t| keep(&t)) {
                Located {
                    real: here.into(),
                    id: id(&m),
                }
            } else {
                // Followed: where the link leads.
                Located {
                    real: resolved(&here).into(),
                    id: file_identity(&here),
                }
            }
        }
        Ok(m) => Located {
            real: here.into(),
            id: id(&m),
        },
        Err(_) => Located {
            real: here.into(),
            id: None,
        },
    }
}

/// The directories of `paths`, each once: thousands of files share a few, so they are
/// told apart by their bytes (cheaper than comparing paths component by component).
pub fn parent_dirs<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Vec<&'a Path> {
    let dirs: std::collections::HashSet<&std::ffi::OsStr> = paths
        .into_iter()
        .filter_map(Path::parent)
        .map(Path::as_os_str)
        .collect();
    dirs.into_iter().map(Path::new).collect()
}

/// A file's device and inode, when it exists: hard links to one file share them.
pub fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Creates `dir` and missing parents with `mode` (new directories only; the mode is
/// set explicitly, so the process umask does not narrow it), following no link on the
/// way (see [`Dir`]).
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), FsError> {
    Dir::open_or_create(dir, mode, false).map(|_| ())
}

/// [`ensure_dir`] for a path the user allows links in.
fn ensure_dir_following(dir: &Path, mode: u32) -> Result<(), FsError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(FsError::NotADirectory {
                path: dir.to_path_buf(),
            })
        }
        Err(_) => {}
    }
    if let Some(parent) = dir.parent() {
        ensure_dir_following(parent, mode)?;
    }
    match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => fs::set_permissions(dir, Permissions::from_mode(mode))
            .map_err(io_err(dir, "cannot set the mode of new directory")),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io_err(dir, "cannot create directory")(e)),
    }
}

/// Writes one file atomically (see the module comment).
pub fn write_atomic(spec: &FileSpec) -> Result<(), FsError> {
    let target = resolve_target(&spec.path, spec.follow_symlinks)?;
    replace_with(&target, spec)
}

/// [`write_atomic`] of what `fill` writes (`spec.bytes` is not used): a large file
/// written as it is made, never whole in memory.
pub fn write_atomic_with(
    spec: &FileSpec,
    fill: &mut dyn FnMut(&mut File) -> io::Result<()>,
) -> Result<(), FsError> {
    let target = resolve_target(&spec.path, spec.follow_symlinks)?;
    let (dir, name) = Dir::of_file(&target, 0o755, spec.follow_symlinks)?;
    dir.replace_file_with(name, spec, fill)
}

/// Writes `spec`'s bytes, owner and mode to `target` atomically: a temporary file in
/// `target`'s directory, renamed over `target` (whatever `target` is: a file, a symlink,
/// nothing; the rename replaces the directory entry, it follows nothing), then the
/// directory fsynced. `spec.path` is not looked at: the caller resolved the target.
/// Unless `spec.follow_symlinks`, the directory is reached without following a link
/// in any component of its path (see [`Dir`]).
pub fn replace_with(target: &Path, spec: &FileSpec) -> Result<(), FsError> {
    let (dir, name) = Dir::of_file(target, 0o755, spec.follow_symlinks)?;
    dir.replace_file(name, spec)
}

pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    let d = File::open(dir).map_err(io_err(dir, "cannot fsync directory"))?;
    sync_or_defer(&d, dir, "cannot fsync directory")
}

// ---------------------------------------------------------------------------------------
// Group commit

thread_local! {
    /// While a [`GroupCommit`] is open on this thread: one descriptor per filesystem
    /// whose flushes were put off, to `syncfs` at its next barrier.
    static DEFERRED: std::cell::RefCell<Option<Vec<(u64, File)>>> = const { std::cell::RefCell::new(None) };
}

/// Flushes `file` (data and metadata) now, or, inside a [`GroupCommit`], at its next
/// barrier: then every file and directory written on the way is flushed by one
/// `syncfs` per filesystem instead of one `fsync` each.
pub fn sync_or_defer(file: &File, path: &Path, action: &'static str) -> Result<(), FsError> {
    sync_or_defer_on(file, None, path, action)
}

/// [`sync_or_defer`] for a file whose device is known (`dev`): a file made in a
/// directory is on that directory's filesystem, which spares asking for each file.
fn sync_or_defer_on(
    file: &File,
    dev: Option<u64>,
    path: &Path,
    action: &'static str,
) -> Result<(), FsError> {
    match defer(file, dev) {
        Ok(true) => Ok(()),
        Ok(false) => file.sync_all().map_err(io_err(path, action)),
        Err(e) => Err(io_err(path, action)(e)),
    }
}

/// `fdatasync` now, or at the next barrier of the open [`GroupCommit`] (the ledger);
/// `dev`: the file's device, when known.
pub fn data_sync_or_defer(file: &File, dev: Option<u64>) -> io::Result<()> {
    match defer(file, dev)? {
        true => Ok(()),
        false => file.sync_data(),
    }
}

/// Whether a [`GroupCommit`] puts flushes off on this thread now.
fn deferring() -> bool {
    DEFERRED.with(|d| d.borrow().is_some())
}

/// Inside a [`GroupCommit`], notes `file`'s filesystem (`dev`, or asked of the file)
/// for the next barrier: true.
fn defer(file: &File, dev: Option<u64>) -> io::Result<bool> {
    DEFERRED.with(|d| {
        let mut d = d.borrow_mut();
        let Some(list) = d.as_mut() else {
            return Ok(false);
        };
        let dev = match dev {
            Some(dev) => dev,
            None => std::os::unix::fs::MetadataExt::dev(&file.metadata()?),
        };
        if !list.iter().any(|(seen, _)| *seen == dev) {
            list.push((dev, file.try_clone()?));
        }
        Ok(true)
    })
}

/// Durable file work done in batches on this thread (a group commit): while it is open,
/// the fsyncs of files, directories and the ledger are put off to [`GroupCommit::barrier`],
/// which flushes each filesystem written to once. The caller places the barriers where
/// the order matters: every file's data before the rename that publishes it, every
/// rename before the ledger says "installed". Dropping it ends the batch (a caller that
/// returns early has published nothing that needed the flush).
pub struct GroupCommit {
    /// Not Send: the batch belongs to this thread's thread-local state.
    _thread: std::marker::PhantomData<*const ()>,
    /// The directories and files the batch keeps open (see [`Batch`]).
    _kept: Batch,
}

impl GroupCommit {
    /// Opens a batch on this thread (one at a time: a nested one is refused).
    pub fn begin() -> GroupCommit {
        DEFERRED.with(|d| {
            let mut d = d.borrow_mut();
            assert!(d.is_none(), "one group commit at a time on a thread");
            *d = Some(Vec::new());
        });
        GroupCommit {
            _thread: std::marker::PhantomData,
            _kept: Batch::begin(),
        }
    }

    /// Makes everything written since the last barrier durable: one `syncfs` per
    /// filesystem that was written to.
    pub fn barrier(&self) -> Result<(), FsError> {
        let pending = DEFERRED.with(|d| {
            d.borrow_mut()
                .as_mut()
                .map(std::mem::take)
                .unwrap_or_default()
        });
        for (_, fd) in &pending {
            nix::unistd::syncfs(fd).map_err(|e| FsError::Io {
                path: PathBuf::from("/proc/self/fd"),
                action: "cannot flush the file system (syncfs)",
                source: e.into(),
            })?;
        }
        Ok(())
    }

    /// Runs `f` with every flush done at once, as outside a batch: for the rare steps
    /// whose order inside one certificate matters (moving plain files into a store).
    pub fn durable<T>(f: impl FnOnce() -> T) -> T {
        let saved = DEFERRED.with(|d| d.borrow_mut().take());
        let out = f();
        DEFERRED.with(|d| *d.borrow_mut() = saved);
        out
    }
}

impl Drop for GroupCommit {
    fn drop(&mut self) {
        DEFERRED.with(|d| *d.borrow_mut() = None);
    }
}

// ---------------------------------------------------------------------------------------
// Handles kept for a batch

thread_local! {
    /// While a [`Batch`] is open on this thread: the directories and files it keeps.
    static KEPT: std::cell::RefCell<Option<Kept>> = const { std::cell::RefCell::new(None) };
}

/// What an open [`Batch`] keeps.
struct Kept {
    /// How many `Batch` values are open on this thread (a nested one shares this).
    depth: usize,
    /// Directories reached by [`Dir::reach`], by their lexical path: each was checked
    /// once to have no link on the way.
    dirs: HashMap<PathBuf, Dir>,
    /// Files kept open between appends (the ledger), by path.
    files: HashMap<PathBuf, KeptFile>,
}

/// A file a batch keeps open between appends, with what its owner knows of it.
#[derive(Debug)]
pub struct KeptFile {
    pub file: File,
    /// Its device, for the group commit's flush.
    pub dev: u64,
    /// Its size after the owner's last write.
    pub size: u64,
    /// The owner's mark of that write: a write by anyone else changes it, and the
    /// file is opened again.
    pub stamp: u64,
}

/// Directories a batch keeps open at most; beyond, it forgets them all at once (the
/// few shared ones are reached again; thousands of certificates must not hold
/// thousands of descriptors).
const KEPT_DIRS: usize = 64;

/// Durable file work done in batches on this thread: while it is open, a directory
/// reached with [`Dir::reach`] is walked (and checked for links on the way) once, and
/// then opened from the handle it keeps; a file kept with [`keep_file`] stays open. A
/// handle is a directory that was checked to have no link on the way when it was
/// opened: a link swapped in later for a directory on that way is not followed, the
/// batch goes on in the directory it checked. Batches nest; the outermost one closes
/// what was kept. A [`GroupCommit`] is one.
pub struct Batch {
    /// Not Send: what it keeps belongs to this thread's thread-local state.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Batch {
    pub fn begin() -> Batch {
        KEPT.with(|k| {
            let mut k = k.borrow_mut();
            match k.as_mut() {
                Some(kept) => kept.depth += 1,
                None => {
                    *k = Some(Kept {
                        depth: 1,
                        dirs: HashMap::new(),
                        files: HashMap::new(),
                    })
                }
            }
        });
        Batch {
            _thread: std::marker::PhantomData,
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        let done = KEPT.with(|k| {
            let mut k = k.borrow_mut();
            match k.as_mut() {
                Some(kept) if kept.depth > 1 => {
                    kept.depth -= 1;
                    None
                }
                _ => k.take(),
            }
        });
        // Closed outside the borrow.
        drop(done);
    }
}

/// The file kept open for `path` by the open batch, taken out of it (the caller puts
/// it back with [`keep_file`] when it is still good).
pub fn take_kept_file(path: &Path) -> Option<KeptFile> {
    KEPT.with(|k| k.borrow_mut().as_mut()?.files.remove(path))
}

/// Keeps `file` open for `path` until the open batch ends; without a batch it is
/// closed at once.
pub fn keep_file(path: &Path, file: KeptFile) {
    let unkept = KEPT.with(|k| match k.borrow_mut().as_mut() {
        Some(kept) => kept.files.insert(path.to_path_buf(), file),
        None => Some(file),
    });
    drop(unkept);
}

/// Forgets the directories the open batch reached: the next [`Dir::reach`] walks from
/// the root again (after a directory was found removed under the batch's handle).
pub fn forget_dirs() {
    let forgotten = KEPT.with(|k| k.borrow_mut().as_mut().map(|k| std::mem::take(&mut k.dirs)));
    drop(forgotten);
}

/// Whether a batch is open on this thread.
pub fn in_batch() -> bool {
    KEPT.with(|k| k.borrow().is_some())
}

/// An open directory, reached without following a symbolic link in any component of
/// its path (unless told to), in which files and links are made by name: a link
/// planted on the way after the directory was opened changes nothing. Clones share
/// the descriptor.
#[derive(Debug, Clone)]
pub struct Dir {
    fd: std::sync::Arc<File>,
    path: PathBuf,
    /// Its device, once known (asked once, or the parent's for a directory made here).
    dev: std::sync::Arc<std::sync::OnceLock<u64>>,
    /// Made by the call that returned this handle (so empty, but for what the caller
    /// puts there).
    made: bool,
}

/// What a directory entry is (see [`Dir::stat_at`], [`Dir::entries`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other,
}

/// An entry as [`Dir::stat_at`] found it.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    pub kind: Kind,
    pub modified: std::time::SystemTime,
}

/// Notes `dir`, reached at `path`, among the open batch's handles.
fn remember(path: &Path, dir: &Dir) {
    let forgotten = KEPT.with(|k| {
        let mut k = k.borrow_mut();
        let kept = k.as_mut()?;
        let forgotten = if kept.dirs.len() >= KEPT_DIRS {
            Some(std::mem::take(&mut kept.dirs))
        } else {
            None
        };
        kept.dirs.insert(
            path.to_path_buf(),
            Dir {
                made: false,
                ..dir.clone()
            },
        );
        forgotten
    });
    drop(forgotten);
}

/// `path` made absolute and normalized as written (`.` dropped, `..` taking off the
/// component before it). With no link on the way, this is the directory the kernel
/// would resolve.
fn lexical(path: &Path) -> PathBuf {
    let path = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .unwrap_or_else(|_| PathBuf::from("/"))
            .join(path)
    };
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

/// Flags for opening a directory on the way.
fn dir_flags() -> nix::fcntl::OFlag {
    use nix::fcntl::OFlag;
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

impl Dir {
    /// Opens `path`, which must exist. Without `follow`, every component is opened
    /// relative to the one before with `O_NOFOLLOW`: a symbolic link anywhere on the
    /// way is [`FsError::LinkInPath`].
    pub fn open(path: &Path, follow: bool) -> Result<Dir, FsError> {
        Self::walk(path, None, follow)
    }

    /// Opens `path`, creating missing directories with `mode` (set explicitly, so the
    /// umask does not narrow it).
    pub fn open_or_create(path: &Path, mode: u32, follow: bool) -> Result<Dir, FsError> {
        Self::walk(path, Some(mode), follow)
    }

    /// The directory of `file`, opened or created, and `file`'s name in it.
    pub fn of_file(
        file: &Path,
        mode: u32,
        follow: bool,
    ) -> Result<(Dir, &std::ffi::OsStr), FsError> {
        let name = file.file_name().ok_or_else(|| FsError::NotAFile {
            path: file.to_path_buf(),
        })?;
        let dir = Self::open_or_create(file.parent().unwrap_or(Path::new("/")), mode, follow)?;
        Ok((dir, name))
    }

    /// Opens `path` as [`Dir::open`] does without following links (with `create`, as
    /// [`Dir::open_or_create`]), but inside a [`Batch`] from the handles it keeps: the
    /// nearest directory on the way that the batch holds is the start, and only the
    /// components below it are opened (each with `O_NOFOLLOW`, a link refused by name
    /// as on a full walk). A directory is so checked once per batch, not once per file.
    /// Only for directories certkeeper never removes while a batch runs (a handle to a
    /// removed directory would write where no one looks); a directory removed by
    /// someone else shows as `NotFound` on the next file made in it, and the caller
    /// starts again after [`forget_dirs`].
    pub fn reach(path: &Path, create: Option<u32>) -> Result<Dir, FsError> {
        if !in_batch() {
            return Self::walk(path, create, false);
        }
        let full = lexical(path);
        let mut start = full.clone();
        let mut below: Vec<std::ffi::OsString> = Vec::new();
        let found = KEPT.with(|k| {
            let k = k.borrow();
            let dirs = &k.as_ref()?.dirs;
            loop {
                if let Some(dir) = dirs.get(&start) {
                    return Some(dir.clone());
                }
                below.push(start.file_name()?.to_os_string());
                start.pop();
            }
        });
        // Nothing on the way kept yet: the walk starts at the root, kept too.
        let (mut dir, mut here) = match found {
            Some(dir) => (dir, start),
            None => {
                let root = PathBuf::from("/");
                let dir = Dir::new(
                    File::open(&root).map_err(io_err(&root, "cannot open directory"))?,
                    &root,
                );
                remember(&root, &dir);
                (dir, root)
            }
        };
        // Several components below it: one call when all are there and none is a link
        // (the kernel refuses to follow any); anything else takes the walk below.
        if below.len() > 1 {
            let rel: PathBuf = below.iter().rev().collect();
            let how = nix::fcntl::OpenHow::new()
                .flags(dir_flags())
                .resolve(nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS);
            if let Ok(fd) = nix::fcntl::openat2(&dir.fd, &rel, how) {
                let dir = Dir::new(File::from(fd), path);
                remember(&full, &dir);
                return Ok(dir);
            }
        }
        for part in below.iter().rev() {
            here.push(part);
            dir = dir.child(part, &here, &full, create)?;
            remember(&here, &dir);
        }
        dir.path = path.to_path_buf();
        Ok(dir)
    }

    fn walk(path: &Path, create: Option<u32>, follow: bool) -> Result<Dir, FsError> {
        if follow {
            if let Some(mode) = create {
                ensure_dir_following(path, mode)?;
            }
            let fd = File::open(path).map_err(io_err(path, "cannot open directory"))?;
            return Ok(Dir::new(fd, path));
        }
        let full = lexical(path);
        let mut here = PathBuf::from("/");
        let mut dir = Dir::new(
            File::open("/").map_err(io_err(&here, "cannot open directory"))?,
            &here,
        );
        // The common case in one system call: every component there and no link on
        // the way (the kernel refuses to follow any). Anything else (a missing
        // directory to make, a link to name, an older kernel) takes the walk below.
        if let Ok(rel) = full.strip_prefix("/") {
            if !rel.as_os_str().is_empty() {
                let how = nix::fcntl::OpenHow::new()
                    .flags(dir_flags())
                    .resolve(nix::fcntl::ResolveFlag::RESOLVE_NO_SYMLINKS);
                if let Ok(fd) = nix::fcntl::openat2(&dir.fd, rel, how) {
                    return Ok(Dir::new(File::from(fd), path));
                }
            }
        }
        for part in full.iter().skip(1) {
            here.push(part);
            dir = dir.child(part, &here, &full, create)?;
        }
        dir.path = path.to_path_buf();
        Ok(dir)
    }

    /// Opens (or with `create`, makes) the directory `name` in this one, following no
    /// link; `here` is its path and `full` the path being walked, for messages.
    fn child(
        &self,
        name: &std::ffi::OsStr,
        here: &Path,
        full: &Path,
        create: Option<u32>,
    ) -> Result<Dir, FsError> {
        use nix::errno::Errno;
        use nix::sys::stat::Mode;
        let open = || nix::fcntl::openat(&self.fd, name, dir_flags(), Mode::empty());
        let fd = match open() {
            Ok(fd) => fd,
            Err(Errno::ENOENT) if create.is_some() => {
                let mode = create.unwrap_or(0o755);
                let made =
                    match nix::sys::stat::mkdirat(&self.fd, name, Mode::from_bits_truncate(mode)) {
                        Ok(()) => true,
                        Err(Errno::EEXIST) => false,
                        Err(e) => return Err(io_err(here, "cannot create directory")(e.into())),
                    };
                let fd = open().map_err(|e| self.classify(name, here, full, e))?;
                if made {
                    let file = File::from(fd);
                    file.set_permissions(Permissions::from_mode(mode))
                        .map_err(io_err(here, "cannot set the mode of new directory"))?;
                    // The new entry is durable before anything is made inside it.
                    self.sync()?;
                    return Ok(self.made_here(file, here));
                }
                fd
            }
            Err(e) => return Err(self.classify(name, here, full, e)),
        };
        Ok(Dir::new(File::from(fd), here))
    }

    fn new(fd: File, path: &Path) -> Dir {
        Dir {
            fd: std::sync::Arc::new(fd),
            path: path.to_path_buf(),
            dev: Default::default(),
            made: false,
        }
    }

    /// Whether the call that returned this handle made the directory: it held nothing
    /// then.
    pub fn made(&self) -> bool {
        self.made
    }

    /// A directory just made in this one: on this one's filesystem (a new directory is
    /// no mount point), so its device is known when this one's is.
    fn made_here(&self, fd: File, path: &Path) -> Dir {
        let mut dir = Dir::new(fd, path);
        dir.made = true;
        if let Some(dev) = self.dev.get() {
            let _ = dir.dev.set(*dev);
        }
        dir
    }

    /// The device this directory is on (asked once).
    fn dev(&self) -> Result<u64, FsError> {
        if let Some(dev) = self.dev.get() {
            return Ok(*dev);
        }
        let meta = self
            .fd
            .metadata()
            .map_err(io_err(&self.path, "cannot inspect directory"))?;
        Ok(*self
            .dev
            .get_or_init(|| std::os::unix::fs::MetadataExt::dev(&meta)))
    }

    /// The path this directory was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Why `name` could not be opened as a directory: a link, something else, or an
    /// error of the system.
    fn classify(
        &self,
        name: &std::ffi::OsStr,
        here: &Path,
        full: &Path,
        e: nix::errno::Errno,
    ) -> FsError {
        use nix::errno::Errno;
        use nix::sys::stat::{fstatat, SFlag};
        if matches!(e, Errno::ELOOP | Errno::ENOTDIR) {
            if let Ok(st) = fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                if kind == SFlag::S_IFLNK {
                    return FsError::LinkInPath {
                        link: here.to_path_buf(),
                        path: full.to_path_buf(),
                    };
                }
                return FsError::NotADirectory {
                    path: here.to_path_buf(),
                };
            }
        }
        io_err(here, "cannot open directory")(e.into())
    }

    /// Opens the file `name` here for reading, never through a link (`O_NOFOLLOW`) and
    /// never waiting (`O_NONBLOCK`: a FIFO has no writer to wait for).
    pub fn open_read(&self, name: &std::ffi::OsStr) -> io::Result<File> {
        use nix::fcntl::OFlag;
        nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_RDONLY
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map(File::from)
        .map_err(io::Error::from)
    }

    /// What `name` here is, without following a link; None when it does not exist.
    pub fn stat_at(&self, name: &std::ffi::OsStr) -> Result<Option<Entry>, FsError> {
        use nix::sys::stat::{fstatat, SFlag};
        match fstatat(&self.fd, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
                Ok(Some(Entry {
                    kind: if kind == SFlag::S_IFLNK {
                        Kind::Link
                    } else if kind == SFlag::S_IFDIR {
                        Kind::Dir
                    } else if kind == SFlag::S_IFREG {
                        Kind::File
                    } else {
                        Kind::Other
                    },
                    modified: std::time::UNIX_EPOCH
                        + std::time::Duration::new(
                            st.st_mtime.max(0) as u64,
                            st.st_mtime_nsec.clamp(0, 999_999_999) as u32,
                        ),
                }))
            }
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(io_err(&self.path.join(name), "cannot inspect")(e.into())),
        }
    }

    /// The target of the link `name` here.
    pub fn read_link_at(&self, name: &std::ffi::OsStr) -> Result<PathBuf, FsError> {
        nix::fcntl::readlinkat(&self.fd, name)
            .map(PathBuf::from)
            .map_err(|e| io_err(&self.path.join(name), "cannot read link")(e.into()))
    }

    /// Every entry of this directory but `.` and `..`, with its kind as the directory
    /// lists it (a link is a link; nothing is followed), by name.
    pub fn entries(&self) -> Result<Vec<(std::ffi::OsString, Kind)>, FsError> {
        use nix::dir::Type;
        use nix::fcntl::OFlag;
        use nix::sys::stat::Mode;
        use std::os::unix::ffi::OsStrExt;
        let failed = |e: nix::errno::Errno| io_err(&self.path, "cannot list directory")(e.into());
        // `.` opened again: a listing of its own (its own position), not through a path.
        let mut listing = nix::dir::Dir::openat(
            &*self.fd,
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(failed)?;
        let mut out = Vec::new();
        for entry in listing.iter() {
            let entry = entry.map_err(failed)?;
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let name = std::ffi::OsStr::from_bytes(name);
            // The kind the directory gives (asked of the entry only where it does not).
            let kind = match entry.file_type() {
                Some(Type::Symlink) => Kind::Link,
                Some(Type::Directory) => Kind::Dir,
                Some(Type::File) => Kind::File,
                Some(_) => Kind::Other,
                None => match self.stat_at(name) {
                    Ok(Some(entry)) => entry.kind,
                    // Gone since it was listed, or not to be inspected: left out.
                    _ => continue,
                },
            };
            out.push((name.to_os_string(), kind));
        }
        Ok(out)
    }

    /// Opens the directory `name` in this one, following no link; with `create`,
    /// makes it when missing.
    pub fn subdir(&self, name: &str, create: Option<u32>) -> Result<Dir, FsError> {
        let here = self.path.join(name);
        self.child(std::ffi::OsStr::new(name), &here, &here, create)
    }

    /// Creates `name`, which must not exist (`O_EXCL | O_NOFOLLOW`: never through a
    /// link), mode 0600 until its owner and final mode are set, all before the first
    /// byte; then writes `spec`'s bytes and fsyncs. The directory is not fsynced.
    pub fn create_file(&self, name: &std::ffi::OsStr, spec: &FileSpec) -> Result<(), FsError> {
        self.create_file_with(name, spec, &mut |f| f.write_all(&spec.bytes))
    }

    /// [`Dir::create_file`] of what `fill` writes.
    fn create_file_with(
        &self,
        name: &std::ffi::OsStr,
        spec: &FileSpec,
        fill: &mut dyn FnMut(&mut File) -> io::Result<()>,
    ) -> Result<(), FsError> {
        use nix::fcntl::OFlag;
        let path = self.path.join(name);
        let fd = nix::fcntl::openat(
            &self.fd,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .map_err(|e| io_err(&path, "cannot create file")(e.into()))?;
        let mut file = File::from(fd);
        if spec.uid.is_some() || spec.gid.is_some() {
            std::os::unix::fs::fchown(&file, spec.uid, spec.gid)
                .map_err(io_err(&path, "cannot set owner"))?;
        }
        file.set_permissions(Permissions::from_mode(spec.mode))
            .map_err(io_err(&path, "cannot set mode"))?;
        fill(&mut file).map_err(io_err(&path, "cannot write"))?;
        // A file made here is on this directory's filesystem.
        let dev = if deferring() { self.dev().ok() } else { None };
        sync_or_defer_on(&file, dev, &path, "cannot fsync")
    }

    /// Writes `name` atomically: a temporary file made here, renamed over `name`
    /// (whatever it is), then this directory fsynced. Always flushed at once, also
    /// inside a [`GroupCommit`]: the rename must not come before the data.
    pub fn replace_file(&self, name: &std::ffi::OsStr, spec: &FileSpec) -> Result<(), FsError> {
        self.replace_file_with(name, spec, &mut |f| f.write_all(&spec.bytes))
    }

    /// [`Dir::replace_file`] of what `fill` writes.
    fn replace_file_with(
        &self,
        name: &std::ffi::OsStr,
        spec: &FileSpec,
        fill: &mut dyn FnMut(&mut File) -> io::Result<()>,
    ) -> Result<(), FsError> {
        GroupCommit::durable(|| {
            let tmp = temp_name(Path::new(name));
            let tmp = tmp.as_os_str();
            let result = self
                .create_file_with(tmp, spec, fill)
                .and_then(|()| self.rename(tmp, name))
                .and_then(|()| self.sync());
            if result.is_err() {
                let _ = self.unlink(tmp);
            }
            result
        })
    }

    /// Puts a symbolic link to `target` at `name`: a link made beside it, renamed
    /// over it. The directory is not fsynced.
    pub fn replace_link(&self, name: &std::ffi::OsStr, target: &Path) -> Result<(), FsError> {
        let tmp = temp_name(Path::new(name));
        let tmp = tmp.as_os_str();
        nix::unistd::symlinkat(target, &self.fd, tmp)
            .map_err(|e| io_err(&self.path.join(tmp), "cannot create link")(e.into()))?;
        let result = self.rename(tmp, name);
        if result.is_err() {
            let _ = self.unlink(tmp);
        }
        result
    }

    /// Puts a symbolic link to `target` at `name`, which was missing when the caller
    /// looked: made in place (a link appears whole, as a renamed one does), or, should
    /// something have appeared there since, as [`Dir::replace_link`] does. The
    /// directory is not fsynced.
    pub fn put_link(&self, name: &std::ffi::OsStr, target: &Path) -> Result<(), FsError> {
        match nix::unistd::symlinkat(target, &self.fd, name) {
            Ok(()) => Ok(()),
            Err(nix::errno::Errno::EEXIST) => self.replace_link(name, target),
            Err(e) => Err(io_err(&self.path.join(name), "cannot create link")(
                e.into(),
            )),
        }
    }

    /// Renames `from` to `to`, both in this directory.
    pub fn rename(&self, from: &std::ffi::OsStr, to: &std::ffi::OsStr) -> Result<(), FsError> {
        nix::fcntl::renameat(&self.fd, from, &self.fd, to)
            .map_err(|e| io_err(&self.path.join(to), "cannot rename into place")(e.into()))
    }

    /// Swaps the entries `a` and `b` of this directory in one step (`RENAME_EXCHANGE`).
    /// Filesystems without it answer `EINVAL`, which the caller may handle.
    pub fn exchange(&self, a: &str, b: &str) -> Result<(), nix::errno::Errno> {
        nix::fcntl::renameat2(
            &self.fd,
            a,
            &self.fd,
            b,
            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
        )
    }

    /// Makes `to` here a hard link to the file `name` of `from` (never a link itself:
    /// without `AT_SYMLINK_FOLLOW` a symbolic link would be linked, not followed, and
    /// the caller links only regular files it has listed).
    pub fn link_from(
        &self,
        from: &Dir,
        name: &std::ffi::OsStr,
        to: &std::ffi::OsStr,
    ) -> Result<(), FsError> {
        nix::unistd::linkat(&from.fd, name, &self.fd, to, nix::fcntl::AtFlags::empty())
            .map_err(|e| io_err(&self.path.join(to), "cannot link")(e.into()))
    }

    /// The regular files in this directory (no links, no directories), by name.
    pub fn regular_files(&self) -> Result<Vec<String>, FsError> {
        let mut out = Vec::new();
        let rd = fs::read_dir(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&self.fd)
        ))
        .map_err(io_err(&self.path, "cannot list directory"))?;
        for entry in rd.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_file()) {
                if let Some(name) = entry.file_name().to_str() {
                    out.push(name.to_string());
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// Removes the empty directory `name`.
    pub fn remove_dir(&self, name: &str) -> Result<(), FsError> {
        nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::RemoveDir)
            .map_err(|e| io_err(&self.path.join(name), "cannot remove")(e.into()))
    }

    /// Removes the file or link `name` (not a directory).
    pub fn unlink(&self, name: &std::ffi::OsStr) -> Result<(), FsError> {
        nix::unistd::unlinkat(&self.fd, name, nix::unistd::UnlinkatFlags::NoRemoveDir)
            .map_err(|e| io_err(&self.path.join(name), "cannot remove")(e.into()))
    }

    /// Makes the directory `name` here (`mode`, set explicitly); an existing entry is
    /// an error. The caller fsyncs this directory.
    pub fn make_dir(&self, name: &str, mode: u32) -> Result<Dir, FsError> {
        let path = self.path.join(name);
        nix::sys::stat::mkdirat(
            &self.fd,
            name,
            nix::sys::stat::Mode::from_bits_truncate(mode),
        )
        .map_err(|e| io_err(&path, "cannot create directory")(e.into()))?;
        let dir = self.subdir(name, None)?;
        if let Some(dev) = self.dev.get() {
            let _ = dir.dev.set(*dev);
        }
        dir.fd
            .set_permissions(Permissions::from_mode(mode))
            .map_err(io_err(&path, "cannot set the mode of new directory"))?;
        Ok(dir)
    }

    pub fn sync(&self) -> Result<(), FsError> {
        if !deferring() {
            return self
                .fd
                .sync_all()
                .map_err(io_err(&self.path, "cannot fsync directory"));
        }
        sync_or_defer_on(
            &self.fd,
            Some(self.dev()?),
            &self.path,
            "cannot fsync directory",
        )
    }
}

/// Why a directory certkeeper keeps secrets in is not safe, if it exists and is not:
/// group or others may write it (and so plant links or swap files), or it belongs to
/// a user other than the one certkeeper runs as (and root).
pub fn unsafe_dir(dir: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = fs::metadata(dir).ok().filter(|m| m.is_dir())?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.mode() & 0o022 != 0 {
        Some(format!(
            "can be written by {} (mode {:o})",
            if meta.mode() & 0o002 != 0 {
                "anyone"
            } else {
                "its group"
            },
            meta.mode() & 0o7777
        ))
    } else if meta.uid() != me && meta.uid() != 0 {
        Some(format!(
            "belongs to uid {}, not to uid {me} that certkeeper runs as",
            meta.uid()
        ))
    } else {
        None
    }
}

/// Checks that no component of `path`'s directory is a symbolic link (for messages
/// before anything is written; the writes themselves go through [`Dir`]). Components
/// that do not exist yet are fine: certkeeper makes them.
pub fn check_no_links(path: &Path) -> Result<(), FsError> {
    no_link_on_way(path.parent().unwrap_or(Path::new("/")))
}

/// Checks that no component of `dir` (itself included) is a symbolic link; missing
/// components are fine.
pub fn no_link_on_way(dir: &Path) -> Result<(), FsError> {
    let full = lexical(dir);
    let mut here = PathBuf::from("/");
    for part in full.iter().skip(1) {
        here.push(part);
        match fs::symlink_metadata(&here) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(FsError::LinkInPath {
                    link: here,
                    path: full,
                })
            }
            Ok(m) if !m.is_dir() => return Err(FsError::NotADirectory { path: here }),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// A name for a temporary sibling of `target`: `.NAME.certkeeper-tmp-RANDOM`, which
/// `remove_stale_temp_files` and the daemon recognise as ours.
pub fn temp_name(target: &Path) -> PathBuf {
    let mut rnd = [0u8; 6];
    let _ = aws_lc_rs::rand::fill(&mut rnd);
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(
        ".{name}.certkeeper-tmp-{}",
        crate::encoding::hex(&rnd)
    ))
}

/// Removes temporary files a killed certkeeper left in `dir` (only names it makes
/// itself). The caller holds the state lock, so no live writer owns them.
pub fn remove_stale_temp_files(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.')
            && name.contains(".certkeeper-tmp-")
            && fs::remove_file(e.path()).is_ok()
        {
            tracing::info!(path = %e.path().display(), "removed a temporary file left by an interrupted install");
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;
    use std::os::unix::fs::MetadataExt;

    fn spec(path: &Path, bytes: &[u8], mode: u32) -> FileSpec {
        FileSpec {
            path: path.to_path_buf(),
            bytes: Zeroizing::new(bytes.to_vec()),
            mode,
            uid: None,
            gid: None,
            follow_symlinks: false,
        }
    }

    #[test]
    fn a_link_put_where_nothing_was_is_made_in_place_and_replaces_what_appeared() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::reach(tmp.path(), None).unwrap();
        dir.put_link("a.crt".as_ref(), Path::new("store/current/cert.pem"))
            .unwrap();
        assert_eq!(
            fs::read_link(tmp.path().join("a.crt")).unwrap(),
            Path::new("store/current/cert.pem")
        );
        // Something appeared since the caller looked: replaced whole, as before.
        fs::write(tmp.path().join("b.crt"), "old").unwrap();
        dir.put_link("b.crt".as_ref(), Path::new("x")).unwrap();
        assert_eq!(
            fs::read_link(tmp.path().join("b.crt")).unwrap(),
            Path::new("x")
        );
        dir.put_link("a.crt".as_ref(), Path::new("y")).unwrap();
        assert_eq!(
            fs::read_link(tmp.path().join("a.crt")).unwrap(),
            Path::new("y")
        );
        let mut left: Vec<_> = fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["a.crt", "b.crt"], "no temporary link left");
    }

    #[test]
    fn a_file_written_as_it_is_made_is_atomic_private_and_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.json");
        fs::write(&path, "old").unwrap();
        let s = spec(&path, b"", 0o600);
        let mut fill = |f: &mut File| -> io::Result<()> {
            for i in 0..1000 {
                write!(f, "{i},")?;
            }
            Ok(())
        };
        write_atomic_with(&s, &mut fill).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("0,1,2,") && text.ends_with("999,"),
            "{text}"
        );
        assert_eq!(fs::metadata(&path).unwrap().mode() & 0o7777, 0o600);
        // A failure while writing leaves the file as it was, and no temporary file.
        let mut failing = |f: &mut File| -> io::Result<()> {
            f.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        };
        assert!(write_atomic_with(&s, &mut failing).is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        // A link at the path is not written through.
        let elsewhere = dir.path().join("elsewhere");
        fs::write(&elsewhere, "theirs").unwrap();
        let linked = dir.path().join("linked.json");
        std::os::unix::fs::symlink(&elsewhere, &linked).unwrap();
        assert!(write_atomic_with(&spec(&linked, b"", 0o600), &mut fill).is_err());
        assert_eq!(fs::read_to_string(&elsewhere).unwrap(), "theirs");
    }

    #[test]
    fn the_resolver_answers_as_resolved_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let link = |target: &str, at: &str| {
            std::os::unix::fs::symlink(target, root.join(at)).unwrap();
        };
        fs::create_dir_all(root.join("state/ca")).unwrap();
        fs::create_dir_all(root.join("tls/.certkeeper/web/p1")).unwrap();
        fs::write(root.join("tls/.certkeeper/web/p1/cert.pem"), "x").unwrap();
        fs::write(root.join("file"), "x").unwrap();
        link(root.join("state").to_str().unwrap(), "alias");
        link("p1", "tls/.certkeeper/web/current");
        link(".certkeeper/web/current/cert.pem", "tls/web.crt");
        link("nowhere/at/all", "dangling");
        link("../state", "tls/up");
        link("loop-b", "loop-a");
        link("loop-a", "loop-b");
        link("alias", "alias2");
        let paths = [
            "state/ca/x",
            "alias/ca/root.key",
            "alias2/ca/root.key",
            "alias/new/deeper/file",
            "tls/web.crt",
            "tls/.certkeeper/web/current/cert.pem",
            "tls/.certkeeper/web/current",
            "dangling",
            "dangling/below",
            "tls/up/ca",
            "loop-a",
            "loop-a/x",
            "file",
            "file/x",
            "nothing/here",
            "tls/../state/ca",
            "alias/./ca",
        ];
        let mut resolver = Resolver::default();
        for round in 0..2 {
            for p in paths {
                let p = root.join(p);
                assert_eq!(
                    resolver.resolve(&p),
                    resolved(&p),
                    "{} (round {round})",
                    p.display()
                );
            }
        }
        assert_eq!(
            resolver.resolve(Path::new("relative/x")),
            resolved(Path::new("relative/x"))
        );
    }

    #[test]
    fn locate_follows_a_last_link_only_where_an_install_writes_through_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("tls/.certkeeper/web/p1")).unwrap();
        fs::create_dir_all(root.join("state")).unwrap();
        fs::write(root.join("tls/.certkeeper/web/p1/cert.pem"), "x").unwrap();
        fs::write(root.join("plain.crt"), "x").unwrap();
        fs::write(root.join("state/x"), "x").unwrap();
        std::os::unix::fs::symlink("p1", root.join("tls/.certkeeper/web/current")).unwrap();
        std::os::unix::fs::symlink(".certkeeper/web/current/cert.pem", root.join("tls/web.crt"))
            .unwrap();
        std::os::unix::fs::symlink(root.join("state/x"), root.join("tls/foreign.crt")).unwrap();
        let store = |t: &Path| t.starts_with(".certkeeper");
        let mut r = Resolver::default();
        let kept = r.locate(&root.join("tls/web.crt"), true, store);
        assert_eq!(kept.real, root.join("tls/web.crt"));
        let link_id = fs::symlink_metadata(root.join("tls/web.crt")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(kept.id, Some((link_id.dev(), link_id.ino())));
        // Without the exception, the same link is followed as `resolved` does.
        let followed = r.locate(&root.join("tls/web.crt"), true, |_| false);
        assert_eq!(followed.real, root.join("tls/.certkeeper/web/p1/cert.pem"));
        assert_eq!(
            followed.id,
            file_identity(&root.join("tls/.certkeeper/web/p1/cert.pem"))
        );
        let foreign = r.locate(&root.join("tls/foreign.crt"), true, store);
        assert_eq!(foreign.real, root.join("state/x"));
        assert_eq!(foreign.id, file_identity(&root.join("state/x")));
        // Not followed when links are not written through: the link itself.
        let refused = r.locate(&root.join("tls/foreign.crt"), false, store);
        assert_eq!(refused.real, root.join("tls/foreign.crt"));
        let link = fs::symlink_metadata(root.join("tls/foreign.crt")).unwrap();
        assert_eq!(refused.id, Some((link.dev(), link.ino())));
        let plain = r.locate(&root.join("plain.crt"), false, store);
        assert_eq!(plain.real, root.join("plain.crt"));
        assert_eq!(plain.id, file_identity(&root.join("plain.crt")));
        let missing = r.locate(&root.join("tls/../new/x.crt"), false, store);
        assert_eq!(missing.real, root.join("new/x.crt"));

        // Many at once: the same answers.
        let paths = [
            (root.join("tls/web.crt"), true),
            (root.join("tls/foreign.crt"), true),
            (root.join("tls/foreign.crt"), false),
            (root.join("plain.crt"), false),
            (root.join("tls/../new/x.crt"), false),
        ];
        locate_all_as_each(&paths, store);
    }

    /// `locate_all` of `paths` gives what `locate` of each gives; whether each has an
    /// identity.
    fn locate_all_as_each(
        paths: &[(PathBuf, bool)],
        store: impl Fn(&Path) -> bool + Sync,
    ) -> Vec<bool> {
        let wanted: Vec<(&Path, bool)> = paths.iter().map(|(p, f)| (p.as_path(), *f)).collect();
        let all = Resolver::default().locate_all(&wanted, &store);
        wanted
            .iter()
            .zip(&all)
            .map(|((path, follow), got)| {
                let one = Resolver::default().locate(path, *follow, &store);
                assert_eq!(
                    (&got.real, got.id),
                    (&one.real, one.id),
                    "{} (follow: {follow})",
                    path.display()
                );
                got.id.is_some()
            })
            .collect()
    }

    #[test]
    fn a_directory_read_whole_locates_as_each_path_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        let tls = root.join("tls");
        fs::create_dir_all(tls.join(".certkeeper/web/p1")).unwrap();
        fs::write(tls.join(".certkeeper/web/p1/cert.pem"), "x").unwrap();
        std::os::unix::fs::symlink("p1", tls.join(".certkeeper/web/current")).unwrap();
        fs::write(root.join("elsewhere"), "x").unwrap();
        let mut paths = Vec::new();
        for i in 0..LIST_AT_LEAST + 10 {
            let p = tls.join(format!("c{i}.crt"));
            match i % 5 {
                0 => fs::write(&p, "x").unwrap(),
                1 => std::os::unix::fs::symlink(".certkeeper/web/current/cert.pem", &p).unwrap(),
                2 => std::os::unix::fs::symlink(root.join("elsewhere"), &p).unwrap(),
                // A hard link to the first file.
                3 => fs::hard_link(tls.join("c0.crt"), &p).unwrap(),
                _ => {} // missing
            }
            paths.push((p, i % 2 == 0));
        }
        // A name twice, and one through `..`.
        paths.push((tls.join("c1.crt"), false));
        paths.push((tls.join("../tls/c3.crt"), true));
        // Read whole here (a file system whose listings give inodes as `stat` does).
        let names: Vec<&[u8]> = vec![b"c0.crt"; LIST_AT_LEAST];
        assert!(Listing::read(&tls, names, &mount_parents().unwrap()).is_some());
        let store = |t: &Path| t.starts_with(".certkeeper");
        let mut counts = std::collections::HashMap::new();
        for found in locate_all_as_each(&paths, store) {
            *counts.entry(found).or_insert(0) += 1;
        }
        assert!(
            counts[&true] > LIST_AT_LEAST / 2 && counts[&false] > 10,
            "{counts:?}"
        );
    }

    #[test]
    fn mount_points_are_read_as_the_kernel_escapes_them() {
        assert_eq!(unescape_mount("/srv/a\\040b"), "/srv/a b");
        assert_eq!(unescape_mount("/x\\134y\\011"), "/x\\y\t");
        assert_eq!(unescape_mount("/plain\\9"), "/plain\\9");
        assert!(
            mount_parents().unwrap().contains(Path::new("/")),
            "/proc is mounted under /"
        );
    }

    #[test]
    fn resolved_sees_through_dots_and_links_and_keeps_a_missing_tail() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("state/ca")).unwrap();
        std::os::unix::fs::symlink(root.join("state"), root.join("alias")).unwrap();
        assert_eq!(
            resolved(&root.join("tls/../state/ca/x")),
            root.join("state/ca/x")
        );
        assert_eq!(
            resolved(&root.join("alias/ca/root.key")),
            root.join("state/ca/root.key")
        );
        assert_eq!(resolved(&root.join("alias/new/../y")), root.join("state/y"));
        assert_eq!(
            resolved(&root.join("nothing/here")),
            root.join("nothing/here")
        );
        assert_eq!(
            resolved(Path::new("/nonexistent-x/a/../b")),
            Path::new("/nonexistent-x/b")
        );
        fs::write(root.join("a"), "x").unwrap();
        fs::hard_link(root.join("a"), root.join("b")).unwrap();
        assert_eq!(
            file_identity(&root.join("a")),
            file_identity(&root.join("b"))
        );
        assert_eq!(file_identity(&root.join("missing")), None);
    }

    #[test]
    fn writes_with_mode_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sub/k.key");
        write_atomic(&spec(&p, b"secret", 0o600)).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"secret");
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        write_atomic(&spec(&p, b"again", 0o640)).unwrap();
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o777, 0o640);
        assert_eq!(fs::read_dir(p.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn a_kept_handle_refuses_a_link_on_the_way_and_never_follows_one_swapped_in_later() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("real/tls")).unwrap();
        fs::create_dir_all(root.join("elsewhere/tls")).unwrap();
        std::os::unix::fs::symlink(root.join("real"), root.join("alias")).unwrap();
        let _batch = Batch::begin();
        // A link on the way is refused by name, kept handles or not.
        for _ in 0..2 {
            let err = Dir::reach(&root.join("alias/tls"), None).unwrap_err();
            match err {
                FsError::LinkInPath { link, path } => {
                    assert_eq!(link, root.join("alias"));
                    assert_eq!(path, root.join("alias/tls"));
                }
                other => panic!("{other}"),
            }
        }
        let err = Dir::reach(&root.join("alias/new"), Some(0o755)).unwrap_err();
        assert!(matches!(err, FsError::LinkInPath { .. }), "{err}");
        assert!(
            !root.join("real/new").exists(),
            "nothing made through the link"
        );

        // A directory reached once is kept: made where missing, with its mode.
        let tls = Dir::reach(&root.join("real/tls/store"), Some(0o750)).unwrap();
        assert!(tls.made());
        assert_eq!(
            fs::metadata(root.join("real/tls/store")).unwrap().mode() & 0o777,
            0o750
        );
        drop(tls);
        // Then `real` is swapped for a link to another tree: the batch goes on in the
        // directory it checked and writes nothing where the link points.
        fs::rename(root.join("real"), root.join("moved")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("real")).unwrap();
        let again = Dir::reach(&root.join("real/tls/store"), None).unwrap();
        assert!(!again.made());
        again
            .create_file(
                OsStr::new("key.pem"),
                &spec(Path::new("key.pem"), b"k", 0o600),
            )
            .unwrap();
        assert_eq!(
            fs::read(root.join("moved/tls/store/key.pem")).unwrap(),
            b"k"
        );
        assert!(!root.join("elsewhere/tls/store").exists());
        // So is a directory made below one it keeps.
        Dir::reach(&root.join("real/tls/other"), Some(0o755)).unwrap();
        assert!(root.join("moved/tls/other").is_dir());
        assert!(!root.join("elsewhere/tls/other").exists());
        // The next batch walks the path again, and refuses the link by name.
        drop(_batch);
        let _batch = Batch::begin();
        let err = Dir::reach(&root.join("real/tls/store"), None).unwrap_err();
        assert!(
            matches!(&err, FsError::LinkInPath { link, .. } if *link == root.join("real")),
            "{err}"
        );
    }

    #[test]
    fn without_a_batch_every_reach_walks_the_path_again() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir_all(root.join("real/tls")).unwrap();
        fs::create_dir_all(root.join("elsewhere/tls")).unwrap();
        Dir::reach(&root.join("real/tls"), None).unwrap();
        fs::rename(root.join("real"), root.join("moved")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("real")).unwrap();
        let err = Dir::reach(&root.join("real/tls"), None).unwrap_err();
        assert!(matches!(err, FsError::LinkInPath { .. }), "{err}");
        assert!(!in_batch());
        // Nested batches share what they keep; the outermost closes it.
        let outer = Batch::begin();
        let inner = Batch::begin();
        drop(inner);
        assert!(in_batch());
        drop(outer);
        assert!(!in_batch());
    }

    #[test]
    fn entries_and_stat_at_follow_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("f"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("d"), root.join("l")).unwrap();
        let d = Dir::open(&root, false).unwrap();
        let mut listed = d.entries().unwrap();
        listed.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            listed,
            [
                ("d".into(), Kind::Dir),
                ("f".into(), Kind::File),
                ("l".into(), Kind::Link)
            ]
        );
        assert_eq!(
            d.stat_at(OsStr::new("l")).unwrap().unwrap().kind,
            Kind::Link
        );
        assert!(d.stat_at(OsStr::new("missing")).unwrap().is_none());
        assert_eq!(d.read_link_at(OsStr::new("l")).unwrap(), root.join("d"));
    }

    #[test]
    fn refuses_symlinks_unless_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.crt");
        fs::write(&real, b"old").unwrap();
        let link = dir.path().join("link.crt");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let err = write_atomic(&spec(&link, b"new", 0o644)).unwrap_err();
        assert!(matches!(err, FsError::Symlink { .. }), "{err}");
        assert_eq!(fs::read(&real).unwrap(), b"old");
        let mut s = spec(&link, b"new", 0o644);
        s.follow_symlinks = true;
        write_atomic(&s).unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"new");
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
