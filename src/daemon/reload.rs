//! Configuration reloads (SIGHUP and the config-file watch): the file read once it has
//! settled, checked, compared with the running one (`config::diff`), and taken on.

use super::*;

impl Daemon {
    /// The configuration file's text once it has stayed the same for `CONFIG_SETTLE`
    /// (at most `CONFIG_SETTLE_MAX`): what is parsed is what was read, never a file
    /// that is still being written.
    pub(super) async fn settled_config(&self) -> Result<String, ReadError> {
        let started = tokio::time::Instant::now();
        let mut last = self.read_config().await;
        loop {
            tokio::time::sleep(CONFIG_SETTLE).await;
            let now = self.read_config().await;
            let same = match (&last, &now) {
                (Ok(a), Ok(b)) => a == b,
                (Err(a), Err(b)) => a.to_string() == b.to_string(),
                _ => false,
            };
            if same || started.elapsed() >= CONFIG_SETTLE_MAX {
                return now;
            }
            last = now;
        }
    }

    /// The configuration file's text, read off the loop (a slow disk must not hold up
    /// signals). The read itself never waits on a FIFO or a device: it is refused.
    async fn read_config(&self) -> Result<String, ReadError> {
        let path = self.config_path.clone();
        tokio::task::spawn_blocking(move || config::read(&path))
            .await
            .unwrap_or_else(|e| {
                Err(ReadError::Io {
                    path: self.config_path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })
    }

    pub(super) async fn reload_config(&mut self) {
        let text = self.read_config().await;
        self.reload_config_from(text).await;
    }

    pub(super) async fn reload_config_from(&mut self, text: Result<String, ReadError>) {
        let parsed = match text {
            Ok(text) => config::parse(&text, &self.config_path),
            Err(e) => {
                tracing::error!(error = %config::LoadError::Unreadable(e), "cannot read the new configuration; keeping the running one");
                return;
            }
        };
        let new = match parsed {
            Ok(c) => c,
            Err(errs) => {
                tracing::error!(errors = %errs, "the new configuration is invalid; keeping the running one");
                return;
            }
        };
        let fixed = config::diff::needs_restart(&self.config, &new);
        if !fixed.is_empty() {
            let fields = fixed.join(", ");
            tracing::error!(%fields, "the new configuration changes what cannot change while certkeeper runs; keeping the running one: restart certkeeper to apply it");
            self.restart_needed = Some(fields);
            return;
        }
        self.restart_needed = None;
        let old = self.config.clone();
        // A certificate whose own entry or one of whose servers changed is looked at at
        // once, even in backoff: the user acted. The others keep their schedule.
        let old_by_name: HashMap<&str, &config::CertSpec> = old
            .certificates
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        let changed: Vec<String> = new
            .certificates
            .iter()
            .filter(|c| {
                old_by_name.get(c.name.as_str()) != Some(c)
                    || c.reload
                        .iter()
                        .any(|s| old.servers.get(s) != new.servers.get(s))
            })
            .map(|c| c.name.clone())
            .collect();
        let now = self.clock.now();
        for name in &changed {
            if let Some(t) = self.track_mut(name) {
                t.next = now.into();
            }
        }
        self.metrics.declare_all(changed.iter().map(String::as_str));
        for (name, server) in &new.servers {
            if old.servers.get(name) != Some(server) {
                self.servers.remove(name);
            }
        }
        let removed: Vec<&String> = old
            .certificates
            .iter()
            .map(|c| &c.name)
            .filter(|n| !new.certificates.iter().any(|c| &c.name == *n))
            .collect();
        tracing::info!(added_or_changed = ?changed, removed = ?removed, "configuration reloaded");
        for name in removed.iter().chain(
            old.watched
                .iter()
                .map(|w| &w.name)
                .filter(|n| !new.watched.iter().any(|w| &w.name == *n))
                .collect::<Vec<_>>()
                .iter(),
        ) {
            self.metrics.forget(name);
        }
        // Tracks follow their certificates to their new positions.
        let mut old_tracks = std::mem::take(&mut self.tracks);
        self.tracks = new
            .certificates
            .iter()
            .map(|c| {
                self.position(&c.name)
                    .and_then(|i| old_tracks.get_mut(i)?.take())
            })
            .collect();
        self.config = Arc::new(new);
        self.schedule_drift(self.clock.now());
        self.reindex();
        if !changed.is_empty() || old.trust != self.config.trust {
            self.launch(changed, false, true);
        }
        self.check_watched(self.clock.now());
    }
}
