//! The CA replacing its own certificates: each step the schedule
//! ([`crate::policy::ca::steps`]) says is due, committed to the CA directory on its
//! own (see [`super::store::commit`]).

use super::store::*;
use super::{make, read_key, CaError, InternalCa};
use crate::config::CaSpec;
use crate::keys::PrivateKey;
use crate::policy::ca::{CaStep, Timing};
use crate::x509::CertInfo;
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

/// One thing the CA did to itself, for the log and the ledger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The ledger event: `ca-rotate-intermediate`, `ca-publish-root`,
    /// `ca-switch-root`, `ca-drop-intermediate`, `ca-drop-root`.
    pub event: &'static str,
    pub generation: u32,
    pub serial: String,
    pub not_after: OffsetDateTime,
    /// One sentence for the log and `ca rotate`.
    pub message: String,
}

/// A step asked for by hand (`ca rotate`, `ca rotate-root`), whether due or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Force {
    Nothing,
    Intermediate,
    Root,
}

/// Where the keys that sign new CA certificates come from: the CA directory, or a file
/// given on the command line (never copied into the CA directory).
struct Keys<'a> {
    dir: &'a Path,
    file: Option<&'a Path>,
    pass: Option<&'a crate::cakey::Passphrase>,
}

impl Keys<'_> {
    /// The key of `cert`, when it is on this host; `stored` is its name in the CA
    /// directory.
    fn key_of(&self, cert: &CertInfo, stored: &str) -> Result<Option<PrivateKey>, CaError> {
        if let Some(file) = self.file {
            // A key the operator brings may sit on removable media with any owner:
            // what matters is that it is the right one.
            let pem = crate::fsread::read_regular(file, crate::fsread::PEM_MAX)?;
            let pem = std::str::from_utf8(&pem).map_err(|_| CaError::Damaged {
                path: file.to_path_buf(),
                reason: "not a PEM private key".into(),
            })?;
            let key = crate::cakey::decode(pem, self.pass, file)?;
            if cert.matches_key(&key) {
                return Ok(Some(key));
            }
        }
        let path = self.dir.join(stored);
        if path.exists() {
            return read_key(&path, cert, self.pass).map(Some);
        }
        match self.file {
            Some(file) => Err(CaError::WrongKey {
                path: file.to_path_buf(),
                cert: cert.subject.clone(),
            }),
            None => Ok(None),
        }
    }
}

impl InternalCa {
    /// Does what is due (and what `force` asks), one committed step at a time, and
    /// returns the CA as it is afterwards with [`InternalCa::changes`] saying what was
    /// done. A due step whose key is not on this host is left for the alarm
    /// ([`crate::policy::ca::health`]); a forced one is an error. The caller holds the
    /// state lock.
    pub fn maintain(
        self,
        spec: &CaSpec,
        timing: &Timing,
        longest_leaf: Duration,
        now: OffsetDateTime,
        force: Force,
        root_key_file: Option<&Path>,
    ) -> Result<InternalCa, CaError> {
        let mut ca = self;
        let mut changes = std::mem::take(&mut ca.changes);
        let mut forced = match force {
            Force::Nothing => None,
            Force::Intermediate => Some(CaStep::RotateIntermediate),
            Force::Root if ca.next_root.is_some() => None,
            Force::Root => Some(CaStep::PublishRoot),
        };
        // Each step changes the state the next is computed from; a handful is the most
        // a pass can need (publish, switch, drops).
        for _ in 0..8 {
            let (mut due, _) = crate::policy::ca::steps(&ca.state(), timing, now);
            if let Some(f) = forced {
                // A switch makes a new intermediate anyway.
                let covered = due.contains(&f)
                    || (f == CaStep::RotateIntermediate && due.contains(&CaStep::SwitchRoot));
                if !covered {
                    due.insert(0, f);
                }
            }
            let keys = Keys {
                dir: &ca.dir,
                file: root_key_file,
                pass: ca.passphrase(),
            };
            let mut done = None;
            for step in due {
                let is_forced = forced == Some(step);
                match ca.step(step, spec, longest_leaf, now, &keys) {
                    Ok(Some(change)) => {
                        done = Some(change);
                        if is_forced {
                            forced = None;
                        }
                        break;
                    }
                    Ok(None) if is_forced => {
                        return Err(CaError::KeyOffline {
                            what: "this rotation",
                            cert: ca.root.subject.clone(),
                        })
                    }
                    Ok(None) => continue,
                    Err(e) => return Err(e),
                }
            }
            match done {
                Some(change) => {
                    tracing::info!(event = change.event, generation = change.generation, serial = %change.serial, "{}", change.message);
                    changes.push(change);
                    ca = InternalCa::load(spec, &ca.dir)?;
                }
                None => break,
            }
        }
        ca.changes = changes;
        Ok(ca)
    }

    /// Performs one step; None when it needs a key that is not here.
    fn step(
        &self,
        step: CaStep,
        spec: &CaSpec,
        longest_leaf: Duration,
        now: OffsetDateTime,
        keys: &Keys,
    ) -> Result<Option<Change>, CaError> {
        let m = &self.manifest;
        let rfc = crate::policy::rfc3339;
        match step {
            CaStep::RotateIntermediate => {
                let Some(root_key) = keys.key_of(&self.root, ROOT_KEY)? else {
                    return Ok(None);
                };
                let g = m.next_intermediate();
                let int = make::intermediate(spec, g, &self.root, &root_key, now)?;
                let mut next = m.clone();
                let mut edits = self.retire_intermediate(&mut next, longest_leaf, now);
                edits.extend(self.new_intermediate(&int, g, &mut next)?);
                edits.push(Edit::write(MANIFEST, next.to_bytes().to_vec(), 0o644));
                commit(&self.dir, edits)?;
                Ok(Some(Change {
                    event: "ca-rotate-intermediate",
                    generation: g,
                    serial: int.cert.serial.clone(),
                    not_after: int.cert.not_after,
                    message: format!(
                        "rotated the CA intermediate: generation {g} issues from now on (valid until {}); generation {} is kept until its last leaf expires ({})",
                        rfc(int.cert.not_after),
                        m.intermediate,
                        rfc(next.retired.last().map(|r| r.last_leaf).unwrap_or(now)),
                    ),
                }))
            }
            CaStep::PublishRoot => {
                let Some(root_key) = keys.key_of(&self.root, ROOT_KEY)? else {
                    return Ok(None);
                };
                let g = m
                    .old_roots
                    .iter()
                    .copied()
                    .chain([m.root])
                    .max()
                    .unwrap_or(0)
                    + 1;
                let (root, cross) = make::root(spec, g, now, Some((&self.root, &root_key)))?;
                let mut next = m.clone();
                next.next_root = Some(NextRoot {
                    generation: g,
                    published_at: now,
                });
                let mut edits = vec![
                    Edit::write(NEXT_ROOT_KEY, self.key_bytes(&root.key)?, 0o600),
                    Edit::write(NEXT_ROOT_CRT, root.cert.to_pem(), 0o644),
                    Edit::write(MANIFEST, next.to_bytes().to_vec(), 0o644),
                ];
                if let Some(cross) = &cross {
                    edits.push(Edit::write(NEXT_ROOT_CROSS, cross.to_pem(), 0o644));
                }
                commit(&self.dir, edits)?;
                Ok(Some(Change {
                    event: "ca-publish-root",
                    generation: g,
                    serial: root.cert.serial.clone(),
                    not_after: root.cert.not_after,
                    message: format!(
                        "published a new CA root (generation {g}, valid until {}) in the trust targets beside the current one; issuance moves to it once the overlap has passed",
                        rfc(root.cert.not_after)
                    ),
                }))
            }
            CaStep::SwitchRoot => {
                let Some((new_root, _)) = &self.next_root else {
                    return Ok(None);
                };
                let Some(new_key) = keys.key_of(new_root, NEXT_ROOT_KEY)? else {
                    return Ok(None);
                };
                let g = m.next_intermediate();
                let int = make::intermediate(spec, g, new_root, &new_key, now)?;
                let mut next = m.clone();
                let mut edits = self.retire_intermediate(&mut next, longest_leaf, now);
                let old = m.root;
                let root_gen = m
                    .next_root
                    .as_ref()
                    .map(|n| n.generation)
                    .unwrap_or(old + 1);
                edits.extend([
                    Edit::rename(ROOT_CRT, old_root(old, "crt")),
                    Edit::rename(ROOT_KEY, old_root(old, "key")),
                    Edit::rename("root.crl", old_root(old, "crl")),
                    Edit::Remove(ROOT_CROSS.into()),
                    Edit::rename(NEXT_ROOT_CRT, ROOT_CRT),
                    Edit::rename(NEXT_ROOT_KEY, ROOT_KEY),
                    Edit::rename(NEXT_ROOT_CROSS, ROOT_CROSS),
                ]);
                if keys.file.is_some() && !self.has_next_root_key() {
                    // The new root's key came from the command line: it stays where
                    // the operator keeps it.
                    edits.push(Edit::Remove(ROOT_KEY.into()));
                }
                next.old_roots.push(old);
                next.root = root_gen;
                next.next_root = None;
                edits.extend(self.new_intermediate(&int, g, &mut next)?);
                edits.push(Edit::write(MANIFEST, next.to_bytes().to_vec(), 0o644));
                commit(&self.dir, edits)?;
                Ok(Some(Change {
                    event: "ca-switch-root",
                    generation: root_gen,
                    serial: int.cert.serial.clone(),
                    not_after: int.cert.not_after,
                    message: format!(
                        "moved issuance to the new CA root (generation {root_gen}): intermediate generation {g} (valid until {}); root generation {old} stays trusted while its leaves live",
                        rfc(int.cert.not_after)
                    ),
                }))
            }
            CaStep::DropIntermediate(g) => {
                let mut next = m.clone();
                next.retired.retain(|r| r.generation != g);
                let serial = self
                    .retired
                    .iter()
                    .find(|(x, _)| *x == g)
                    .map(|(_, c)| c.serial.clone())
                    .unwrap_or_default();
                let edits = ["crt", "key", "crl"]
                    .iter()
                    .map(|ext| Edit::Remove(old_int(g, ext)))
                    .chain([Edit::write(MANIFEST, next.to_bytes().to_vec(), 0o644)])
                    .collect();
                commit(&self.dir, edits)?;
                Ok(Some(Change {
                    event: "ca-drop-intermediate",
                    generation: g,
                    serial,
                    not_after: now,
                    message: format!("the last leaf of CA intermediate generation {g} has expired: it is no longer kept"),
                }))
            }
            CaStep::DropRoot(g) => {
                let mut next = m.clone();
                next.old_roots.retain(|r| *r != g);
                let old = self.old_roots.iter().find(|(x, _)| *x == g).map(|(_, c)| c);
                let mut edits: Vec<Edit> = ["crt", "key", "crl"]
                    .iter()
                    .map(|ext| Edit::Remove(old_root(g, ext)))
                    .collect();
                if let (Some(cross), Some(old)) = (&self.cross, old) {
                    if cross.signed_by(old) {
                        edits.push(Edit::Remove(ROOT_CROSS.into()));
                    }
                }
                edits.push(Edit::write(MANIFEST, next.to_bytes().to_vec(), 0o644));
                commit(&self.dir, edits)?;
                Ok(Some(Change {
                    event: "ca-drop-root",
                    generation: g,
                    serial: old.map(|c| c.serial.clone()).unwrap_or_default(),
                    not_after: now,
                    message: format!("no leaf depends on CA root generation {g} any more: it is taken out of the trust targets"),
                }))
            }
        }
    }

    /// Moves the issuing intermediate to `old/`, kept until its last leaf expires: the
    /// longest leaf it may have signed, started now, or what `certkeeper issue` made.
    fn retire_intermediate(
        &self,
        next: &mut Manifest,
        longest_leaf: Duration,
        now: OffsetDateTime,
    ) -> Vec<Edit> {
        let g = self.manifest.intermediate;
        let by_config = now + make::to_offset(longest_leaf);
        let last_leaf = by_config
            .max(self.manifest.adhoc_until.unwrap_or(now))
            .min(self.intermediate.not_after);
        next.retired.push(RetiredInt {
            generation: g,
            root: self.manifest.root,
            retired_at: now,
            last_leaf,
        });
        next.adhoc_until = None;
        vec![
            Edit::rename(INT_CRT, old_int(g, "crt")),
            Edit::rename(INT_KEY, old_int(g, "key")),
            Edit::rename("intermediate.crl", old_int(g, "crl")),
        ]
    }

    /// A new key as it is stored: encrypted at rest when the CA's keys are.
    fn key_bytes(&self, key: &PrivateKey) -> Result<Vec<u8>, CaError> {
        Ok(crate::cakey::encode(key, self.passphrase())?
            .as_bytes()
            .to_vec())
    }

    /// The files of a new issuing intermediate, generation `g`.
    fn new_intermediate(
        &self,
        int: &make::Made,
        g: u32,
        next: &mut Manifest,
    ) -> Result<Vec<Edit>, CaError> {
        next.intermediate = g;
        Ok(vec![
            Edit::write(INT_KEY, self.key_bytes(&int.key)?, 0o600),
            Edit::write(INT_CRT, int.cert.to_pem(), 0o644),
        ])
    }
}
