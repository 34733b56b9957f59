//! `certkeeper run`: the long-running agent. A supervisor loop fed by signals (HUP,
//! TERM, INT), a directory watcher and a sleep-until-next-due timer; each wake-up runs
//! one reconcile pass (on a blocking thread, under the state lock) over the
//! certificates concerned. No polling: when nothing is due and nothing changes, the
//! process sleeps until the next due time (or the systemd watchdog).

use crate::cache::ObserveCache;
use crate::config::{self, Config};
use crate::metrics::{Metrics, ReloadLabel, RenewalLabel};
use crate::policy::{relative, rfc3339};
use crate::reconcile::{ensure_ca, run_pass, Outcome, RenewOptions};
use crate::state::StateDir;
use notify::{RecursiveMode, Watcher};
use sd_notify::NotifyState;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// How long file events must be quiet before a pass runs: our own install writes
/// several files, and editors save in several steps.
const SETTLE: Duration = Duration::from_millis(150);
/// Longest a burst of events may postpone a pass.
const SETTLE_MAX: Duration = Duration::from_secs(1);
/// First retry delay after a failure; doubles up to `BACKOFF_MAX`.
const BACKOFF_MIN: Duration = Duration::from_secs(30);
const BACKOFF_MAX: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(config::ConfigErrors),
    #[error("{0}")]
    Startup(String),
}

/// When to look at a certificate next, and how often it failed in a row.
#[derive(Debug, Clone)]
struct Track {
    next: OffsetDateTime,
    failures: u32,
    not_after: Option<OffsetDateTime>,
}

/// Who owns a file of the configuration.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Managed(usize),
    Watched,
    Trust,
}

struct Daemon {
    config_path: PathBuf,
    config: Arc<Config>,
    tracks: HashMap<String, Track>,
    /// Watched-only certificates: when to warn next.
    watch_next: HashMap<String, OffsetDateTime>,
    /// Every file we care about → the certificates that own it.
    index: HashMap<PathBuf, Vec<Owner>>,
    /// The directories of every indexed file, and of the configuration file.
    dirs: BTreeSet<PathBuf>,
    /// Each certificate store → the certificate (`install::store_dir`): events in a
    /// store or in its pairs' directories belong to that certificate.
    stores: HashMap<PathBuf, usize>,
    /// Per certificate, the store directories to watch as well (`install::watch_dirs`):
    /// a write through a live link lands in the served pair's directory, which the
    /// watch on the live path's directory does not see. Refreshed after each pass.
    store_dirs: HashMap<String, Vec<PathBuf>>,
    watcher: notify::RecommendedWatcher,
    watched_dirs: BTreeSet<PathBuf>,
    cancel: Arc<AtomicBool>,
    /// When the CRL of the trust targets must be re-signed (or a failed trust reload
    /// retried).
    trust_next: Option<OffsetDateTime>,
    trust_failures: u32,
    metrics: Arc<Metrics>,
    /// What was last fully checked, shared with the blocking pass.
    cache: Arc<std::sync::Mutex<Option<ObserveCache>>>,
}

fn notify(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    (BACKOFF_MIN * 2u32.pow(exp)).min(BACKOFF_MAX)
}

/// When to retry after `failures` failures in a row: backoff, but never so late that a
/// still-valid certificate expires first (half of the time it has left, at least 5 s).
pub fn retry_at(
    now: OffsetDateTime,
    failures: u32,
    not_after: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let mut wait = backoff(failures);
    if let Some(na) = not_after {
        if na > now {
            let half = Duration::from_secs(((na - now).whole_seconds() / 2).max(5) as u64);
            wait = wait.min(half);
        }
    }
    now + time::Duration::seconds(wait.as_secs() as i64)
}

/// `retry_at`, spread: up to a fifth of the backoff earlier, derived from the
/// certificate's name, so that many certificates failing together (a CA down, a rate
/// limit) do not come back at the same instant.
pub fn retry_at_spread(
    name: &str,
    now: OffsetDateTime,
    failures: u32,
    not_after: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let at = retry_at(now, failures, not_after);
    let spread = crate::policy::jitter(name, &failures.to_string(), backoff(failures) * 2);
    (at - time::Duration::seconds(spread.as_secs() as i64)).max(now + time::Duration::seconds(1))
}

pub fn run(config_path: &Path) -> Result<(), DaemonError> {
    // One malloc arena: the daemon is mostly one thread, and memory freed after parsing
    // the configuration is then reused by the passes instead of staying mapped in
    // another arena (about 3 MB less with 10,000 certificates).
    // SAFETY: mallopt only tunes the allocator; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| DaemonError::Startup(format!("cannot start the runtime: {e}")))?;
    rt.block_on(run_async(config_path))
}

async fn run_async(config_path: &Path) -> Result<(), DaemonError> {
    let config = config::load(config_path).map_err(DaemonError::Config)?;
    let (fs_tx, mut fs_rx) = mpsc::unbounded_channel::<Vec<PathBuf>>();
    let watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // Reading a file (our own checks do) is not a change.
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => {}
            Ok(ev) => {
                let _ = fs_tx.send(ev.paths);
            }
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        })
        .map_err(|e| DaemonError::Startup(format!("cannot start the file watcher: {e}")))?;
    let mut d = Daemon {
        config_path: config_path.to_path_buf(),
        config: Arc::new(config),
        tracks: HashMap::new(),
        watch_next: HashMap::new(),
        index: HashMap::new(),
        dirs: BTreeSet::new(),
        stores: HashMap::new(),
        store_dirs: HashMap::new(),
        watcher,
        watched_dirs: BTreeSet::new(),
        cancel: Arc::new(AtomicBool::new(false)),
        cache: Arc::new(std::sync::Mutex::new(None)),
        trust_next: None,
        trust_failures: 0,
        metrics: Arc::new(Metrics::default()),
    };
    if let Some(addr) = d.config.metrics {
        let listener = crate::metrics::bind(addr).await.map_err(|e| {
            DaemonError::Startup(format!("metrics.listen: cannot listen on {addr}: {e}"))
        })?;
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(crate::metrics::serve(listener, d.metrics.clone()));
    }
    let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Startup(e.to_string()))?;
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| DaemonError::Startup(e.to_string()))?;
    let mut int =
        signal(SignalKind::interrupt()).map_err(|e| DaemonError::Startup(e.to_string()))?;
    // TERM/INT raise the cancel flag at once, even while a pass runs: the pass stops
    // between certificates (never inside an install) and the loop ends.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let cancel = d.cancel.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("stop requested");
        cancel.store(true, Ordering::Relaxed);
        let _ = stop_tx.send(true);
    });

    d.reindex();
    tracing::info!(config = %d.config_path.display(), certificates = d.config.certificates.len(), "certkeeper starting");
    let all: Vec<String> = d
        .config
        .certificates
        .iter()
        .map(|c| c.name.clone())
        .collect();
    d.pass(all, true).await;
    d.check_watched(OffsetDateTime::now_utc());
    if !d.cancel.load(Ordering::Relaxed) {
        notify(&[NotifyState::Ready, NotifyState::Status(&d.summary())]);
    }

    let watchdog = sd_notify::watchdog_enabled().map(|t| t / 2);
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(86_400)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    while !d.cancel.load(Ordering::Relaxed) {
        let now = OffsetDateTime::now_utc();
        let next = d.next_wake();
        let sleep_for = next
            .map(|t| Duration::from_secs_f64((t - now).as_seconds_f64().max(0.0)))
            .unwrap_or(Duration::from_secs(86_400));
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {
                let now = OffsetDateTime::now_utc();
                let due: Vec<String> = d.tracks.iter().filter(|(_, t)| t.next <= now).map(|(n, _)| n.clone()).collect();
                let trust_due = d.trust_next.is_some_and(|t| t <= now);
                if !due.is_empty() || trust_due {
                    d.pass(due, false).await;
                }
                d.check_watched(now);
                notify(&[NotifyState::Status(&d.summary())]);
            }
            Some(paths) = fs_rx.recv() => {
                let mut paths = paths;
                let deadline = tokio::time::Instant::now() + SETTLE_MAX;
                // Let a burst settle, collecting every path it touched.
                while let Ok(Some(more)) =
                    tokio::time::timeout_at(deadline.min(tokio::time::Instant::now() + SETTLE), fs_rx.recv()).await
                {
                    paths.extend(more);
                }
                d.on_files(paths).await;
            }
            _ = hup.recv() => {
                notify(&[NotifyState::Reloading, NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading"))]);
                d.reload_config().await;
                notify(&[NotifyState::Ready, NotifyState::Status(&d.summary())]);
            }
            _ = stop_rx.changed() => break,
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                notify(&[NotifyState::Watchdog]);
            }
        }
    }
    tracing::info!("stopping");
    notify(&[NotifyState::Stopping]);
    Ok(())
}

fn is_own_temp(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.contains(".certkeeper-tmp-") || n.starts_with(".ca-init-"))
}

impl Daemon {
    /// Indexes every file of the configuration by the certificates that own it, and
    /// the directories to watch. Done when the configuration is (re)loaded.
    fn reindex(&mut self) {
        let mut index: HashMap<PathBuf, Vec<Owner>> = HashMap::new();
        for (i, c) in self.config.certificates.iter().enumerate() {
            for (_, p) in c.files.paths() {
                index
                    .entry(p.to_path_buf())
                    .or_default()
                    .push(Owner::Managed(i));
            }
        }
        for t in &self.config.trust {
            index.entry(t.path.clone()).or_default().push(Owner::Trust);
        }
        for w in &self.config.watched {
            index
                .entry(w.path.clone())
                .or_default()
                .push(Owner::Watched);
        }
        let mut dirs: BTreeSet<PathBuf> = index
            .keys()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        if let Some(d) = self.config_path.parent() {
            dirs.insert(d.to_path_buf());
        }
        self.index = index;
        self.dirs = dirs;
        self.stores = self
            .config
            .certificates
            .iter()
            .enumerate()
            .filter(|(_, c)| crate::install::uses_store(c))
            .map(|(i, c)| (crate::install::store_dir(c), i))
            .collect();
        self.store_dirs = self
            .config
            .certificates
            .iter()
            .map(|c| (c.name.clone(), crate::install::watch_dirs(c)))
            .collect();
        let names: BTreeSet<&String> = self.config.certificates.iter().map(|c| &c.name).collect();
        self.tracks.retain(|n, _| names.contains(n));
        let watched: BTreeSet<&String> = self.config.watched.iter().map(|w| &w.name).collect();
        self.watch_next.retain(|n, _| watched.contains(n));
        self.rewatch();
    }

    /// Watches every directory of the index that exists (one inotify watch each,
    /// however many certificates share it) and drops watches no longer needed.
    fn rewatch(&mut self) {
        let mut wanted = self.dirs.clone();
        wanted.extend(self.store_dirs.values().flatten().cloned());
        for gone in self
            .watched_dirs
            .difference(&wanted)
            .cloned()
            .collect::<Vec<_>>()
        {
            let _ = self.watcher.unwatch(&gone);
            self.watched_dirs.remove(&gone);
        }
        for dir in &wanted {
            if self.watched_dirs.contains(dir) {
                continue;
            }
            // A directory that does not exist yet is created by the first install;
            // the pass that installs re-arms the watch.
            if dir.is_dir() {
                match self.watcher.watch(dir, RecursiveMode::NonRecursive) {
                    Ok(()) => {
                        self.watched_dirs.insert(dir.clone());
                    }
                    Err(e) => {
                        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch directory (inotify limit? see fs.inotify.max_user_watches)")
                    }
                }
            }
        }
    }

    fn next_wake(&self) -> Option<OffsetDateTime> {
        self.tracks
            .values()
            .map(|t| t.next)
            .chain(self.watch_next.values().copied())
            .chain(self.trust_next)
            .min()
    }

    /// Runs one pass over `names` on a blocking thread, then updates the schedule.
    async fn pass(&mut self, names: Vec<String>, check_served: bool) {
        let config = self.config.clone();
        let cancel = self.cancel.clone();
        let cache = self.cache.clone();
        let task = tokio::task::spawn_blocking(move || {
            // Key generation, fsync and config tests block: keep them off the loop.
            let now = OffsetDateTime::now_utc();
            let state = StateDir::new(&config.state_dir);
            let _lock = state.lock().map_err(|e| e.to_string())?;
            let ca = ensure_ca(&config, &state, now).map_err(|e| e.to_string())?;
            let wanted: std::collections::HashSet<&str> =
                names.iter().map(String::as_str).collect();
            let selected: Vec<_> = config
                .certificates
                .iter()
                .filter(|c| wanted.contains(c.name.as_str()))
                .collect();
            let started = std::time::Instant::now();
            let opts = RenewOptions {
                check_served,
                clean_temp_files: check_served,
                ..Default::default()
            };
            let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
            let fingerprint = &ca.intermediate.fingerprint;
            if cache
                .as_ref()
                .is_none_or(|c| c.intermediate() != fingerprint)
            {
                *cache = Some(ObserveCache::load(&state, fingerprint));
            }
            let cache = cache.as_mut().expect("cache loaded");
            let (reports, activity) = run_pass(
                &config,
                &state,
                Some(&ca),
                &selected,
                &opts,
                now,
                &cancel,
                Some(&mut *cache),
            );
            let names_now: std::collections::HashSet<&str> = config
                .certificates
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            cache.retain(&names_now);
            cache.save(&state);
            tracing::debug!(
                certificates = selected.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "pass done"
            );
            Ok::<_, String>((now, names, reports, activity))
        });
        let (now, names, reports) = match task.await {
            Ok(Ok((now, names, reports, activity))) => {
                self.trust_next = activity.trust_refresh_at;
                if activity.trust_pending.is_empty() {
                    self.trust_failures = 0;
                } else {
                    self.trust_failures += 1;
                    let retry = retry_at(now, self.trust_failures, None);
                    self.trust_next = Some(self.trust_next.map_or(retry, |t| t.min(retry)));
                }
                for (server, ok) in &activity.reload_results {
                    let result = if *ok { "success" } else { "failure" };
                    self.metrics
                        .reloads
                        .get_or_create(&ReloadLabel {
                            server: server.clone(),
                            result: result.into(),
                        })
                        .inc();
                }
                (now, names, reports)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "reconcile failed; retrying later");
                let now = OffsetDateTime::now_utc();
                for (name, t) in self.tracks.iter_mut() {
                    t.failures += 1;
                    t.next = retry_at_spread(name, now, t.failures, t.not_after);
                }
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "reconcile task crashed");
                return;
            }
        };
        for r in reports {
            let track = self.tracks.entry(r.name.clone()).or_insert(Track {
                next: now,
                failures: 0,
                not_after: None,
            });
            match &r.outcome {
                Outcome::Unchanged {
                    renew_at,
                    not_after,
                }
                | Outcome::Renewed {
                    renew_at,
                    not_after,
                    ..
                } => {
                    *track = Track {
                        next: *renew_at,
                        failures: 0,
                        not_after: Some(*not_after),
                    };
                }
                Outcome::Failed {
                    error, not_after, ..
                } => {
                    track.failures += 1;
                    track.not_after = *not_after;
                    track.next = retry_at_spread(&r.name, now, track.failures, *not_after);
                    tracing::warn!(certificate = %r.name, failures = track.failures, retry = %rfc3339(track.next), %error, "will retry");
                }
                Outcome::WouldRenew(_) => {}
            }
            let label = Metrics::name(&r.name);
            let m = &self.metrics;
            m.next_renewal
                .get_or_create(&label)
                .set(track.next.unix_timestamp());
            if let Some(na) = track.not_after {
                m.not_after.get_or_create(&label).set(na.unix_timestamp());
            }
            if track.failures == 0 {
                m.last_success
                    .get_or_create(&label)
                    .set(now.unix_timestamp());
            }
            let result = match r.outcome {
                Outcome::Renewed { .. } => Some("success"),
                Outcome::Failed { .. } => Some("failure"),
                _ => None,
            };
            if let Some(result) = result {
                m.renewals
                    .get_or_create(&RenewalLabel {
                        name: r.name.clone(),
                        result: result.into(),
                    })
                    .inc();
            }
        }
        // Directories created by this pass can be watched now, and the stores of the
        // certificates it looked at have their current pair's directory watched.
        let looked_at: std::collections::HashSet<&String> = names.iter().collect();
        for c in self.config.certificates.iter() {
            if looked_at.contains(&c.name) {
                self.store_dirs
                    .insert(c.name.clone(), crate::install::watch_dirs(c));
            }
        }
        self.rewatch();
    }

    async fn on_files(&mut self, paths: Vec<PathBuf>) {
        let mut owners: Vec<Owner> = Vec::new();
        let mut config_changed = false;
        for p in paths.iter().filter(|p| !is_own_temp(p)) {
            if p == &self.config_path {
                config_changed = true;
            }
            // A store itself, an entry of it (`current`, a pair's directory) or a file of
            // one of its pairs.
            if let Some(i) = p
                .ancestors()
                .take(3)
                .find_map(|a| self.stores.get(a).copied())
            {
                owners.push(Owner::Managed(i));
            }
            if let Some(o) = self.index.get(p) {
                owners.extend(o.iter().copied());
            } else if self.watched_dirs.contains(p) {
                // The directory itself changed (removed, moved): its watch is gone; it is
                // re-armed after the pass recreates it. Look at everything in it.
                let _ = self.watcher.unwatch(p);
                self.watched_dirs.remove(p);
                for (file, o) in &self.index {
                    if file.parent() == Some(p.as_path()) {
                        owners.extend(o.iter().copied());
                    }
                }
            }
        }
        if config_changed {
            tracing::info!(config = %self.config_path.display(), "configuration file changed; re-reading it");
            self.reload_config().await;
            return;
        }
        let mut managed: BTreeSet<String> = BTreeSet::new();
        let (mut trust_touched, mut watched_touched) = (false, false);
        for o in owners {
            match o {
                Owner::Managed(i) => {
                    managed.insert(self.config.certificates[i].name.clone());
                }
                Owner::Watched => watched_touched = true,
                Owner::Trust => trust_touched = true,
            }
        }
        if !managed.is_empty() || trust_touched {
            tracing::debug!(certificates = ?managed, trust = trust_touched, "files changed; checking");
            self.pass(managed.into_iter().collect(), false).await;
        }
        if watched_touched {
            self.check_watched(OffsetDateTime::now_utc());
        }
        notify(&[NotifyState::Status(&self.summary())]);
    }

    async fn reload_config(&mut self) {
        let new = match config::load(&self.config_path) {
            Ok(c) => c,
            Err(errs) => {
                tracing::error!(errors = %errs, "the new configuration is invalid; keeping the running one");
                return;
            }
        };
        let old = self.config.clone();
        let changed: Vec<String> = new
            .certificates
            .iter()
            .filter(|c| old.certificates.iter().find(|o| o.name == c.name) != Some(*c))
            .map(|c| c.name.clone())
            .collect();
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
        self.config = Arc::new(new);
        self.reindex();
        if !changed.is_empty() {
            self.pass(changed, false).await;
        }
        self.check_watched(OffsetDateTime::now_utc());
    }

    /// Logs watched-only certificates that are inside their warning window (again
    /// daily), and schedules the next look.
    fn check_watched(&mut self, now: OffsetDateTime) {
        let rows = crate::status::watched_rows(&self.config, now);
        for w in &self.config.watched {
            let Some(row) = rows
                .iter()
                .find(|r| r.name == w.name && r.kind == "watched")
            else {
                continue;
            };
            match row.not_after {
                Some(na) => {
                    self.metrics
                        .not_after
                        .get_or_create(&Metrics::name(&w.name))
                        .set(na.unix_timestamp());
                }
                None => {
                    self.metrics.not_after.remove(&Metrics::name(&w.name));
                }
            }
            let next = match (row.state.as_str(), row.not_after) {
                ("ok", Some(na)) => na - time::Duration::seconds(w.warn_before.as_secs() as i64),
                (_, _) => {
                    if self.watch_next.get(&w.name).is_none_or(|t| *t <= now) {
                        tracing::warn!(certificate = %w.name, path = %w.path.display(), state = %row.state, detail = row.detail.as_deref().unwrap_or(""), "watched certificate needs attention");
                    }
                    now + time::Duration::days(1)
                }
            };
            self.watch_next.insert(w.name.clone(), next);
        }
    }

    fn summary(&self) -> String {
        let n = self.config.certificates.len();
        let failing = self.tracks.values().filter(|t| t.failures > 0).count();
        let now = OffsetDateTime::now_utc();
        let next = self
            .tracks
            .iter()
            .filter(|(_, t)| t.failures == 0)
            .min_by_key(|(_, t)| t.next);
        let mut s = format!("{n} certificate{}", if n == 1 { "" } else { "s" });
        if let Some((name, t)) = next {
            s.push_str(&format!(", next renewal {name} {}", relative(t.next, now)));
        }
        if failing > 0 {
            s.push_str(&format!(", {failing} failing"));
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn backoff_doubles_and_caps() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(5), Duration::from_secs(480));
        assert_eq!(backoff(50), BACKOFF_MAX);
    }

    #[test]
    fn retry_never_outlives_the_certificate() {
        let now = datetime!(2026-11-27 12:00 UTC);
        let in_days = now + time::Duration::days(10);
        assert_eq!(
            retry_at(now, 1, Some(in_days)),
            now + time::Duration::seconds(30)
        );
        assert_eq!(
            retry_at(now, 20, Some(in_days)),
            now + time::Duration::hours(1)
        );
        // 40 minutes left: retry within 20 minutes, not in an hour.
        let soon = now + time::Duration::minutes(40);
        assert_eq!(
            retry_at(now, 20, Some(soon)),
            now + time::Duration::minutes(20)
        );
        // Already expired or missing: plain backoff.
        assert_eq!(
            retry_at(now, 3, Some(now - time::Duration::minutes(1))),
            now + time::Duration::seconds(120)
        );
        assert_eq!(retry_at(now, 3, None), now + time::Duration::seconds(120));
        // Spread: never later than the plain retry, at most a fifth earlier, stable.
        for name in ["a", "b", "www", "api"] {
            let plain = retry_at(now, 4, None);
            let spread = retry_at_spread(name, now, 4, None);
            assert!(
                spread <= plain && spread >= plain - time::Duration::seconds(48),
                "{name}: {spread}"
            );
            assert_eq!(spread, retry_at_spread(name, now, 4, None));
        }
    }
}
