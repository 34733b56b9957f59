//! `certkeeper issue`: a one-off certificate from the internal CA into a directory,
//! e.g. a client certificate for a calling service (as NAME.crt and NAME.key, or with
//! `--pkcs12` as NAME.crt and an encrypted NAME.p12). Recorded in the ledger.

use super::{CliError, ConfigArg};
use crate::duration::parse_duration;
use crate::fsutil::{write_atomic, FileSpec};
use crate::issuer::{IssueRequest, Issuer};
use crate::keys::PrivateKey;
use crate::model::{KeyType, San, Usage};
use crate::policy::rfc3339;
use crate::reconcile::ensure_ca;
use crate::state::{LedgerEntry, StateDir};
use std::path::PathBuf;
use time::OffsetDateTime;
use zeroize::Zeroizing;

#[derive(clap::Args, Debug)]
pub struct IssueArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Name of the certificate and of its files (NAME.crt, NAME.key)
    #[arg(long)]
    name: String,
    /// DNS name or IP address; repeat for more
    #[arg(long = "san", required = true)]
    sans: Vec<String>,
    /// A client certificate (clientAuth); with --server too, both
    #[arg(long)]
    client: bool,
    /// A server certificate (serverAuth); the default
    #[arg(long)]
    server: bool,
    /// Key type
    #[arg(long, default_value = "ecdsa-p256", value_parser = clap::builder::PossibleValuesParser::new(crate::model::KeyType::ALL.map(|k| k.as_str())))]
    key: String,
    /// Lifetime, e.g. 90d
    #[arg(long, default_value = "90d")]
    lifetime: String,
    /// Directory to write NAME.crt (leaf + chain) and NAME.key (mode 0600) into
    #[arg(long)]
    out: PathBuf,
    /// Write NAME.p12 (key, leaf and chain; mode 0600) instead of NAME.key, for
    /// browsers, Java and Windows; needs --password-file
    #[arg(long, requires = "password_file")]
    pkcs12: bool,
    /// File holding the password of NAME.p12 on one line (mode 0600); with --pkcs12
    #[arg(long, value_name = "FILE", requires = "pkcs12")]
    password_file: Option<PathBuf>,
}

pub fn run(a: IssueArgs, now: OffsetDateTime) -> Result<u8, CliError> {
    let usage_err = CliError::Usage;
    if a.name.is_empty()
        || !a
            .name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
    {
        return Err(usage_err(format!(
            "--name `{}`: use lower-case letters, digits, `.`, `_` and `-`",
            a.name
        )));
    }
    let sans = a
        .sans
        .iter()
        .map(|s| San::parse(s).map_err(|e| usage_err(format!("--san: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let key_type: KeyType = a
        .key
        .parse()
        .map_err(|e| usage_err(format!("--key: {e}")))?;
    let lifetime =
        parse_duration(&a.lifetime).map_err(|e| usage_err(format!("--lifetime: {e}")))?;
    let usage = Usage::from_flags(a.server || !a.client, a.client).expect("at least one usage");
    let cert_path = a.out.join(format!("{}.crt", a.name));
    // With --pkcs12 the key exists only inside the encrypted file.
    let key_path = match a.pkcs12 {
        true => a.out.join(format!("{}.p12", a.name)),
        false => a.out.join(format!("{}.key", a.name)),
    };
    // Read before anything is issued: a password that cannot be used leaves no trace.
    let password = match &a.password_file {
        Some(file) => Some(
            crate::password::read_password(file, crate::password::Readers::OWNER)
                .map_err(|e| usage_err(format!("--password-file: {e}")))?,
        ),
        None => None,
    };
    let config = a.config.load()?;
    let common_name = sans
        .iter()
        .find(|s| matches!(s, San::Dns(_)))
        .unwrap_or(&sans[0])
        .to_string();
    // The CA signs only what its name constraints allow: refused before anything exists.
    let constraints = &config.ca.constraints;
    constraints
        .check_sans(&sans)
        .map_err(|e| usage_err(format!("--san: {e}")))?;
    constraints.check_common_name(&common_name, &sans).map_err(|e| {
        usage_err(format!(
            "--san: {e} (the first --san is the common name): with no DNS name among the SANs, OpenSSL checks a common name that looks like a DNS name against the CA's DNS constraints; add a --san DNS name within ca.permitted"
        ))
    })?;
    // Never into certkeeper's own state (the CA, archive, ledger, lock) or onto the
    // configuration, however the path is spelled.
    let state_real = crate::fsutil::resolved(&config.state_dir);
    let config_real = crate::fsutil::resolved(&config.file);
    for p in [&cert_path, &key_path] {
        let real = crate::fsutil::resolved(p);
        if real.starts_with(&state_real) {
            return Err(usage_err(format!(
                "--out {}: {} is inside state_dir {}, which holds the CA, the archive, the ledger and the lock; choose a directory outside it",
                a.out.display(),
                p.display(),
                config.state_dir.display()
            )));
        }
        if real == config_real {
            return Err(usage_err(format!(
                "--out {}: {} is the configuration file {}; choose another --name or --out",
                a.out.display(),
                p.display(),
                config.file.display()
            )));
        }
    }
    for p in [&cert_path, &key_path] {
        if p.exists() {
            return Err(usage_err(format!(
                "{} exists; remove it or choose another --name or --out",
                p.display()
            )));
        }
    }
    if lifetime > config.ca.intermediate_lifetime {
        return Err(usage_err(
            "--lifetime is longer than the CA's intermediate lifetime".into(),
        ));
    }
    let state = StateDir::new(&config.state_dir);
    let _lock = state.lock().map_err(|e| CliError::Runtime(e.to_string()))?;
    let mut ca = ensure_ca(&config, &state, now).map_err(|e| CliError::Runtime(e.to_string()))?;
    let key = PrivateKey::generate(key_type).map_err(|e| CliError::Runtime(e.to_string()))?;
    let req = IssueRequest {
        name: a.name.clone(),
        common_name,
        sans,
        usage,
        lifetime,
        profile: None,
    };
    let issued = ca
        .issue_for_key(&key, &req, now, None)
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    // A rotation keeps the intermediate until this leaf has expired too.
    ca.note_adhoc(issued.leaf.not_after)
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    let full: String = std::iter::once(&issued.leaf)
        .chain(issued.chain.iter())
        .map(|c| c.to_pem())
        .collect();
    // `--out` is the user's own choice on the command line: a link of theirs on the way
    // to it is followed now, once, and nothing on the way is followed while writing.
    let file = |path: &PathBuf, text: String, mode| FileSpec {
        path: crate::fsutil::resolved(path),
        bytes: Zeroizing::new(text.into_bytes()),
        mode,
        uid: None,
        gid: None,
        follow_symlinks: false,
    };
    // The key first, then the certificate: whoever finds the certificate finds its key.
    // Neither existed (checked above): if the certificate cannot be written, the key
    // is removed again.
    let mut secret = file(&key_path, String::new(), 0o600);
    secret.bytes = match &password {
        Some(password) => {
            let ders: Vec<&[u8]> = std::iter::once(&issued.leaf)
                .chain(issued.chain.iter())
                .map(|c| c.der.as_slice())
                .collect();
            crate::pkcs12::encode(&a.name, &key.pkcs8_der(), &ders, password)
                .map_err(|e| CliError::Runtime(format!("cannot make the .p12 file: {e}")))?
        }
        None => Zeroizing::new(key.pem().as_bytes().to_vec()),
    };
    write_atomic(&secret).map_err(|e| CliError::Runtime(e.to_string()))?;
    if let Err(e) = write_atomic(&file(&cert_path, full, 0o644)) {
        let _ = std::fs::remove_file(&key_path);
        return Err(CliError::Runtime(e.to_string()));
    }
    let mut e = LedgerEntry::new(now, "issued");
    e.name = Some(a.name.clone());
    e.serial = Some(issued.leaf.serial.clone());
    e.issuer = Some("internal".into());
    e.not_after = Some(issued.leaf.not_after);
    e.sans = req.sans.iter().map(|s| s.to_string()).collect();
    e.files = vec![
        cert_path.display().to_string(),
        key_path.display().to_string(),
    ];
    e.reason = Some(format!("one-off {usage} certificate"));
    state
        .record(&e)
        .map_err(|e| CliError::Runtime(e.to_string()))?;
    println!(
        "issued `{}` ({usage}), serial {}, valid until {}\n  {}\n  {}",
        a.name,
        issued.leaf.serial,
        rfc3339(issued.leaf.not_after),
        cert_path.display(),
        key_path.display()
    );
    Ok(0)
}
