//! The state directory: the lock that serializes writers, the archive of every pair
//! ever installed, and the ledger (one JSON line per issuance, install, failure).

use crate::fsutil::{ensure_dir, write_atomic, FileSpec, FsError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroizing;

#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
}

/// Held while writing state or installing files; released on drop.
pub struct StateLock {
    _lock: nix::fcntl::Flock<fs::File>,
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

impl StateDir {
    pub fn new(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    pub fn ca_dir(&self) -> PathBuf {
        self.root.join("ca")
    }

    pub fn ledger_path(&self) -> PathBuf {
        self.root.join("ledger.jsonl")
    }

    pub fn archive_dir(&self, name: &str, serial: &str) -> PathBuf {
        self.root.join("archive").join(name).join(serial)
    }

    /// Creates the state directory (0700) if it is missing.
    pub fn create(&self) -> Result<(), FsError> {
        ensure_dir(&self.root, 0o700)
    }

    /// Takes the exclusive lock, waiting for another certkeeper process to finish.
    pub fn lock(&self) -> Result<StateLock, FsError> {
        self.create()?;
        let path = self.root.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|source| FsError::Io {
                path: path.clone(),
                action: "cannot open lock file",
                source,
            })?;
        use nix::fcntl::{Flock, FlockArg};
        let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(l) => return Ok(StateLock { _lock: l }),
            Err((file, _)) => file,
        };
        tracing::info!(path = %path.display(), "another certkeeper holds the state lock; waiting");
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(l) => Ok(StateLock { _lock: l }),
            Err((_, errno)) => Err(FsError::Io {
                path,
                action: "cannot lock",
                source: std::io::Error::from(errno),
            }),
        }
    }

    /// Keeps a copy of an installed pair under `archive/NAME/SERIAL/`.
    pub fn archive(
        &self,
        name: &str,
        serial: &str,
        cert_pem: &str,
        chain_pem: &str,
        key_pem: &str,
    ) -> Result<PathBuf, FsError> {
        let dir = self.archive_dir(name, serial);
        ensure_dir(&self.root.join("archive"), 0o700)?;
        ensure_dir(&dir, 0o700)?;
        for (file, bytes, mode) in [
            ("cert.pem", cert_pem, 0o644),
            ("chain.pem", chain_pem, 0o644),
            ("key.pem", key_pem, 0o600),
        ] {
            write_atomic(&FileSpec {
                path: dir.join(file),
                bytes: Zeroizing::new(bytes.as_bytes().to_vec()),
                mode,
                uid: None,
                gid: None,
                follow_symlinks: false,
            })?;
        }
        Ok(dir)
    }

    /// Appends one line to the ledger and fsyncs it.
    pub fn record(&self, entry: &LedgerEntry) -> Result<(), FsError> {
        let path = self.ledger_path();
        let io = |source| FsError::Io {
            path: path.clone(),
            action: "cannot append to the ledger",
            source,
        };
        let mut line = serde_json::to_string(entry).expect("ledger entries serialize");
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        f.write_all(line.as_bytes()).map_err(io)?;
        f.sync_data().map_err(io)
    }

    /// Every ledger entry, oldest first. Lines that do not parse (a torn last line after
    /// a crash) are skipped.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        let Ok(f) = fs::File::open(self.ledger_path()) else {
            return Vec::new();
        };
        BufReader::new(f)
            .lines()
            .map_while(Result::ok)
            .filter_map(|l| serde_json::from_str(&l).ok())
            .collect()
    }

    /// The newest ledger entry of each certificate.
    pub fn last_events(&self) -> HashMap<String, LedgerEntry> {
        let mut out = HashMap::new();
        for e in self.ledger() {
            if let Some(n) = e.name.clone() {
                out.insert(n, e);
            }
        }
        out
    }
}
