//! Making the CA's own certificates: roots, intermediates and the cross certificate
//! that links a new root to the one before it.

use super::CaError;
use crate::config::CaSpec;
use crate::keys::PrivateKey;
use crate::x509::CertInfo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyUsagePurpose, SerialNumber};
use std::time::Duration;
use time::OffsetDateTime;

/// A new CA certificate with its key.
pub struct Made {
    pub cert: CertInfo,
    pub key: PrivateKey,
}

/// How far back a CA certificate's notBefore goes (clock skew between hosts): an hour,
/// or a twentieth of a short lifetime (so that its schedule stays what was asked).
fn ca_skew(lifetime: Duration) -> time::Duration {
    to_offset((lifetime / 20).min(Duration::from_secs(3600)))
}

pub fn random_serial() -> SerialNumber {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).expect("system randomness");
    bytes[0] &= 0x7f; // positive
    bytes[0] |= 0x40; // and never shorter than 127 bits
    SerialNumber::from_slice(&bytes)
}

pub fn to_offset(d: Duration) -> time::Duration {
    time::Duration::seconds(d.as_secs().min(i64::MAX as u64) as i64)
}

/// `… Root`, `… Intermediate` for the first generation, `… Root G2` after.
pub fn common_name(spec: &CaSpec, what: &str, generation: u32) -> String {
    if generation <= 1 {
        format!("{} {what}", spec.common_name)
    } else {
        format!("{} {what} G{generation}", spec.common_name)
    }
}

pub fn ca_params(
    spec: &CaSpec,
    cn: String,
    is_ca: IsCa,
    not_before: OffsetDateTime,
    not_after: OffsetDateTime,
) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name
        .push(DnType::OrganizationName, spec.organization.as_str());
    p.distinguished_name.push(DnType::CommonName, cn);
    p.is_ca = is_ca;
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

fn create(e: impl std::fmt::Display) -> CaError {
    CaError::Create(e.to_string())
}

fn info(der: &[u8]) -> Result<CertInfo, CaError> {
    CertInfo::from_der(der).map_err(CaError::Create)
}

/// The parameters of root `generation` valid from `now`. Roots have no path length
/// limit, so that a successor cross-signed by them fits in a chain.
fn root_params(spec: &CaSpec, generation: u32, now: OffsetDateTime) -> CertificateParams {
    ca_params(
        spec,
        common_name(spec, "Root", generation),
        IsCa::Ca(BasicConstraints::Unconstrained),
        now - ca_skew(spec.root_lifetime),
        now + to_offset(spec.root_lifetime),
    )
}

/// A new self-signed root, and when `previous` (the root it succeeds, with its key) is
/// given, the cross certificate: the same subject and key, signed by the previous root,
/// valid while both are.
pub fn root(
    spec: &CaSpec,
    generation: u32,
    now: OffsetDateTime,
    previous: Option<(&CertInfo, &PrivateKey)>,
) -> Result<(Made, Option<CertInfo>), CaError> {
    let key = PrivateKey::generate(spec.key).map_err(create)?;
    let params = root_params(spec, generation, now);
    let cert = params.self_signed(key.pair()).map_err(create)?;
    let cert = info(cert.der())?;
    let cross = match previous {
        None => None,
        Some((old, old_key)) => {
            let mut p = params.clone();
            p.serial_number = Some(random_serial());
            p.not_after = p.not_after.min(old.not_after);
            let issuer = rcgen::Issuer::from_ca_cert_der(&old.der.clone().into(), old_key.pair())
                .map_err(create)?;
            Some(info(
                p.signed_by(key.pair(), &issuer).map_err(create)?.der(),
            )?)
        }
    };
    Ok((Made { cert, key }, cross))
}

/// A new intermediate signed by `root`, ending with the root at the latest.
pub fn intermediate(
    spec: &CaSpec,
    generation: u32,
    root: &CertInfo,
    root_key: &PrivateKey,
    now: OffsetDateTime,
) -> Result<Made, CaError> {
    if now >= root.not_after {
        return Err(CaError::Create(format!(
            "the root expired {}; a new intermediate cannot be signed by it",
            crate::policy::rfc3339(root.not_after)
        )));
    }
    let key = PrivateKey::generate(spec.key).map_err(create)?;
    let end = (now + to_offset(spec.intermediate_lifetime)).min(root.not_after);
    let params = ca_params(
        spec,
        common_name(spec, "Intermediate", generation),
        IsCa::Ca(BasicConstraints::Constrained(0)),
        (now - ca_skew(spec.intermediate_lifetime)).max(root.not_before),
        end,
    );
    let issuer = rcgen::Issuer::from_ca_cert_der(&root.der.clone().into(), root_key.pair())
        .map_err(create)?;
    let cert = params.signed_by(key.pair(), &issuer).map_err(create)?;
    Ok(Made {
        cert: info(cert.der())?,
        key,
    })
}
