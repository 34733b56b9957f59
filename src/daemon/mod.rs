//! `certkeeper run`: the long-running agent. A supervisor loop fed by signals (HUP,
//! TERM, INT), a directory watcher and a sleep-until-next-due timer; each wake-up runs
//! one reconcile pass (on a blocking thread, under the state lock) over the
//! certificates concerned. No polling: when nothing is due and nothing changes, the
//! process sleeps until the next due time (or the systemd watchdog).

mod reload;
mod systemd;
mod watch;

use crate::cache::ObserveCache;
use crate::clock::{Clock, SystemClock};
use crate::config::{self, Config};
use crate::fsread::ReadError;
use crate::metrics::{Metrics, ReloadLabel};
use crate::policy::retry::{backoff, held_until, next_look, retry_at, retry_at_spread, Held};
use crate::policy::{relative, rfc3339};
use crate::reconcile::{
    ensure_ca_if_used, run_pass, CertReport, Outcome, Pass, RenewOptions, ServerActivity,
};
use crate::state::{StateDir, StateLock};
use notify::{RecursiveMode, Watcher};
use sd_notify::NotifyState;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use systemd::notify;
use time::{OffsetDateTime, UtcDateTime};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// How long file events must be quiet before a pass runs: our own install writes
/// several files, and editors save in several steps.
const SETTLE: Duration = Duration::from_millis(150);
/// Longest a burst of events may postpone a pass.
const SETTLE_MAX: Duration = Duration::from_secs(1);
/// The soonest a certificate is looked at again after a successful renewal, whatever
/// its new renewal time says: a CA that issues shorter certificates than asked must
/// not turn into a renewal loop.
const MIN_RENEWAL_GAP: time::Duration = time::Duration::seconds(5);
/// How long the configuration file must stay the same before it is read: an editor or
/// a config-management run may write it in several steps.
const CONFIG_SETTLE: Duration = Duration::from_millis(500);
/// Longest the configuration may keep changing before it is read anyway.
const CONFIG_SETTLE_MAX: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(config::LoadError),
    #[error("{0}")]
    Startup(String),
}

/// When to look at a certificate next, and how often it failed in a row. Kept for
/// every certificate, so kept small: times in UTC without an offset (12 bytes, not 16).
#[derive(Debug, Clone)]
struct Track {
    next: UtcDateTime,
    failures: u32,
    not_after: Option<UtcDateTime>,
    /// When the certificate in place enters its last tenth, for `expiring` hooks that
    /// must fire then even when its renewal is planned later (`renew_before` < 10 %).
    expiring_at: Option<UtcDateTime>,
}

/// A server whose reload (or config test) failed, or that was not running when it
/// should have been reloaded.
#[derive(Debug, Clone)]
struct ServerTrack {
    /// Failed reloads or config tests in a row (0 when it is only not running).
    failures: u32,
    /// Not running at its last reload: it loads the files when it starts; look again
    /// at `next` whether it runs and serves them.
    waiting_start: u32,
    next: OffsetDateTime,
}

/// A pass in flight: the certificates and servers it holds until it ends.
#[derive(Debug)]
struct Flight {
    certs: BTreeSet<String>,
    servers: BTreeSet<String>,
    /// It looks after the trust targets (and so holds their servers).
    trust: bool,
}

/// What a pass hands back to the loop.
struct Done {
    id: u64,
    now: OffsetDateTime,
    names: Vec<String>,
    result: Result<(Vec<CertReport>, ServerActivity), String>,
}

/// The state lock, shared by the daemon's passes in flight: taken when the first starts
/// and released when the last ends, so that `certkeeper renew` still waits for the
/// daemon's writes (and the daemon for its).
#[derive(Clone, Default)]
struct SharedLock(Arc<std::sync::Mutex<(usize, Option<StateLock>)>>);

struct SharedGuard(SharedLock);

impl SharedLock {
    fn acquire(&self, state: &StateDir) -> Result<SharedGuard, crate::fsutil::FsError> {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if g.0 == 0 {
            g.1 = Some(state.lock()?);
        }
        g.0 += 1;
        Ok(SharedGuard(self.clone()))
    }
}

impl Drop for SharedGuard {
    fn drop(&mut self) {
        let mut g = (self.0).0.lock().unwrap_or_else(|p| p.into_inner());
        g.0 -= 1;
        if g.0 == 0 {
            g.1 = None;
        }
    }
}

/// Who owns a file of the configuration.
#[derive(Debug, Clone, Copy)]
enum Owner {
    Managed(usize),
    Watched,
    Trust,
}

struct Daemon {
    /// What "now" is for every decision (the system clock, or a test's virtual one).
    clock: Arc<dyn Clock>,
    config_path: PathBuf,
    config: Arc<Config>,
    /// Each managed certificate's schedule, by its position in the configuration
    /// (no copy of its name: a map by name took 2.4 MB with 10,000 certificates).
    tracks: Vec<Option<Track>>,
    /// Watched-only certificates: when to warn next.
    watch_next: HashMap<String, OffsetDateTime>,
    /// Every file we care about → what owns it (one owner: the configuration is
    /// refused when two outputs share a file), by a hash of its path and sorted by it;
    /// a hit is checked against the owner's own paths (see `watch.rs`). The paths
    /// themselves are in the configuration already: a map of copies of them took 2.4
    /// MB with 10,000 certificates, this takes under 0.5.
    index: Vec<(u64, Owner)>,
    /// Each managed certificate's position in the configuration, by name.
    /// By a hash of the name, sorted by it (see `watch.rs`): no copy of 10,000 names.
    by_name: Vec<(u64, usize)>,
    /// The directories of every indexed file, and of the configuration file.
    dirs: BTreeSet<PathBuf>,
    /// Per certificate (as in the configuration), the store directory to watch as well
    /// (`install::watch_dir`):
    /// a write through a live link lands in the served pair's directory, which the
    /// watch on the live path's directory does not see. Refreshed after each pass.
    store_dirs: Vec<Option<Arc<Path>>>,
    /// Whether the stores' watches are wanted yet: they are added right after READY=1,
    /// since the first reconciliation reads every file anyway and one watch per
    /// certificate costs about 0.1 ms each (a second for 10,000).
    stores_armed: bool,
    watcher: notify::RecommendedWatcher,
    /// Each watched directory, with its device and inode when its watch was added: an
    /// event about the directory itself matters only when it is no longer that
    /// directory.
    /// A store's directory is the same allocation as in `store_dirs` (10,000 paths kept
    /// once, not twice).
    watched_dirs: HashMap<Arc<Path>, Option<(u64, u64)>>,
    cancel: Arc<AtomicBool>,
    /// When the CRL of the trust targets must be re-signed (or a failed trust reload
    /// retried).
    trust_next: Option<OffsetDateTime>,
    trust_failures: u32,
    /// Servers in backoff after a failed reload, or not running: certificates that
    /// reload them wait for `next`.
    servers: HashMap<String, ServerTrack>,
    /// Runs hook commands in the background; kept across configuration reloads.
    hooks: Arc<crate::hooks::HookRunner>,
    /// Passes running now, by id, and their tasks.
    flights: HashMap<u64, Flight>,
    next_flight: u64,
    passes: tokio::task::JoinSet<Done>,
    /// Certificates that wait for a pass in flight to end (they are in it, or they
    /// reload one of its servers); `deferred_check` also checks what is served.
    deferred: BTreeSet<String>,
    deferred_check: BTreeSet<String>,
    /// Trust work that waits for the pass that holds the trust targets' servers.
    trust_wanted: bool,
    lock: SharedLock,
    metrics: Arc<Metrics>,
    /// What was last fully checked, shared with the blocking pass.
    cache: Arc<std::sync::Mutex<Option<ObserveCache>>>,
    /// The cache of checked files as read at start-up, beside the first pass's
    /// preparations (taken by that pass).
    cache_read: Option<std::thread::JoinHandle<ObserveCache>>,
    /// The fields a refused reload changed that only a restart applies (shown in
    /// `STATUS=` until a reload no longer changes them).
    restart_needed: Option<String>,
    /// Whether a CA certificate is due for replacement (said in `STATUS=`), and when the
    /// CA was last looked at.
    ca_alarm: bool,
    ca_checked: Option<OffsetDateTime>,
    /// When each certificate with a `verify:` target is next checked for drift
    /// (`verify.every`, jittered).
    drift_next: HashMap<String, OffsetDateTime>,
}

/// What reaches the daemon's loop from outside, on its one channel.
#[derive(Debug)]
enum Control {
    /// Paths the file watcher saw change (collected, then looked at once settled).
    Files(Vec<PathBuf>),
    /// Re-read the configuration (SIGHUP).
    Reload,
    /// Stop between certificates (SIGTERM, SIGINT, or the caller's trigger).
    Stop,
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
    rt.block_on(async {
        let stop = async {
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                return std::future::pending().await;
            };
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        };
        serve(config_path, Arc::new(SystemClock), stop).await
    })
}

/// Runs the daemon on `clock` until `stop` completes (SIGTERM or SIGINT for the
/// service; a test's trigger), then stops between certificates.
pub async fn serve(
    config_path: &Path,
    clock: Arc<dyn Clock>,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    let config = config::load(config_path).map_err(DaemonError::Config)?;
    // `-c config.yaml` has an empty directory part: its directory is watched (and its
    // reloads read) by an absolute path.
    let absolute = std::path::absolute(config_path).unwrap_or_else(|_| config_path.to_path_buf());
    let config_path = absolute.as_path();
    // Everything that reaches the loop from outside comes as one `Control` on one
    // channel: file events, reload requests (SIGHUP), the stop.
    let (control, mut controls) = mpsc::unbounded_channel::<Control>();
    let fs_tx = control.clone();
    let watcher =
        notify::recommended_watcher(move |res: notify::Result<notify::Event>| match res {
            // Reading a file (our own checks do) is not a change.
            Ok(ev) if matches!(ev.kind, notify::EventKind::Access(_)) => {}
            Ok(ev) => {
                let _ = fs_tx.send(Control::Files(ev.paths));
            }
            Err(e) => tracing::warn!(error = %e, "file watcher error"),
        })
        .map_err(|e| DaemonError::Startup(format!("cannot start the file watcher: {e}")))?;
    let mut d = Daemon {
        clock,
        config_path: config_path.to_path_buf(),
        config: Arc::new(config),
        tracks: Vec::new(),
        watch_next: HashMap::new(),
        index: Vec::new(),
        by_name: Vec::new(),
        dirs: BTreeSet::new(),
        store_dirs: Vec::new(),
        stores_armed: false,
        watcher,
        watched_dirs: HashMap::new(),
        cancel: Arc::new(AtomicBool::new(false)),
        cache: Arc::new(std::sync::Mutex::new(None)),
        cache_read: None,
        trust_next: None,
        trust_failures: 0,
        servers: HashMap::new(),
        hooks: Arc::new(crate::hooks::HookRunner::new()),
        flights: HashMap::new(),
        next_flight: 0,
        passes: tokio::task::JoinSet::new(),
        deferred: BTreeSet::new(),
        deferred_check: BTreeSet::new(),
        trust_wanted: false,
        lock: SharedLock::default(),
        metrics: Arc::new(Metrics::default()),
        restart_needed: None,
        ca_alarm: false,
        ca_checked: None,
        drift_next: HashMap::new(),
    };
    d.metrics
        .declare_all(d.config.certificates.iter().map(|c| c.name.as_str()));
    if let Some(addr) = d.config.metrics {
        let listener = crate::metrics::bind(addr).await.map_err(|e| {
            DaemonError::Startup(format!("metrics.listen: cannot listen on {addr}: {e}"))
        })?;
        tracing::info!(%addr, "serving metrics at /metrics");
        tokio::spawn(crate::metrics::serve(listener, d.metrics.clone()));
    }
    let mut hup = signal(SignalKind::hangup()).map_err(|e| DaemonError::Startup(e.to_string()))?;
    let reload_tx = control.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            if reload_tx.send(Control::Reload).is_err() {
                break;
            }
        }
    });
    // A stop raises the cancel flag at once, even while a pass runs: the pass stops
    // between certificates (never inside an install) and the loop ends.
    let cancel = d.cancel.clone();
    tokio::spawn(async move {
        stop.await;
        tracing::info!("stop requested");
        cancel.store(true, Ordering::Relaxed);
        let _ = control.send(Control::Stop);
    });

    // Read on another core while the daemon indexes its files and plans its passes
    // (tens of milliseconds each with thousands of certificates). Before the state
    // lock, which is safe: the file is only ever replaced whole (a rename), and an entry
    // counts only while the files it describes keep their identity.
    let state = StateDir::new(&d.config.state_dir);
    d.cache_read = std::thread::Builder::new()
        .name("cache".into())
        .spawn(move || ObserveCache::read(&state))
        .ok();
    d.reindex();
    tracing::info!(config = %d.config_path.display(), certificates = d.config.certificates.len(), "certkeeper starting");
    let all: Vec<String> = d
        .config
        .certificates
        .iter()
        .map(|c| c.name.clone())
        .collect();
    // The first reconciliation runs in passes like any other (one per group of
    // certificates sharing servers), with the loop already serving timers: a server
    // that hangs at start-up delays READY=1 by its timeout, not another certificate's
    // renewal. READY=1 when the last of these passes has ended.
    d.launch(all, true, true);
    let mut starting: BTreeSet<u64> = d.flights.keys().copied().collect();
    if starting.is_empty() {
        d.started();
    }

    let watchdog = sd_notify::watchdog_enabled().map(|t| t / 2);
    let mut watchdog_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(86_400)));
    watchdog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    // File events of a burst, and when to look at them: after `SETTLE` of quiet, at
    // most `SETTLE_MAX` after the first. Collected here rather than in a loop of their
    // own, so that a pass that ends meanwhile is taken (and its new directories
    // watched) at once.
    let mut pending: Vec<PathBuf> = Vec::new();
    let mut settle_at: Option<tokio::time::Instant> = None;
    let mut burst_until = tokio::time::Instant::now();
    while !d.cancel.load(Ordering::Relaxed) {
        let sleep_for = crate::policy::retry::sleep_for(d.wakes(), d.clock.now());
        tokio::select! {
            _ = tokio::time::sleep(sleep_for) => {
                let now = d.clock.now();
                let due = d.due(now);
                let trust_due = d.trust_next.is_some_and(|t| t <= now);
                if !due.is_empty() || trust_due {
                    d.launch(due, false, trust_due);
                }
                let drift = d.drift_due(now);
                if !drift.is_empty() {
                    d.launch(drift, true, false);
                }
                let waiting = d.servers_to_look_at(now);
                if !waiting.is_empty() {
                    d.launch(waiting, true, false);
                }
                d.check_watched(now);
                notify(&[NotifyState::Status(&d.summary())]);
            }
            Some(c) = controls.recv() => match c {
            Control::Files(paths) => {
                let now = tokio::time::Instant::now();
                if pending.is_empty() {
                    burst_until = now + SETTLE_MAX;
                }
                pending.extend(paths);
                settle_at = Some((now + SETTLE).min(burst_until));
            }
            Control::Reload => {
                notify(&[NotifyState::Reloading, NotifyState::monotonic_usec_now().unwrap_or(NotifyState::Status("reloading"))]);
                d.reload_config().await;
                notify(&[NotifyState::Ready, NotifyState::Status(&d.summary())]);
            }
            Control::Stop => break,
            },
            _ = tokio::time::sleep_until(settle_at.unwrap_or_else(tokio::time::Instant::now)), if settle_at.is_some() => {
                settle_at = None;
                d.on_files(std::mem::take(&mut pending)).await;
            }
            Some(done) = d.passes.join_next(), if !d.passes.is_empty() => {
                d.finish(done);
                if !starting.is_empty() {
                    starting.retain(|id| d.flights.contains_key(id));
                    if starting.is_empty() {
                        d.started();
                    }
                }
                notify(&[NotifyState::Status(&d.summary())]);
            }
            _ = watchdog_tick.tick(), if watchdog.is_some() => {
                notify(&[NotifyState::Watchdog]);
            }
        }
    }
    tracing::info!("stopping");
    // Passes in flight stop between certificates, never inside an install.
    d.settle_passes().await;
    // Hooks already started may finish, briefly: SIGTERM must stop within seconds
    // (systemd removes whatever is left with the cgroup).
    let hooks = d.hooks.clone();
    let _ = tokio::task::spawn_blocking(move || {
        hooks.drain(std::time::Instant::now() + hooks.budget().min(Duration::from_secs(5)))
    })
    .await;
    notify(&[NotifyState::Stopping]);
    Ok(())
}

impl Daemon {
    /// Every time something is scheduled for: certificates, watched ones, the trust
    /// material, servers in backoff.
    fn wakes(&self) -> Vec<OffsetDateTime> {
        // What waits for a pass in flight is started when that pass ends, not by time.
        let trust_waits = self.trust_wanted || self.flights.values().any(|f| f.trust);
        self.named_tracks()
            .filter(|(n, _)| !self.in_flight(n) && !self.deferred.contains(*n))
            .map(|(_, t)| next_look(t.next.into(), t.expiring_at.map(Into::into)))
            .chain(self.watch_next.values().copied())
            .chain(self.trust_next.filter(|_| !trust_waits))
            .chain(
                self.drift_next
                    .iter()
                    .filter(|(n, _)| !self.in_flight(n))
                    .map(|(_, t)| *t),
            )
            .chain(self.servers.values().map(|s| s.next))
            .collect()
    }

    /// When `name` may be attempted next: its own retry time, and no sooner than every
    /// server it reloads is out of backoff. None when it may go now.
    fn held_until(&self, name: &str, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let own = self.track(name).map(|t| Held {
            failures: t.failures,
            next: t.next.into(),
        });
        let servers = self
            .spec(name)
            .into_iter()
            .flat_map(|c| c.reload.iter())
            .filter_map(|s| self.servers.get(s))
            .map(|s| Held {
                failures: s.failures,
                next: s.next,
            });
        held_until(own, servers, now)
    }

    /// The certificates whose time has come, leaving out those held back by a server in
    /// backoff (their next look moves to the server's retry time).
    fn due(&mut self, now: OffsetDateTime) -> Vec<String> {
        let due: Vec<String> = self
            .named_tracks()
            .filter(|(_, t)| t.next <= now || t.expiring_at.is_some_and(|e| e <= now))
            .map(|(n, _)| n.clone())
            .filter(|n| !self.in_flight(n))
            .collect();
        let mut go = Vec::new();
        for name in due {
            match self.held_until(&name, now) {
                Some(until) => {
                    if let Some(t) = self.track_mut(&name) {
                        t.next = until.into();
                        t.expiring_at = None;
                    }
                }
                None => go.push(name),
            }
        }
        go
    }

    /// Keeps one drift check time per certificate with a `verify:` target that has
    /// `verify.every` (new ones start a jittered period from now; gone ones are
    /// forgotten).
    fn schedule_drift(&mut self, now: OffsetDateTime) {
        let config = Arc::clone(&self.config);
        let wanted: HashMap<&str, Duration> = config
            .certificates
            .iter()
            .filter_map(|c| Some((c.name.as_str(), c.check_every()?)))
            .collect();
        self.drift_next
            .retain(|n, _| wanted.contains_key(n.as_str()));
        for (name, every) in wanted {
            self.drift_next
                .entry(name.to_string())
                .or_insert_with(|| drift_after(name, now, every));
        }
    }

    /// The certificates whose drift check is due (not those in a pass: the pass that
    /// ends reschedules them), each given its next time.
    fn drift_due(&mut self, now: OffsetDateTime) -> Vec<String> {
        let due: Vec<String> = self
            .drift_next
            .iter()
            .filter(|(n, t)| **t <= now && !self.in_flight(n))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &due {
            let every = self
                .spec(name)
                .and_then(|c| c.check_every())
                .unwrap_or(Duration::from_secs(3600));
            self.drift_next
                .insert(name.clone(), drift_after(name, now, every));
        }
        due
    }

    /// Servers that were not running at their reload and whose time to look again has
    /// come: the certificates that reload them, for a pass that checks what is served.
    fn servers_to_look_at(&mut self, now: OffsetDateTime) -> Vec<String> {
        let due: BTreeSet<String> = self
            .servers
            .iter()
            .filter(|(_, s)| s.failures == 0 && s.waiting_start > 0 && s.next <= now)
            .map(|(n, _)| n.clone())
            .collect();
        if due.is_empty() {
            return Vec::new();
        }
        for name in &due {
            if let Some(s) = self.servers.get_mut(name) {
                // Rescheduled by the pass if it still does not run.
                s.next = now + time::Duration::seconds(backoff(s.waiting_start).as_secs() as i64);
            }
        }
        self.config
            .certificates
            .iter()
            .filter(|c| c.reload.iter().any(|s| due.contains(s)))
            .map(|c| c.name.clone())
            .collect()
    }

    /// Starts one pass over `names` on a blocking thread, beside the passes already
    /// running, and returns at once; `finish` takes its result. Certificates already in
    /// a pass, or that reload a server another pass is using, wait for it to end
    /// (`deferred`): two passes never touch the same server, so a slow or hanging step
    /// of one (an issuer, a config test, a verify) never holds up the others.
    /// `trust`: also bring the trust targets up to date (one pass at a time does).
    fn launch(&mut self, names: Vec<String>, check_served: bool, trust: bool) {
        let busy_servers: BTreeSet<&String> = self
            .flights
            .values()
            .flat_map(|f| f.servers.iter())
            .collect();
        let trust_busy = self.flights.values().any(|f| f.trust);
        let trust_servers: BTreeSet<String> = self
            .config
            .trust
            .iter()
            .flat_map(|t| t.reload.iter().cloned())
            .collect();
        let with_trust =
            trust && !trust_busy && trust_servers.iter().all(|s| !busy_servers.contains(s));
        if trust && !with_trust {
            self.trust_wanted = true;
        }
        let mut go: BTreeSet<String> = BTreeSet::new();
        for name in names {
            if self.in_flight(&name) {
                // Looked at again when its pass ends: the files may have changed after
                // that pass read them.
                self.deferred.insert(name);
                continue;
            }
            let Some(spec) = self.spec(&name) else {
                continue;
            };
            if spec.reload.iter().any(|s| busy_servers.contains(s)) {
                if check_served {
                    self.deferred_check.insert(name);
                } else {
                    self.deferred.insert(name);
                }
                continue;
            }
            go.insert(name);
        }
        if go.is_empty() && !with_trust {
            return;
        }
        if check_served {
            self.deferred_check.retain(|n| !go.contains(n));
        }
        // One pass per group of certificates that share servers (the trust targets'
        // servers count for the group that looks after them): a server that hangs holds
        // up only its own group.
        let mut groups: Vec<(BTreeSet<String>, BTreeSet<String>, bool)> = Vec::new();
        if with_trust {
            groups.push((BTreeSet::new(), trust_servers, true));
        }
        let mut serverless: BTreeSet<String> = BTreeSet::new();
        for name in go {
            let spec = self.spec(&name).expect("selected above");
            if spec.reload.is_empty() {
                serverless.insert(name);
                continue;
            }
            // Joins the first group that shares a server with it (merging any other
            // such group into that one); a group of its own otherwise. Groups are as
            // few as the servers, so this stays linear in the certificates.
            let shares = |g: &(BTreeSet<String>, BTreeSet<String>, bool)| {
                spec.reload.iter().any(|s| g.1.contains(s))
            };
            let Some(first) = groups.iter().position(shares) else {
                groups.push((
                    BTreeSet::from([name]),
                    spec.reload.iter().cloned().collect(),
                    false,
                ));
                continue;
            };
            // Later indices first, so that removing them keeps `first` valid.
            for other in (first + 1..groups.len()).rev() {
                if shares(&groups[other]) {
                    let (certs, servers, trust) = groups.swap_remove(other);
                    groups[first].0.extend(certs);
                    groups[first].1.extend(servers);
                    groups[first].2 |= trust;
                }
            }
            groups[first].0.insert(name);
            for s in spec.reload.iter() {
                if !groups[first].1.contains(s) {
                    groups[first].1.insert(s.clone());
                }
            }
        }
        if !serverless.is_empty() {
            groups.push((serverless, BTreeSet::new(), false));
        }
        for (certs, servers, trust) in groups {
            self.spawn_pass(certs, servers, trust, check_served);
        }
    }

    /// Starts one pass on a blocking thread over `certs`, which hold `servers` until it
    /// ends; returns its id.
    fn spawn_pass(
        &mut self,
        certs: BTreeSet<String>,
        servers: BTreeSet<String>,
        with_trust: bool,
        check_served: bool,
    ) -> u64 {
        let id = self.next_flight;
        self.next_flight += 1;
        let names: Vec<String> = certs.iter().cloned().collect();
        tracing::debug!(
            pass = id,
            certificates = names.len(),
            check_served,
            trust = with_trust,
            "pass started"
        );
        self.flights.insert(
            id,
            Flight {
                certs,
                servers,
                trust: with_trust,
            },
        );
        let config = self.config.clone();
        let cancel = self.cancel.clone();
        let cache = self.cache.clone();
        let cache_read = if names.is_empty() {
            None
        } else {
            self.cache_read.take()
        };
        let hooks = self.hooks.clone();
        let lock = self.lock.clone();
        let now = self.clock.now();
        self.passes.spawn_blocking(move || {
            // Key generation, fsync and config tests block: keep them off the loop.
            let state = StateDir::new(&config.state_dir);
            let pass = || {
                let _lock = lock.acquire(&state).map_err(|e| e.to_string())?;
                let ca = ensure_ca_if_used(&config, &state, now).map_err(|e| e.to_string())?;
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
                    skip_trust: !with_trust,
                    ..Default::default()
                };
                // Each pass takes out of the cache of checked files the entries of its own
                // certificates (passes never share one), and puts them back at its end.
                let fingerprint = &ca
                    .as_ref()
                    .map(|ca| ca.issuing_id())
                    .unwrap_or_else(|| "no internal CA".into());
                let mut part = (!selected.is_empty()).then(|| {
                    let mut shared = cache.lock().unwrap_or_else(|e| e.into_inner());
                    let read = cache_read.and_then(|h| h.join().ok());
                    let whole = shared
                        .take()
                        .or(read)
                        .unwrap_or_else(|| ObserveCache::read(&state));
                    shared
                        .insert(whole.for_intermediate(fingerprint))
                        .split_off(&wanted)
                });
                let (reports, activity) = run_pass(Pass {
                    config: &config,
                    state: &state,
                    ca: ca.as_ref(),
                    selected: &selected,
                    opts: &opts,
                    now,
                    cancel: &cancel,
                    cache: part.as_mut(),
                });
                if let Some(part) = part {
                    let mut shared = cache.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(c) = shared.as_mut() {
                        c.absorb(part);
                        let names_now: std::collections::HashSet<&str> = config
                            .certificates
                            .iter()
                            .map(|c| c.name.as_str())
                            .collect();
                        c.retain(&names_now);
                        c.save(&state);
                    }
                }
                // Under the lock: `expiring` remembers in state_dir what it fired.
                let events = crate::hooks::events_for_pass(&config, &state, &reports, now);
                hooks.fire(&config, events);
                tracing::debug!(
                    certificates = selected.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "pass done"
                );
                Ok::<_, String>((reports, activity))
            };
            // A bug in one pass must not take the daemon down, nor lose track of which
            // certificates that pass held.
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(pass))
                .unwrap_or_else(|_| Err("the pass crashed (a bug: please report it)".into()));
            Done {
                id,
                now,
                names,
                result,
            }
        });
        id
    }

    /// The first reconciliation is over: tell systemd, and watch the stores too.
    fn started(&mut self) {
        self.schedule_drift(self.clock.now());
        self.check_watched(self.clock.now());
        self.check_ca(self.clock.now());
        if !self.cancel.load(Ordering::Relaxed) {
            notify(&[NotifyState::Ready, NotifyState::Status(&self.summary())]);
        }
        self.stores_armed = true;
        self.find_store_dirs();
        self.rewatch();
    }

    /// The tracks of the certificates that have one, with their names.
    fn named_tracks(&self) -> impl Iterator<Item = (&String, &Track)> {
        self.tracks
            .iter()
            .zip(&self.config.certificates)
            .filter_map(|(t, c)| Some((&c.name, t.as_ref()?)))
    }

    fn track(&self, name: &str) -> Option<&Track> {
        self.tracks.get(self.position(name)?)?.as_ref()
    }

    fn track_mut(&mut self, name: &str) -> Option<&mut Track> {
        let i = self.position(name)?;
        self.tracks.get_mut(i)?.as_mut()
    }

    fn spec(&self, name: &str) -> Option<&config::CertSpec> {
        self.position(name).map(|i| &self.config.certificates[i])
    }

    fn in_flight(&self, name: &str) -> bool {
        self.flights.values().any(|f| f.certs.contains(name))
    }

    /// Waits for every pass in flight and takes their results.
    async fn settle_passes(&mut self) {
        while let Some(done) = self.passes.join_next().await {
            self.finish(done);
        }
    }

    /// Takes a pass's result: updates the schedule, the servers' backoff and the
    /// metrics, then starts what waited for it.
    fn finish(&mut self, done: Result<Done, tokio::task::JoinError>) {
        let done = match done {
            Ok(d) => d,
            Err(e) => {
                // Only a cancelled task gets here (panics are caught in the pass).
                tracing::error!(error = %e, "reconcile task lost");
                if self.passes.is_empty() {
                    self.flights.clear();
                }
                return;
            }
        };
        let with_trust = self.flights.remove(&done.id).is_some_and(|f| f.trust);
        self.apply(done.now, done.names, done.result, with_trust);
        if self
            .ca_checked
            .is_none_or(|t| self.clock.now() - t >= time::Duration::hours(1))
        {
            self.check_ca(self.clock.now());
        }
        self.relaunch();
    }

    /// Looks at the internal CA's own validity: every generation's `not_after` in the
    /// metrics, and an alarm (log, `STATUS=`, metric) when a CA certificate is due for
    /// replacement and cannot be replaced here (its root key is offline).
    fn check_ca(&mut self, now: OffsetDateTime) {
        use crate::metrics::{CaKindLabel, CaLabel};
        use crate::policy::ca::{alarm, health, timing, CaHealth};
        self.ca_checked = Some(now);
        let Ok(Some(ca)) = crate::reconcile::load_ca(&self.config) else {
            return;
        };
        let m = &ca.manifest;
        self.metrics.ca_not_after.clear();
        let gauge = |which: &str, g: u32, cert: &crate::x509::CertInfo| {
            self.metrics
                .ca_not_after
                .get_or_create(&CaLabel {
                    ca: which.into(),
                    generation: g.to_string(),
                })
                .set(cert.not_after.unix_timestamp());
        };
        gauge("root", m.root, &ca.root);
        gauge("intermediate", m.intermediate, &ca.intermediate);
        for (g, c) in &ca.old_roots {
            gauge("root", *g, c);
        }
        for (g, c) in &ca.retired {
            gauge("intermediate", *g, c);
        }
        if let (Some(n), Some((c, _))) = (&m.next_root, &ca.next_root) {
            gauge("root", n.generation, c);
        }
        let (int, root) = health(
            &ca.state(),
            &timing(&self.config),
            ca.has_root_key(),
            ca.has_next_root_key(),
            now,
        );
        for (which, h) in [("intermediate", int), ("root", root)] {
            let blocked = matches!(h, CaHealth::Blocked { .. } | CaHealth::Expired { .. });
            self.metrics
                .ca_rotation_blocked
                .get_or_create(&CaKindLabel { ca: which.into() })
                .set(blocked as i64);
        }
        let alarms: Vec<String> = [("intermediate", int), ("root", root)]
            .into_iter()
            .filter_map(|(which, h)| alarm(which, h))
            .collect();
        for a in &alarms {
            tracing::warn!("{a}");
        }
        self.ca_alarm = !alarms.is_empty();
    }

    /// Starts what waited for a pass to end, unless a stop was requested.
    fn relaunch(&mut self) {
        if self.cancel.load(Ordering::Relaxed) {
            return;
        }
        let now = self.clock.now();
        let waiting: Vec<String> = std::mem::take(&mut self.deferred)
            .into_iter()
            .filter(|n| self.held_until(n, now).is_none())
            .collect();
        let check: Vec<String> = std::mem::take(&mut self.deferred_check)
            .into_iter()
            .collect();
        let trust = std::mem::take(&mut self.trust_wanted);
        if !waiting.is_empty() || trust {
            self.launch(waiting, false, trust);
        }
        if !check.is_empty() {
            self.launch(check, true, false);
        }
    }

    /// Updates the schedule from one pass's result.
    fn apply(
        &mut self,
        now: OffsetDateTime,
        names_of_pass: Vec<String>,
        result: Result<(Vec<CertReport>, ServerActivity), String>,
        with_trust: bool,
    ) {
        let reports = match result {
            Ok((reports, activity)) => {
                // Only the pass that looked after the trust targets knows their state.
                if with_trust {
                    self.trust_next = activity.trust_refresh_at;
                    if activity.trust_pending.is_empty() {
                        self.trust_failures = 0;
                    } else {
                        self.trust_failures += 1;
                        let retry = retry_at(now, self.trust_failures, None);
                        self.trust_next = Some(self.trust_next.map_or(retry, |t| t.min(retry)));
                    }
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
                self.track_servers(now, &activity);
                for look in &activity.served {
                    let label = crate::metrics::TargetLabel {
                        name: look.name.clone(),
                        target: look.target.clone(),
                    };
                    self.metrics
                        .served_matches
                        .get_or_create(&label)
                        .set(i64::from(look.matches));
                    self.metrics
                        .served_verified
                        .get_or_create(&label)
                        .set(i64::from(look.verified));
                }
                if activity.ca_changed {
                    // The metrics and the alarm follow at once.
                    self.ca_checked = None;
                    if !with_trust {
                        // A pass without the trust targets rotated the CA: the trust
                        // pass publishes it.
                        self.trust_wanted = true;
                    }
                }
                reports
            }
            Err(e) => {
                tracing::error!(error = %e, "reconcile failed; retrying later");
                let now = self.clock.now();
                // Certificates never looked at yet (a failed first pass) get a track
                // too, or nothing would ever wake them.
                for name in names_of_pass {
                    let Some(i) = self.position(&name) else {
                        continue;
                    };
                    let t = self.tracks[i].get_or_insert(Track {
                        next: now.into(),
                        failures: 0,
                        not_after: None,
                        expiring_at: None,
                    });
                    t.failures += 1;
                    t.next =
                        retry_at_spread(&name, now, t.failures, t.not_after.map(Into::into)).into();
                    t.expiring_at = None;
                }
                if with_trust {
                    self.trust_failures += 1;
                    self.trust_next = Some(retry_at(now, self.trust_failures, None));
                }
                return;
            }
        };
        for r in reports {
            // A certificate the configuration no longer has (reloaded meanwhile) is
            // forgotten.
            let Some(at) = self.position(&r.name) else {
                continue;
            };
            let spec = &self.config.certificates[at];
            let has_expiring_hooks =
                !self.config.hooks.expiring.is_empty() || !spec.hooks.expiring.is_empty();
            let track = self.tracks[at].get_or_insert(Track {
                next: now.into(),
                failures: 0,
                not_after: None,
                expiring_at: None,
            });
            match &r.outcome {
                Outcome::Unchanged {
                    renew_at,
                    not_after,
                    not_before,
                    look_at,
                    ..
                } => {
                    // Looked at, fine: its failures (if any) are over.
                    let expiring = crate::hooks::expiring_at(*not_before, *not_after);
                    *track = Track {
                        next: look_at.map_or(*renew_at, |t| t.min(*renew_at)).into(),
                        failures: 0,
                        not_after: Some((*not_after).into()),
                        expiring_at: (expiring > now && has_expiring_hooks)
                            .then_some(expiring.into()),
                    };
                }
                Outcome::Renewed {
                    renew_at,
                    not_after,
                    ..
                } => {
                    // An ACME certificate's renewal information is asked for within
                    // hours of its issuance (a CA-side early window reaches it then).
                    let acme = spec.issuer != crate::model::IssuerRef::Internal;
                    let first_look = if acme {
                        (*renew_at).min(now + time::Duration::hours(6))
                    } else {
                        *renew_at
                    };
                    *track = Track {
                        next: first_look.max(now + MIN_RENEWAL_GAP).into(),
                        failures: 0,
                        not_after: Some((*not_after).into()),
                        expiring_at: None,
                    };
                }
                Outcome::Failed {
                    error, not_after, ..
                } => {
                    track.failures += 1;
                    track.not_after = not_after.map(Into::into);
                    // The failed pass fired `expiring` if it was time; retries come
                    // sooner than that anyway (at most half the time left).
                    track.expiring_at = None;
                    track.next = retry_at_spread(&r.name, now, track.failures, *not_after).into();
                    // A server in backoff holds back every certificate it reloads, so
                    // that they are retried together, with one reload.
                    if let Some(until) = spec
                        .reload
                        .iter()
                        .filter_map(|s| self.servers.get(s))
                        .filter(|s| s.failures > 0)
                        .map(|s| s.next)
                        .max()
                    {
                        track.next = track.next.max(until.into());
                    }
                    tracing::warn!(certificate = %r.name, failures = track.failures, retry = %rfc3339(track.next.into()), step = error.code(), %error, "will retry");
                }
            }
            let failed = matches!(r.outcome, Outcome::Failed { .. });
            let renewed = matches!(r.outcome, Outcome::Renewed { .. });
            self.metrics.update(&r.name, |row| {
                row.next_renewal = Some(track.next.unix_timestamp());
                if let Some(na) = track.not_after {
                    row.not_after = Some(na.unix_timestamp());
                }
                if track.failures == 0 {
                    row.last_success = Some(now.unix_timestamp());
                }
                if failed {
                    row.failing = Some(true);
                    *row.renewal_failures.get_or_insert(0) += 1;
                    row.failed += 1;
                } else if track.failures == 0 {
                    row.failing = Some(false);
                }
                if renewed {
                    row.succeeded += 1;
                }
            });
        }
        // The stores of the certificates this pass looked at have their current pair's
        // directory watched.
        let looked_at: std::collections::HashSet<&String> = names_of_pass.iter().collect();
        if self.stores_armed {
            for (c, dir) in self.config.certificates.iter().zip(&mut self.store_dirs) {
                if looked_at.contains(&c.name) {
                    *dir = crate::install::watch_dir(c).map(Arc::from);
                }
            }
        }
        // Directories created by this pass can be watched now. What changed in them
        // before the watch was there is found by one more look at their certificates.
        // (Stores are not among them: their files are looked at through the live paths.)
        let armed: std::collections::HashSet<PathBuf> = self.rewatch().into_iter().collect();
        if !armed.is_empty() {
            for o in self.owners_in(|dir| armed.contains(dir)) {
                match o {
                    Owner::Managed(i) => {
                        self.deferred
                            .insert(self.config.certificates[i].name.clone());
                    }
                    Owner::Trust => self.trust_wanted = true,
                    Owner::Watched => {}
                }
            }
        }
    }

    /// Updates the servers' backoff from what a pass did to them: a failed config test
    /// or reload backs the server off (per server, whatever certificate asked); a
    /// server that was not running is looked at again later; one that reloaded is fine.
    fn track_servers(&mut self, now: OffsetDateTime, activity: &ServerActivity) {
        for (name, ok) in &activity.reload_results {
            if *ok {
                self.servers.remove(name);
            }
        }
        for (name, why) in activity.servers.iter().filter(|(_, o)| o.failed()) {
            let s = self.servers.entry(name.clone()).or_insert(ServerTrack {
                failures: 0,
                waiting_start: 0,
                next: now,
            });
            s.failures += 1;
            s.waiting_start = 0;
            s.next = retry_at_spread(name, now, s.failures, None);
            tracing::warn!(server = %name, failures = s.failures, retry = %rfc3339(s.next), error = %why, "server in backoff: certificates that reload it wait until then");
        }
        for name in activity.not_running.keys() {
            if activity.servers.get(name).is_some_and(|o| o.failed()) {
                continue;
            }
            let s = self.servers.entry(name.clone()).or_insert(ServerTrack {
                failures: 0,
                waiting_start: 0,
                next: now,
            });
            s.failures = 0;
            s.waiting_start += 1;
            s.next = now + time::Duration::seconds(backoff(s.waiting_start).as_secs() as i64);
        }
        // A server checked and found running (no reload needed, nothing failed).
        for name in &activity.running {
            if let Some(s) = self.servers.get(name) {
                if s.failures == 0 && !activity.not_running.contains_key(name) {
                    self.servers.remove(name);
                }
            }
        }
    }

    /// Logs watched-only certificates that are inside their warning window (again
    /// daily), and schedules the next look.
    fn check_watched(&mut self, now: OffsetDateTime) {
        for w in &self.config.watched {
            let verdict = crate::policy::watch::judge(
                crate::observe::watched(w)
                    .as_ref()
                    .map(|certs| certs[0].not_after)
                    .map_err(|e| e.as_str()),
                w.warn_before,
                now,
            );
            let not_after = verdict.not_after().map(|na| na.unix_timestamp());
            self.metrics
                .update(&w.name, |row| row.not_after = not_after);
            if !matches!(verdict, crate::policy::watch::Watched::Fine { .. })
                && self.watch_next.get(&w.name).is_none_or(|t| *t <= now)
            {
                tracing::warn!(certificate = %w.name, path = %w.path.display(), state = verdict.code(), detail = verdict.detail(now).unwrap_or_default(), "watched certificate needs attention");
            }
            self.watch_next
                .insert(w.name.clone(), verdict.next_look(now));
        }
    }

    fn summary(&self) -> String {
        let n = self.config.certificates.len();
        let failing = self.named_tracks().filter(|(_, t)| t.failures > 0).count();
        let now = self.clock.now();
        let next = self
            .named_tracks()
            .filter(|(_, t)| t.failures == 0)
            .min_by_key(|(_, t)| t.next);
        let mut s = format!("{n} certificate{}", if n == 1 { "" } else { "s" });
        if let Some((name, t)) = next {
            s.push_str(&format!(
                ", next renewal {name} {}",
                relative(t.next.into(), now)
            ));
        }
        if failing > 0 {
            s.push_str(&format!(", {failing} failing"));
        }
        if self.ca_alarm {
            s.push_str(
                "; the CA is due for replacement and cannot rotate (see `certkeeper check`)",
            );
        }
        if let Some(fields) = &self.restart_needed {
            s.push_str(&format!(
                "; the configuration file changes {fields}: restart to apply it"
            ));
        }
        s
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// The next drift check of `name`: `every` from `now`, less a jitter that spreads many
/// certificates over the period (deterministic per name).
fn drift_after(name: &str, now: OffsetDateTime, every: Duration) -> OffsetDateTime {
    let jitter = crate::policy::jitter(name, "drift", every);
    now + time::Duration::seconds((every - jitter).as_secs().max(1) as i64)
}
