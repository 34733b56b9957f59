//! `certkeeper status`: where every certificate stands: a table that fits 100 columns
//! (names, issuers, results and details cut with `…`), every detail and file with
//! `--wide`, everything as JSON with `--json`; `status NAME...` shows the certificates
//! named one by one, every detail on its own line.

use super::CliError;
use crate::config::Config;
use crate::reconcile::load_ca;
use crate::status::{compact_table, rows, table};
use time::OffsetDateTime;

/// The default table fits a terminal this wide.
const WIDTH: usize = 100;

/// How `status` shows the certificates it lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    /// At most 100 columns, details cut (the default).
    Fit,
    /// Every detail, every file, however wide (`--wide`).
    Wide,
    Json,
}

pub fn run(
    config: &Config,
    view: View,
    names: &[String],
    now: OffsetDateTime,
) -> Result<u8, CliError> {
    let (json, wide) = (view == View::Json, view == View::Wide);
    let ca = load_ca(config).map_err(|e| CliError::Runtime(e.to_string()))?;
    let mut rows = rows(config, ca.as_ref(), now, true);
    if !names.is_empty() {
        if let Some(unknown) = names.iter().find(|n| !rows.iter().any(|r| &r.name == *n)) {
            let known: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
            return Err(CliError::Usage(format!(
                "no certificate is named `{}`; the configuration has {}",
                crate::model::excerpt(unknown),
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        rows.retain(|r| names.contains(&r.name));
        if !json {
            for (i, r) in rows.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                print!("{}", vertical(r, now));
            }
            return Ok(0);
        }
    }
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
        return Ok(0);
    }
    let alarms = match &ca {
        Some(ca) => crate::status::ca_summary(config, ca, now).1,
        None => Vec::new(),
    };
    if wide {
        print!("{}", table(&rows, now, true));
        if let Some(ca) = &ca {
            println!("{}", crate::status::ca_summary(config, ca, now).0);
        }
    } else {
        let (text, cut) = compact_table(&rows, now, WIDTH);
        print!("{text}");
        if let Some(ca) = &ca {
            print!("{}", crate::status::ca_lines(config, ca, now, WIDTH));
        }
        if cut {
            println!("(cut to {WIDTH} columns: `certkeeper status --wide` or `status NAME` shows everything)");
        }
    }
    for a in alarms {
        eprintln!("warning: {a}");
    }
    Ok(0)
}

/// `status --check`: `OK: …` or `PROBLEM: …`, then one line per problem; exit 1 when
/// there is any.
pub fn check(config: &Config, now: OffsetDateTime) -> Result<u8, CliError> {
    let ca = load_ca(config).map_err(|e| CliError::Runtime(e.to_string()))?;
    let rows = rows(config, ca.as_ref(), now, true);
    let alarms = ca
        .as_ref()
        .map(|ca| crate::status::ca_summary(config, ca, now).1)
        .unwrap_or_default();
    let problems = crate::status::problems(&rows, &alarms, now);
    if problems.is_empty() {
        println!("OK: {} certificates in order", rows.len());
        return Ok(0);
    }
    println!(
        "PROBLEM: {} problem{} among {} certificates",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        rows.len()
    );
    for p in &problems {
        println!("{p}");
    }
    Ok(1)
}

/// One certificate, a detail a line (as `certbot certificates` shows them).
pub fn vertical(r: &crate::status::Row, now: OffsetDateTime) -> String {
    use crate::policy::{relative, rfc3339};
    let mut out = format!("Certificate: {}\n", r.name);
    let mut line = |label: &str, value: String| {
        let head = match label {
            "" => String::new(),
            l => format!("{l}:"),
        };
        out.push_str(&format!("  {head:<16}{value}\n"));
    };
    line("Kind", r.kind.to_string());
    line("State", r.state.clone());
    if let Some(d) = &r.detail {
        line("Detail", d.clone());
    }
    if let Some(i) = &r.issuer {
        line("Issuer", i.clone());
    }
    line(
        "Names",
        if r.sans.is_empty() {
            "-".to_string()
        } else {
            r.sans.join(", ")
        },
    );
    line(
        "Expires",
        match r.not_after {
            Some(t) => format!("{} ({})", rfc3339(t), relative(t, now)),
            None => "-".to_string(),
        },
    );
    if let Some(t) = r.next_renewal {
        line(
            "Next renewal",
            format!("{} ({})", rfc3339(t), relative(t, now)),
        );
    }
    if let Some(w) = &r.renewal_window {
        let when = match (w.start, w.end) {
            (Some(a), Some(b)) => format!("{} to {}; ", rfc3339(a), rfc3339(b)),
            _ => String::new(),
        };
        line("Renewal window", format!("{when}{}", w.source));
    }
    if let Some(l) = &r.last_result {
        let mut text = format!(
            "{} {} ({})",
            l.event,
            rfc3339(l.time),
            relative(l.time, now)
        );
        if let Some(s) = &l.serial {
            text.push_str(&format!(", serial {s}"));
        }
        if let Some(reason) = &l.reason {
            text.push_str(&format!(", {reason}"));
        }
        line("Last result", text);
        if let Some(n) = &l.note {
            line("Note", n.clone());
        }
    }
    for (i, f) in r.files.iter().enumerate() {
        line(if i == 0 { "Files" } else { "" }, f.clone());
    }
    out
}
