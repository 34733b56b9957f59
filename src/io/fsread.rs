//! Bounded, typed reads of the files certkeeper is pointed at: the configuration,
//! managed and watched certificates, keys and chains, CA and ACME files, pid files and
//! `inspect` inputs. Only a regular file is read (a FIFO, a device or a socket is an
//! error, never a hang), and never more than a cap, checked on the open descriptor.
//! Nothing here writes, and nothing here knows what the bytes mean.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// The most certkeeper reads from a PEM file (a certificate, key, chain or bundle): a
/// long chain with a key is a few tens of kilobytes.
pub const PEM_MAX: u64 = 1 << 20;
/// The most certkeeper reads from its configuration file.
pub const CONFIG_MAX: u64 = 4 << 20;
/// The most certkeeper reads from a server's pid file (a number and a newline).
pub const PID_FILE_MAX: u64 = 4 << 10;

/// Why a file was not read.
#[derive(Debug)]
pub enum ReadError {
    NotFound { path: PathBuf },
    PermissionDenied { path: PathBuf, uid: u32 },
    NotAFile { path: PathBuf, kind: &'static str },
    TooBig { path: PathBuf, size: u64, cap: u64 },
    Io { path: PathBuf, source: io::Error },
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path().display(), self.what(""))
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl ReadError {
    pub fn path(&self) -> &Path {
        match self {
            ReadError::NotFound { path }
            | ReadError::PermissionDenied { path, .. }
            | ReadError::NotAFile { path, .. }
            | ReadError::TooBig { path, .. }
            | ReadError::Io { path, .. } => path,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::NotFound { .. })
    }

    /// The problem as a sentence of its own, for callers that name the path first
    /// (`/x/www.crt is damaged: it is a FIFO, not a regular file`).
    pub fn reason(&self) -> String {
        self.what("it ")
    }

    fn what(&self, subject: &str) -> String {
        match self {
            ReadError::NotFound { .. } => "no such file".into(),
            ReadError::PermissionDenied { uid, .. } => {
                format!("permission denied (certkeeper runs as uid {uid})")
            }
            ReadError::NotAFile { kind, .. } => format!("{subject}is {kind}, not a regular file"),
            ReadError::TooBig { size, cap, .. } => format!(
                "{subject}is {}, more than the {} certkeeper reads from such a file",
                size_text(*size),
                size_text(*cap)
            ),
            ReadError::Io { source, .. } => format!("cannot read: {source}"),
        }
    }

    fn io(path: &Path, source: io::Error) -> ReadError {
        let path = path.to_path_buf();
        match source.kind() {
            io::ErrorKind::NotFound => ReadError::NotFound { path },
            io::ErrorKind::PermissionDenied => ReadError::PermissionDenied {
                path,
                uid: nix::unistd::geteuid().as_raw(),
            },
            _ => ReadError::Io { path, source },
        }
    }
}

/// `1 MiB`, `2.5 MiB`, `900 KiB`, `12 bytes`.
fn size_text(n: u64) -> String {
    const KIB: u64 = 1 << 10;
    const MIB: u64 = 1 << 20;
    let scaled = |unit: u64, name: &str| {
        if n % unit == 0 {
            format!("{} {name}", n / unit)
        } else {
            format!("{:.1} {name}", n as f64 / unit as f64)
        }
    };
    if n >= MIB {
        scaled(MIB, "MiB")
    } else if n >= KIB {
        scaled(KIB, "KiB")
    } else {
        format!("{n} bytes")
    }
}

/// What a file that is not a regular file is, in words.
fn kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else if t.is_socket() {
        Some("a socket")
    } else {
        Some("not a file")
    }
}

fn check(path: &Path, meta: &Metadata, cap: u64) -> Result<(), ReadError> {
    if let Some(kind) = kind(meta) {
        return Err(ReadError::NotAFile {
            path: path.to_path_buf(),
            kind,
        });
    }
    if meta.len() > cap {
        return Err(ReadError::TooBig {
            path: path.to_path_buf(),
            size: meta.len(),
            cap,
        });
    }
    Ok(())
}

/// Reads `path` whole when it is a regular file of at most `cap` bytes. A link is
/// followed (a managed path may be the user's own link, or certkeeper's link into its
/// store): what counts is the file it leads to.
///
/// The type is looked at before the open (so that a device or a FIFO is never even
/// opened: opening one can have effects, such as releasing a writer waiting on the
/// FIFO) and again on the open descriptor, which is what is read. The open does not
/// block (`O_NONBLOCK`: a FIFO that appeared in between has no writer to wait for) and
/// cannot make a terminal ours (`O_NOCTTY`). At most `cap + 1` bytes are read, so a
/// file that grows meanwhile is refused rather than read on.
pub fn read_regular(path: &Path, cap: u64) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let meta = std::fs::metadata(path).map_err(|e| ReadError::io(path, e))?;
    check(path, &meta, cap)?;
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| ReadError::io(path, e))?;
    let meta = file.metadata().map_err(|e| ReadError::io(path, e))?;
    check(path, &meta, cap)?;
    read_capped(&file, path, meta.len(), cap)
}

fn read_capped(
    file: &File,
    path: &Path,
    size: u64,
    cap: u64,
) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    // Room for what fstat said and one byte more, so that a file of the size it claims
    // is read without the buffer moving (a moved buffer leaves a copy of a key behind).
    let mut bytes = Zeroizing::new(Vec::with_capacity(size.min(cap) as usize + 1));
    file.take(cap + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ReadError::io(path, e))?;
    let read = bytes.len() as u64;
    if read > cap {
        return Err(ReadError::TooBig {
            path: path.to_path_buf(),
            size: read.max(size),
            cap,
        });
    }
    Ok(bytes)
}

/// Reads a file certkeeper made itself (in its state directory): like `read_regular`,
/// but no link is followed, neither on the way nor at the file (a link there was
/// planted: refused as what it is).
pub fn read_own(path: &Path, cap: u64) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    read_own_with_meta(path, cap).map(|(bytes, _)| bytes)
}

/// `read_own`, with the metadata of the descriptor that was read: its mode and owner
/// are those of the bytes returned, for a file whose readers matter (a passphrase).
pub fn read_own_with_meta(
    path: &Path,
    cap: u64,
) -> Result<(Zeroizing<Vec<u8>>, Metadata), ReadError> {
    let io_error = |e: io::Error| ReadError::io(path, e);
    let dir =
        crate::fsutil::Dir::open(path.parent().unwrap_or(Path::new("/")), false).map_err(|e| {
            match e {
                crate::fsutil::FsError::Io { source, .. } => io_error(source),
                other => ReadError::Io {
                    path: path.to_path_buf(),
                    source: io::Error::other(other.to_string()),
                },
            }
        })?;
    let name = path.file_name().unwrap_or_default();
    let file = dir.open_read(name).map_err(|e| {
        if e.raw_os_error() == Some(libc::ELOOP) {
            ReadError::NotAFile {
                path: path.to_path_buf(),
                kind: "a symbolic link",
            }
        } else {
            io_error(e)
        }
    })?;
    let meta = file.metadata().map_err(io_error)?;
    check(path, &meta, cap)?;
    let bytes = read_capped(&file, path, meta.len(), cap)?;
    Ok((bytes, meta))
}

/// `read_own`, as UTF-8 text.
pub fn read_own_text(path: &Path, cap: u64) -> Result<Zeroizing<String>, ReadError> {
    let bytes = read_own(path, cap)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_string())),
        Err(e) => Err(ReadError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(io::ErrorKind::InvalidData, e.to_string()),
        }),
    }
}

/// `read_regular`, as UTF-8 text.
pub fn read_text(path: &Path, cap: u64) -> Result<Zeroizing<String>, ReadError> {
    let bytes = read_regular(path, cap)?;
    match std::str::from_utf8(&bytes) {
        Ok(_) => {
            // The bytes move into the String without a copy.
            let mut bytes = bytes;
            let owned = std::mem::take(&mut *bytes);
            Ok(Zeroizing::new(
                String::from_utf8(owned).expect("checked above"),
            ))
        }
        Err(e) => Err(ReadError::Io {
            path: path.to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::InvalidData,
                format!("not UTF-8 text (byte {})", e.valid_up_to()),
            ),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    fn tmp() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn reads_a_regular_file_up_to_the_cap() {
        let d = tmp();
        let p = d.path().join("a.pem");
        std::fs::write(&p, b"0123456789").unwrap();
        assert_eq!(&read_regular(&p, 10).unwrap()[..], b"0123456789");
        assert_eq!(&*read_text(&p, 100).unwrap(), "0123456789");
        let e = read_regular(&p, 9).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::TooBig {
                    size: 10,
                    cap: 9,
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            format!(
                "{}: is 10 bytes, more than the 9 bytes certkeeper reads from such a file",
                p.display()
            )
        );
    }

    #[test]
    fn an_empty_file_is_read_as_empty() {
        let d = tmp();
        let p = d.path().join("empty");
        std::fs::write(&p, b"").unwrap();
        assert!(read_regular(&p, PEM_MAX).unwrap().is_empty());
    }

    #[test]
    fn a_missing_file_is_told_apart() {
        let d = tmp();
        let e = read_regular(&d.path().join("nope"), PEM_MAX).unwrap_err();
        assert!(e.is_not_found(), "{e:?}");
        assert_eq!(e.reason(), "no such file");
    }

    #[test]
    fn a_fifo_is_refused_at_once() {
        let d = tmp();
        let p = d.path().join("fifo");
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = Instant::now();
        let e = read_regular(&p, PEM_MAX).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert!(
            matches!(e, ReadError::NotAFile { kind: "a FIFO", .. }),
            "{e:?}"
        );
        assert_eq!(e.reason(), "it is a FIFO, not a regular file");
        assert_eq!(
            e.to_string(),
            format!("{}: is a FIFO, not a regular file", p.display())
        );
    }

    #[test]
    fn devices_directories_and_sockets_are_refused() {
        let d = tmp();
        let link = d.path().join("zero.pem");
        std::os::unix::fs::symlink("/dev/zero", &link).unwrap();
        let sock = d.path().join("sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        for (p, kind) in [
            (Path::new("/dev/zero"), "a character device"),
            (link.as_path(), "a character device"),
            (d.path(), "a directory"),
            (sock.as_path(), "a socket"),
        ] {
            let e = read_regular(p, PEM_MAX).unwrap_err();
            match e {
                ReadError::NotAFile { kind: k, .. } => assert_eq!(k, kind, "{}", p.display()),
                other => panic!("{}: {other:?}", p.display()),
            }
        }
    }

    #[test]
    fn a_link_to_a_file_is_followed() {
        let d = tmp();
        let real = d.path().join("real.pem");
        std::fs::write(&real, b"x").unwrap();
        let link = d.path().join("link.pem");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(&read_regular(&link, 1).unwrap()[..], b"x");
    }

    #[test]
    fn a_file_that_grew_past_the_cap_after_fstat_is_refused() {
        // What fstat said is not trusted: at most cap + 1 bytes are read.
        let d = tmp();
        let p = d.path().join("grows");
        std::fs::write(&p, vec![b'a'; 100]).unwrap();
        let file = File::open(&p).unwrap();
        let e = read_capped(&file, &p, 10, 50).unwrap_err();
        assert!(
            matches!(
                e,
                ReadError::TooBig {
                    size: 51,
                    cap: 50,
                    ..
                }
            ),
            "{e:?}"
        );
        let file = File::open(&p).unwrap();
        assert_eq!(read_capped(&file, &p, 10, 100).unwrap().len(), 100);
    }

    #[test]
    fn text_that_is_not_utf8_is_an_error() {
        let d = tmp();
        let p = d.path().join("bin");
        std::fs::write(&p, b"ab\xff").unwrap();
        let e = read_text(&p, 10).unwrap_err();
        assert!(e.to_string().contains("not UTF-8 text (byte 2)"), "{e}");
    }

    #[test]
    fn an_unreadable_file_says_permission_denied() {
        if !nix::unistd::geteuid().is_root() {
            // Root reads any file; as another user a 0000 file is unreadable.
            let d = tmp();
            let p = d.path().join("secret");
            std::fs::write(&p, b"x").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o000)).unwrap();
            let e = read_regular(&p, 10).unwrap_err();
            assert!(matches!(e, ReadError::PermissionDenied { .. }), "{e:?}");
            assert!(e.to_string().contains("permission denied"), "{e}");
        } else {
            let e = ReadError::io(
                Path::new("/x"),
                io::Error::from(io::ErrorKind::PermissionDenied),
            );
            assert!(matches!(e, ReadError::PermissionDenied { .. }), "{e:?}");
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size_text(PEM_MAX), "1 MiB");
        assert_eq!(size_text(CONFIG_MAX), "4 MiB");
        assert_eq!(size_text(3 << 19), "1.5 MiB");
        assert_eq!(size_text(2048), "2 KiB");
        assert_eq!(size_text(12), "12 bytes");
    }
}
