//! Why a certificate was not renewed: one value, made where the failure happened and
//! carrying the error of the step that failed. The report, the ledger, the logs, the
//! hooks and the daemon's backoff all read this value; its text is what users see.

use crate::fsutil::FsError;
use crate::issuer::IssueError;
use crate::model::IssuerRef;
use crate::server::ServerError;
use crate::verify::VerifyError;
use std::fmt;
use std::sync::Arc;

/// The step of a certificate's renewal that failed.
#[derive(Debug, Clone)]
pub enum Failure {
    /// The target paths cannot be written (a link, a directory where a file goes...):
    /// refused before anything was issued.
    Refused(Arc<FsError>),
    /// The password of a `pkcs12` layout cannot be used: refused before anything was
    /// issued.
    Password(Arc<crate::password::PasswordError>),
    /// The certificate's issuer is not available.
    NoIssuer(IssuerRef),
    /// The key or the CSR could not be made.
    Key(String),
    /// The issuer refused or failed.
    Issue {
        issuer: String,
        error: Arc<IssueError>,
    },
    /// The issuer returned something unusable: a certificate for another key, a chain
    /// out of order.
    Returned { issuer: String, problem: String },
    /// The new pair could not be recorded (ledger) or archived: nothing was installed.
    State {
        what: &'static str,
        error: Arc<FsError>,
    },
    /// Installing failed; the previous files were kept.
    Install(Arc<FsError>),
    /// A server's config test or reload failed after the install, which was rolled back.
    Server {
        step: ServerStep,
        server: String,
        error: Arc<ServerError>,
        rollback: Rollback,
    },
    /// What is served is not the new certificate; the install was rolled back.
    Verify {
        connect: String,
        error: Arc<VerifyError>,
        rollback: Rollback,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerStep {
    ConfigTest,
    Reload,
}

/// What a pass did with one server, carrying the error where something failed.
#[derive(Debug, Clone)]
pub enum ServerOutcome {
    /// Tested and reloaded (or, after a rollback, reloaded again).
    Reloaded,
    /// Its config test failed: it was not reloaded, and its certificates were rolled back.
    TestFailed(Arc<ServerError>),
    /// Its reload failed: its certificates were rolled back.
    ReloadFailed(Arc<ServerError>),
    /// Reloaded, but did not serve a new certificate (rolled back, reloaded again).
    VerifyFailed {
        certificate: String,
        error: Arc<VerifyError>,
    },
    /// Not running: tested, but nothing to reload (it reads the files when it starts).
    Skipped(crate::server::NotRunning),
}

impl ServerOutcome {
    /// Whether the server failed a step (and goes into backoff).
    pub fn failed(&self) -> bool {
        matches!(
            self,
            ServerOutcome::TestFailed(_) | ServerOutcome::ReloadFailed(_)
        )
    }
}

impl fmt::Display for ServerOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerOutcome::Reloaded => f.write_str("reloaded"),
            ServerOutcome::TestFailed(e) => write!(f, "config test failed: {e}"),
            ServerOutcome::ReloadFailed(e) => write!(f, "reload failed: {e}"),
            ServerOutcome::VerifyFailed { certificate, error } => {
                write!(f, "reloaded, but `{certificate}` was not served: {error}")
            }
            ServerOutcome::Skipped(why) => write!(f, "not running ({why}): nothing to reload"),
        }
    }
}

/// What the rollback after a server or verify failure did.
#[derive(Debug, Clone)]
pub enum Rollback {
    /// The previous pair is served again.
    Restored,
    /// There was no complete previous pair: the new one stays.
    KeptNew,
    /// The previous files could not be put back: the new pair stays.
    Failed(Arc<FsError>),
}

impl fmt::Display for Rollback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rollback::Restored => f.write_str("previous files restored"),
            Rollback::KeptNew => {
                f.write_str("there were no previous files; the new pair stays installed")
            }
            Rollback::Failed(e) => write!(
                f,
                "the previous files could not be restored ({e}); the new pair stays installed"
            ),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Refused(e) => write!(f, "install refused, nothing was issued: {e}"),
            Failure::Password(e) => write!(f, "install refused, nothing was issued: {e}"),
            Failure::NoIssuer(r) => f.write_str(&crate::issuer::Registry::unavailable(r)),
            Failure::Key(e) => f.write_str(e),
            Failure::Issue { issuer, error } => write!(f, "issuer `{issuer}`: {error}"),
            Failure::Returned { issuer, problem } => {
                write!(f, "issuer `{issuer}` returned {problem}")
            }
            Failure::State { what, error } => write!(f, "{what}: {error}"),
            Failure::Install(e) => write!(f, "install failed, previous files kept: {e}"),
            Failure::Server {
                step,
                server,
                error,
                rollback,
            } => {
                let step = match step {
                    ServerStep::ConfigTest => "config test",
                    ServerStep::Reload => "reload",
                };
                write!(f, "{step} of server `{server}` failed, {rollback}: {error}")
            }
            Failure::Verify {
                connect,
                error,
                rollback,
            } => write!(f, "verify of {connect} failed, {rollback}: {error}"),
        }
    }
}

impl Failure {
    /// A short, stable word for metrics and the ledger.
    pub fn code(&self) -> &'static str {
        match self {
            Failure::Refused(_) => "refused",
            Failure::Password(_) => "password",
            Failure::NoIssuer(_) => "no-issuer",
            Failure::Key(_) => "key",
            Failure::Issue { .. } => "issue",
            Failure::Returned { .. } => "returned",
            Failure::State { .. } => "state",
            Failure::Install(_) => "install",
            Failure::Server {
                step: ServerStep::ConfigTest,
                ..
            } => "config-test",
            Failure::Server {
                step: ServerStep::Reload,
                ..
            } => "reload",
            Failure::Verify { .. } => "verify",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[test]
    fn each_failure_says_its_step_and_what_the_rollback_did() {
        let test_failed = Arc::new(ServerError::ConfigTest {
            server: "web".into(),
            command: "nginx -t".into(),
            status: std::process::ExitStatus::from_raw(256),
            output: "bad line 3".into(),
        });
        let f = Failure::Server {
            step: ServerStep::ConfigTest,
            server: "web".into(),
            error: test_failed.clone(),
            rollback: Rollback::Restored,
        };
        assert!(f
            .to_string()
            .starts_with("config test of server `web` failed, previous files restored: server `web`: config test `nginx -t` failed"));
        assert_eq!(f.code(), "config-test");
        let f = Failure::Server {
            step: ServerStep::Reload,
            server: "web".into(),
            error: test_failed,
            rollback: Rollback::KeptNew,
        };
        assert!(f.to_string().starts_with(
            "reload of server `web` failed, there were no previous files; the new pair stays installed: "
        ));
        assert_eq!(f.code(), "reload");
        let f = Failure::Returned {
            issuer: "internal".into(),
            problem: "a certificate for another key".into(),
        };
        assert_eq!(
            f.to_string(),
            "issuer `internal` returned a certificate for another key"
        );
        assert_eq!(
            Failure::NoIssuer(IssuerRef::Acme("fleet".into())).to_string(),
            "issuer `fleet` is not available in this version of certkeeper"
        );
    }
}
