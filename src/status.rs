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

/// Renders rows as an aligned table, every detail in full (`status --wide`, `check`).
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
            next_renewal(r, now, relative),
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

/// Cuts `text` to `width` characters, its end replaced by `…` when it is longer.
pub fn fit(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The default `status` table, at most `width` columns: a line per certificate (name,
/// issuer, expiry, next renewal, last result, state), names, issuers and results cut
/// with `…` when they do not fit; under a certificate that is not in order, its detail,
/// the reason its last attempt failed and any note of its last result, a line each, cut
/// to `width` too. [`table`] has everything in full. Says whether anything was cut.
pub fn compact_table(rows: &[Row], now: OffsetDateTime, width: usize) -> (String, bool) {
    const GAP: usize = 2;
    const INDENT: &str = "    ";
    // (header, the narrowest it is cut to: only name, issuer and last result are cut).
    let columns: [(&str, usize); 6] = [
        ("NAME", 16),
        ("ISSUER", 8),
        ("EXPIRES", 0),
        ("RENEWAL", 0),
        ("LAST RESULT", 12),
        ("STATE", 0),
    ];
    let mut lines: Vec<[String; 6]> = vec![columns.map(|(h, _)| h.to_string())];
    let mut below: Vec<Vec<String>> = vec![Vec::new()];
    for r in rows {
        lines.push([
            if r.kind == "watched" {
                format!("{} (watch)", r.name)
            } else {
                r.name.clone()
            },
            r.issuer.clone().unwrap_or_else(|| "-".into()),
            r.not_after
                .map(|t| short_relative(t, now))
                .unwrap_or_else(|| "-".into()),
            next_renewal(r, now, short_relative),
            match &r.last_result {
                Some(lr) => format!("{} {}", lr.event, short_relative(lr.time, now)),
                None => "-".into(),
            },
            r.state.clone(),
        ]);
        let mut more = Vec::new();
        if let Some(d) = r.detail.as_ref().filter(|_| r.state != "ok") {
            more.push(d.clone());
        }
        if let Some(lr) = &r.last_result {
            if lr.event == "failed" {
                more.push(format!(
                    "last attempt failed: {}",
                    lr.reason.as_deref().unwrap_or("no reason recorded")
                ));
            }
            if let Some(n) = &lr.note {
                more.push(format!("note: {n}"));
            }
        }
        below.push(more);
    }
    let natural: Vec<usize> = (0..columns.len())
        .map(|c| {
            lines
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut widths = natural.clone();
    let room = width.saturating_sub(GAP * (columns.len() - 1));
    // The widest of the columns that may be cut loses a character at a time until the
    // line fits.
    while widths.iter().sum::<usize>() > room {
        let Some(c) = [0, 1, 4]
            .into_iter()
            .filter(|&c| widths[c] > columns[c].1)
            .max_by_key(|&c| widths[c])
        else {
            break;
        };
        widths[c] -= 1;
    }
    let mut cut = false;
    let mut out = String::new();
    // Never wider than `width`, whatever a column holds.
    let put = |line: &str, out: &mut String, cut: &mut bool| {
        let shown = fit(line.trim_end(), width);
        *cut |= shown != line.trim_end();
        out.push_str(&shown);
        out.push('\n');
    };
    for (l, more) in lines.iter().zip(&below) {
        let mut s = String::new();
        for (c, cell) in l.iter().enumerate() {
            let shown = fit(cell, widths[c]);
            cut |= shown != *cell;
            s.push_str(&shown);
            let pad = widths[c].saturating_sub(shown.chars().count()) + GAP;
            s.extend(std::iter::repeat_n(' ', pad));
        }
        put(&s, &mut out, &mut cut);
        for m in more {
            put(&format!("{INDENT}{m}"), &mut out, &mut cut);
        }
    }
    (out, cut)
}

/// [`relative`] in its largest unit alone: `in 89d`, `5m ago`.
fn short_relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    let full = relative(t, now);
    let mut words: Vec<&str> = full.split(' ').collect();
    // `in 89d 23h` or `5m 3s ago`: the second unit goes.
    let unit = if words[0] == "in" { 2 } else { 1 };
    if words.len() == 3 {
        words.remove(unit);
    }
    words.join(" ")
}

/// When a row is renewed next, as the tables show it (`when` writes the time).
fn next_renewal(
    r: &Row,
    now: OffsetDateTime,
    when: fn(OffsetDateTime, OffsetDateTime) -> String,
) -> String {
    match (r.next_renewal, r.state.as_str()) {
        (Some(t), "ok" | "drift" | "unverified") => {
            let ari = r.renewal_window.as_ref().is_some_and(|w| w.start.is_some());
            format!("{}{}", when(t, now), if ari { " (ARI)" } else { "" })
        }
        (Some(_), _) => "now".into(),
        (None, _) => "-".into(),
    }
}

/// The internal CA in one line (the issuing intermediate's and root's generation,
/// end and next rotation; a published root and earlier generations still kept), and
/// the alarms of certificates whose replacement is due and cannot happen here.
pub fn ca_summary(config: &Config, ca: &InternalCa, now: OffsetDateTime) -> (String, Vec<String>) {
    let (facts, alarms) = ca_facts(config, ca, now, rfc3339);
    (
        format!("CA: {} ({})", ca.dir.display(), facts.join("; ")),
        alarms,
    )
}

/// [`ca_summary`] for a terminal: a line per CA certificate, dates to the day, each
/// cut to `width` columns.
pub fn ca_lines(config: &Config, ca: &InternalCa, now: OffsetDateTime, width: usize) -> String {
    let day = |t: OffsetDateTime| {
        let d = t.date();
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    };
    let (facts, _) = ca_facts(config, ca, now, day);
    facts
        .iter()
        .map(|f| format!("{}\n", fit(&format!("CA: {f}"), width)))
        .collect()
}

/// The facts of [`ca_summary`], one per CA certificate, dates written by `date`.
fn ca_facts(
    config: &Config,
    ca: &InternalCa,
    now: OffsetDateTime,
    date: impl Fn(OffsetDateTime) -> String,
) -> (Vec<String>, Vec<String>) {
    use crate::policy::ca::{alarm, health, timing, CaHealth};
    let (int, root) = health(
        &ca.state(),
        &timing(config),
        ca.has_root_key(),
        ca.has_next_root_key(),
        now,
    );
    let due = |h| match h {
        CaHealth::Fine { rotate_at } => format!("due for replacement {}", date(rotate_at)),
        CaHealth::Due { .. } => "due for replacement now (at the next pass)".to_string(),
        CaHealth::Blocked { .. } => "due for replacement now".to_string(),
        CaHealth::Expired { .. } => "expired".to_string(),
    };
    let m = &ca.manifest;
    let mut facts = vec![
        format!(
            "intermediate generation {} valid until {}, {}",
            m.intermediate,
            date(ca.intermediate.not_after),
            due(int)
        ),
        format!(
            "root generation {} valid until {}, {}",
            m.root,
            date(ca.root.not_after),
            due(root)
        ),
    ];
    if let (Some(n), Some((cert, _))) = (&m.next_root, &ca.next_root) {
        facts.push(format!(
            "root generation {} published {}, valid until {}",
            n.generation,
            date(n.published_at),
            date(cert.not_after)
        ));
    }
    for r in &m.retired {
        facts.push(format!(
            "intermediate generation {} kept until {}",
            r.generation,
            date(r.last_leaf)
        ));
    }
    for g in &m.old_roots {
        facts.push(format!("root generation {g} still trusted"));
    }
    let alarms = alarm("intermediate", int)
        .into_iter()
        .chain(alarm("root", root))
        .collect();
    (facts, alarms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn row(name: &str, issuer: &str, state: &str, detail: Option<&str>) -> Row {
        let now = datetime!(2025-01-01 00:00 UTC);
        Row {
            name: name.into(),
            kind: "managed",
            issuer: Some(issuer.into()),
            sans: vec![format!("{name}.example.internal")],
            not_after: Some(now + time::Duration::days(89) + time::Duration::hours(23)),
            seconds_left: None,
            next_renewal: Some(now + time::Duration::days(60)),
            state: state.into(),
            detail: detail.map(str::to_string),
            last_result: Some(LastResult {
                event: if state == "ok" { "installed" } else { "failed" }.into(),
                time: now - time::Duration::minutes(5) - time::Duration::seconds(3),
                serial: None,
                reason: (state != "ok").then(|| format!("{state}: {}", "why ".repeat(40))),
                note: None,
            }),
            files: vec!["/etc/nginx/tls/x.crt".into()],
            renewal_window: None,
        }
    }

    #[test]
    fn the_default_table_fits_its_width_and_cuts_only_what_does_not() {
        let now = datetime!(2025-01-01 00:00 UTC);
        let (text, cut) = compact_table(&[row("www", "internal", "ok", None)], now, 100);
        assert!(!cut);
        assert_eq!(
            text,
            "NAME  ISSUER    EXPIRES  RENEWAL  LAST RESULT       STATE\n\
             www   internal  in 89d   in 60d   installed 5m ago  ok\n"
        );
        let long = "x".repeat(70);
        let rows = [
            row("www", "internal", "ok", None),
            row(
                &long,
                &"acme-".repeat(10),
                "missing",
                Some(&"/very/long/path".repeat(10)),
            ),
        ];
        let (text, cut) = compact_table(&rows, now, 100);
        assert!(cut);
        for l in text.lines() {
            assert!(l.chars().count() <= 100, "{l}");
        }
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[2].starts_with("xxxxxxxxxxxxxxx") && lines[2].contains('…'),
            "{text}"
        );
        assert!(lines[2].ends_with("failed 5m ago     missing"), "{text}");
        assert!(
            lines[3].starts_with("    /very/long/path") && lines[3].ends_with('…'),
            "{text}"
        );
        assert!(
            lines[4].starts_with("    last attempt failed: missing: why"),
            "{text}"
        );
        assert_eq!(lines.len(), 5, "{text}");
    }

    #[test]
    fn fit_cuts_with_an_ellipsis() {
        assert_eq!(fit("abc", 3), "abc");
        assert_eq!(fit("abcd", 3), "ab…");
        assert_eq!(fit("äöüß", 2), "ä…");
        let now = datetime!(2025-01-01 00:00 UTC);
        assert_eq!(
            short_relative(now + time::Duration::hours(50), now),
            "in 2d"
        );
        assert_eq!(
            short_relative(now - time::Duration::seconds(65), now),
            "1m ago"
        );
        assert_eq!(short_relative(now, now), "in 0s");
    }
}
