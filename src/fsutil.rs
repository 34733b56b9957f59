//! Safe file writes: a temporary file in the target's directory, created with a
//! restrictive mode, given its final owner and mode, fsynced, renamed into place, and
//! the directory fsynced. Symlinks at targets are refused unless explicitly allowed.

use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
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

/// A file's device and inode, when it exists: hard links to one file share them.
pub fn file_identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Creates `dir` and missing parents with `mode` (new directories only; the mode is
/// set explicitly, so the process umask does not narrow it).
pub fn ensure_dir(dir: &Path, mode: u32) -> Result<(), FsError> {
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
        ensure_dir(parent, mode)?;
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

/// Writes `spec`'s bytes, owner and mode to `target` atomically: a temporary file in
/// `target`'s directory, renamed over `target` (whatever `target` is: a file, a symlink,
/// nothing; the rename replaces the directory entry, it follows nothing), then the
/// directory fsynced. `spec.path` is not looked at: the caller resolved the target.
pub fn replace_with(target: &Path, spec: &FileSpec) -> Result<(), FsError> {
    let dir = target.parent().unwrap_or(Path::new("/")).to_path_buf();
    ensure_dir(&dir, 0o755)?;
    let tmp = temp_name(target);
    let result = (|| {
        write_new(&tmp, spec)?;
        fs::rename(&tmp, target).map_err(io_err(target, "cannot rename into place"))?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Creates `path`, which must not exist (`O_EXCL | O_NOFOLLOW`: never through a link),
/// mode 0600 until its owner and final mode are set, all before the first byte; then
/// writes `spec`'s bytes and fsyncs. The directory is not fsynced.
pub fn write_new(path: &Path, spec: &FileSpec) -> Result<(), FsError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits() | nix::fcntl::OFlag::O_CLOEXEC.bits())
        .open(path)
        .map_err(io_err(path, "cannot create file"))?;
    if spec.uid.is_some() || spec.gid.is_some() {
        std::os::unix::fs::fchown(&file, spec.uid, spec.gid)
            .map_err(io_err(path, "cannot set owner"))?;
    }
    file.set_permissions(Permissions::from_mode(spec.mode))
        .map_err(io_err(path, "cannot set mode"))?;
    file.write_all(&spec.bytes)
        .map_err(io_err(path, "cannot write"))?;
    file.sync_all().map_err(io_err(path, "cannot fsync"))
}

pub fn sync_dir(dir: &Path) -> Result<(), FsError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir, "cannot fsync directory"))
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
    target.with_file_name(format!(".{name}.certkeeper-tmp-{}", crate::x509::hex(&rnd)))
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
