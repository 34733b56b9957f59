//! The file-watch index: which watched directory and file belongs to which
//! certificate, and what the daemon does when files change.

use super::*;

/// A directory's device and inode, or None when it is not a directory (or missing).
fn dir_identity(p: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

/// The hash a path or a name is indexed by (see `Daemon::index`, `Daemon::by_name`).
fn hash_of(v: impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut h = std::hash::DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// The values indexed by the hash `h` in a table sorted by hash, in their order there:
/// candidates, to be checked against what they stand for.
fn hashed<T: Copy>(table: &[(u64, T)], h: u64) -> impl Iterator<Item = T> + '_ {
    let first = table.partition_point(|(k, _)| *k < h);
    table[first..]
        .iter()
        .take_while(move |(k, _)| *k == h)
        .map(|(_, v)| *v)
}

pub(super) fn is_own_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".certkeeper-tmp-") || n.starts_with(".ca-init-"))
}

impl Daemon {
    /// Indexes every file of the configuration by the certificates that own it, and
    /// the directories to watch. Done when the configuration is (re)loaded.
    pub(super) fn reindex(&mut self) {
        let files = self
            .config
            .certificates
            .iter()
            .map(|c| c.files.count())
            .sum::<usize>()
            + self.config.trust.len()
            + self.config.watched.len();
        // One walk over the files: each is indexed as its directory is noted.
        let mut index: Vec<(u64, Owner)> = Vec::with_capacity(files);
        let mut dirs: BTreeSet<PathBuf> =
            crate::fsutil::parent_dirs(self.owned_files().map(|(p, o)| {
                index.push((hash_of(p), o));
                p
            }))
            .into_iter()
            .map(Path::to_path_buf)
            .collect();
        // Stable: of equal hashes, the owner indexed last comes last.
        index.sort_by_key(|(h, _)| *h);
        if let Some(d) = self.config_path.parent() {
            dirs.insert(d.to_path_buf());
        }
        self.index = index;
        let mut by_name: Vec<(u64, usize)> = Vec::with_capacity(self.config.certificates.len());
        by_name.extend(
            self.config
                .certificates
                .iter()
                .enumerate()
                .map(|(i, c)| (hash_of(c.name.as_str()), i)),
        );
        by_name.sort_by_key(|(h, _)| *h);
        self.by_name = by_name;
        self.dirs = dirs;
        // The stores' directories are found with their watches (their events come from
        // those).
        self.store_dirs.clear();
        if self.stores_armed {
            self.find_store_dirs();
        }
        // One per certificate (the reload moved them to their new positions).
        self.tracks
            .resize_with(self.config.certificates.len(), || None);
        let watched: BTreeSet<&String> = self.config.watched.iter().map(|w| &w.name).collect();
        self.watch_next.retain(|n, _| watched.contains(n));
        self.rewatch();
    }

    /// Every file of the configuration with its owner: the managed certificates' files,
    /// the trust targets, the watched certificates (a file owned twice belongs to the
    /// later one).
    fn owned_files(&self) -> impl Iterator<Item = (&Path, Owner)> {
        let c = &self.config;
        c.certificates
            .iter()
            .enumerate()
            .flat_map(|(i, c)| {
                c.files
                    .paths()
                    .into_iter()
                    .map(move |(_, p)| (p, Owner::Managed(i)))
            })
            .chain(c.trust.iter().map(|t| (t.path.as_path(), Owner::Trust)))
            .chain(c.watched.iter().map(|w| (w.path.as_path(), Owner::Watched)))
    }

    /// What owns the file `p`, if the configuration names it.
    fn owner_of(&self, p: &Path) -> Option<Owner> {
        hashed(&self.index, hash_of(p))
            .filter(|o| self.owns(*o, p))
            .last()
    }

    /// The position in the configuration of the managed certificate `name`.
    pub(super) fn position(&self, name: &str) -> Option<usize> {
        hashed(&self.by_name, hash_of(name)).find(|&i| self.config.certificates[i].name == name)
    }

    fn owns(&self, o: Owner, p: &Path) -> bool {
        let c = &self.config;
        match o {
            Owner::Managed(i) => c.certificates[i].files.paths().iter().any(|(_, f)| *f == p),
            Owner::Trust => c.trust.iter().any(|t| t.path == p),
            Owner::Watched => c.watched.iter().any(|w| w.path == p),
        }
    }

    /// The owners of the files in the directories `dir` accepts.
    pub(super) fn owners_in(&self, dir: impl Fn(&Path) -> bool) -> Vec<Owner> {
        self.owned_files()
            .filter(|(p, _)| p.parent().is_some_and(&dir))
            .map(|(_, o)| o)
            .collect()
    }

    /// The store directory of each certificate to watch (read from its `current`
    /// link): done once the stores' watches are wanted, after READY=1.
    pub(super) fn find_store_dirs(&mut self) {
        self.store_dirs = self
            .config
            .certificates
            .iter()
            .map(|c| crate::install::watch_dir(c).map(Arc::from))
            .collect();
    }

    /// The certificate whose store `p` is in: the store itself, an entry of it
    /// (`current`, a pair's directory) or a file of one of its pairs. Found from the
    /// path's components (`STORE/NAME/...`), then checked against that certificate's
    /// store, rather than kept in a map of every store.
    fn store_owner(&self, p: &Path) -> Option<usize> {
        p.ancestors().take(3).find_map(|a| {
            let i = self.position(a.file_name()?.to_str()?)?;
            crate::install::is_store_dir(&self.config.certificates[i], a).then_some(i)
        })
    }

    /// Watches every directory of the index that exists (one inotify watch each,
    /// however many certificates share it) and drops watches no longer needed.
    /// Returns the directories of the index (not the stores') that got a watch just
    /// now.
    pub(super) fn rewatch(&mut self) -> Vec<PathBuf> {
        let mut armed = Vec::new();
        // Borrowed, not copied: with thousands of stores these are thousands of paths.
        let stores: Vec<&Arc<Path>> = match self.stores_armed {
            true => self.store_dirs.iter().flatten().collect(),
            false => Vec::new(),
        };
        let wanted: Vec<(&Path, Option<&Arc<Path>>)> = self
            .dirs
            .iter()
            .map(|d| (d.as_path(), None))
            .chain(stores.iter().map(|s| (&***s, Some(*s))))
            .collect();
        let is_wanted: std::collections::HashSet<&Path> = wanted.iter().map(|(d, _)| *d).collect();
        let gone: Vec<Arc<Path>> = self
            .watched_dirs
            .keys()
            .filter(|d| !is_wanted.contains(&***d))
            .cloned()
            .collect();
        for gone in gone {
            let _ = self.watcher.unwatch(&gone);
            self.watched_dirs.remove(&gone);
        }
        for (dir, shared) in wanted {
            if self.watched_dirs.contains_key(dir) {
                continue;
            }
            // A directory that does not exist yet is created by the first install;
            // the pass that installs re-arms the watch.
            if dir.is_dir() {
                match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        let key = shared.cloned().unwrap_or_else(|| Arc::from(dir));
                        self.watched_dirs.insert(key, dir_identity(dir));
                        if self.dirs.contains(dir) {
                            armed.push(dir.to_path_buf());
                        }
                    }
                    // Removed since it was looked at: as for one not made yet, the pass that
                    // makes it again arms the watch.
                    Err(_) if !dir.is_dir() => {
                        tracing::debug!(dir = %dir.display(), "directory removed before it was watched")
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory (inotify limit? see fs.inotify.max_user_watches)")
                    }
                }
            }
        }
        armed
    }

    pub(super) async fn on_files(&mut self, paths: Vec<PathBuf>) {
        let mut owners: Vec<Owner> = Vec::new();
        let mut config_changed = false;
        let mut rearm = false;
        for p in paths.iter().filter(|p| !is_own_temp(p)) {
            if p == &self.config_path {
                config_changed = true;
            }
            // A store itself, an entry of it (`current`, a pair's directory) or a file of
            // one of its pairs.
            if let Some(i) = self.store_owner(p) {
                owners.push(Owner::Managed(i));
            }
            if let Some(o) = self.owner_of(p) {
                owners.push(o);
            } else if let Some(&id) = self.watched_dirs.get(p.as_path()) {
                // An event about a watched directory itself. Still the directory we
                // watch (its creation seen from its parent, a chmod): nothing to do.
                if dir_identity(p).is_some() && dir_identity(p) == id {
                    continue;
                }
                // Removed, moved or replaced: its watch is gone. Watch what is there now
                // (at once, so that no later change is missed) and look at everything
                // in it; a directory that is missing is re-armed after the pass
                // recreates it.
                let _ = self.watcher.unwatch(p);
                self.watched_dirs.remove(p.as_path());
                rearm = true;
                owners.extend(self.owners_in(|dir| dir == p));
            }
        }
        if rearm {
            self.rewatch();
        }
        if config_changed {
            tracing::info!(config = %self.config_path.display(), "configuration file changed; re-reading it once it has settled");
            let text = self.settled_config().await;
            self.reload_config_from(text).await;
            notify(&[NotifyState::Status(&self.summary())]);
            return;
        }
        let mut managed: BTreeSet<String> = BTreeSet::new();
        let (mut trust_touched, mut watched_touched) = (false, false);
        let now = self.clock.now();
        for o in owners {
            match o {
                Owner::Managed(i) => {
                    let name = &self.config.certificates[i].name;
                    // A certificate in backoff is not touched before its retry time,
                    // whoever changed its files (our own rollback included); a healthy
                    // one is repaired at once.
                    match self.held_until(name, now) {
                        Some(until) => {
                            tracing::debug!(certificate = %name, retry = %rfc3339(until), "files changed while in backoff; waiting for the retry time");
                        }
                        None => {
                            managed.insert(name.clone());
                        }
                    }
                }
                Owner::Watched => watched_touched = true,
                Owner::Trust => trust_touched = true,
            }
        }
        if !managed.is_empty() || trust_touched {
            tracing::debug!(certificates = ?managed, trust = trust_touched, "files changed; checking");
            // What the servers serve is looked at too: a file put back behind our back
            // may be served by a reload someone else did, or wait for one (drift).
            self.launch(managed.into_iter().collect(), true, trust_touched);
        }
        if watched_touched {
            self.check_watched(self.clock.now());
        }
        notify(&[NotifyState::Status(&self.summary())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hashed_table_gives_every_candidate_of_a_hash_in_order() {
        let table = [(1, 'a'), (5, 'b'), (5, 'c'), (5, 'd'), (9, 'e')];
        assert_eq!(hashed(&table, 5).collect::<String>(), "bcd");
        assert_eq!(hashed(&table, 1).collect::<String>(), "a");
        assert_eq!(hashed(&table, 9).collect::<String>(), "e");
        assert_eq!(hashed(&table, 0).count(), 0);
        assert_eq!(hashed(&table, 7).count(), 0);
        assert_eq!(hashed(&table, 10).count(), 0);
        assert_eq!(hashed::<char>(&[], 5).count(), 0);
        // Paths hash as they compare: `a//b` is `a/b`.
        assert_eq!(hash_of(Path::new("/a//b")), hash_of(Path::new("/a/b")));
    }
}
