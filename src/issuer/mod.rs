//! Issuers: what turns a CSR into a certificate. The trait and the request/issued
//! types live here with the CSR builder and the registry that finds a certificate's
//! issuer; `internal` is the built-in CA, `acme` any ACME (RFC 8555) CA. A new issuer
//! implements [`Issuer`], gets a variant in [`crate::model::IssuerRef`] (the typed
//! `issuer:` of the configuration) and a line in [`Registry::get`].

pub mod acme;
pub mod internal;

pub use acme::AcmeIssuer;
pub use internal::{CaError, Change, Force, InternalCa};

use crate::config::Config;
use crate::keys::PrivateKey;
use crate::model::{IssuerRef, San, Usage};
use crate::x509::CertInfo;
use rcgen::{CertificateParams, DnType, SanType};
use std::collections::BTreeMap;
use std::time::Duration;
use time::OffsetDateTime;

/// What the agent asks an issuer for. The CSR carries the public key; the issuer takes
/// names, usage and lifetime from here, never from the CSR's own requests.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    pub name: String,
    pub common_name: String,
    pub sans: Vec<San>,
    pub usage: Usage,
    pub lifetime: Duration,
    /// The ACME profile to order, if the certificate names one.
    pub profile: Option<String>,
}

/// A renewal window suggested by the issuer, and when to ask again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
    pub retry_after: Duration,
    pub explanation: Option<String>,
}

/// A signed leaf and the intermediates to serve with it (never the root).
#[derive(Debug, Clone)]
pub struct Issued {
    pub leaf: CertInfo,
    /// Shared by the leaves of one CA (a batch of thousands holds one copy).
    pub chain: std::sync::Arc<[CertInfo]>,
    /// The end the request asked for, when the issuer cut the leaf short (it would
    /// have outlived the CA that signs it).
    pub clamped: Option<OffsetDateTime>,
}

#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("the CSR is not acceptable: {0}")]
    BadCsr(String),
    #[error("signing failed: {0}")]
    Sign(String),
    #[error("the CA has expired (intermediate valid until {0}); create a new CA")]
    CaExpired(OffsetDateTime),
    #[error("{0}")]
    Other(String),
    #[error("ACME CA {directory}, certificate `{name}`: {error}")]
    Acme {
        directory: String,
        name: String,
        error: acme::AcmeError,
    },
}

/// Something that turns a CSR into a certificate: the internal CA now, ACME later.
pub trait Issuer: Sync {
    /// The name certificates use in `issuer:`.
    fn id(&self) -> &str;
    fn issue(
        &self,
        csr_der: &[u8],
        req: &IssueRequest,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError>;
    /// Whether a leaf + chain comes from this issuer as it is now. The caller has
    /// already checked that the chain is in order (each signed by the next).
    fn issued(&self, leaf: &CertInfo, chain: &[CertInfo]) -> bool;
    /// [`Issuer::issue`] for a certificate that replaces `old` (ACME's `replaces`,
    /// RFC 9773); others ignore `old`.
    fn issue_replacing(
        &self,
        csr_der: &[u8],
        req: &IssueRequest,
        now: OffsetDateTime,
        _old: Option<&CertInfo>,
    ) -> Result<Issued, IssueError> {
        self.issue(csr_der, req, now)
    }
    /// Issues for `key`, a key made in this process. By default a CSR signed with it
    /// goes to [`Issuer::issue_replacing`].
    fn issue_for_key(
        &self,
        key: &PrivateKey,
        req: &IssueRequest,
        now: OffsetDateTime,
        old: Option<&CertInfo>,
    ) -> Result<Issued, IssueError> {
        let csr = make_csr(key, req)?;
        self.issue_replacing(&csr, req, now, old)
    }
    /// Whether what [`Issuer::issue_for_key`] returns was signed in this process with
    /// keys and a chain checked when they were read, so that checking it again is wasted
    /// work. What comes from outside (an ACME CA) is always checked.
    fn signs_in_process(&self) -> bool {
        false
    }
    /// The renewal window the issuer suggests for `leaf` (ACME Renewal Information) and
    /// how long until it should be asked again; None when the issuer has no such thing.
    fn renewal_info(&self, _leaf: &CertInfo) -> Option<Result<RenewalWindow, String>> {
        None
    }
    /// Whether a chain that [`Issuer::issued`] accepts comes from what issues now (not
    /// from an earlier generation of the CA kept for the leaves it signed).
    fn issuing_now(&self, _chain: &[CertInfo]) -> bool {
        true
    }
}

/// Makes the CSR the agent sends to an issuer: the subject and names it wants, signed
/// with the new key (proof of possession).
pub fn make_csr(key: &PrivateKey, req: &IssueRequest) -> Result<Vec<u8>, IssueError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, req.common_name.as_str());
    params.subject_alt_names = sans_for_rcgen(&req.sans)?;
    let csr = params
        .serialize_request(key.pair())
        .map_err(|e| IssueError::Sign(format!("cannot build the CSR: {e}")))?;
    Ok(csr.der().to_vec())
}

pub(crate) fn sans_for_rcgen(sans: &[San]) -> Result<Vec<SanType>, IssueError> {
    sans.iter()
        .map(|s| match s {
            San::Dns(d) => d
                .as_str()
                .try_into()
                .map(SanType::DnsName)
                .map_err(|e| IssueError::BadCsr(format!("`{d}`: {e}"))),
            San::Ip(ip) => Ok(SanType::IpAddress(*ip)),
        })
        .collect()
}

/// Every issuer a configuration names: the internal CA (when it exists) and the ACME
/// issuers (cheap to build: no I/O until they issue).
pub struct Registry<'a> {
    internal: Option<&'a InternalCa>,
    acme: BTreeMap<&'a str, AcmeIssuer>,
}

impl<'a> Registry<'a> {
    pub fn new(config: &'a Config, internal: Option<&'a InternalCa>) -> Registry<'a> {
        Registry {
            internal,
            acme: config
                .issuers
                .iter()
                .map(|(name, spec)| (name.as_str(), AcmeIssuer::new(spec, &config.state_dir)))
                .collect(),
        }
    }

    /// The issuer of `r`, when it is available.
    pub fn get(&self, r: &IssuerRef) -> Option<&dyn Issuer> {
        match r {
            IssuerRef::Internal => self.internal.map(|c| c as &dyn Issuer),
            IssuerRef::Acme(name) => self.acme.get(name.as_str()).map(|a| a as &dyn Issuer),
        }
    }

    /// Why `r` is not available (when [`Registry::get`] gave none).
    pub fn unavailable(r: &IssuerRef) -> String {
        match r {
            IssuerRef::Internal => "the internal CA is not available".to_string(),
            IssuerRef::Acme(name) => {
                format!("issuer `{name}` is not available in this version of certkeeper")
            }
        }
    }
}
