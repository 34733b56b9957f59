//! What `status` and `check` show: one row per certificate, built from the config, the
//! files on disk, the ledger and `now`. Reads only; never creates or changes a file.

use crate::config::Config;
use crate::issuer::{InternalCa, Registry};
use crate::observe::observe;
use crate::policy::{decide_with_revocations, relative, rfc3339, Seen, Verdict};
use crate::state::{LedgerEntry, StateDir};
use serde::Serialize;
use time::OffsetDateTime;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    /// `managed` or `watched`.
    pub kind: &'static str,
    pub issuer: Option<String>,
    pub sans: Vec<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub not_after: Option<OffsetDateTime>,
    pub seconds_left: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_renewal: Option<OffsetDateTime>,
    /// `ok`, `due`, `missing`, `expired`... (a reason code), or for watched ones
    /// `ok`, `expiring`, `expired`, `unreadable`.
    pub state: String,
    /// The reason in words, when the state is not `ok`.
    pub detail: Option<String>,
    pub last_result: Option<LastResult>,
    pub files: Vec<String>,
    /// For an ACME certificate: the renewal window its CA suggests (ARI), or why
    /// `renew_before` decides instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub renewal_window: Option<RenewalWindowRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RenewalWindowRow {
    #[serde(with = "time::serde::rfc3339::option")]
    pub start: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub end: Option<OffsetDateTime>,
    pub source: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct LastResult {
    pub event: String,
    #[serde(with = "time::serde::rfc3339")]
    pub time: OffsetDateTime,
    pub serial: Option<String>,
    pub reason: Option<String>,
    /// E.g. a reload skipped because the server is not running.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl From<&LedgerEntry> for LastResult {
    fn from(e: &LedgerEntry) -> Self {
        LastResult {
            event: e.event.clone(),
            time: e.time,
            serial: e.serial.clone(),
            reason: e.reason.clone(),
            note: e.note.clone(),
        }
    }
}

/// Builds the rows. `ca` is the internal CA when it exists.
pub fn rows(
    config: &Config,
    ca: Option<&InternalCa>,
    now: OffsetDateTime,
    with_ledger: bool,
) -> Vec<Row> {
    let last = if with_ledger {
        StateDir::new(&config.state_dir).last_events()
    } else {
        Default::default()
    };
    let revoked = crate::trust::revoked_serials(&StateDir::new(&config.state_dir));
    let mut out = Vec::new();
    out.extend(managed_rows(config, ca, now, &last, &revoked));
    out.extend(watched_rows(config, now));
    out
}

fn managed_rows(
    config: &Config,
    ca: Option<&InternalCa>,
    now: OffsetDateTime,
    last: &std::collections::HashMap<String, LedgerEntry>,
    revoked: &std::collections::HashSet<String>,
) -> Vec<Row> {
    let mut out = Vec::new();
    let issuers = Registry::new(config, ca);
    let findings = crate::drift::findings(&StateDir::new(&config.state_dir));
    let answers = if config
        .certificates
        .iter()
        .any(|c| c.issuer != crate::model::IssuerRef::Internal)
    {
        crate::ari::load(&StateDir::new(&config.state_dir))
    } else {
        Default::default()
    };
    for spec in &config.certificates {
        let seen = observe(spec, issuers.get(&spec.issuer));
        let verdict = decide_with_revocations(spec, &seen, now, revoked);
        let not_after = match &seen {
            Seen::Present(p) => Some(p.leaf.not_after),
            _ => None,
        };
        let (state, detail, next) = match &verdict {
            Verdict::Fine { renew_at } => {
                // Findings of targets the configuration still has.
                let found: Vec<&crate::drift::Finding> = findings
                    .get(&spec.name)
                    .map(|f| spec.verify.iter().filter_map(|v| f.get(&v.label)).collect())
                    .unwrap_or_default();
                let state = if found.iter().any(|f| f.drift) {
                    "drift"
                } else if !found.is_empty() {
                    "unverified"
                } else {
                    "ok"
                };
                let detail = (!found.is_empty()).then(|| {
                    found
                        .iter()
                        .map(|f| f.note.as_str())
                        .collect::<Vec<_>>()
                        .join(" | ")
                });
                // A pair the internal CA issued as the fallback of an ACME issuer: the
                // pass goes back to that issuer (as `reconcile` decides it).
                let on_fallback = crate::reconcile::on_internal_fallback(spec, &seen, ca);
                if on_fallback && state == "ok" {
                    let detail = format!(
                        "issued by the fallback issuer `internal`; going back to `{}` at the next pass that reaches it",
                        spec.issuer
                    );
                    ("fallback".to_string(), Some(detail), Some(now))
                } else {
                    (state.to_string(), detail, Some(*renew_at))
                }
            }
            Verdict::Reissue(r) => (r.code().to_string(), Some(r.to_string()), Some(now)),
        };
        // The ACME CA's window for the serial in place, as the pass uses it.
        let answer = match &seen {
            Seen::Present(p) => answers
                .get(&spec.name)
                .filter(|a| a.serial == p.leaf.serial),
            _ => None,
        };
        let next = match (answer.and_then(|a| a.window()), &seen, state.as_str()) {
            (Some((start, end)), Seen::Present(p), "ok" | "drift" | "unverified") => {
                Some(crate::policy::ari_point(&spec.name, &p.leaf.serial, start, end).max(now))
            }
            _ => next,
        };
        let renewal_window = answer.map(|a| RenewalWindowRow {
            start: a.start,
            end: a.end,
            source: a.source.clone(),
        });
        out.push(Row {
            name: spec.name.clone(),
            kind: "managed",
            issuer: Some(spec.issuer.to_string()),
            sans: spec.sans.iter().map(|s| s.to_string()).collect(),
            not_after,
            seconds_left: not_after.map(|t| (t - now).whole_seconds()),
            next_renewal: next,
            state,
            detail,
            last_result: last.get(&spec.name).map(LastResult::from),
            files: spec
                .files
                .paths()
                .iter()
                .map(|(_, p)| p.display().to_string())
                .collect(),
            renewal_window,
        });
    }
    out
}

/// Rows of the watch-only certificates alone.
pub fn watched_rows(config: &Config, now: OffsetDateTime) -> Vec<Row> {
    let mut out = Vec::new();
    for w in &config.watched {
        let read = crate::observe::watched(w);
        let verdict = crate::policy::watch::judge(
            match &read {
                Ok(certs) => Ok(certs[0].not_after),
                Err(e) => Err(e.as_str()),
            },
            w.warn_before,
            now,
        );
        let sans = match &read {
            Ok(certs) => certs[0].sans.iter().map(|s| s.to_string()).collect(),
            Err(_) => Vec::new(),
        };
        let (state, detail, not_after) = (
            verdict.code().to_string(),
            verdict.detail(now),
            verdict.not_after(),
        );
        out.push(Row {
            name: w.name.clone(),
            kind: "watched",
            issuer: None,
            sans,
            not_after,
            seconds_left: not_after.map(|t| (t - now).whole_seconds()),
            next_renewal: None,
            state,
            detail,
            last_result: None,
            files: vec![w.path.display().to_string()],
            renewal_window: None,
        });
    }
    out
}

/// What `status --check` reports, one line per problem: a managed certificate that is
/// not in order (due, missing, expired, damaged, ...) or whose last attempt failed, a
/// watched one that is expiring, expired or unreadable, and the CA's alarms.
pub fn problems(rows: &[Row], ca_alarms: &[String], now: OffsetDateTime) -> Vec<String> {
    let mut out = Vec::new();
    for r in rows {
        let left = r
            .not_after
            .filter(|_| r.kind != "watched")
            .map(|t| {
                if t > now {
                    format!(" (expires {})", relative(t, now))
                } else {
                    format!(" (expired {})", relative(t, now))
                }
            })
            .unwrap_or_default();
        let failed = r
            .last_result
            .as_ref()
            .filter(|l| l.event == "failed")
            .map(|l| {
                format!(
                    "; last attempt failed {}: {}",
                    relative(l.time, now),
                    l.reason.as_deref().unwrap_or("no reason recorded")
                )
            });
        let name = if r.kind == "watched" {
            format!("{} (watched)", r.name)
        } else {
            r.name.clone()
        };
        if r.state != "ok" {
            out.push(format!(
                "{name}: {}{}{left}{}",
                r.state,
                r.detail
                    .as_deref()
                    .map(|d| format!(": {d}"))
                    .unwrap_or_default(),
                failed.unwrap_or_default()
            ));
        } else if let Some(f) = failed {
            out.push(format!("{name}: ok{left}{f}"));
        }
    }
    out.extend(ca_alarms.iter().map(|a| format!("CA: {a}")));
    out
}

/// Renders rows as an aligned table.
pub fn table(rows: &[Row], now: OffsetDateTime, with_last: bool) -> String {
    let mut lines: Vec<Vec<String>> = vec![{
        let mut h = vec![
            "NAME",
            "ISSUER",
            "SANS",
            "NOT AFTER",
            "LEFT",
            "NEXT RENEWAL",
            "STATE",
        ];
        if with_last {
            h.push("LAST RESULT");
        }
        h.push("FILES");
        h.into_iter().map(String::from).collect()
    }];
    for r in rows {
        let mut l = vec![
            if r.kind == "watched" {
                format!("{} (watch)", r.name)
            } else {
                r.name.clone()
            },
            r.issuer.clone().unwrap_or_else(|| "-".into()),
            r.sans.join(","),
            r.not_after.map(rfc3339).unwrap_or_else(|| "-".into()),
            r.not_after
                .map(|t| relative(t, now))
                .unwrap_or_else(|| "-".into()),
            match (r.next_renewal, r.state.as_str()) {
                (Some(t), "ok" | "drift" | "unverified") => {
                    let ari = r.renewal_window.as_ref().is_some_and(|w| w.start.is_some());
                    format!("{}{}", relative(t, now), if ari { " (ARI)" } else { "" })
                }
                (Some(_), _) => "now".into(),
                (None, _) => "-".into(),
            },
            match &r.detail {
                Some(d) if r.state != "ok" => format!("{}: {d}", r.state),
                _ => r.state.clone(),
            },
        ];
        if with_last {
            l.push(match &r.last_result {
                Some(lr) => format!(
                    "{} {}{}{}",
                    lr.event,
                    relative(lr.time, now),
                    lr.reason
                        .as_ref()
                        .map(|x| format!(" ({x})"))
                        .unwrap_or_default(),
                    lr.note
                        .as_ref()
                        .map(|x| format!("; {x}"))
                        .unwrap_or_default()
                ),
                None => "-".into(),
            });
        }
        l.push(r.files.join(","));
        lines.push(l);
    }
    let cols = lines[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for l in lines {
        let mut s = String::new();
        for (c, cell) in l.iter().enumerate() {
            if c + 1 == cols {
                s.push_str(cell);
            } else {
                // Padded by hand: a format width is limited to 65,535.
                s.push_str(cell);
                let pad = widths[c] - cell.chars().count() + 2;
                s.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push_str(s.trim_end());
        out.push('\n');
    }
    out
}

/// The internal CA in one line (the issuing intermediate's and root's generation,
/// end and next rotation; a published root and earlier generations still kept), and
/// the alarms of certificates whose replacement is due and cannot happen here.
pub fn ca_summary(config: &Config, ca: &InternalCa, now: OffsetDateTime) -> (String, Vec<String>) {
    use crate::policy::ca::{alarm, health, timing, CaHealth};
    let (int, root) = health(
        &ca.state(),
        &timing(config),
        ca.has_root_key(),
        ca.has_next_root_key(),
        now,
    );
    let due = |h| match h {
        CaHealth::Fine { rotate_at } => format!("due for replacement {}", rfc3339(rotate_at)),
        CaHealth::Due { .. } => "due for replacement now (at the next pass)".to_string(),
        CaHealth::Blocked { .. } => "due for replacement now".to_string(),
        CaHealth::Expired { .. } => "expired".to_string(),
    };
    let m = &ca.manifest;
    let mut line = format!(
        "CA: {} (intermediate generation {} valid until {}, {}; root generation {} valid until {}, {}",
        ca.dir.display(),
        m.intermediate,
        rfc3339(ca.intermediate.not_after),
        due(int),
        m.root,
        rfc3339(ca.root.not_after),
        due(root)
    );
    if let (Some(n), Some((cert, _))) = (&m.next_root, &ca.next_root) {
        line.push_str(&format!(
            "; root generation {} published {}, valid until {}",
            n.generation,
            rfc3339(n.published_at),
            rfc3339(cert.not_after)
        ));
    }
    for r in &m.retired {
        line.push_str(&format!(
            "; intermediate generation {} kept until {}",
            r.generation,
            rfc3339(r.last_leaf)
        ));
    }
    for g in &m.old_roots {
        line.push_str(&format!("; root generation {g} still trusted"));
    }
    line.push(')');
    let alarms = alarm("intermediate", int)
        .into_iter()
        .chain(alarm("root", root))
        .collect();
    (line, alarms)
}
