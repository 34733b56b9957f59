//! `certkeeper status`: where every certificate stands, as a table or JSON.

use super::CliError;
use crate::config::Config;
use crate::reconcile::load_ca;
use crate::status::{rows, table};
use time::OffsetDateTime;

pub fn run(config: &Config, json: bool, now: OffsetDateTime) -> Result<u8, CliError> {
    let ca = load_ca(config).map_err(|e| CliError::Runtime(e.to_string()))?;
    let rows = rows(config, ca.as_ref(), now, true);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&rows).expect("rows serialize")
        );
    } else {
        print!("{}", table(&rows, now, true));
        if let Some(ca) = &ca {
            let (line, alarms) = crate::status::ca_summary(config, ca, now);
            println!("{line}");
            for a in alarms {
                eprintln!("warning: {a}");
            }
        }
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
