//! `certkeeper check`: validate the configuration and print the plan. Writes nothing.

use super::{CliError, ConfigArg};
use crate::reconcile::{load_ca, plan};
use crate::status::{table, watched_rows};
use time::OffsetDateTime;

pub fn run(arg: &ConfigArg, now: OffsetDateTime) -> Result<u8, CliError> {
    let config = arg.load()?;
    println!(
        "{}: valid; {} managed and {} watched certificate(s), {} server(s), {} trust target(s)",
        config.file.display(),
        config.certificates.len(),
        config.watched.len(),
        config.servers.len(),
        config.trust.len()
    );
    let ca = load_ca(&config).map_err(|e| CliError::Runtime(e.to_string()))?;
    let mut alarms = Vec::new();
    match &ca {
        Some(ca) => {
            let (leaf_carry, root_carry) = crate::policy::ca::carries(&config);
            let int = crate::policy::ca::health(
                ca.intermediate.not_before,
                ca.intermediate.not_after,
                leaf_carry,
                now,
            );
            let root =
                crate::policy::ca::health(ca.root.not_before, ca.root.not_after, root_carry, now);
            let next = |h| match h {
                crate::policy::ca::CaHealth::Fine { rotate_at } => {
                    format!("due for replacement {}", crate::policy::rfc3339(rotate_at))
                }
                _ => "due for replacement now".to_string(),
            };
            println!(
                "CA: {} (intermediate valid until {}, {}; root valid until {}, {})",
                ca.dir.display(),
                crate::policy::rfc3339(ca.intermediate.not_after),
                next(int),
                crate::policy::rfc3339(ca.root.not_after),
                next(root)
            );
            alarms.extend(crate::policy::ca::alarm("intermediate", int));
            alarms.extend(crate::policy::ca::alarm("root", root));
        }
        None => println!(
            "CA: none yet in {}; it will be created by the first `certkeeper renew`",
            config.state_dir.join("ca").display()
        ),
    }
    for a in &alarms {
        eprintln!("warning: {a}");
    }
    let code = u8::from(!alarms.is_empty());
    if config.certificates.is_empty() && config.watched.is_empty() {
        println!("No certificates are declared yet: add them under `certificates:`.");
        return Ok(code);
    }
    // The plan `renew --dry-run` prints, from the same decisions a real pass makes.
    let selected: Vec<_> = config.certificates.iter().collect();
    print!(
        "{}",
        plan::make(&config, ca.as_ref(), &selected, false, now).render(now)
    );
    if !config.watched.is_empty() {
        let rows = watched_rows(&config, now);
        print!("{}", table(&rows, now, false));
    }
    Ok(code)
}
