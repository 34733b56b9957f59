//! ACME Renewal Information (RFC 9773) as last fetched, per certificate: the window the
//! CA suggests for the serial in place, or that it has none (no ARI, or an error, when
//! `renew_before` decides), and when to ask again (the CA's `Retry-After`). Kept in
//! `state_dir/ari.json`, written once per pass and only when it changed.

use crate::fsutil::{write_atomic, FileSpec, FsError};
use crate::state::StateDir;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// What the CA said about one certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The serial it is about.
    pub serial: String,
    /// The suggested window; None: no window (see `source`).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub start: Option<OffsetDateTime>,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    /// "ari", or why there is no window ("the CA has no ARI", "error: …").
    pub source: String,
    /// When to ask again.
    #[serde(with = "time::serde::rfc3339")]
    pub next_poll: OffsetDateTime,
}

impl Answer {
    pub fn window(&self) -> Option<(OffsetDateTime, OffsetDateTime)> {
        Some((self.start?, self.end?))
    }
}

fn path(state: &StateDir) -> PathBuf {
    state.root.join("ari.json")
}

pub fn load(state: &StateDir) -> BTreeMap<String, Answer> {
    crate::fsread::read_regular(&path(state), 1 << 24)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Writes `all`. The caller holds the lock.
pub fn store(state: &StateDir, all: &BTreeMap<String, Answer>) -> Result<(), FsError> {
    write_atomic(&FileSpec {
        path: path(state),
        bytes: Zeroizing::new(serde_json::to_vec_pretty(all).expect("serializes")),
        mode: 0o600,
        uid: None,
        gid: None,
        follow_symlinks: false,
    })
}
