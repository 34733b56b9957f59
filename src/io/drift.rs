//! Drift: a server that serves something other than the certificate on disk although
//! nothing of certkeeper's is pending (a vhost edited by hand, a reload someone else
//! did with other files, a config management run). Which certificates drift is kept in
//! `state_dir/drift.json` (name → what was found), written only when that changes, so
//! that `status` sees it and a later check that finds the right certificate clears it.

use crate::fsutil::{write_atomic, FileSpec, FsError};
use crate::state::StateDir;
use std::collections::BTreeMap;
use std::path::PathBuf;
use zeroize::Zeroizing;

fn path(state: &StateDir) -> PathBuf {
    state.root.join("drift.json")
}

/// The certificates found drifting, with what was found.
pub fn drifting(state: &StateDir) -> BTreeMap<String, String> {
    crate::fsread::read_regular(&path(state), 1 << 20)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records (`Some`) or clears (`None`) the drift of `name`. The caller holds the lock.
pub fn set(state: &StateDir, name: &str, found: Option<String>) -> Result<(), FsError> {
    let mut all = drifting(state);
    let changed = match found {
        Some(f) => all.insert(name.to_string(), f.clone()).as_ref() != Some(&f),
        None => all.remove(name).is_some(),
    };
    if !changed {
        return Ok(());
    }
    if all.is_empty() {
        return match std::fs::remove_file(path(state)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FsError::Io {
                path: path(state),
                action: "cannot remove",
                source: e,
            }),
            _ => Ok(()),
        };
    }
    write_atomic(&FileSpec {
        path: path(state),
        bytes: Zeroizing::new(serde_json::to_vec_pretty(&all).expect("serializes")),
        mode: 0o600,
        uid: None,
        gid: None,
        follow_symlinks: false,
    })
}
