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
            let (line, found) = crate::status::ca_summary(&config, ca, now);
            println!("{line}");
            alarms = found;
        }
        None => println!(
            "CA: none yet in {}; it will be created by the first `certkeeper renew`",
            config.state_dir.join("ca").display()
        ),
    }
    // A .p12 file cannot be written (nor checked) without its password.
    for c in &config.certificates {
        if let Some(file) = c.files.password_file() {
            if let Err(e) = crate::password::read_password(file, crate::observe::p12_readers(c)) {
                alarms.push(format!(
                    "certificate `{}`: files.password_file: {e}",
                    c.name
                ));
            }
        }
    }
    for a in &alarms {
        eprintln!("warning: {a}");
    }
    let code = u8::from(!alarms.is_empty());
    // Valid, and said once here: browsers refuse them (the exit code stays).
    for c in &config.certificates {
        if c.key == crate::model::KeyType::Ed25519 {
            eprintln!("warning: {}", ed25519_warning(&c.name, c.usage));
        }
    }
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

/// What an Ed25519 key means for the clients of certificate `name`.
pub fn ed25519_warning(name: &str, usage: crate::model::Usage) -> String {
    let whose = match usage {
        crate::model::Usage::Client => "Chromium and Firefox (NSS) cannot import an Ed25519 client certificate",
        _ => "Chromium and Firefox (NSS) refuse an Ed25519 server certificate (ERR_SSL_VERSION_OR_CIPHER_MISMATCH)",
    };
    format!(
        "certificate `{name}` has an Ed25519 key: {whose}; use `key: ecdsa-p256` unless every client is known to accept Ed25519 (OpenSSL, Go, Java 15+, rustls do)"
    )
}
