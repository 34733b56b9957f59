//! Looking at `verify` targets the way their clients do: one handshake (presenting the
//! target's client certificate when it names one), then what a strict client refuses
//! in what was sent (`served::judge` for the chain's shape against the installed chain,
//! `served::as_a_client` for trust, name, dates, keys and signatures). The trust
//! anchors are the target's `verify.roots`, else the issuer's: the internal CA's live
//! roots, or the system store for ACME certificates. Files are read once per pass.

use crate::config::{CertSpec, Config, VerifySpec};
use crate::issuer::InternalCa;
use crate::model::IssuerRef;
use crate::served::{Anchors, Problem};
use crate::verify::{Identity, Served, VerifyError};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use time::OffsetDateTime;

/// Where the system's trusted roots are read from: `SSL_CERT_FILE`, else the first of
/// these that exists (Debian/Ubuntu, then Fedora/RHEL).
const SYSTEM_STORES: [&str; 2] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
];

/// The file of the system's trusted roots (see [`SYSTEM_STORES`]).
pub fn system_store() -> PathBuf {
    std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .or_else(|| SYSTEM_STORES.iter().map(PathBuf::from).find(|p| p.exists()))
        .unwrap_or_else(|| PathBuf::from(SYSTEM_STORES[0]))
}

/// What one look at a target found.
#[derive(Debug)]
pub(super) enum Look {
    /// The certificate on disk is served; what a strict client refuses (empty: nothing).
    Ours(Vec<Problem>),
    /// Another certificate is served: which, and what a client refuses in it.
    Other {
        found: String,
        problems: Vec<Problem>,
    },
    /// No certificate to judge (the server does not answer, refused the client
    /// certificate...).
    Failed(VerifyError),
}

/// The client's view for one pass: trust anchors and client certificates, read once.
pub(super) struct Clients<'a> {
    config: &'a Config,
    internal: Arc<Anchors>,
    system: OnceLock<Arc<Anchors>>,
    files: Mutex<BTreeMap<PathBuf, Arc<Anchors>>>,
    identities: Mutex<BTreeMap<String, Arc<Result<Identity, String>>>>,
    /// The pass's time, and when it started: a look judges dates at the pass's time
    /// plus what has elapsed since (a certificate issued during the pass, valid from
    /// that second, is valid when it is looked at).
    now: OffsetDateTime,
    started: std::time::Instant,
}

impl<'a> Clients<'a> {
    pub(super) fn new(config: &'a Config, ca: Option<&InternalCa>, now: OffsetDateTime) -> Self {
        Clients {
            config,
            internal: Arc::new(Anchors::new(
                ca.map(|ca| ca.roots().into_iter().map(|r| r.der.clone()).collect())
                    .unwrap_or_default(),
                "the internal CA's roots".into(),
            )),
            system: OnceLock::new(),
            files: Mutex::new(BTreeMap::new()),
            identities: Mutex::new(BTreeMap::new()),
            now,
            started: std::time::Instant::now(),
        }
    }

    /// The roots clients of `target` trust (read, and their verifier built, once).
    fn anchors(&self, spec: &CertSpec, target: &VerifySpec) -> Arc<Anchors> {
        if let Some(path) = &target.roots {
            let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
            return files
                .entry(path.clone())
                .or_insert_with(|| read_anchors(path, format!("verify.roots {}", path.display())))
                .clone();
        }
        match spec.issuer {
            IssuerRef::Internal => self.internal.clone(),
            IssuerRef::Acme(_) => self
                .system
                .get_or_init(|| {
                    let path = system_store();
                    read_anchors(
                        &path,
                        format!("the system's trusted roots ({})", path.display()),
                    )
                })
                .clone(),
        }
    }

    /// The client certificate `target` presents, read from its managed files.
    fn identity(&self, target: &VerifySpec) -> Option<Arc<Result<Identity, String>>> {
        let name = target.client_cert.as_ref()?;
        let mut ids = self.identities.lock().unwrap_or_else(|e| e.into_inner());
        Some(
            ids.entry(name.clone())
                .or_insert_with(|| Arc::new(read_identity(self.config, name)))
                .clone(),
        )
    }

    /// One handshake with `target`, judged against the leaf whose fingerprint is
    /// `fingerprint` and the chain installed with it (None when not known).
    pub(super) fn look(
        &self,
        spec: &CertSpec,
        target: &VerifySpec,
        fingerprint: &str,
        chain: Option<&[Vec<u8>]>,
    ) -> Look {
        let id = self.identity(target);
        let client = match id.as_deref() {
            Some(Err(e)) => return Look::Failed(client_unusable(target, e)),
            Some(Ok(id)) => Some(id),
            None => None,
        };
        match crate::verify::served_chain(
            &target.connect,
            &target.server_name,
            target.timeout,
            client,
        ) {
            Ok(served) if crate::encoding::sha256_hex(&served.chain[0]) == fingerprint => {
                Look::Ours(self.judge(spec, target, &served, chain))
            }
            Ok(served) => Look::Other {
                found: crate::verify::describe(&served.chain[0]),
                problems: self.judge(spec, target, &served, None),
            },
            Err(e) => Look::Failed(e),
        }
    }

    /// Waits up to the target's timeout until it serves the leaf `fingerprint` (after
    /// a reload), then judges what it serves.
    pub(super) fn wait(
        &self,
        spec: &CertSpec,
        target: &VerifySpec,
        fingerprint: &str,
        chain: Option<&[Vec<u8>]>,
    ) -> Result<Vec<Problem>, VerifyError> {
        let id = self.identity(target);
        let client = match id.as_deref() {
            Some(Err(e)) => return Err(client_unusable(target, e)),
            Some(Ok(id)) => Some(id),
            None => None,
        };
        match crate::verify::wait_for_fingerprint(
            &target.connect,
            &target.server_name,
            fingerprint,
            target.timeout,
            client,
        ) {
            Ok(served) => Ok(self.judge(spec, target, &served, chain)),
            Err(VerifyError::NotServed {
                connect,
                server_name,
                waited,
                expected,
                mut found,
            }) => {
                let seen = Served {
                    chain: std::mem::take(&mut found.chain),
                    asked_for_client_cert: true,
                    ..Default::default()
                };
                found.refused = refused(&self.judge(spec, target, &seen, None));
                found.chain = seen.chain;
                Err(VerifyError::NotServed {
                    connect,
                    server_name,
                    waited,
                    expected,
                    found,
                })
            }
            Err(e) => Err(e),
        }
    }

    /// What a strict client refuses in `served`; `chain`: the installed chain, when the
    /// leaf is ours and the chain is known.
    fn judge(
        &self,
        spec: &CertSpec,
        target: &VerifySpec,
        served: &Served,
        chain: Option<&[Vec<u8>]>,
    ) -> Vec<Problem> {
        let mut problems = Vec::new();
        if let Some(expected) = chain.filter(|c| !c.is_empty()) {
            problems.extend(
                crate::served::judge(&served.chain[1..], expected).map(|p| self.at_server(spec, p)),
            );
        }
        let anchors = self.anchors(spec, target);
        let now = self.now + self.started.elapsed();
        for p in crate::served::as_a_client(&served.chain, &target.server_name, &anchors, now) {
            // A chain of the wrong shape is why it is untrusted: said once, by the shape.
            if matches!(p, Problem::Untrusted { .. })
                && problems
                    .iter()
                    .any(|q| matches!(q, Problem::Chain(_) | Problem::ChainAt { .. }))
            {
                continue;
            }
            problems.push(p);
        }
        if let (Some(client), false) = (&target.client_cert, served.asked_for_client_cert) {
            problems.push(Problem::NotMutual {
                client: client.clone(),
            });
        }
        problems
    }
}

impl Clients<'_> {
    /// A chain problem said for the nginx or Apache that `spec` reloads, with the
    /// setting to change and the file of certkeeper's to name there.
    fn at_server(&self, spec: &CertSpec, problem: crate::served::ChainProblem) -> Problem {
        use crate::config::{Files, ServerKind};
        let kind = spec
            .reload
            .iter()
            .filter_map(|n| self.config.servers.get(n))
            .find_map(|s| match s.kind {
                ServerKind::Nginx | ServerKind::Apache => Some(s.kind),
                _ => None,
            });
        let p = |p: &Path| format!("`{}`", p.display());
        let fix = match (kind, &spec.files) {
            (None, _) => return Problem::Chain(problem),
            (Some(_), Files::Pkcs12 { .. }) => "nginx and Apache do not read a .p12 file: use layout nginx, apache or separate for what they serve".into(),
            (Some(ServerKind::Nginx), Files::Nginx { cert, .. } | Files::Combined { cert }) => {
                format!("point `ssl_certificate` at {} (leaf + chain)", p(cert))
            }
            (Some(ServerKind::Nginx), Files::Separate { fullchain, .. }) => {
                format!("point `ssl_certificate` at {} (leaf + chain)", p(fullchain))
            }
            (Some(ServerKind::Nginx), Files::Apache { .. }) => "the apache layout has no file with leaf and chain, which nginx needs: use layout nginx or separate".into(),
            (Some(_), Files::Apache { chain, .. }) => format!(
                "add `SSLCertificateChainFile {}` beside `SSLCertificateFile`",
                chain.display()
            ),
            (Some(_), Files::Separate { chain, fullchain, .. }) => format!(
                "point `SSLCertificateFile` at {} (leaf + chain), or add `SSLCertificateChainFile {}`",
                p(fullchain),
                chain.display()
            ),
            (Some(_), Files::Nginx { cert, .. } | Files::Combined { cert }) => format!(
                "point `SSLCertificateFile` at {} (leaf + chain)",
                p(cert)
            ),
        };
        Problem::ChainAt {
            problem,
            server: if kind == Some(ServerKind::Nginx) {
                "nginx".into()
            } else {
                "Apache".into()
            },
            fix,
        }
    }
}

/// " (clients refuse it: first; second)", or nothing.
pub(super) fn refused(problems: &[Problem]) -> String {
    if problems.is_empty() {
        return String::new();
    }
    let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    format!(" (clients refuse it: {})", all.join("; "))
}

/// The sentence for a target's problems: "HOST:PORT (SNI NAME): first; second".
pub(super) fn note(target: &VerifySpec, problems: &[Problem]) -> String {
    let all: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    format!(
        "{} (SNI {}): {}",
        target.connect,
        target.server_name,
        all.join("; also ")
    )
}

fn client_unusable(target: &VerifySpec, why: &str) -> VerifyError {
    VerifyError::Handshake {
        connect: target.connect.clone(),
        server_name: target.server_name.clone(),
        reason: format!(
            "the client certificate `{}` cannot be presented: {why}",
            target.client_cert.as_deref().unwrap_or_default()
        ),
    }
}

/// The certificates of a PEM file as trust anchors, named `source` in messages; none
/// when the file cannot be read.
pub fn read_anchors(path: &Path, source: String) -> Arc<Anchors> {
    let certs = crate::fsread::read_regular(path, 4 << 20)
        .ok()
        .and_then(|b| crate::x509::parse_pem(&b).ok())
        .map(|items| {
            items
                .into_iter()
                .filter_map(|i| match i {
                    crate::x509::PemItem::Cert(c) => Some(c.der),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    Arc::new(Anchors::new(certs, source))
}

/// A managed client certificate's leaf, chain and key, from its installed files.
fn read_identity(config: &Config, name: &str) -> Result<Identity, String> {
    let spec = config
        .certificates
        .iter()
        .find(|c| c.name == name)
        .ok_or_else(|| format!("no managed certificate is named `{name}`"))?;
    let crate::policy::Seen::Present(p) = crate::observe::observe(spec, None) else {
        return Err(format!(
            "its files are not in order yet; `certkeeper status {name}` says why"
        ));
    };
    let key_path = crate::observe::key_path(spec);
    let pem = crate::observe::key_pem(spec)?;
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|e| format!("{}: no private key ({e})", key_path.display()))?;
    let chain = std::iter::once(&p.leaf)
        .chain(&p.chain)
        .map(|c| rustls::pki_types::CertificateDer::from(c.der.clone()))
        .collect();
    Ok(Identity {
        name: name.into(),
        chain,
        key,
    })
}
