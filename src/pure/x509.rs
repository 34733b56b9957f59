//! Reading certificates: PEM bundles into facts (names, validity, serial, key, usage),
//! chain order and signature checks. Bytes in, facts out: no files, no clock.

pub mod details;

use crate::encoding::{pem_encode, serial_hex, sha256_hex};
use crate::keys::{key_type_of_spki, KeyInfo, PrivateKey};
use crate::model::{KeyType, San, Usage};
use ::time::OffsetDateTime;
use std::net::IpAddr;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

/// What certkeeper needs to know about one certificate.
#[derive(Clone, Debug)]
pub struct CertInfo {
    pub der: Vec<u8>,
    pub subject: String,
    pub issuer: String,
    pub common_name: Option<String>,
    pub sans: Vec<San>,
    /// Names that are neither DNS names nor IP addresses (e-mail, URI...), as text.
    pub other_names: Vec<String>,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// Lower-case hex, no separators, leading zeros dropped.
    pub serial: String,
    pub is_ca: bool,
    pub path_len: Option<u32>,
    /// None when the certificate has no EKU for TLS server or client.
    pub usage: Option<Usage>,
    pub key_type: Option<KeyType>,
    pub spki: Vec<u8>,
    pub public_key_raw: Vec<u8>,
    /// SHA-256 of the DER, lower-case hex.
    pub fingerprint: String,
    pub subject_key_id: Option<Vec<u8>>,
    pub authority_key_id: Option<Vec<u8>>,
}

impl CertInfo {
    pub fn from_der(der: &[u8]) -> Result<CertInfo, String> {
        let (rest, cert) = X509Certificate::from_der(der)
            .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        let mut sans = Vec::new();
        let mut other_names = Vec::new();
        if let Ok(Some(ext)) = cert.subject_alternative_name() {
            for name in &ext.value.general_names {
                match name {
                    GeneralName::DNSName(d) => sans.push(San::Dns(d.to_ascii_lowercase())),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => sans.push(San::Ip(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap()))),
                        16 => sans.push(San::Ip(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap()))),
                        _ => other_names.push(format!("IP:{b:02x?}")),
                    },
                    other => other_names.push(other.to_string()),
                }
            }
        }
        let (usage, eku_present) = match cert.extended_key_usage() {
            Ok(Some(eku)) => (
                Usage::from_flags(eku.value.server_auth, eku.value.client_auth),
                true,
            ),
            _ => (None, false),
        };
        let _ = eku_present;
        let bc = cert.basic_constraints().ok().flatten();
        let common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut ski = None;
        let mut aki = None;
        for ext in cert.extensions() {
            match ext.parsed_extension() {
                ParsedExtension::SubjectKeyIdentifier(k) => ski = Some(k.0.to_vec()),
                ParsedExtension::AuthorityKeyIdentifier(a) => {
                    aki = a.key_identifier.as_ref().map(|k| k.0.to_vec())
                }
                _ => {}
            }
        }
        let spki = cert.public_key().raw.to_vec();
        Ok(CertInfo {
            der: der.to_vec(),
            subject: cert.subject().to_string(),
            issuer: cert.issuer().to_string(),
            common_name,
            sans,
            other_names,
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            serial: serial_hex(cert.raw_serial()),
            is_ca: bc.as_ref().is_some_and(|b| b.value.ca),
            path_len: bc.and_then(|b| b.value.path_len_constraint),
            usage,
            key_type: key_type_of_spki(&spki).ok(),
            public_key_raw: cert.public_key().subject_public_key.data.to_vec(),
            spki,
            fingerprint: sha256_hex(der),
            subject_key_id: ski,
            authority_key_id: aki,
        })
    }

    /// Whether `issuer`'s key made this certificate's signature.
    pub fn signed_by(&self, issuer: &CertInfo) -> bool {
        let (Ok((_, me)), Ok((_, them))) = (
            X509Certificate::from_der(&self.der),
            X509Certificate::from_der(&issuer.der),
        ) else {
            return false;
        };
        me.verify_signature(Some(them.public_key())).is_ok()
    }

    pub fn to_pem(&self) -> String {
        pem_encode("CERTIFICATE", &self.der)
    }

    pub fn matches_key(&self, key: &PrivateKey) -> bool {
        self.public_key_raw == key.public_key_raw()
    }

    pub fn matches(&self, key: &KeyInfo) -> bool {
        self.public_key_raw == key.public_key_raw
    }

    pub fn is_self_signed(&self) -> bool {
        self.subject == self.issuer && self.signed_by(self)
    }
}

/// One block of a PEM file.
#[derive(Debug)]
pub enum PemItem {
    Cert(Box<CertInfo>),
    Key(KeyInfo),
    Other(String),
}

/// Parses every PEM block in `bytes`. A block that does not decode is an error: a file
/// that is half a certificate is damaged, not empty.
pub fn parse_pem(bytes: &[u8]) -> Result<Vec<PemItem>, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not a PEM file (not text)".to_string())?;
    let begins = text.matches("-----BEGIN ").count();
    let blocks = ::pem::parse_many(text).map_err(|e| format!("damaged PEM: {e}"))?;
    if blocks.len() != begins {
        return Err(format!(
            "damaged PEM: {begins} BEGIN lines but {} complete blocks",
            blocks.len()
        ));
    }
    let mut out = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        match b.tag() {
            "CERTIFICATE" => out.push(PemItem::Cert(Box::new(
                CertInfo::from_der(b.contents()).map_err(|e| format!("block {}: {e}", i + 1))?,
            ))),
            "PRIVATE KEY" | "EC PRIVATE KEY" | "RSA PRIVATE KEY" => {
                let key = KeyInfo::from_der(b.tag(), b.contents())
                    .map_err(|e| format!("block {}: {e}", i + 1))?;
                out.push(PemItem::Key(key));
            }
            other => out.push(PemItem::Other(other.to_string())),
        }
    }
    Ok(out)
}

/// Certificates only, in file order; any key block is an error (`what` names the file's role).
pub fn parse_certs(bytes: &[u8], what: &str) -> Result<Vec<CertInfo>, String> {
    let mut certs = Vec::new();
    for item in parse_pem(bytes)? {
        match item {
            PemItem::Cert(c) => certs.push(*c),
            PemItem::Key(_) => return Err(format!("the {what} file holds a private key")),
            PemItem::Other(label) => {
                return Err(format!(
                    "the {what} file holds a `{}` block",
                    crate::model::excerpt(&label)
                ))
            }
        }
    }
    if certs.is_empty() {
        return Err(format!("the {what} file holds no certificate"));
    }
    Ok(certs)
}

/// Checks that every certificate is signed by the one after it (leaf first).
pub fn check_chain_order(certs: &[CertInfo]) -> Result<(), String> {
    for (i, pair) in certs.windows(2).enumerate() {
        if !pair[0].signed_by(&pair[1]) {
            return Err(format!(
                "certificate {} ({}) is not signed by certificate {} ({}): the chain is out of order or incomplete",
                i + 1,
                pair[0].subject,
                i + 2,
                pair[1].subject
            ));
        }
    }
    Ok(())
}
