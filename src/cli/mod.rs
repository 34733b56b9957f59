//! The command line: flags (clap), dispatch to one file per subcommand, and exit codes
//! (0 success, 1 runtime failure, 2 usage or configuration error).

mod ca;
mod check;
mod discover;
mod inspect;
mod issue;
mod manpages;
mod renew;
mod status;

use crate::config::{self, Config, LoadError};
use clap::{CommandFactory, Parser, Subcommand};
use clap_complete::engine::{ArgValueCandidates, CompletionCandidate};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "certkeeper",
    version,
    about = "Keeps TLS certificates issued, installed, renewed and served"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Debug, Clone)]
pub struct ConfigArg {
    /// Configuration file
    #[arg(short = 'c', long = "config", env = "CERTKEEPER_CONFIG", default_value = config::DEFAULT_PATH)]
    pub path: PathBuf,
}

impl ConfigArg {
    fn load(&self) -> Result<Config, CliError> {
        config::load(&self.path).map_err(CliError::Config)
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// The daemon: keep every certificate valid and served (foreground; systemd Type=notify)
    Run {
        #[command(flatten)]
        config: ConfigArg,
        /// Log format on stderr
        #[arg(long, value_enum, default_value = "human")]
        log_format: LogFormat,
    },
    /// Validate the configuration and print the plan; exit 2 on errors
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
    /// One row per certificate (fits 100 columns): name, issuer, expiry, next renewal, last
    /// result, state; --wide adds SANs, every detail and the files
    Status {
        #[command(flatten)]
        config: ConfigArg,
        /// Machine-readable output: every field, full paths
        #[arg(long)]
        json: bool,
        /// Every column in full, however wide: SANs, state details, last result with its
        /// reason and note, files, the CA's directory
        #[arg(long, conflicts_with_all = ["json", "check"])]
        wide: bool,
        /// For monitoring (Nagios/Icinga-style checks, systemd timers): a summary line,
        /// then one line per problem; exit 0 when all is well, 1 when anything is due,
        /// expiring, failing or broken, or the CA cannot rotate
        #[arg(long, conflicts_with_all = ["json", "names"])]
        check: bool,
        /// Certificates to show one by one, with every detail (managed or watched)
        #[arg(add = ArgValueCandidates::new(certificate_names))]
        names: Vec<String>,
    },
    /// Issue and install what is missing, damaged, changed or due
    Renew {
        #[command(flatten)]
        config: ConfigArg,
        /// Certificates to renew
        #[arg(add = ArgValueCandidates::new(certificate_names))]
        names: Vec<String>,
        /// Every managed certificate
        #[arg(long, conflicts_with = "names")]
        all: bool,
        /// Reissue even when the certificate is fine
        #[arg(long)]
        force: bool,
        /// Say what would be done, change nothing
        #[arg(long)]
        dry_run: bool,
    },
    /// Describe PEM or DER files (`-`: standard input) or what a TLS server serves
    /// (--connect): certificates, chain order, whether keys match, whether the served chain
    /// verifies; exits 1 when a key matches none of the certificates, a chain is out of
    /// order, or the server cannot be reached or does not verify
    Inspect(inspect::InspectArgs),
    /// The internal certificate authority
    Ca {
        #[command(subcommand)]
        command: ca::CaCommand,
    },
    /// Revoke a managed certificate where it was issued (the internal CA's CRLs, or its
    /// ACME CA), then reissue it
    Revoke {
        #[command(flatten)]
        config: ConfigArg,
        /// The certificate, by name
        #[arg(add = ArgValueCandidates::new(certificate_names))]
        name: String,
        /// unspecified, key-compromise, ca-compromise, affiliation-changed, superseded,
        /// cessation-of-operation, privilege-withdrawn
        #[arg(long)]
        reason: Option<String>,
    },
    /// Issue a one-off certificate into a directory (e.g. a client certificate)
    Issue(issue::IssueArgs),
    /// The certificates nginx and Apache load: files, names, issuer, expiry, key match
    Discover(discover::DiscoverArgs),
    /// Print the shell's completion script (it asks certkeeper for candidates: options,
    /// key types, the configuration's certificate names)
    Completions {
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Write the manual pages (certkeeper.1, one page per subcommand, certkeeper.yaml.5)
    /// into a directory, as the packages install them
    #[command(hide = true)]
    Manpage { dir: PathBuf },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug)]
pub enum CliError {
    Usage(String),
    Config(LoadError),
    Runtime(String),
}

impl CliError {
    fn code(&self) -> u8 {
        match self {
            CliError::Runtime(_) => 1,
            CliError::Usage(_) | CliError::Config(_) => 2,
        }
    }
}

/// Parses the command line, runs the command, prints any error once.
pub fn main() -> ExitCode {
    // A completion request from the shell's script: answer it and exit.
    clap_complete::CompleteEnv::with_factory(Cli::command)
        .var(COMPLETE_VAR)
        .complete();
    quiet_on_closed_stdout();
    let cli = Cli::parse();
    let format = match &cli.command {
        Command::Run { log_format, .. } => *log_format,
        _ => LogFormat::Human,
    };
    init_logging(format);
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            match &e {
                // Not a problem in the configuration: say what it is, and nothing else.
                CliError::Config(unreadable @ LoadError::Unreadable(_)) => {
                    eprintln!("error: {unreadable}")
                }
                CliError::Config(LoadError::Invalid(errs)) => {
                    for err in &errs.0 {
                        eprintln!("error: {err}");
                    }
                    let n = errs.0.len();
                    eprintln!(
                        "{n} error{} in the configuration; nothing was changed",
                        if n == 1 { "" } else { "s" }
                    );
                }
                CliError::Usage(m) | CliError::Runtime(m) => eprintln!("error: {m}"),
            }
            ExitCode::from(e.code())
        }
    }
}

/// A reader that goes away (`status --json | head -c 10`) ends the output: exit 0,
/// quietly, rather than the standard library's panic on a broken pipe.
fn quiet_on_closed_stdout() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        // Standard output is the only pipe certkeeper writes to (`println!`, clap's
        // completions and man page).
        if msg.contains("Broken pipe") || msg.contains("BrokenPipe") {
            std::process::exit(0);
        }
        default(info);
    }));
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CERTKEEPER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
    };
}

fn run(cli: Cli) -> Result<u8, CliError> {
    let now = time::OffsetDateTime::now_utc();
    match cli.command {
        Command::Run { config, .. } => match crate::daemon::run(&config.path) {
            Ok(()) => Ok(0),
            Err(crate::daemon::DaemonError::Config(errs)) => Err(CliError::Config(errs)),
            Err(e) => Err(CliError::Runtime(e.to_string())),
        },
        Command::Check { config } => check::run(&config, now),
        Command::Status {
            config,
            json,
            wide,
            check,
            names,
        } => {
            let config = config.load()?;
            let view = match (json, wide) {
                (true, _) => status::View::Json,
                (_, true) => status::View::Wide,
                _ => status::View::Fit,
            };
            if check {
                status::check(&config, now)
            } else {
                status::run(&config, view, &names, now)
            }
        }
        Command::Renew {
            config,
            names,
            all,
            force,
            dry_run,
        } => {
            if names.is_empty() && !all {
                return Err(CliError::Usage(
                    "name the certificates to renew, or pass --all (see `certkeeper status`)"
                        .into(),
                ));
            }
            renew::run(&config.load()?, &names, force, dry_run, now)
        }
        Command::Inspect(args) => inspect::run(args, now),
        Command::Ca { command } => ca::run(command, now),
        Command::Revoke {
            config,
            name,
            reason,
        } => {
            let config = config.load()?;
            let Some(spec) = config.certificates.iter().find(|c| c.name == name) else {
                return Err(CliError::Usage(format!(
                    "no managed certificate is named `{name}`; `certkeeper status` lists them"
                )));
            };
            let crate::policy::Seen::Present(p) = crate::observe::observe(spec, None) else {
                return Err(CliError::Usage(format!(
                    "`{name}` has no certificate in place to revoke; `certkeeper status {name}` says why"
                )));
            };
            ca::revoke_serial(&config, &p.leaf.serial, reason.as_deref(), now)
        }
        Command::Issue(args) => issue::run(args, now),
        Command::Discover(args) => discover::run(args, now),
        Command::Completions { shell } => {
            use clap_complete::env::EnvCompleter;
            let shell: &dyn EnvCompleter = match shell {
                Shell::Bash => &clap_complete::env::Bash,
                Shell::Zsh => &clap_complete::env::Zsh,
                Shell::Fish => &clap_complete::env::Fish,
            };
            match shell.write_registration(
                COMPLETE_VAR,
                "certkeeper",
                "certkeeper",
                "certkeeper",
                &mut std::io::stdout(),
            ) {
                // A reader that went away ends the output, as for every command.
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    Err(CliError::Runtime(e.to_string()))
                }
                _ => Ok(0),
            }
        }
        Command::Manpage { dir } => {
            for page in manpages::write_all(Cli::command(), &dir)
                .map_err(|e| CliError::Runtime(format!("{}: {e}", dir.display())))?
            {
                println!("{}", page.display());
            }
            Ok(0)
        }
    }
}

/// The variable the completion scripts set when they ask certkeeper for candidates.
const COMPLETE_VAR: &str = "CERTKEEPER_COMPLETE";

/// The certificate names of the configuration (`CERTKEEPER_CONFIG`, else the default
/// path), for completion: read as plain YAML, never checked, nothing logged; none when
/// the file cannot be read.
fn certificate_names() -> Vec<CompletionCandidate> {
    let path = std::env::var_os("CERTKEEPER_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH));
    let Ok(text) = config::read(&path) else {
        return Vec::new();
    };
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(&text) else {
        return Vec::new();
    };
    doc.get("certificates")
        .and_then(|c| c.as_sequence())
        .into_iter()
        .flatten()
        .filter_map(|c| c.get("name").and_then(|n| n.as_str()))
        .map(CompletionCandidate::new)
        .collect()
}
