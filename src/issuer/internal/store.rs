//! The CA directory on disk. The issuing certificates keep their plain names
//! (`root.crt`, `intermediate.crt` and keys); earlier generations that still carry
//! leaves live in `old/`, a published root in `next-root.*`, and `generations.json`
//! says which generation each file is. A change of several files (a rotation) is
//! made in a copy of the directory (hard links for what stays) that is swapped with
//! the real one in one `RENAME_EXCHANGE`, so a crash leaves the old CA or the new one,
//! never a mix.

use super::CaError;
use crate::fsutil::{Dir, FileSpec, FsError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;
use time::OffsetDateTime;
use zeroize::Zeroizing;

pub const ROOT_CRT: &str = "root.crt";
pub const ROOT_KEY: &str = "root.key";
pub const INT_CRT: &str = "intermediate.crt";
pub const INT_KEY: &str = "intermediate.key";
pub const ROOT_CROSS: &str = "root-cross.crt";
pub const NEXT_ROOT_CRT: &str = "next-root.crt";
pub const NEXT_ROOT_KEY: &str = "next-root.key";
pub const NEXT_ROOT_CROSS: &str = "next-root-cross.crt";
pub const MANIFEST: &str = "generations.json";
pub const OLD: &str = "old";

pub fn old_int(generation: u32, ext: &str) -> String {
    format!("{OLD}/intermediate-{generation}.{ext}")
}

pub fn old_root(generation: u32, ext: &str) -> String {
    format!("{OLD}/root-{generation}.{ext}")
}

/// Which generation each file of the CA directory holds. A directory without the file
/// is a CA made before rotation existed: generation 1 of both.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub root: u32,
    pub intermediate: u32,
    /// The published root waiting for its overlap (`next-root.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_root: Option<NextRoot>,
    /// Earlier intermediates still carrying leaves (`old/intermediate-G.*`).
    #[serde(default)]
    pub retired: Vec<RetiredInt>,
    /// Earlier roots still trusted (`old/root-G.*`).
    #[serde(default)]
    pub old_roots: Vec<u32>,
    /// The latest end of a leaf `certkeeper issue` made under the current intermediate
    /// (leaves of the configuration are known from it).
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub adhoc_until: Option<OffsetDateTime>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextRoot {
    pub generation: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub published_at: OffsetDateTime,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetiredInt {
    pub generation: u32,
    /// The generation of the root that signed it.
    pub root: u32,
    #[serde(with = "time::serde::rfc3339")]
    pub retired_at: OffsetDateTime,
    /// When the last leaf it signed expires; it is dropped then.
    #[serde(with = "time::serde::rfc3339")]
    pub last_leaf: OffsetDateTime,
}

impl Default for Manifest {
    fn default() -> Manifest {
        Manifest {
            root: 1,
            intermediate: 1,
            next_root: None,
            retired: Vec::new(),
            old_roots: Vec::new(),
            adhoc_until: None,
        }
    }
}

impl Manifest {
    pub fn read(dir: &Path) -> Result<Manifest, CaError> {
        let path = dir.join(MANIFEST);
        match crate::fsread::read_own(&path, 1 << 20) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| CaError::Damaged {
                path,
                reason: format!("not a generations file: {e}"),
            }),
            Err(e) if e.is_not_found() => Ok(Manifest::default()),
            Err(e) => Err(e.into()),
        }
    }

    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut text = serde_json::to_vec_pretty(self).expect("serializable");
        text.push(b'\n');
        Zeroizing::new(text)
    }

    /// The next free generation number for an intermediate or a root.
    pub fn next_intermediate(&self) -> u32 {
        self.retired
            .iter()
            .map(|r| r.generation)
            .chain([self.intermediate])
            .max()
            .unwrap_or(0)
            + 1
    }
}

/// One change to the CA directory, by name relative to it (`old/…` allowed).
pub enum Edit {
    Write {
        name: String,
        bytes: Zeroizing<Vec<u8>>,
        mode: u32,
    },
    /// Keeps the file under another name (its bytes, owner and mode unchanged).
    Rename {
        from: String,
        to: String,
    },
    Remove(String),
}

impl Edit {
    pub fn write(name: impl Into<String>, bytes: impl Into<Vec<u8>>, mode: u32) -> Edit {
        Edit::Write {
            name: name.into(),
            bytes: Zeroizing::new(bytes.into()),
            mode,
        }
    }
    pub fn rename(from: impl Into<String>, to: impl Into<String>) -> Edit {
        Edit::Rename {
            from: from.into(),
            to: to.into(),
        }
    }
}

const STAGING: &str = ".ca-next";
const PREVIOUS: &str = ".ca-previous";

enum Source {
    Keep(String),
    New(Zeroizing<Vec<u8>>, u32),
}

/// Applies `edits` to the CA directory `dir` all at once (see the module's comment).
/// The caller holds the state lock.
pub fn commit(dir: &Path, edits: Vec<Edit>) -> Result<(), CaError> {
    let parent_path = dir.parent().unwrap_or(Path::new("/"));
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| CaError::Create(format!("{}: not a directory name", dir.display())))?;
    let parent = Dir::open(parent_path, false)?;
    let current = parent.subdir(name, None)?;
    let old = current.subdir(OLD, None).ok();

    // What the new directory holds: every regular file of the current one, edited.
    let mut files: BTreeMap<String, Source> = BTreeMap::new();
    for f in current.regular_files()? {
        if !f.starts_with('.') {
            files.insert(f.clone(), Source::Keep(f));
        }
    }
    if let Some(old) = &old {
        for f in old.regular_files()? {
            if !f.starts_with('.') {
                let n = format!("{OLD}/{f}");
                files.insert(n.clone(), Source::Keep(n));
            }
        }
    }
    for edit in edits {
        match edit {
            Edit::Write { name, bytes, mode } => {
                files.insert(name, Source::New(bytes, mode));
            }
            Edit::Rename { from, to } => {
                if let Some(src) = files.remove(&from) {
                    files.insert(to, src);
                }
            }
            Edit::Remove(name) => {
                files.remove(&name);
            }
        }
    }

    remove_tree(&parent, STAGING)?;
    let staging = parent.make_dir(STAGING, 0o700)?;
    let staging_old = staging.make_dir(OLD, 0o700)?;
    for (to, src) in &files {
        let (into, to_name) = match to.strip_prefix(&format!("{OLD}/")) {
            Some(rest) => (&staging_old, rest),
            None => (&staging, to.as_str()),
        };
        match src {
            Source::Keep(from) => {
                let (dir_from, from_name) = match from.strip_prefix(&format!("{OLD}/")) {
                    Some(rest) => (old.as_ref().expect("listed from old/"), rest),
                    None => (&current, from.as_str()),
                };
                into.link_from(dir_from, from_name.as_ref(), to_name.as_ref())?;
            }
            Source::New(bytes, mode) => into.create_file(
                to_name.as_ref(),
                &FileSpec {
                    path: dir.join(to),
                    bytes: bytes.clone(),
                    mode: *mode,
                    uid: None,
                    gid: None,
                    follow_symlinks: false,
                },
            )?,
        }
    }
    staging_old.sync()?;
    staging.sync()?;
    match parent.exchange(STAGING, name) {
        Ok(()) => {}
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {
            // No RENAME_EXCHANGE here: two renames; `recover` puts the old CA back if
            // a crash comes between them.
            remove_tree(&parent, PREVIOUS)?;
            parent.rename(name.as_ref(), PREVIOUS.as_ref())?;
            parent.sync()?;
            parent.rename(STAGING.as_ref(), name.as_ref())?;
            parent.sync()?;
            return Ok(remove_tree(&parent, PREVIOUS)?);
        }
        Err(e) => {
            return Err(FsError::Io {
                path: dir.to_path_buf(),
                action: "cannot move the new CA into place",
                source: e.into(),
            }
            .into())
        }
    }
    parent.sync()?;
    // The staging name now holds the CA as it was.
    Ok(remove_tree(&parent, STAGING)?)
}

/// Puts back a CA directory that a crash left between the two renames of a commit on
/// a filesystem without `RENAME_EXCHANGE`.
pub fn recover(dir: &Path) {
    let Some(parent_path) = dir.parent() else {
        return;
    };
    if !dir.exists() && parent_path.join(PREVIOUS).is_dir() {
        if let Ok(parent) = Dir::open(parent_path, false) {
            let name = dir.file_name().unwrap_or_default();
            if parent.rename(PREVIOUS.as_ref(), name).is_ok() {
                let _ = parent.sync();
                tracing::warn!(dir = %dir.display(), "put back the CA an interrupted rotation had moved away");
            }
        }
    }
}

/// Removes `name` (a directory of regular files and an `old/` of regular files, as
/// `commit` makes them) from `parent`, if it exists.
fn remove_tree(parent: &Dir, name: &str) -> Result<(), FsError> {
    let Ok(d) = parent.subdir(name, None) else {
        return Ok(());
    };
    if let Ok(sub) = d.subdir(OLD, None) {
        for f in sub.regular_files()? {
            sub.unlink(f.as_ref())?;
        }
        d.remove_dir(OLD)?;
    }
    for f in d.regular_files()? {
        d.unlink(f.as_ref())?;
    }
    parent.remove_dir(name)
}
