//! `certkeeper discover`: the certificates nginx and Apache load, read from their own
//! configuration (`nginx -T`; Apache's files and includes), with what each file holds
//! and whether certkeeper manages or watches it; `--yaml` prints `certificates:`
//! entries that adopt them.

use super::CliError;
use crate::config::{self, Config, ServerKind, DEFAULT_COMMAND_TIMEOUT};
use crate::discover::{certificates_yaml, Adopt, Adopted, Listen, TlsFiles};
use crate::discover_io::{self as dio, PairFacts};
use crate::policy::{relative, rfc3339};
use crate::x509::CertInfo;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

pub const DEFAULT_NGINX: &str = "/usr/sbin/nginx";
pub const DEFAULT_NGINX_CONFIG: &str = "/etc/nginx/nginx.conf";
pub const DEFAULT_APACHE_CONFIG: &str = "/etc/apache2/apache2.conf";

#[derive(clap::Args, Debug)]
pub struct DiscoverArgs {
    /// Configuration file (read when given, or when no --nginx-config/--apache-config is)
    #[arg(short = 'c', long = "config", env = "CERTKEEPER_CONFIG")]
    config: Option<PathBuf>,
    /// An nginx main configuration file to read (`nginx -T -c FILE`); repeat for more
    #[arg(long = "nginx-config", value_name = "FILE")]
    nginx: Vec<PathBuf>,
    /// An Apache main configuration file to read, with its includes; repeat for more
    #[arg(long = "apache-config", value_name = "FILE")]
    apache: Vec<PathBuf>,
    /// Print a `certificates:` block adopting what was found
    #[arg(long)]
    yaml: bool,
}

/// Where a configuration was read from.
struct Source {
    kind: ServerKind,
    binary: PathBuf,
    config: PathBuf,
    /// The `servers:` entry it is, or matches.
    server: Option<String>,
}

impl Source {
    fn label(&self) -> String {
        let kind = if self.kind == ServerKind::Nginx {
            "nginx"
        } else {
            "apache"
        };
        match &self.server {
            Some(s) => format!("{kind} {} (server `{s}`)", self.config.display()),
            None => format!("{kind} {}", self.config.display()),
        }
    }
}

/// One server block that loads a certificate.
struct Loader {
    source: usize,
    origin: String,
    names: Vec<String>,
    listen: Vec<Listen>,
}

/// One certificate file loaded by one or more server blocks.
struct Pair {
    files: TlsFiles,
    loaders: Vec<Loader>,
    facts: PairFacts,
}

fn same_file(a: &Path, b: &Path) -> bool {
    a == b || crate::fsutil::resolved(a) == crate::fsutil::resolved(b)
}

fn sources(args: &DiscoverArgs, config: Option<&Config>) -> Vec<Source> {
    let mut out = Vec::new();
    let default_config = |kind: ServerKind| {
        PathBuf::from(if kind == ServerKind::Nginx {
            DEFAULT_NGINX_CONFIG
        } else {
            DEFAULT_APACHE_CONFIG
        })
    };
    let servers: Vec<_> = config
        .map(|c| {
            c.servers
                .values()
                .filter(|s| matches!(s.kind, ServerKind::Nginx | ServerKind::Apache))
                .collect()
        })
        .unwrap_or_default();
    let matching = |kind: ServerKind, file: &Path| {
        servers
            .iter()
            .find(|s| {
                s.kind == kind
                    && same_file(s.config.as_deref().unwrap_or(&default_config(kind)), file)
            })
            .map(|s| s.name.clone())
    };
    for f in &args.nginx {
        out.push(Source {
            kind: ServerKind::Nginx,
            binary: DEFAULT_NGINX.into(),
            config: f.clone(),
            server: matching(ServerKind::Nginx, f),
        });
    }
    for f in &args.apache {
        out.push(Source {
            kind: ServerKind::Apache,
            binary: PathBuf::new(),
            config: f.clone(),
            server: matching(ServerKind::Apache, f),
        });
    }
    if !out.is_empty() {
        return out;
    }
    for s in &servers {
        let binary = match (&s.binary, s.kind) {
            (Some(b), _) => b.clone(),
            (None, ServerKind::Nginx) => DEFAULT_NGINX.into(),
            (None, _) => PathBuf::new(),
        };
        out.push(Source {
            kind: s.kind,
            binary,
            config: s.config.clone().unwrap_or_else(|| default_config(s.kind)),
            server: Some(s.name.clone()),
        });
    }
    out
}

pub fn run(args: DiscoverArgs, now: OffsetDateTime) -> Result<u8, CliError> {
    let flags = !args.nginx.is_empty() || !args.apache.is_empty();
    let config = match (&args.config, flags) {
        (Some(path), _) => Some(config::load(path).map_err(CliError::Config)?),
        (None, false) => {
            Some(config::load(Path::new(config::DEFAULT_PATH)).map_err(CliError::Config)?)
        }
        (None, true) => None,
    };
    let sources = sources(&args, config.as_ref());
    if sources.is_empty() {
        return Err(CliError::Usage(
            "nothing to read: the configuration has no nginx or apache server; name files with --nginx-config or --apache-config".into(),
        ));
    }
    let mut failed = false;
    let mut problems: Vec<String> = Vec::new();
    let mut pairs: Vec<Pair> = Vec::new();
    let mut blocks = 0;
    for (i, src) in sources.iter().enumerate() {
        let found = match src.kind {
            ServerKind::Nginx => dio::nginx(&src.binary, &src.config, DEFAULT_COMMAND_TIMEOUT),
            _ => dio::apache(&src.config),
        };
        let found = match found {
            Ok(f) => f,
            Err(e) => {
                failed = true;
                problems.push(format!("{}: {e}", src.label()));
                continue;
            }
        };
        for p in &found.problems {
            failed = true;
            problems.push(format!("{}: {p}", src.label()));
        }
        for v in found.vhosts {
            blocks += 1;
            for p in &v.problems {
                problems.push(format!("{} ({}): {p}", v.origin, v.names.join(" ")));
            }
            for files in v.files {
                let loader = Loader {
                    source: i,
                    origin: v.origin.clone(),
                    names: v.names.clone(),
                    listen: v.listen.iter().filter(|l| l.ssl).cloned().collect(),
                };
                match pairs.iter_mut().find(|p| p.files == files) {
                    Some(p) => p.loaders.push(loader),
                    None => pairs.push(Pair {
                        files,
                        loaders: vec![loader],
                        facts: PairFacts::default(),
                    }),
                }
            }
        }
    }
    for p in &mut pairs {
        p.facts = dio::inspect(
            &p.files.cert,
            p.files.key.as_deref(),
            p.files.chain.as_deref(),
        );
        if !p.facts.errors.is_empty() || p.facts.key_matches == Some(false) {
            failed = true;
        }
    }
    let unloaded: Vec<(String, PathBuf)> = config
        .iter()
        .flat_map(|c| c.certificates.iter())
        .filter(|c| {
            !c.files
                .paths()
                .iter()
                .any(|(_, f)| pairs.iter().any(|p| same_file(f, &p.files.cert)))
        })
        .map(|c| (c.name.clone(), c.files.cert().to_path_buf()))
        .collect();

    if args.yaml {
        for p in &problems {
            eprintln!("warning: {p}");
        }
        for p in &pairs {
            for e in &p.facts.errors {
                eprintln!("warning: {e}");
            }
        }
        print!("{}", yaml(&pairs, &sources, config.as_ref()));
    } else {
        print_report(&pairs, &sources, config.as_ref(), &problems, &unloaded, now);
        println!(
            "{} certificate(s) loaded by {blocks} TLS server block(s) in {} configuration(s)",
            pairs.len(),
            sources.len()
        );
    }
    Ok(u8::from(failed))
}

/// How certkeeper knows this file: `managed as NAME`, `watched as NAME`, or not at all.
fn known_as(config: Option<&Config>, cert: &Path) -> Option<String> {
    let config = config?;
    if let Some(c) = config
        .certificates
        .iter()
        .find(|c| c.files.paths().iter().any(|(_, f)| same_file(f, cert)))
    {
        return Some(format!("managed as `{}`", c.name));
    }
    config
        .watched
        .iter()
        .find(|w| same_file(&w.path, cert))
        .map(|w| format!("watched as `{}`", w.name))
}

fn print_report(
    pairs: &[Pair],
    sources: &[Source],
    config: Option<&Config>,
    problems: &[String],
    unloaded: &[(String, PathBuf)],
    now: OffsetDateTime,
) {
    for p in pairs {
        println!("{}", p.files.cert.display());
        let key = match (&p.files.key, p.facts.key_in_cert) {
            (Some(k), _) if *k != p.files.cert => k.display().to_string(),
            _ => "(in the certificate file)".into(),
        };
        let matches = match p.facts.key_matches {
            Some(true) => "matches the certificate",
            Some(false) => "DOES NOT MATCH the certificate",
            None => "not compared",
        };
        println!("  key:        {key}: {matches}");
        match &p.files.chain {
            Some(c) => println!("  chain:      {}", c.display()),
            None if p.facts.chain_in_cert > 0 => println!(
                "  chain:      {} certificate(s) after the leaf in the certificate file",
                p.facts.chain_in_cert
            ),
            None => println!("  chain:      none"),
        }
        for l in &p.loaders {
            let listen: Vec<String> = l.listen.iter().map(|x| x.to_string()).collect();
            println!(
                "  loaded by:  {} {}: server names {}; listen {}",
                sources[l.source].label(),
                l.origin,
                if l.names.is_empty() {
                    "(none)".into()
                } else {
                    l.names.join(" ")
                },
                listen.join(", ")
            );
        }
        if let Some(leaf) = &p.facts.leaf {
            print_leaf(leaf, now);
        }
        for e in &p.facts.errors {
            println!("  ERROR:      {e}");
        }
        println!(
            "  certkeeper: {}",
            known_as(config, &p.files.cert).unwrap_or_else(|| "not managed or watched".into())
        );
        println!();
    }
    for (name, cert) in unloaded {
        println!(
            "managed but not loaded by any server block read: `{name}` ({})",
            cert.display()
        );
    }
    for p in problems {
        println!("problem: {p}");
    }
}

fn print_leaf(leaf: &CertInfo, now: OffsetDateTime) {
    let names: Vec<String> = leaf.sans.iter().map(|s| s.to_string()).collect();
    println!(
        "  names:      {}",
        if names.is_empty() {
            format!(
                "(no SANs; CN {})",
                leaf.common_name.as_deref().unwrap_or("-")
            )
        } else {
            names.join(", ")
        }
    );
    println!("  issuer:     {}", leaf.issuer);
    let state = if leaf.not_after <= now {
        format!("EXPIRED {}", relative(leaf.not_after, now))
    } else {
        relative(leaf.not_after, now)
    };
    println!("  not after:  {} ({state})", rfc3339(leaf.not_after));
}

fn yaml(pairs: &[Pair], sources: &[Source], config: Option<&Config>) -> String {
    let intermediates = config
        .map(|c| dio::internal_intermediates(&c.state_dir))
        .unwrap_or_default();
    let mut items = Vec::new();
    let mut skipped = Vec::new();
    for p in pairs {
        let Some(leaf) = &p.facts.leaf else { continue };
        if let Some(known) = known_as(config, &p.files.cert) {
            skipped.push(format!("# {}: already {known}", p.files.cert.display()));
            continue;
        }
        let internal = intermediates.iter().any(|i| leaf.signed_by(i));
        let files =
            if p.facts.key_in_cert && p.files.key.as_ref().is_none_or(|k| *k == p.files.cert) {
                Adopted::Combined {
                    cert: p.files.cert.clone(),
                }
            } else {
                let key = p.files.key.clone().unwrap_or_else(|| p.files.cert.clone());
                match &p.files.chain {
                    Some(chain) => Adopted::Apache {
                        cert: p.files.cert.clone(),
                        chain: chain.clone(),
                        key,
                    },
                    None => Adopted::Nginx {
                        cert: p.files.cert.clone(),
                        key,
                    },
                }
            };
        let mut paths = vec![p.files.cert.clone()];
        paths.extend(p.files.key.clone());
        paths.extend(p.files.chain.clone());
        items.push(Adopt {
            server_names: p.loaders.iter().flat_map(|l| l.names.clone()).collect(),
            sans: leaf.sans.iter().map(|s| s.to_string()).collect(),
            internal,
            files,
            reload: p
                .loaders
                .iter()
                .find_map(|l| sources[l.source].server.clone()),
            listen: {
                // Every TLS address a vhost loading it listens on, once each.
                let mut all: Vec<Listen> = Vec::new();
                for l in p.loaders.iter().flat_map(|l| &l.listen) {
                    if !all.iter().any(|a| a.connect() == l.connect()) {
                        all.push(l.clone());
                    }
                }
                all
            },
            follow_symlinks: paths.iter().any(|f| dio::link_on_way(f)),
        });
    }
    let taken: Vec<String> = config
        .map(|c| {
            c.certificates
                .iter()
                .map(|x| x.name.clone())
                .chain(c.watched.iter().map(|w| w.name.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut out = String::new();
    for s in skipped {
        out.push_str(&s);
        out.push('\n');
    }
    out.push_str(&certificates_yaml(&items, &taken));
    out
}
