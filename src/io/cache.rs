//! The daemon's memory of what it last checked: per certificate, the identity of each
//! file (device, inode, size, mtime, ctime) when it was fully read and verified, and
//! the leaf facts the renewal decision needs. A file whose identity is unchanged is
//! not read again, which keeps start-up with thousands of certificates fast. Any change
//! to a file (a rename, a write, a chmod: ctime cannot be set back) or to the CA
//! invalidates the entry. Persisted in `state_dir/observed.json`; a cache that cannot
//! be read is ignored, never trusted.

use crate::config::CertSpec;
use crate::fsutil::{write_atomic, FileSpec};
use crate::model::{KeyType, San, Usage};
use crate::policy::{Present, Seen};
use crate::state::StateDir;
use crate::x509::CertInfo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use time::OffsetDateTime;
use zeroize::Zeroizing;

const VERSION: u32 = 2;

/// A file's identity: device, inode, size, mtime and ctime (nanoseconds since 1970,
/// which fit 64 bits until 2262). Stamps are kept in the order of the certificate's
/// files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp(u64, u64, u64, i64, i64);

/// Kept for every certificate the daemon manages, so kept small: exact-size slices,
/// and boxed in the map (whose table then stays small as it grows).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    stamps: Box<[Stamp]>,
    serial: String,
    not_before: i64,
    not_after: i64,
    common_name: Option<String>,
    sans: Box<[String]>,
    other_names: Box<[String]>,
    key_type: Option<String>,
    usage: Option<String>,
    fingerprint: String,
    from_issuer: bool,
    /// The end of the CA certificate that signed it (absent in older caches).
    #[serde(default)]
    issuer_not_after: Option<i64>,
    /// Signed by the intermediate that issues now (not a retired one).
    #[serde(default = "yes")]
    issuer_current: bool,
}

fn yes() -> bool {
    true
}

#[derive(Serialize, Deserialize, Default)]
struct CacheFile {
    version: u32,
    /// Fingerprint of the intermediate the entries were checked against.
    intermediate: String,
    entries: HashMap<Box<str>, Box<Entry>>,
}

#[derive(Default)]
pub struct ObserveCache {
    file: CacheFile,
    dirty: bool,
}

/// What one observation adds to the cache.
pub struct Learned(Box<str>, Box<Entry>);

impl ObserveCache {
    /// The entries checked against the intermediate whose fingerprint is
    /// `intermediate`: none when they were checked against another one.
    pub fn for_intermediate(mut self, intermediate: &str) -> ObserveCache {
        if self.file.intermediate != intermediate {
            self.file.intermediate = intermediate.to_string();
            self.dirty |= !self.file.entries.is_empty();
            self.file.entries.clear();
        }
        self
    }

    /// The cache as saved, whichever CA its entries were checked against (see
    /// [`ObserveCache::intermediate`]); empty when there is none or it cannot be read.
    pub fn read(state: &StateDir) -> ObserveCache {
        let path = state.root.join("observed.json");
        // Read whole, then parsed: serde_json reads a slice several times faster than
        // a reader (5 MB with 10,000 certificates).
        let file = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<CacheFile>(&bytes).ok())
            .filter(|f| f.version == VERSION)
            .unwrap_or_else(|| CacheFile {
                version: VERSION,
                intermediate: String::new(),
                entries: HashMap::new(),
            });
        ObserveCache { file, dirty: false }
    }

    pub fn intermediate(&self) -> &str {
        &self.file.intermediate
    }

    pub fn save(&mut self, state: &StateDir) {
        if !self.dirty {
            return;
        }
        // One buffer of about the right size (an entry is about 520 bytes): growing it by
        // doubling would copy megabytes with thousands of certificates.
        let mut bytes = Vec::with_capacity(256 + 600 * self.file.entries.len());
        serde_json::to_writer(&mut bytes, &self.file).expect("cache serializes");
        let spec = FileSpec {
            path: state.root.join("observed.json"),
            bytes: Zeroizing::new(bytes),
            mode: 0o600,
            uid: None,
            gid: None,
            follow_symlinks: false,
        };
        match write_atomic(&spec) {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!(error = %e, "cannot save the observation cache"),
        }
    }

    /// Forgets certificates no longer in the configuration.
    pub fn retain(&mut self, names: &std::collections::HashSet<&str>) {
        let before = self.file.entries.len();
        self.file.entries.retain(|n, _| names.contains(&**n));
        self.dirty |= before != self.file.entries.len();
    }

    /// The identities of a certificate's files (and of the password file of a `pkcs12`
    /// layout: a new password makes the file be opened again), or None when one cannot
    /// be stat'ed; with the metadata of the key's file (see `observe::key_path`), which
    /// the look at its mode and owner uses.
    pub fn stamps(spec: &CertSpec) -> Option<(Vec<Stamp>, std::fs::Metadata)> {
        let key = crate::observe::key_path(spec);
        let mut key_meta = None;
        let stamps = spec
            .files
            .paths()
            .iter()
            .map(|(_, p)| *p)
            .chain(spec.files.password_file())
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                let stamp = Stamp(
                    m.dev(),
                    m.ino(),
                    m.size(),
                    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
                    m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
                );
                if p == key && key_meta.is_none() {
                    key_meta = Some(m);
                }
                Some(stamp)
            })
            .collect::<Option<Vec<Stamp>>>()?;
        let key_meta = match key_meta {
            Some(m) => m,
            None => std::fs::metadata(key).ok()?,
        };
        Some((stamps, key_meta))
    }

    /// What the cache knows of `spec` when its files are unchanged.
    pub fn lookup(&self, spec: &CertSpec, stamps: &[Stamp]) -> Option<Seen> {
        let e = self.file.entries.get(spec.name.as_str())?;
        if *e.stamps != *stamps {
            return None;
        }
        let leaf = CertInfo {
            der: Vec::new(),
            subject: String::new(),
            issuer: String::new(),
            common_name: e.common_name.clone(),
            sans: e
                .sans
                .iter()
                .map(|s| San::parse(s))
                .collect::<Result<_, _>>()
                .ok()?,
            other_names: e.other_names.to_vec(),
            not_before: OffsetDateTime::from_unix_timestamp(e.not_before).ok()?,
            not_after: OffsetDateTime::from_unix_timestamp(e.not_after).ok()?,
            serial: e.serial.clone(),
            is_ca: false,
            path_len: None,
            usage: e.usage.as_deref().and_then(|u| u.parse::<Usage>().ok()),
            key_type: e
                .key_type
                .as_deref()
                .and_then(|k| k.parse::<KeyType>().ok()),
            spki: Vec::new(),
            public_key_raw: Vec::new(),
            fingerprint: e.fingerprint.clone(),
            subject_key_id: None,
            authority_key_id: None,
        };
        Some(Seen::Present(Box::new(Present {
            leaf,
            chain: Vec::new(),
            from_issuer: e.from_issuer,
            issuer_not_after: e
                .issuer_not_after
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
            issuer_current: e.issuer_current,
        })))
    }

    /// The entry to remember for a certificate found present at `stamps`.
    pub fn learn(spec: &CertSpec, stamps: Vec<Stamp>, seen: &Seen) -> Option<Learned> {
        let Seen::Present(p) = seen else { return None };
        let l = &p.leaf;
        Some(Learned(
            spec.name.as_str().into(),
            Box::new(Entry {
                stamps: stamps.into(),
                serial: l.serial.clone(),
                not_before: l.not_before.unix_timestamp(),
                not_after: l.not_after.unix_timestamp(),
                common_name: l.common_name.clone(),
                sans: l.sans.iter().map(|s| s.to_string()).collect(),
                other_names: l.other_names.clone().into(),
                key_type: l.key_type.map(|k| k.to_string()),
                usage: l.usage.map(|u| u.to_string()),
                fingerprint: l.fingerprint.clone(),
                from_issuer: p.from_issuer,
                issuer_not_after: p.issuer_not_after.map(|t| t.unix_timestamp()),
                issuer_current: p.issuer_current,
            }),
        ))
    }

    /// Takes out the entries of `names` into a cache of their own, for a pass over those
    /// certificates while other passes (over others) run beside it.
    pub fn split_off(&mut self, names: &std::collections::HashSet<&str>) -> ObserveCache {
        let entries = names
            .iter()
            .filter_map(|n| self.file.entries.remove_entry(*n))
            .collect();
        ObserveCache {
            file: CacheFile {
                version: VERSION,
                intermediate: self.file.intermediate.clone(),
                entries,
            },
            dirty: false,
        }
    }

    /// Puts back what `split_off` took out, with what its pass learned; entries checked
    /// against another intermediate (the CA changed meanwhile) are dropped.
    pub fn absorb(&mut self, part: ObserveCache) {
        if part.file.intermediate != self.file.intermediate {
            self.dirty = true;
            return;
        }
        self.dirty |= part.dirty;
        self.file.entries.extend(part.file.entries);
    }

    pub fn insert(&mut self, learned: Learned) {
        self.file.entries.insert(learned.0, learned.1);
        self.dirty = true;
    }
}
