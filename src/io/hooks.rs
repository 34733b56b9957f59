//! Hooks: the commands an operator attaches to what happens to a certificate
//! (`hooks: { renewed, failed, expiring, timeout }`, globally and per certificate).
//! Turns a pass's reports into events (`expiring` once per serial, remembered in
//! `state_dir/hooks-expiring.json`) and runs their commands on one background worker,
//! each with its deadline, their output logged. Firing never blocks the caller, and a
//! hook can never delay a renewal, stop a reload, change a file or an exit code.

#[cfg(test)]
mod tests;

use crate::config::{CertSpec, Config, Hooks};
use crate::fsutil::{write_atomic, FileSpec, FsError};
use crate::policy::rfc3339;
use crate::process::{self, show_command, OUTPUT_GRACE};
use crate::reconcile::{CertReport, Outcome};
use crate::state::StateDir;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::mpsc::{self, SyncSender, TrySendError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// How many events may wait for the worker. Beyond that they are dropped with a
/// warning: a hook that hangs until its deadline, on every event of thousands of
/// certificates, must not make the daemon's memory grow without end.
pub const QUEUE_CAPACITY: usize = 1024;

/// `expiring` fires in the last 1/EXPIRING_SHARE of a certificate's validity.
const EXPIRING_SHARE: i32 = 10;

/// Beyond its deadline, how long one command may take to be killed and have its
/// output collected (the runner waits up to `OUTPUT_GRACE` for the pipe).
const KILL_SLACK: Duration = Duration::from_millis(500);

/// Where `expiring` remembers the serials it fired for, in `state_dir`.
const EXPIRING_FILE: &str = "hooks-expiring.json";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    /// A new pair was installed (and reloaded and verified).
    Renewed,
    /// An attempt failed; the pair in place (if any) was kept.
    Failed,
    /// The certificate entered its last 10 % of validity without being renewed.
    Expiring,
}

impl HookKind {
    /// The name in `hooks:` and in `CERTKEEPER_EVENT`.
    pub fn as_str(self) -> &'static str {
        match self {
            HookKind::Renewed => "renewed",
            HookKind::Failed => "failed",
            HookKind::Expiring => "expiring",
        }
    }

    fn commands(self, hooks: &Hooks) -> &[Vec<String>] {
        match self {
            HookKind::Renewed => &hooks.renewed,
            HookKind::Failed => &hooks.failed,
            HookKind::Expiring => &hooks.expiring,
        }
    }
}

impl fmt::Display for HookKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to one certificate, with the facts its hooks receive.
#[derive(Debug, Clone, PartialEq)]
pub struct HookEvent {
    pub kind: HookKind,
    pub name: String,
    /// The serial of the certificate concerned: the new one for `renewed`, the one in
    /// place for `failed` (none when nothing is installed) and `expiring`.
    pub serial: Option<String>,
    pub not_after: Option<OffsetDateTime>,
    /// The certificate's installed paths.
    pub files: Vec<PathBuf>,
    /// Why the attempt failed (`failed` only).
    pub error: Option<String>,
}

impl HookEvent {
    /// The variables its commands get on top of certkeeper's own environment. Every
    /// one is set (empty when unknown), so that `set -u` scripts work, except
    /// `CERTKEEPER_ERROR`, which only `failed` has.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("CERTKEEPER_EVENT", self.kind.as_str().to_string()),
            ("CERTKEEPER_NAME", self.name.clone()),
            ("CERTKEEPER_SERIAL", self.serial.clone().unwrap_or_default()),
            (
                "CERTKEEPER_NOT_AFTER",
                self.not_after.map(rfc3339).unwrap_or_default(),
            ),
            (
                "CERTKEEPER_FILES",
                self.files
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        ];
        if self.kind == HookKind::Failed {
            env.push(("CERTKEEPER_ERROR", self.error.clone().unwrap_or_default()));
        }
        env
    }
}

/// One command to run, with its deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct HookCommand {
    pub argv: Vec<String>,
    pub timeout: Duration,
}

/// The commands `kind` runs for certificate `name`: the global ones, then the
/// certificate's own, each with its section's timeout.
pub fn commands_for(config: &Config, kind: HookKind, name: &str) -> Vec<HookCommand> {
    let spec = config.certificates.iter().find(|c| c.name == name);
    commands_of(config, spec, kind)
}

fn commands_of(config: &Config, spec: Option<&CertSpec>, kind: HookKind) -> Vec<HookCommand> {
    std::iter::once(&config.hooks)
        .chain(spec.map(|s| &*s.hooks))
        .flat_map(|h| {
            kind.commands(h).iter().map(|argv| HookCommand {
                argv: argv.clone(),
                timeout: h.timeout,
            })
        })
        .collect()
}

fn has_commands(config: &Config, spec: &CertSpec, kind: HookKind) -> bool {
    !kind.commands(&config.hooks).is_empty() || !kind.commands(&spec.hooks).is_empty()
}

/// When a certificate valid from `not_before` to `not_after` enters its last 10 % of
/// validity: when its `expiring` hooks are due (a daemon with such hooks wakes then).
pub fn expiring_at(not_before: OffsetDateTime, not_after: OffsetDateTime) -> OffsetDateTime {
    let lifetime = (not_after - not_before).max(time::Duration::ZERO);
    not_after - lifetime / EXPIRING_SHARE
}

/// Whether a certificate valid from `not_before` to `not_after` is in its last 10 % of
/// validity at `now`. An expired certificate still is: its warning is late, but
/// exactly what the operator needs to hear. Pure.
pub fn in_last_tenth(
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
    now: OffsetDateTime,
) -> bool {
    now >= expiring_at(not_before, not_after)
}

/// Certificate name → the serial whose `expiring` hooks already ran.
pub type ExpiringFired = BTreeMap<String, String>;

/// Keeps the `expiring` candidates whose serial has not fired yet and records them in
/// `fired`. Pure.
pub fn not_yet_fired(fired: &mut ExpiringFired, candidates: Vec<HookEvent>) -> Vec<HookEvent> {
    candidates
        .into_iter()
        .filter(|e| {
            let Some(serial) = &e.serial else {
                return false;
            };
            if fired.get(&e.name) == Some(serial) {
                return false;
            }
            fired.insert(e.name.clone(), serial.clone());
            true
        })
        .collect()
}

/// The events of one pass, before `expiring` is checked against what already fired.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PassEvents {
    /// `renewed` and `failed`: they fire every time.
    pub events: Vec<HookEvent>,
    /// `expiring` candidates: they fire once per serial.
    pub expiring: Vec<HookEvent>,
}

/// Turns a pass's reports into hook events at `now`: `Renewed` → `renewed`, each
/// `Failed` → `failed`, and an `expiring` candidate for every certificate in place
/// (unchanged, or failed to renew) in its last 10 % of validity. Only events with
/// commands configured are made. Pure.
pub fn pass_events(config: &Config, reports: &[CertReport], now: OffsetDateTime) -> PassEvents {
    let mut out = PassEvents::default();
    if config.hooks.is_empty() && config.certificates.iter().all(|c| c.hooks.is_empty()) {
        return out;
    }
    let specs: BTreeMap<&str, &CertSpec> = config
        .certificates
        .iter()
        .map(|c| (c.name.as_str(), c))
        .collect();
    for r in reports {
        let Some(spec) = specs.get(r.name.as_str()) else {
            continue;
        };
        let event = |kind, serial: Option<&String>, not_after, error: Option<&String>| HookEvent {
            kind,
            name: r.name.clone(),
            serial: serial.cloned(),
            not_after,
            files: spec
                .files
                .paths()
                .iter()
                .map(|(_, p)| p.to_path_buf())
                .collect(),
            error: error.cloned(),
        };
        let in_place = match &r.outcome {
            Outcome::Renewed {
                serial, not_after, ..
            } => {
                if has_commands(config, spec, HookKind::Renewed) {
                    out.events.push(event(
                        HookKind::Renewed,
                        Some(serial),
                        Some(*not_after),
                        None,
                    ));
                }
                None
            }
            Outcome::Failed {
                error,
                serial,
                not_before,
                not_after,
                ..
            } => {
                if has_commands(config, spec, HookKind::Failed) {
                    out.events.push(event(
                        HookKind::Failed,
                        serial.as_ref(),
                        *not_after,
                        Some(&error.to_string()),
                    ));
                }
                match (serial, not_before, not_after) {
                    (Some(s), Some(b), Some(a)) => Some((s, *b, *a)),
                    _ => None,
                }
            }
            Outcome::Unchanged {
                serial,
                not_before,
                not_after,
                ..
            } => Some((serial, *not_before, *not_after)),
        };
        if let Some((serial, not_before, not_after)) = in_place {
            if has_commands(config, spec, HookKind::Expiring)
                && in_last_tenth(not_before, not_after, now)
            {
                out.expiring.push(event(
                    HookKind::Expiring,
                    Some(serial),
                    Some(not_after),
                    None,
                ));
            }
        }
    }
    out
}

impl PassEvents {
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.expiring.is_empty()
    }

    /// Whether `settle` reads and writes the state directory (take the lock first).
    pub fn needs_state(&self) -> bool {
        !self.expiring.is_empty()
    }

    /// Every event to fire: `renewed` and `failed`, then the `expiring` candidates
    /// whose serial has not fired before (remembered in `state_dir`, so that "once"
    /// survives restarts). The caller holds the state lock when `needs_state()`.
    pub fn settle(self, config: &Config, state: &StateDir) -> Vec<HookEvent> {
        let mut events = self.events;
        if self.expiring.is_empty() {
            return events;
        }
        // One read-modify-write at a time: the daemon's passes may run concurrently.
        static MARKS: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one_at_a_time = MARKS.lock().unwrap_or_else(|p| p.into_inner());
        let mut fired = load_fired(state);
        let fresh = not_yet_fired(&mut fired, self.expiring);
        if !fresh.is_empty() {
            // Certificates no longer configured are forgotten, so the file stays small.
            let names: std::collections::HashSet<&str> = config
                .certificates
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            fired.retain(|name, _| names.contains(name.as_str()));
            if let Err(e) = store_fired(state, &fired) {
                // Firing anyway: a warning twice is better than none.
                tracing::error!(error = %e, "cannot remember which certificates had their `expiring` hooks; they may run again");
            }
        }
        events.extend(fresh);
        events
    }

    /// The events that need no state: when the lock cannot be had, `expiring` waits for
    /// the next pass.
    pub fn without_expiring(self) -> Vec<HookEvent> {
        self.events
    }
}

/// The hook events of one pass, for the daemon: `pass_events` then `settle`.
/// The caller holds the state lock (the daemon's pass does).
pub fn events_for_pass(
    config: &Config,
    state: &StateDir,
    reports: &[CertReport],
    now: OffsetDateTime,
) -> Vec<HookEvent> {
    pass_events(config, reports, now).settle(config, state)
}

fn fired_path(state: &StateDir) -> PathBuf {
    state.root.join(EXPIRING_FILE)
}

fn load_fired(state: &StateDir) -> ExpiringFired {
    let path = fired_path(state);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(path = %path.display(), error = %e, "unreadable record of `expiring` hooks; starting afresh");
            ExpiringFired::new()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ExpiringFired::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot read the record of `expiring` hooks; starting afresh");
            ExpiringFired::new()
        }
    }
}

fn store_fired(state: &StateDir, fired: &ExpiringFired) -> Result<(), FsError> {
    write_atomic(&FileSpec {
        path: fired_path(state),
        bytes: Zeroizing::new(serde_json::to_vec_pretty(fired).expect("serializes")),
        mode: 0o600,
        uid: None,
        gid: None,
        follow_symlinks: false,
    })
}

/// One event with its commands, waiting for the worker.
struct Job {
    event: HookEvent,
    commands: Vec<HookCommand>,
}

impl Job {
    /// The longest it can take: every command to its deadline, then killed.
    fn budget(&self) -> Duration {
        self.commands
            .iter()
            .map(|c| c.timeout + OUTPUT_GRACE + KILL_SLACK)
            .sum()
    }
}

#[derive(Default)]
struct Pending {
    jobs: usize,
    budget: Duration,
}

#[derive(Default)]
struct Shared {
    pending: Mutex<Pending>,
    idle: Condvar,
}

impl Shared {
    fn pending(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn finished(&self, budget: Duration) {
        let mut p = self.pending();
        p.jobs -= 1;
        p.budget = p.budget.saturating_sub(budget);
        if p.jobs == 0 {
            self.idle.notify_all();
        }
    }
}

/// Runs hook commands on one background worker: events in the order they were fired,
/// the commands of one event one after the other. `fire` never waits.
pub struct HookRunner {
    queue: SyncSender<Job>,
    capacity: usize,
    shared: Arc<Shared>,
}

impl Default for HookRunner {
    fn default() -> Self {
        Self::new()
    }
}

impl HookRunner {
    pub fn new() -> HookRunner {
        Self::with_capacity(QUEUE_CAPACITY)
    }

    /// A runner whose queue holds at most `capacity` events.
    pub fn with_capacity(capacity: usize) -> HookRunner {
        let (queue, jobs) = mpsc::sync_channel::<Job>(capacity);
        let shared = Arc::new(Shared::default());
        let worker_shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new()
            .name("certkeeper-hooks".into())
            .spawn(move || {
                // Ends when the runner is dropped and the queue is empty.
                for job in jobs {
                    run_job(&job);
                    worker_shared.finished(job.budget());
                }
            });
        if let Err(e) = spawned {
            // `fire` then finds the queue closed and says so for every event.
            tracing::error!(error = %e, "cannot start the hook worker; hooks will not run");
        }
        HookRunner {
            queue,
            capacity,
            shared,
        }
    }

    /// Queues each event with its commands (global, then the certificate's own) and
    /// returns at once. Events without commands are skipped. Returns how many were
    /// queued.
    pub fn fire(&self, config: &Config, events: Vec<HookEvent>) -> usize {
        if events.is_empty() {
            return 0;
        }
        let specs: BTreeMap<&str, &CertSpec> = config
            .certificates
            .iter()
            .map(|c| (c.name.as_str(), c))
            .collect();
        events
            .into_iter()
            .filter_map(|event| {
                let spec = specs.get(event.name.as_str()).copied();
                let commands = commands_of(config, spec, event.kind);
                (!commands.is_empty()).then(|| self.fire_commands(event, commands))
            })
            .filter(|queued| *queued)
            .count()
    }

    /// Queues one event with the commands it runs, without waiting. When the queue is
    /// full the event is dropped with a warning and false is returned.
    pub fn fire_commands(&self, event: HookEvent, commands: Vec<HookCommand>) -> bool {
        let job = Job { event, commands };
        let budget = job.budget();
        {
            let mut p = self.shared.pending();
            p.jobs += 1;
            p.budget += budget;
        }
        let failure = match self.queue.try_send(job) {
            Ok(()) => return true,
            Err(TrySendError::Full(job)) => ("the hook queue is full", job),
            Err(TrySendError::Disconnected(job)) => ("the hook worker is not running", job),
        };
        let (why, job) = failure;
        tracing::warn!(certificate = %job.event.name, event = %job.event.kind, capacity = self.capacity, "{why}; these hooks are dropped (earlier hooks hang or run long: check their logs and `hooks.timeout`)");
        self.shared.finished(budget);
        false
    }

    /// The longest the hooks queued now can take: the sum of their deadlines, plus a
    /// little for each to be killed. A bound for `drain`.
    pub fn budget(&self) -> Duration {
        self.shared.pending().budget
    }

    /// Waits until every queued hook has finished, or until `deadline`. Returns
    /// whether they all finished.
    pub fn drain(&self, deadline: Instant) -> bool {
        let mut p = self.shared.pending();
        while p.jobs > 0 {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            p = self
                .shared
                .idle
                .wait_timeout(p, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

/// Runs the commands of one event in order; each failure is logged and the next runs.
fn run_job(job: &Job) {
    let event = &job.event;
    let env = event.env();
    for cmd in &job.commands {
        let command = show_command(&cmd.argv);
        match process::run(&cmd.argv, &env, cmd.timeout) {
            Ok(done) if done.status.success() => {
                tracing::info!(certificate = %event.name, event = %event.kind, %command, output = %done.output, "hook ran")
            }
            Ok(done) => {
                tracing::warn!(certificate = %event.name, event = %event.kind, %command, status = %done.status, output = %done.output, "hook failed")
            }
            Err(e) => {
                tracing::warn!(certificate = %event.name, event = %event.kind, %command, error = %e, "hook did not run to its end")
            }
        }
    }
}
