//! The built-in internal CA (root + intermediate). It enforces its own policy: it takes
//! only the public key from a CSR and sets names, usages, serial and validity itself.

use super::{sans_for_rcgen, IssueError, IssueRequest, Issued, Issuer};
use crate::config::CaSpec;
use crate::fsread::{read_own as read_regular, read_own_text as read_text, ReadError, PEM_MAX};
use crate::fsutil::{ensure_dir, sync_dir, write_atomic, FileSpec, FsError};
use crate::keys::PrivateKey;
use crate::model::{KeyType, Usage};
use crate::x509::{parse_certs, CertInfo};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyUsagePurpose, SanType, SerialNumber,
};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use time::OffsetDateTime;
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(
        "no CA in {dir} yet; run `certkeeper ca init` (or `certkeeper renew`, which creates it)"
    )]
    Missing { dir: PathBuf },
    #[error("a CA already exists in {dir}; certkeeper never overwrites a CA")]
    Exists { dir: PathBuf },
    #[error("the CA in {dir} is incomplete ({missing} missing); restore it from a backup, or move the directory away to create a new CA")]
    Incomplete { dir: PathBuf, missing: String },
    #[error("{path}: mode {mode:04o} lets other users read the CA key; run `chmod 600 {path}`")]
    KeyTooOpen { path: PathBuf, mode: u32 },
    #[error("{path}: the CA key is owned by uid {uid}, not by the user certkeeper runs as (uid {me}), so that user may have read it; if that is expected, `chown {me} {path}`, else replace the CA")]
    KeyNotOurs { path: PathBuf, uid: u32, me: u32 },
    #[error("{path}: {reason}")]
    Damaged { path: PathBuf, reason: String },
    #[error("cannot create the CA: {0}")]
    Create(String),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{0}; the root key is needed to sign the root CRL")]
    RootKeyForCrl(ReadError),
}

/// The internal CA as loaded from `state_dir/ca`.
pub struct InternalCa {
    pub dir: PathBuf,
    pub root: CertInfo,
    pub intermediate: CertInfo,
    intermediate_key: PrivateKey,
}

const ROOT_CRT: &str = "root.crt";
const ROOT_KEY: &str = "root.key";
const INT_CRT: &str = "intermediate.crt";
const INT_KEY: &str = "intermediate.key";

/// How far back a new certificate's notBefore goes, to absorb clock skew between hosts.
/// A tenth of the lifetime at most, so short demo lifetimes stay mostly in the future.
pub fn backdate_for(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(300))
}

fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x40; // and never shorter than 127 bits
    SerialNumber::from_slice(&bytes)
}

fn ca_params(
    spec: &CaSpec,
    cn: String,
    path_len: u8,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, spec.organization.as_str());
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(path_len));
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(random_serial());
    p.use_authority_key_identifier_extension = true;
    p.name_constraints = spec.constraints.to_rcgen();
    p
}

fn to_offset(d: Duration) -> time::Duration {
    time::Duration::seconds(d.as_secs() as i64)
}

impl InternalCa {
    pub fn exists(dir: &Path) -> bool {
        dir.join(INT_CRT).exists() || dir.join(ROOT_CRT).exists()
    }

    /// Creates root and intermediate in `dir`. The keys and certificates are written to
    /// a temporary directory that is renamed into place, so a crash leaves no half CA.
    pub fn init(spec: &CaSpec, dir: &Path, now: OffsetDateTime) -> Result<InternalCa, CaError> {
        if dir.exists()
            && fs::read_dir(dir)
                .map(|mut d| d.next().is_some())
                .unwrap_or(true)
        {
            return Err(CaError::Exists {
                dir: dir.to_path_buf(),
            });
        }
        let parent = dir.parent().unwrap_or(Path::new("/"));
        ensure_dir(parent, 0o700)?;
        let err = |e: rcgen::Error| CaError::Create(e.to_string());
        let root_key =
            PrivateKey::generate(spec.key).map_err(|e| CaError::Create(e.to_string()))?;
        let int_key = PrivateKey::generate(spec.key).map_err(|e| CaError::Create(e.to_string()))?;
        let skew = time::Duration::hours(1);
        let root_end = now + to_offset(spec.root_lifetime);
        let root_params = ca_params(
            spec,
            format!("{} Root", spec.common_name),
            1,
            now - skew,
            root_end,
        );
        let root_cert = root_params.self_signed(root_key.pair()).map_err(err)?;
        let root_issuer = rcgen::Issuer::new(root_params, root_key.pair());
        let int_end = (now + to_offset(spec.intermediate_lifetime)).min(root_end);
        let int_params = ca_params(
            spec,
            format!("{} Intermediate", spec.common_name),
            0,
            now - skew,
            int_end,
        );
        let int_cert = int_params
            .signed_by(int_key.pair(), &root_issuer)
            .map_err(err)?;

        let tmp = parent.join(format!(".ca-init-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        ensure_dir(&tmp, 0o700)?;
        for (name, bytes, mode) in [
            (ROOT_KEY, root_key.pem().to_string(), 0o600),
            (INT_KEY, int_key.pem().to_string(), 0o600),
            (ROOT_CRT, root_cert.pem(), 0o644),
            (INT_CRT, int_cert.pem(), 0o644),
        ] {
            write_atomic(&FileSpec {
                path: tmp.join(name),
                bytes: Zeroizing::new(bytes.into_bytes()),
                mode,
                uid: None,
                gid: None,
                follow_symlinks: false,
            })?;
        }
        if dir.exists() {
            fs::remove_dir(dir).map_err(|source| FsError::Io {
                path: dir.to_path_buf(),
                action: "cannot replace empty directory",
                source,
            })?;
        }
        fs::rename(&tmp, dir).map_err(|source| FsError::Io {
            path: dir.to_path_buf(),
            action: "cannot move the new CA into place",
            source,
        })?;
        sync_dir(parent)?;
        InternalCa::load(dir)
    }

    /// Loads the CA, refusing keys that other users could read.
    pub fn load(dir: &Path) -> Result<InternalCa, CaError> {
        let present: Vec<bool> = [ROOT_CRT, INT_CRT, INT_KEY]
            .iter()
            .map(|f| dir.join(f).exists())
            .collect();
        if present.iter().all(|p| !p) {
            return Err(CaError::Missing {
                dir: dir.to_path_buf(),
            });
        }
        if present.iter().any(|p| !p) {
            let missing = [ROOT_CRT, INT_CRT, INT_KEY]
                .iter()
                .zip(&present)
                .filter(|(_, p)| !**p)
                .map(|(f, _)| *f)
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CaError::Incomplete {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        let read_cert = |name: &str| -> Result<CertInfo, CaError> {
            let path = dir.join(name);
            let bytes = read_regular(&path, PEM_MAX)?;
            let mut certs =
                parse_certs(&bytes, "CA certificate").map_err(|reason| CaError::Damaged {
                    path: path.clone(),
                    reason,
                })?;
            Ok(certs.remove(0))
        };
        let root = read_cert(ROOT_CRT)?;
        let intermediate = read_cert(INT_CRT)?;
        for key in [ROOT_KEY, INT_KEY] {
            let path = dir.join(key);
            if let Ok(meta) = fs::metadata(&path) {
                if meta.mode() & 0o077 != 0 {
                    return Err(CaError::KeyTooOpen {
                        path,
                        mode: meta.mode() & 0o7777,
                    });
                }
                let me = nix::unistd::geteuid().as_raw();
                if meta.uid() != me {
                    return Err(CaError::KeyNotOurs {
                        path,
                        uid: meta.uid(),
                        me,
                    });
                }
            }
        }
        let key_path = dir.join(INT_KEY);
        let key_pem = read_text(&key_path, PEM_MAX)?;
        let intermediate_key = PrivateKey::from_pem(&key_pem).map_err(|e| CaError::Damaged {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        if !intermediate.matches_key(&intermediate_key) {
            return Err(CaError::Damaged {
                path: key_path,
                reason: format!(
                    "this key does not belong to {}",
                    dir.join(INT_CRT).display()
                ),
            });
        }
        if !intermediate.signed_by(&root) {
            return Err(CaError::Damaged {
                path: dir.join(INT_CRT),
                reason: format!("not signed by {}", dir.join(ROOT_CRT).display()),
            });
        }
        Ok(InternalCa {
            dir: dir.to_path_buf(),
            root,
            intermediate,
            intermediate_key,
        })
    }

    /// Loads the CA, creating it first when the directory holds none.
    pub fn load_or_init(
        spec: &CaSpec,
        dir: &Path,
        now: OffsetDateTime,
    ) -> Result<(InternalCa, bool), CaError> {
        match InternalCa::load(dir) {
            Ok(ca) => Ok((ca, false)),
            Err(CaError::Missing { .. }) => InternalCa::init(spec, dir, now).map(|ca| (ca, true)),
            Err(e) => Err(e),
        }
    }

    /// Signs a CRL with the intermediate key (leaves) or, when `root` and the root key is
    /// on this host, with the root key (intermediates).
    pub fn sign_crl(
        &self,
        root: bool,
        revoked: &[(String, OffsetDateTime, Option<rcgen::RevocationReason>)],
        this_update: OffsetDateTime,
        next_update: OffsetDateTime,
        number: u64,
    ) -> Result<String, CaError> {
        let root_key;
        let (cert, key) = if root {
            let path = self.dir.join(ROOT_KEY);
            let pem = read_text(&path, PEM_MAX).map_err(CaError::RootKeyForCrl)?;
            root_key = PrivateKey::from_pem(&pem).map_err(|e| CaError::Damaged {
                path,
                reason: e.to_string(),
            })?;
            (&self.root, &root_key)
        } else {
            (&self.intermediate, &self.intermediate_key)
        };
        let issuer = rcgen::Issuer::from_ca_cert_der(&cert.der.clone().into(), key.pair())
            .map_err(|e| CaError::Create(e.to_string()))?;
        let mut revoked_certs = Vec::new();
        for (serial, time, reason) in revoked {
            let serial = if serial.len() % 2 == 1 {
                format!("0{serial}")
            } else {
                serial.clone()
            };
            let bytes = (0..serial.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&serial[i..(i + 2).min(serial.len())], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| CaError::Create(format!("bad serial {serial}")))?;
            revoked_certs.push(rcgen::RevokedCertParams {
                serial_number: SerialNumber::from_slice(&bytes),
                revocation_time: *time,
                reason_code: *reason,
                invalidity_date: None,
            });
        }
        let params = rcgen::CertificateRevocationListParams {
            this_update,
            next_update,
            crl_number: SerialNumber::from_slice(&number.to_be_bytes()),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: rcgen::KeyIdMethod::Sha256,
        };
        let crl = params
            .signed_by(&issuer)
            .map_err(|e| CaError::Create(format!("cannot sign the CRL: {e}")))?;
        Ok(crate::encoding::pem_encode("X509 CRL", crl.der()))
    }

    pub fn root_pem(&self) -> String {
        self.root.to_pem()
    }

    pub fn has_root_key(&self) -> bool {
        self.dir.join(ROOT_KEY).exists()
    }

    pub fn key_type(&self) -> Option<KeyType> {
        self.intermediate.key_type
    }
}

impl Issuer for InternalCa {
    fn id(&self) -> &str {
        crate::model::IssuerRef::INTERNAL
    }

    fn issue(
        &self,
        csr_der: &[u8],
        req: &IssueRequest,
        now: OffsetDateTime,
    ) -> Result<Issued, IssueError> {
        if now >= self.intermediate.not_after {
            return Err(IssueError::CaExpired(self.intermediate.not_after));
        }
        let csr = CertificateSigningRequestParams::from_der(&csr_der.to_vec().into())
            .map_err(|e| IssueError::BadCsr(e.to_string()))?;
        // The CSR proves possession of the key; its names must be the ones requested.
        let mut asked: Vec<String> = csr
            .params
            .subject_alt_names
            .iter()
            .map(|s| match s {
                SanType::DnsName(d) => d.as_str().to_ascii_lowercase(),
                SanType::IpAddress(ip) => ip.to_string(),
                other => format!("{other:?}"),
            })
            .collect();
        let mut want: Vec<String> = req.sans.iter().map(|s| s.to_string()).collect();
        asked.sort();
        want.sort();
        if asked != want {
            return Err(IssueError::BadCsr(format!(
                "the CSR asks for {asked:?}, the request for {want:?}"
            )));
        }
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name
            .push(DnType::CommonName, req.common_name.as_str());
        p.subject_alt_names = sans_for_rcgen(&req.sans)?;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        if matches!(csr.public_key.algorithm(), a if *a == rcgen::PKCS_RSA_SHA256 || *a == rcgen::PKCS_RSA_SHA384 || *a == rcgen::PKCS_RSA_SHA512)
        {
            // TLS 1.2 RSA key exchange needs keyEncipherment on RSA server keys.
            p.key_usages.push(KeyUsagePurpose::KeyEncipherment);
        }
        p.extended_key_usages = match req.usage {
            Usage::Server => vec![ExtendedKeyUsagePurpose::ServerAuth],
            Usage::Client => vec![ExtendedKeyUsagePurpose::ClientAuth],
            Usage::ServerClient => vec![
                ExtendedKeyUsagePurpose::ServerAuth,
                ExtendedKeyUsagePurpose::ClientAuth,
            ],
        };
        p.serial_number = Some(random_serial());
        p.not_before = now - to_offset(backdate_for(req.lifetime));
        // A leaf never outlives the CA that signs it.
        let wanted = now + to_offset(req.lifetime);
        p.not_after = wanted.min(self.intermediate.not_after);
        p.use_authority_key_identifier_extension = true;
        let issuer = rcgen::Issuer::from_ca_cert_der(
            &self.intermediate.der.clone().into(),
            self.intermediate_key.pair(),
        )
        .map_err(|e| IssueError::Sign(e.to_string()))?;
        let cert = p
            .signed_by(&csr.public_key, &issuer)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        let leaf = CertInfo::from_der(cert.der()).map_err(IssueError::Sign)?;
        Ok(Issued {
            leaf,
            chain: vec![self.intermediate.clone()],
            clamped: (wanted > self.intermediate.not_after).then_some(wanted),
        })
    }

    fn issued(&self, _leaf: &CertInfo, chain: &[CertInfo]) -> bool {
        // The leaf's signature by chain[0] was verified with the chain order; the
        // intermediate being ours byte for byte completes the proof.
        chain
            .first()
            .is_some_and(|c| c.der == self.intermediate.der)
    }
}
