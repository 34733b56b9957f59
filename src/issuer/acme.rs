//! An RFC 8555 (ACME) issuer: account, order, http-01 challenge, finalize with our own
//! CSR (the private key never leaves the host), download the chain.
//!
//! The rest of certkeeper is synchronous; the ACME client is async. `issue` runs the
//! flow on the caller's tokio runtime when there is one (the daemon runs passes on a
//! `spawn_blocking` thread) and on a private current-thread runtime otherwise (the CLI).

use super::{IssueError, IssueRequest, Issued, Issuer};
use crate::config::AcmeSpec;
use crate::dns01::Dns01;

mod by_key;
use crate::fsread::{read_regular, read_text, PEM_MAX};
use crate::fsutil::{ensure_dir, write_atomic, FileSpec};
use crate::model::San;
use crate::x509::{parse_certs, CertInfo};
use base64::Engine as _;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, BodyWrapper, ChallengeType,
    ExternalAccountKey, HttpClient, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The most read from the system's CA bundle (Debian's is about 200 KiB).
const SYSTEM_BUNDLE_MAX: u64 = 4 << 20;
/// How long one whole issuance may take (account, order, validation, finalize).
const ISSUE_DEADLINE: Duration = Duration::from_secs(180);
/// How long a TCP connect to the ACME server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Polling the order: first after 250 ms, then 1.5× longer each time, within this bound.
const POLL_TIMEOUT: Duration = Duration::from_secs(90);

/// What went wrong talking to an ACME CA, by the step that failed: the next features
/// (account recovery, renewal information) act on the step, the user reads the text.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The HTTPS client could not be set up (trust roots, runtime).
    #[error("{0}")]
    Client(String),
    /// The stored account could not be used, or a new one not registered or stored.
    #[error("{0}")]
    Account(String),
    /// The CA refused the order.
    #[error("{0}")]
    Order(String),
    /// An authorization or its http-01 challenge could not be answered.
    #[error("{0}")]
    Challenge(String),
    /// The CA did not validate the order.
    #[error("{0}")]
    Validation(String),
    /// Finalizing or downloading the certificate failed, or it was unusable.
    #[error("{0}")]
    Certificate(String),
    /// The whole issuance took longer than its deadline.
    #[error("no certificate within {0:?}")]
    Timeout(Duration),
}

/// One `issuers: NAME: acme:` entry, ready to issue.
pub struct AcmeIssuer {
    spec: AcmeSpec,
    account_file: PathBuf,
    /// The account, once restored or registered: every certificate of a pass (orders,
    /// renewal information, revocations) uses it and its HTTPS client, instead of
    /// reading the trust roots and fetching the directory again for each.
    account: std::sync::Mutex<Option<Account>>,
    /// Without a runtime of the caller's (the CLI), the one all calls run on, so that
    /// the account's connections outlive one call.
    runtime: std::sync::OnceLock<tokio::runtime::Runtime>,
}

impl AcmeIssuer {
    /// The account credentials live in `state_dir/acme/NAME/account.json` (mode 0600).
    pub fn new(spec: &AcmeSpec, state_dir: &Path) -> AcmeIssuer {
        AcmeIssuer {
            spec: spec.clone(),
            account_file: account_file(state_dir, &spec.name),
            account: std::sync::Mutex::new(None),
            runtime: std::sync::OnceLock::new(),
        }
    }

    fn remembered(&self) -> Option<Account> {
        self.account
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn remember(&self, account: &Account) {
        *self.account.lock().unwrap_or_else(|e| e.into_inner()) = Some(account.clone());
    }

    /// Runs `fut` to completion from synchronous code: on the caller's runtime (the
    /// daemon runs passes on a `spawn_blocking` thread of its own), else on this
    /// issuer's.
    fn block_on<F: Future>(&self, fut: F) -> Result<F::Output, AcmeError> {
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            return Ok(handle.block_on(fut));
        }
        if self.runtime.get().is_none() {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| AcmeError::Client(format!("cannot start a runtime: {e}")))?;
            let _ = self.runtime.set(rt);
        }
        Ok(self.runtime.get().expect("set above").block_on(fut))
    }

    pub fn directory(&self) -> &str {
        &self.spec.directory
    }

    fn http_client(&self) -> Result<Box<dyn HttpClient>, AcmeError> {
        let mut roots = rustls::RootCertStore::empty();
        match &self.spec.ca_bundle {
            Some(bundle) => {
                let bytes = read_regular(bundle, PEM_MAX)
                    .map_err(|e| AcmeError::Client(format!("cannot read ca_bundle {e}")))?;
                let certs = parse_certs(&bytes, &format!("ca_bundle {}", bundle.display()))
                    .map_err(AcmeError::Client)?;
                for c in certs {
                    roots
                        .add(rustls::pki_types::CertificateDer::from(c.der.clone()))
                        .map_err(|e| {
                            AcmeError::Client(format!("ca_bundle {}: {e}", bundle.display()))
                        })?;
                }
            }
            None => {
                let loaded = rustls_native_roots();
                if loaded.is_empty() {
                    return Err(AcmeError::Client(
                        "no system CA certificates found; set `ca_bundle:`".into(),
                    ));
                }
                for c in loaded {
                    let _ = roots.add(c);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| AcmeError::Client(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, BodyWrapper<bytes::Bytes>>(connector);
        Ok(Box::new(client))
    }

    /// Restores the stored account, or creates one and stores its credentials.
    async fn account(&self) -> Result<Account, AcmeError> {
        if let Some(account) = self.stored_account().await? {
            return Ok(account);
        }
        self.register().await
    }

    /// The stored account, if there is one for this directory (restored once).
    async fn stored_account(&self) -> Result<Option<Account>, AcmeError> {
        if let Some(account) = self.remembered() {
            return Ok(Some(account));
        }
        let dir = &self.spec.directory;
        if self.account_file.exists() {
            let text = read_text(&self.account_file, PEM_MAX)
                .map_err(|e| AcmeError::Account(e.to_string()))?;
            let damaged = |e: serde_json::Error| {
                AcmeError::Account(format!(
                    "{} is damaged ({e}); move it away to register a new account",
                    self.account_file.display()
                ))
            };
            // The credentials name the directory they belong to, and instant-acme talks
            // to that one: an account for another directory is set aside, not used.
            let stored: serde_json::Value = serde_json::from_str(&text).map_err(damaged)?;
            if stored.get("directory").and_then(|d| d.as_str()) == Some(dir.as_str()) {
                let creds: AccountCredentials = serde_json::from_value(stored).map_err(damaged)?;
                let account = Account::builder_with_http(self.http_client()?)
                    .from_credentials(creds)
                    .await
                    .map_err(|e| {
                        AcmeError::Account(format!("cannot use the stored account: {}", chain(&e)))
                    })?;
                tracing::debug!(issuer = %self.spec.name, account = %account.id(), "restored the ACME account");
                self.remember(&account);
                return Ok(Some(account));
            }
            tracing::warn!(issuer = %self.spec.name, directory = %dir, file = %self.account_file.display(), "the stored ACME account belongs to another directory; registering a new one");
        }
        Ok(None)
    }

    /// Registers a new account (same contact and EAB) and stores its credentials; a
    /// stored one is kept as `account.json.previous`.
    async fn register(&self) -> Result<Account, AcmeError> {
        let dir = &self.spec.directory;
        let eab = match &self.spec.eab {
            Some((kid, file)) => {
                let raw =
                    read_text(file, PEM_MAX).map_err(|e| AcmeError::Account(e.to_string()))?;
                let key = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(raw.trim().trim_end_matches('='))
                    .map_err(|e| {
                        AcmeError::Account(format!(
                            "{}: not a base64url HMAC key: {e}",
                            file.display()
                        ))
                    })?;
                Some(ExternalAccountKey::new(kid.clone(), &key))
            }
            None => None,
        };
        let contact: Vec<&str> = self.spec.contact.iter().map(|s| s.as_str()).collect();
        let (account, creds) = Account::builder_with_http(self.http_client()?)
            .create(
                &NewAccount {
                    contact: &contact,
                    terms_of_service_agreed: true,
                    only_return_existing: false,
                },
                dir.clone(),
                eab.as_ref(),
            )
            .await
            .map_err(|e| {
                AcmeError::Account(format!("cannot register an account: {}", chain(&e)))
            })?;
        let json = Zeroizing::new(
            serde_json::to_vec_pretty(&creds).map_err(|e| AcmeError::Account(e.to_string()))?,
        );
        if let Some(parent) = self.account_file.parent() {
            ensure_dir(parent, 0o700).map_err(|e| AcmeError::Account(e.to_string()))?;
        }
        if self.account_file.exists() {
            let old = self.account_file.with_extension("json.previous");
            std::fs::rename(&self.account_file, &old).map_err(|e| {
                AcmeError::Account(format!(
                    "cannot set aside {}: {e}",
                    self.account_file.display()
                ))
            })?;
        }
        write_atomic(&FileSpec {
            path: self.account_file.clone(),
            bytes: Zeroizing::new(json.to_vec()),
            mode: 0o600,
            uid: None,
            gid: None,
            follow_symlinks: false,
        })
        .map_err(|e| AcmeError::Account(format!("cannot store the new account: {e}")))?;
        tracing::info!(issuer = %self.spec.name, directory = %dir, account = %account.id(), "registered an ACME account");
        self.remember(&account);
        Ok(account)
    }

    /// Orders and downloads a certificate. When the CA no longer knows the stored
    /// account (a reset database, a deactivated account, a key it refuses), a new one is
    /// registered and the order tried once more.
    async fn issue_async(
        &self,
        csr_der: &[u8],
        req: &IssueRequest,
        old: Option<&CertInfo>,
    ) -> Result<String, AcmeError> {
        let mut account = self.account().await?;
        let mut replaces = old.and_then(cert_id);
        let mut registered = false;
        // At most three orders: with `replaces`, without it, with a new account.
        loop {
            match self
                .order_with(&account, csr_der, req, replaces.clone())
                .await
            {
                Ok(pem) => return Ok(pem),
                Err((e, Refused::Account)) if !registered => {
                    tracing::warn!(issuer = %self.spec.name, directory = %self.spec.directory, error = %e, "the ACME CA no longer knows the stored account; registering a new one (the old credentials stay in account.json.previous) and ordering again");
                    account = self.register().await?;
                    registered = true;
                    // A new account cannot replace the old account's certificate.
                    replaces = None;
                }
                Err((_, Refused::NoAri)) if replaces.is_some() => replaces = None,
                Err((e, Refused::Replaces)) if replaces.is_some() => {
                    tracing::warn!(issuer = %self.spec.name, error = %e, "the ACME CA did not take `replaces` (ARI) on the order; ordering without it");
                    replaces = None;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// One order with `account`; an error says whether the CA refused the account itself.
    async fn order_with(
        &self,
        account: &Account,
        csr_der: &[u8],
        req: &IssueRequest,
        replaces: Option<instant_acme::CertificateIdentifier<'static>>,
    ) -> Result<String, (AcmeError, Refused)> {
        let ids: Vec<Identifier> = req
            .sans
            .iter()
            .map(|s| match s {
                San::Dns(d) => Identifier::Dns(d.clone()),
                San::Ip(ip) => Identifier::Ip(*ip),
            })
            .collect();
        if ids.is_empty() {
            return Err((
                AcmeError::Order("the certificate has no names to order".into()),
                Refused::Other,
            ));
        }
        let mut new = NewOrder::new(&ids);
        if let Some(id) = &replaces {
            new = new.replaces(id.clone());
        }
        let profile = req.profile.as_deref().or(self.spec.profile.as_deref());
        if let Some(p) = profile {
            let mut offered: Vec<&str> = account.profiles().map(|m| m.name).collect();
            offered.sort_unstable();
            if !offered.contains(&p) {
                let offers = match offered.is_empty() {
                    true => "it lists no profiles in its directory".to_string(),
                    false => format!("it offers {}", offered.join(", ")),
                };
                return Err((
                    AcmeError::Order(format!(
                        "the CA at {} has no profile `{p}` ({offers}); change `profile:`",
                        self.spec.directory
                    )),
                    Refused::Other,
                ));
            }
            new = new.profile(p);
        }
        let mut order = account.new_order(&new).await.map_err(|e| {
            let why = if account_gone(&e) {
                Refused::Account
            } else if replaces.is_some() && matches!(e, instant_acme::Error::Unsupported(_)) {
                Refused::NoAri
            } else if replaces.is_some() && about_replaces(&e) {
                Refused::Replaces
            } else {
                Refused::Other
            };
            (
                AcmeError::Order(format!("new order refused: {}", chain(&e))),
                why,
            )
        })?;
        if let Some(id) = &replaces {
            tracing::info!(issuer = %self.spec.name, certificate = %req.name, replaces = %id, "ordered as a replacement (ARI replaces)");
        }
        if let Some(p) = profile {
            tracing::info!(issuer = %self.spec.name, certificate = %req.name, profile = %p, "ordered with an ACME profile");
        }
        self.complete(&mut order, csr_der)
            .await
            .map_err(|e| (e, Refused::Other))
    }

    /// Answers the order's challenges, waits for validation, finalizes with the CSR and
    /// downloads the certificate.
    async fn complete(
        &self,
        order: &mut instant_acme::Order,
        csr_der: &[u8],
    ) -> Result<String, AcmeError> {
        let mut responder = match self.spec.http01() {
            true => Some(Responder::start(&self.spec).await?),
            false => None,
        };
        let mut dns = self
            .spec
            .dns01
            .as_ref()
            .map(|d| Dns01::new(d, &self.spec.name));
        // First every DNS-01 record is written and waited for (blocking: nothing the CA
        // fetches is being served yet), then the CA is told to validate every challenge.
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| {
                AcmeError::Challenge(format!("cannot read an authorization: {}", chain(&e)))
            })?;
            match authz.status {
                AuthorizationStatus::Valid => continue,
                AuthorizationStatus::Pending => {}
                other => {
                    return Err(AcmeError::Challenge(format!(
                        "authorization for {} is {other:?}",
                        authz.identifier()
                    )))
                }
            }
            let ident = authz.identifier().to_string();
            let kind = self.challenge_for(&authz.identifier())?;
            let (Some(dns), ChallengeType::Dns01) = (dns.as_mut(), &kind) else {
                continue;
            };
            let Identifier::Dns(domain) = authz.identifier().identifier.clone() else {
                continue;
            };
            let ch = authz.challenge(ChallengeType::Dns01).ok_or_else(|| {
                AcmeError::Challenge(format!("the CA offers no dns-01 challenge for {ident}"))
            })?;
            let value = ch.key_authorization().dns_value();
            dns.present(&domain, &value).map_err(AcmeError::Challenge)?;
        }
        if let Some(dns) = &dns {
            dns.wait_visible().map_err(AcmeError::Challenge)?;
        }
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.map_err(|e| {
                AcmeError::Challenge(format!("cannot read an authorization: {}", chain(&e)))
            })?;
            if authz.status != AuthorizationStatus::Pending {
                continue;
            }
            let ident = authz.identifier().to_string();
            let kind = self.challenge_for(&authz.identifier())?;
            let mut ch = authz.challenge(kind.clone()).ok_or_else(|| {
                AcmeError::Challenge(format!("the CA offers no {kind:?} challenge for {ident}"))
            })?;
            if kind == ChallengeType::Http01 {
                let key_auth = ch.key_authorization().as_str().to_string();
                responder
                    .as_mut()
                    .expect("http-01 is configured")
                    .add(&ch.token, &key_auth)?;
            }
            ch.set_ready().await.map_err(|e| {
                AcmeError::Challenge(format!("challenge for {ident} refused: {}", chain(&e)))
            })?;
        }
        let retry = RetryPolicy::new()
            .initial_delay(Duration::from_millis(250))
            .backoff(1.5)
            .timeout(POLL_TIMEOUT);
        let status = order
            .poll_ready(&retry)
            .await
            .map_err(|e| AcmeError::Validation(format!("waiting for validation: {}", chain(&e))))?;
        if let Some(r) = responder.as_mut() {
            r.stop();
        }
        if let Some(d) = dns.as_mut() {
            d.cleanup();
        }
        if status != OrderStatus::Ready {
            let mut why = Vec::new();
            let mut authzs = order.authorizations();
            while let Some(Ok(a)) = authzs.next().await {
                for c in &a.challenges {
                    if let Some(p) = &c.error {
                        why.push(format!("{}: {p}", a.identifier()));
                    }
                }
            }
            return Err(AcmeError::Validation(format!(
                "the order is {status:?}: {}",
                if why.is_empty() {
                    "no reason given".to_string()
                } else {
                    why.join("; ")
                }
            )));
        }
        order
            .finalize_csr(csr_der)
            .await
            .map_err(|e| AcmeError::Certificate(format!("finalize refused: {}", chain(&e))))?;
        order.poll_certificate(&retry).await.map_err(|e| {
            AcmeError::Certificate(format!("waiting for the certificate: {}", chain(&e)))
        })
    }
}

impl AcmeIssuer {
    /// How long one issuance may take: the ACME exchange, plus for DNS-01 the wait for
    /// the records and the provider's commands (each name's present and cleanup).
    fn issue_deadline(&self) -> Duration {
        match &self.spec.dns01 {
            Some(d) => ISSUE_DEADLINE + d.propagation_timeout + d.timeout * 2,
            None => ISSUE_DEADLINE,
        }
    }

    /// The challenge that proves `id`: DNS-01 for a wildcard (and for every name when
    /// http-01 is not configured), http-01 otherwise (and always for an IP address).
    fn challenge_for(
        &self,
        id: &instant_acme::AuthorizedIdentifier<'_>,
    ) -> Result<ChallengeType, AcmeError> {
        let dns = self.spec.dns01.is_some();
        let http = self.spec.http01();
        match (id.identifier, id.wildcard) {
            (Identifier::Dns(_), true) if dns => Ok(ChallengeType::Dns01),
            (Identifier::Dns(_), false) if http || dns => Ok(if http {
                ChallengeType::Http01
            } else {
                ChallengeType::Dns01
            }),
            (Identifier::Ip(_), _) if http => Ok(ChallengeType::Http01),
            _ => Err(AcmeError::Challenge(format!(
                "the issuer `{}` has no challenge that proves {id} (a wildcard needs `dns01:`, an IP address `http01:`)",
                self.spec.name
            ))),
        }
    }
}

/// Why the CA refused an order, where it matters for what to do next.
enum Refused {
    /// The account itself: register again.
    Account,
    /// The `replaces` field (the certificate was replaced already, or belongs to
    /// another account): order without it.
    Replaces,
    /// The CA has no renewal information, so no `replaces` either: order without it.
    NoAri,
    Other,
}

/// The ARI identifier of a certificate (its AKI key id and serial), if it has one.
fn cert_id(leaf: &CertInfo) -> Option<instant_acme::CertificateIdentifier<'static>> {
    let der = rustls::pki_types::CertificateDer::from(leaf.der.as_slice());
    instant_acme::CertificateIdentifier::try_from(&der)
        .ok()
        .map(|id| id.into_owned())
}

/// Whether a refused order is about its `replaces` field.
fn about_replaces(e: &instant_acme::Error) -> bool {
    let p = match e {
        instant_acme::Error::Api(p) => p,
        // The CA answered without reflecting the field (it ignores ARI).
        instant_acme::Error::Other(e) => return e.to_string().contains("replaces"),
        _ => return false,
    };
    p.r#type
        .as_deref()
        .is_some_and(|t| t.ends_with(":alreadyReplaced"))
        || p.detail
            .as_deref()
            .is_some_and(|d| d.to_ascii_lowercase().contains("replace"))
}

/// Whether the CA refused the account for this request: it does not know it, or the
/// account may not do this (revoke a certificate another account ordered).
fn refused_account(e: &instant_acme::Error) -> bool {
    let instant_acme::Error::Api(p) = e else {
        return false;
    };
    let kind = p.r#type.as_deref().unwrap_or("");
    kind.ends_with(":accountDoesNotExist") || kind.ends_with(":unauthorized")
}

/// Whether the CA refused the account itself: it does not exist (any more), or it is
/// deactivated or its key is not known there.
fn account_gone(e: &instant_acme::Error) -> bool {
    let instant_acme::Error::Api(p) = e else {
        return false;
    };
    let kind = p.r#type.as_deref().unwrap_or("");
    let about_account = p
        .detail
        .as_deref()
        .is_some_and(|d| d.to_ascii_lowercase().contains("account"));
    kind.ends_with(":accountDoesNotExist") || (about_account && kind.ends_with(":unauthorized"))
}

impl AcmeIssuer {
    /// Revokes a certificate this CA issued (`revokeCert`), signed with the stored
    /// account; when there is none, or the CA refuses it (forgot it, or it did not order
    /// this certificate), signed with the certificate's own key `key_pem` if given, else
    /// with a new account. `reason`: one of `certkeeper ca revoke`'s reason names.
    pub fn revoke(
        &self,
        cert_der: &[u8],
        key_pem: Option<&str>,
        reason: Option<&str>,
    ) -> Result<(), AcmeError> {
        use instant_acme::{RevocationReason as R, RevocationRequest};
        use rcgen::RevocationReason as C;
        // The same names as the internal CA's (`trust::parse_reason`), checked there.
        let reason = reason
            .and_then(|r| crate::trust::parse_reason(r).ok())
            .map(|r| match r {
                C::KeyCompromise => R::KeyCompromise,
                C::CaCompromise => R::CaCompromise,
                C::AffiliationChanged => R::AffiliationChanged,
                C::Superseded => R::Superseded,
                C::CessationOfOperation => R::CessationOfOperation,
                C::PrivilegeWithdrawn => R::PrivilegeWithdrawn,
                _ => R::Unspecified,
            });
        let cert = rustls::pki_types::CertificateDer::from(cert_der.to_vec());
        let request = RevocationRequest {
            certificate: &cert,
            reason,
        };
        let refused = |e: &instant_acme::Error| {
            AcmeError::Certificate(format!("revocation refused: {}", chain(e)))
        };
        self.block_on(async {
            let fut = async {
                let req = &request;
                let by_key = |why: String| async move {
                    tracing::warn!(issuer = %self.spec.name, reason = %why, "revoking with the certificate's own key");
                    let http = self.http_client()?;
                    by_key::revoke(
                        http.as_ref(),
                        &self.spec.directory,
                        req,
                        key_pem.expect("a key"),
                    )
                    .await
                };
                match self.stored_account().await? {
                    Some(account) => match account.revoke(req).await {
                        Err(e) if refused_account(&e) && key_pem.is_some() => {
                            by_key(format!("the ACME CA refused the stored account: {e}")).await
                        }
                        Err(e) if account_gone(&e) => {
                            tracing::warn!(issuer = %self.spec.name, error = %e, "the ACME CA no longer knows the stored account; registering a new one to revoke");
                            let account = self.register().await?;
                            account.revoke(req).await.map_err(|e| refused(&e))
                        }
                        other => other.map_err(|e| refused(&e)),
                    },
                    None if key_pem.is_some() => {
                        by_key("no stored ACME account".to_string()).await
                    }
                    None => {
                        let account = self.account().await?;
                        account.revoke(req).await.map_err(|e| refused(&e))
                    }
                }
            };
            match tokio::time::timeout(ISSUE_DEADLINE, fut).await {
                Ok(r) => r,
                Err(_) => Err(AcmeError::Timeout(ISSUE_DEADLINE)),
            }
        })
        .and_then(|r| r)
    }
}

pub fn account_file(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("acme").join(name).join("account.json")
}

fn rustls_native_roots() -> Vec<rustls::pki_types::CertificateDer<'static>> {
    // The Debian bundle; other systems set `ca_bundle:`.
    let path = Path::new("/etc/ssl/certs/ca-certificates.crt");
    read_regular(path, SYSTEM_BUNDLE_MAX)
        .ok()
        .and_then(|b| parse_certs(&b, "system CA bundle").ok())
        .unwrap_or_default()
        .into_iter()
        .map(|c| rustls::pki_types::CertificateDer::from(c.der))
        .collect()
}

/// An error with its causes: hyper's "client error (Connect)" alone says little.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}

/// Answers http-01 challenges for the duration of one order: a tiny HTTP server
/// (`standalone:`) or token files under `webroot:`; removed when dropped.
struct Responder {
    tokens: Arc<Mutex<HashMap<String, String>>>,
    server: Option<tokio::task::JoinHandle<()>>,
    webroot: Option<PathBuf>,
    written: Vec<PathBuf>,
}

impl Responder {
    async fn start(spec: &AcmeSpec) -> Result<Responder, AcmeError> {
        let tokens: Arc<Mutex<HashMap<String, String>>> = Arc::default();
        let server = match spec.standalone {
            Some(addr) => Some(serve(addr, tokens.clone()).await?),
            None => None,
        };
        Ok(Responder {
            tokens,
            server,
            webroot: spec.webroot.clone(),
            written: Vec::new(),
        })
    }

    fn add(&mut self, token: &str, key_auth: &str) -> Result<(), AcmeError> {
        if token.is_empty()
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AcmeError::Challenge(format!(
                "the CA sent an unusable challenge token `{token}`"
            )));
        }
        if let Some(root) = &self.webroot {
            let dir = root.join(".well-known").join("acme-challenge");
            std::fs::create_dir_all(&dir).map_err(|e| {
                AcmeError::Challenge(format!("cannot create {}: {e}", dir.display()))
            })?;
            let path = dir.join(token);
            std::fs::write(&path, key_auth).map_err(|e| {
                AcmeError::Challenge(format!("cannot write {}: {e}", path.display()))
            })?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644));
            self.written.push(path);
        }
        self.tokens
            .lock()
            .expect("token map")
            .insert(token.to_string(), key_auth.to_string());
        Ok(())
    }

    fn stop(&mut self) {
        if let Some(h) = self.server.take() {
            h.abort();
        }
        for p in self.written.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn serve(
    addr: SocketAddr,
    tokens: Arc<Mutex<HashMap<String, String>>>,
) -> Result<tokio::task::JoinHandle<()>, AcmeError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| AcmeError::Challenge(format!("cannot listen on {addr} for http-01: {e}")))?;
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tokens = tokens.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(10), answer(stream, tokens)).await;
            });
        }
    }))
}

/// One HTTP/1.x request: GET /.well-known/acme-challenge/TOKEN → the key authorization.
async fn answer(
    mut stream: tokio::net::TcpStream,
    tokens: Arc<Mutex<HashMap<String, String>>>,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 8192 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let found = target
        .strip_prefix("/.well-known/acme-challenge/")
        .and_then(|t| tokens.lock().expect("token map").get(t).cloned());
    let response = match (method, found) {
        ("GET" | "HEAD", Some(body)) => format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            body.len(),
            if method == "GET" { body.as_str() } else { "" }
        ),
        _ => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_string(),
    };
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

impl Issuer for AcmeIssuer {
    fn id(&self) -> &str {
        &self.spec.name
    }

    fn issue(
        &self,
        csr_der: &[u8],
        req: &IssueRequest,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        self.issue_replacing(csr_der, req, now, None)
    }

    fn renewal_info(&self, leaf: &CertInfo) -> Option<Result<super::RenewalWindow, String>> {
        let id = cert_id(leaf)?;
        let asked = self.block_on(async {
            let fut = async {
                let Some(account) = self.stored_account().await.map_err(|e| e.to_string())? else {
                    return Ok(None);
                };
                match account.renewal_info(&id).await {
                    Ok((info, retry_after)) => Ok(Some(super::RenewalWindow {
                        start: info.suggested_window.start,
                        end: info.suggested_window.end,
                        retry_after,
                        explanation: info.explanation_url,
                    })),
                    Err(instant_acme::Error::Unsupported(_)) => Ok(None),
                    Err(e) => Err(format!("renewal information: {}", chain(&e))),
                }
            };
            match tokio::time::timeout(CONNECT_TIMEOUT * 3, fut).await {
                Ok(r) => r,
                Err(_) => Err("renewal information: no answer in time".to_string()),
            }
        });
        match asked {
            Ok(Ok(Some(w))) => Some(Ok(w)),
            Ok(Ok(None)) => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(e) => Some(Err(e.to_string())),
        }
    }

    fn issue_replacing(
        &self,
        csr_der: &[u8],
        req: &IssueRequest,
        _now: OffsetDateTime,
        old: Option<&CertInfo>,
    ) -> Result<Issued, IssueError> {
        let fail = |error: AcmeError| IssueError::Acme {
            directory: self.spec.directory.clone(),
            name: req.name.clone(),
            error,
        };
        let pem = self
            .block_on(async {
                let deadline = self.issue_deadline();
                match tokio::time::timeout(deadline, self.issue_async(csr_der, req, old)).await {
                    Ok(r) => r,
                    Err(_) => Err(AcmeError::Timeout(deadline)),
                }
            })
            .and_then(|r| r)
            .map_err(fail)?;
        let mut certs = parse_certs(pem.as_bytes(), "the certificate the CA returned")
            .map_err(|e| fail(AcmeError::Certificate(e)))?;
        if certs.is_empty() {
            return Err(fail(AcmeError::Certificate(
                "the CA returned no certificate".into(),
            )));
        }
        let leaf = certs.remove(0);
        Ok(Issued {
            leaf,
            chain: certs.into(),
            clamped: None,
        })
    }

    fn issued(&self, leaf: &CertInfo, chain: &[CertInfo]) -> bool {
        // The caller verified that chain[0] signed the leaf. ACME CAs rotate
        // intermediates, so nothing is pinned: a leaf that came with its issuer counts.
        chain.first().is_some_and(|c| c.subject == leaf.issuer)
    }
}
