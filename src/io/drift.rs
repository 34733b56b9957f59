//! What clients found at each verify target, kept between checks: drift (a server
//! that serves something other than the certificate on disk although nothing of
//! certkeeper's is pending: a vhost edited by hand, a reload someone else did, a
//! config management run) and problems a strict client refuses (a missing
//! intermediate, the wrong name, an untrusted chain...). Kept in
//! `state_dir/served.json` (certificate → target → finding), written only when it
//! changes, so that `status` sees it and a later check that finds all well clears it.

use crate::fsutil::{write_atomic, FileSpec, FsError};
use crate::state::StateDir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use zeroize::Zeroizing;

/// What a check found wrong at one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    /// The server serves another certificate than the one on disk, even after a reload.
    pub drift: bool,
    /// The sentence for the log, the ledger and `status`.
    pub note: String,
}

/// Certificate name → target label → finding.
pub type Findings = BTreeMap<String, BTreeMap<String, Finding>>;

fn path(state: &StateDir) -> PathBuf {
    state.root.join("served.json")
}

/// Every finding recorded.
pub fn findings(state: &StateDir) -> Findings {
    crate::fsread::read_regular(&path(state), 1 << 22)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// One target's finding now: `Some` wrong, `None` all well.
pub type Change = (String, String, Option<Finding>);

/// A finding that changed: (name, target, before, after).
pub type News = (String, String, Option<Finding>, Option<Finding>);

/// Applies what checks found, and returns the changes that were news: (name, target,
/// before, after). The file is written once, and only when something changed. The
/// caller holds the lock.
pub fn update(state: &StateDir, changes: Vec<Change>) -> Result<Vec<News>, FsError> {
    let mut all = findings(state);
    let mut news = Vec::new();
    for (name, target, found) in changes {
        let entry = all.entry(name.clone()).or_default();
        let before = match &found {
            Some(f) => entry.insert(target.clone(), f.clone()),
            None => entry.remove(&target),
        };
        if entry.is_empty() {
            all.remove(&name);
        }
        if before != found {
            news.push((name, target, before, found));
        }
    }
    if news.is_empty() {
        return Ok(news);
    }
    if all.is_empty() {
        return match std::fs::remove_file(path(state)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(FsError::Io {
                path: path(state),
                action: "cannot remove",
                source: e,
            }),
            _ => Ok(news),
        };
    }
    write_atomic(&FileSpec {
        path: path(state),
        bytes: Zeroizing::new(serde_json::to_vec_pretty(&all).expect("serializes")),
        mode: 0o600,
        uid: None,
        gid: None,
        follow_symlinks: false,
    })?;
    Ok(news)
}
