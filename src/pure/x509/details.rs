//! Everything a certificate says, in words: its signature algorithm, public key and every
//! extension (critical flag, known ones decoded, unknown ones by OID and size), for
//! `inspect --long` and `inspect --json`, like `openssl x509 -text` but readable. Bytes
//! in, facts out: no files, no clock, no judgement of trust.

use crate::encoding::{colon_hex, hex, sha256_hex};
use serde::Serialize;
use std::net::IpAddr;
use x509_parser::der_parser::asn1_rs::{Any, FromDer as _};
use x509_parser::der_parser::oid::Oid;
use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
use x509_parser::prelude::*;

/// What `--long` adds to a certificate's summary.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Details {
    /// E.g. `ecdsa-with-SHA256`, `sha256WithRSAEncryption`, `Ed25519`, or the OID.
    pub signature_algorithm: String,
    pub public_key: PublicKey,
    /// In the order the certificate lists them.
    pub extensions: Vec<Extension>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PublicKey {
    /// `RSA`, `EC`, `Ed25519`, `Ed448`, or the algorithm's OID.
    pub algorithm: String,
    /// In bits, when known.
    pub size: Option<usize>,
    /// For EC keys: `P-256`, `P-384`, `P-521`, or the curve's OID.
    pub curve: Option<String>,
    /// For RSA keys.
    pub exponent: Option<u64>,
    /// SHA-256 of the DER SubjectPublicKeyInfo, lower-case hex (what HPKP-style pins and
    /// `openssl pkey -pubin -outform DER | sha256sum` compute).
    pub spki_sha256: String,
}

impl PublicKey {
    /// `EC P-256 (256 bits)`, `RSA 2048 bits, exponent 65537`.
    pub fn summary(&self) -> String {
        let mut s = self.algorithm.clone();
        if let Some(c) = &self.curve {
            s.push(' ');
            s.push_str(c);
        }
        if let Some(n) = self.size {
            s.push_str(&format!(" ({n} bits)"));
        }
        if let Some(e) = self.exponent {
            s.push_str(&format!(", exponent {e}"));
        }
        s
    }
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Extension {
    /// Dotted OID, e.g. `2.5.29.15`.
    pub oid: String,
    /// Readable name, e.g. `key usage`; the OID when unknown.
    pub name: String,
    pub critical: bool,
    /// The decoded value, one entry per line of the text view.
    pub values: Vec<String>,
}

/// Reads the details of one DER certificate.
pub fn details(der: &[u8]) -> Result<Details, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("not a valid X.509 certificate: {e}"))?;
    let extensions = cert
        .extensions()
        .iter()
        .map(|ext| Extension {
            oid: ext.oid.to_id_string(),
            name: extension_name(&ext.oid),
            critical: ext.critical,
            values: extension_values(ext),
        })
        .collect();
    Ok(Details {
        signature_algorithm: algorithm_name(&cert.signature_algorithm.algorithm),
        public_key: public_key(cert.public_key()),
        extensions,
    })
}

/// The public key of a certificate (its SubjectPublicKeyInfo).
pub fn public_key(spki: &SubjectPublicKeyInfo<'_>) -> PublicKey {
    use x509_parser::public_key::PublicKey as Parsed;
    let oid = spki.algorithm.algorithm.to_id_string();
    let mut key = PublicKey {
        algorithm: match oid.as_str() {
            "1.2.840.113549.1.1.1" => "RSA".into(),
            "1.2.840.113549.1.1.10" => "RSA-PSS".into(),
            "1.2.840.10045.2.1" => "EC".into(),
            "1.3.101.112" => "Ed25519".into(),
            "1.3.101.113" => "Ed448".into(),
            _ => oid.clone(),
        },
        size: None,
        curve: None,
        exponent: None,
        spki_sha256: sha256_hex(spki.raw),
    };
    match oid.as_str() {
        "1.3.101.112" => key.size = Some(256),
        "1.3.101.113" => key.size = Some(456),
        _ => match spki.parsed() {
            Ok(Parsed::RSA(rsa)) => {
                key.size = Some(rsa.key_size());
                key.exponent = rsa.try_exponent().ok();
            }
            Ok(Parsed::EC(ec)) => {
                key.curve = spki
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.as_oid().ok())
                    .map(|c| match c.to_id_string().as_str() {
                        "1.2.840.10045.3.1.7" => "P-256".to_string(),
                        "1.3.132.0.34" => "P-384".to_string(),
                        "1.3.132.0.35" => "P-521".to_string(),
                        other => other.to_string(),
                    });
                key.size = match key.curve.as_deref() {
                    Some("P-256") => Some(256),
                    Some("P-384") => Some(384),
                    Some("P-521") => Some(521),
                    _ => Some(ec.key_size()),
                };
            }
            _ => {}
        },
    }
    key
}

/// A signature algorithm by its usual short name.
fn algorithm_name(oid: &Oid<'_>) -> String {
    let id = oid.to_id_string();
    let known = match id.as_str() {
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "RSASSA-PSS",
        "1.3.101.112" => "Ed25519",
        "1.3.101.113" => "Ed448",
        _ => "",
    };
    if !known.is_empty() {
        return known.into();
    }
    x509_parser::objects::oid2sn(oid, x509_parser::objects::oid_registry())
        .map(str::to_string)
        .unwrap_or(id)
}

fn extension_name(oid: &Oid<'_>) -> String {
    let id = oid.to_id_string();
    let known = match id.as_str() {
        "2.5.29.14" => "subject key identifier",
        "2.5.29.35" => "authority key identifier",
        "2.5.29.15" => "key usage",
        "2.5.29.37" => "extended key usage",
        "2.5.29.19" => "basic constraints",
        "2.5.29.17" => "subject alternative name",
        "2.5.29.18" => "issuer alternative name",
        "2.5.29.31" => "CRL distribution points",
        "2.5.29.46" => "freshest CRL",
        "1.3.6.1.5.5.7.1.1" => "authority information access",
        "1.3.6.1.5.5.7.1.11" => "subject information access",
        "2.5.29.32" => "certificate policies",
        "2.5.29.30" => "name constraints",
        "2.5.29.36" => "policy constraints",
        "2.5.29.33" => "policy mappings",
        "2.5.29.54" => "inhibit any policy",
        "2.5.29.9" => "subject directory attributes",
        "1.3.6.1.4.1.11129.2.4.2" => "signed certificate timestamps",
        "1.3.6.1.4.1.11129.2.4.3" => "precertificate poison (CT)",
        "1.3.6.1.5.5.7.1.24" => "TLS feature",
        "2.16.840.1.113730.1.1" => "Netscape certificate type",
        "2.16.840.1.113730.1.13" => "Netscape comment",
        "1.3.6.1.4.1.311.20.2" => "Microsoft certificate template name",
        "1.3.6.1.4.1.311.21.7" => "Microsoft certificate template",
        _ => "",
    };
    if known.is_empty() {
        id
    } else {
        known.into()
    }
}

/// A general name as OpenSSL writes it (`DNS:`, `IP:`, `email:`, `URI:`...).
pub fn general_name(n: &GeneralName<'_>) -> String {
    match n {
        GeneralName::DNSName(d) => format!("DNS:{d}"),
        GeneralName::IPAddress(b) => match b.len() {
            4 => format!(
                "IP:{}",
                IpAddr::from(<[u8; 4]>::try_from(*b).expect("4 bytes"))
            ),
            16 => format!(
                "IP:{}",
                IpAddr::from(<[u8; 16]>::try_from(*b).expect("16 bytes"))
            ),
            // Name constraints: address and mask.
            8 => format!(
                "IP:{}/{}",
                IpAddr::from(<[u8; 4]>::try_from(&b[..4]).expect("4 bytes")),
                IpAddr::from(<[u8; 4]>::try_from(&b[4..]).expect("4 bytes"))
            ),
            32 => format!(
                "IP:{}/{}",
                IpAddr::from(<[u8; 16]>::try_from(&b[..16]).expect("16 bytes")),
                IpAddr::from(<[u8; 16]>::try_from(&b[16..]).expect("16 bytes"))
            ),
            _ => format!("IP:{}", hex(b)),
        },
        GeneralName::RFC822Name(e) => format!("email:{e}"),
        GeneralName::URI(u) => format!("URI:{u}"),
        GeneralName::DirectoryName(dn) => format!("DirName:{dn}"),
        GeneralName::RegisteredID(oid) => format!("RID:{oid}"),
        GeneralName::OtherName(oid, _) => format!("othername:{oid}"),
        other => other.to_string(),
    }
}

fn names(list: &[GeneralName<'_>]) -> Vec<String> {
    list.iter().map(general_name).collect()
}

/// Raw bytes of an extension nothing here decodes: the start of their hex and their size.
fn raw(bytes: &[u8]) -> String {
    const SHOWN: usize = 32;
    if bytes.len() <= SHOWN {
        format!("{} ({} bytes)", colon_hex(bytes), bytes.len())
    } else {
        format!("{}… ({} bytes)", colon_hex(&bytes[..SHOWN]), bytes.len())
    }
}

fn eku_name(id: &str) -> String {
    let name = match id {
        "1.3.6.1.5.5.7.3.1" => "TLS server",
        "1.3.6.1.5.5.7.3.2" => "TLS client",
        "1.3.6.1.5.5.7.3.3" => "code signing",
        "1.3.6.1.5.5.7.3.4" => "e-mail protection",
        "1.3.6.1.5.5.7.3.8" => "time stamping",
        "1.3.6.1.5.5.7.3.9" => "OCSP signing",
        "2.5.29.37.0" => "any",
        _ => return id.to_string(),
    };
    format!("{name} ({id})")
}

fn policy_name(oid: &Oid<'_>) -> String {
    let id = oid.to_id_string();
    let name = match id.as_str() {
        "2.5.29.32.0" => "any policy",
        "2.23.140.1.2.1" => "domain validated (CA/Browser Forum)",
        "2.23.140.1.2.2" => "organization validated (CA/Browser Forum)",
        "2.23.140.1.2.3" => "individual validated (CA/Browser Forum)",
        "2.23.140.1.1" => "extended validation (CA/Browser Forum)",
        _ => return id,
    };
    format!("{name} ({id})")
}

fn access_method(oid: &Oid<'_>) -> String {
    match oid.to_id_string().as_str() {
        "1.3.6.1.5.5.7.48.1" => "OCSP".into(),
        "1.3.6.1.5.5.7.48.2" => "CA issuers".into(),
        "1.3.6.1.5.5.7.48.3" => "time stamping".into(),
        "1.3.6.1.5.5.7.48.5" => "CA repository".into(),
        other => other.into(),
    }
}

/// A policy qualifier: the CPS URI or user notice text when it is a string, else raw.
fn qualifier(id: &Oid<'_>, bytes: &[u8]) -> String {
    let what = match id.to_id_string().as_str() {
        "1.3.6.1.5.5.7.2.1" => "CPS".to_string(),
        "1.3.6.1.5.5.7.2.2" => "user notice".to_string(),
        other => other.to_string(),
    };
    let text = Any::from_der(bytes)
        .ok()
        .and_then(|(_, any)| std::str::from_utf8(any.data).ok().map(str::to_string))
        .filter(|s| !s.is_empty() && s.chars().all(|c| !c.is_control()));
    match text {
        Some(t) => format!("{what}: {t}"),
        None => format!("{what}: {}", raw(bytes)),
    }
}

fn extension_values(ext: &X509Extension<'_>) -> Vec<String> {
    match ext.parsed_extension() {
        ParsedExtension::SubjectKeyIdentifier(k) => vec![colon_hex(k.0)],
        ParsedExtension::AuthorityKeyIdentifier(a) => {
            let mut v = Vec::new();
            if let Some(k) = &a.key_identifier {
                v.push(format!("key id {}", colon_hex(k.0)));
            }
            if let Some(issuer) = &a.authority_cert_issuer {
                v.push(format!("issuer {}", names(issuer).join(", ")));
            }
            if let Some(serial) = a.authority_cert_serial {
                v.push(format!("serial {}", hex(serial)));
            }
            v
        }
        ParsedExtension::KeyUsage(ku) => vec![ku.to_string()],
        ParsedExtension::ExtendedKeyUsage(eku) => {
            let flags = [
                (eku.any, "2.5.29.37.0"),
                (eku.server_auth, "1.3.6.1.5.5.7.3.1"),
                (eku.client_auth, "1.3.6.1.5.5.7.3.2"),
                (eku.code_signing, "1.3.6.1.5.5.7.3.3"),
                (eku.email_protection, "1.3.6.1.5.5.7.3.4"),
                (eku.time_stamping, "1.3.6.1.5.5.7.3.8"),
                (eku.ocsp_signing, "1.3.6.1.5.5.7.3.9"),
            ];
            let known = flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, id)| eku_name(id));
            vec![known
                .chain(eku.other.iter().map(|o| eku_name(&o.to_id_string())))
                .collect::<Vec<_>>()
                .join(", ")]
        }
        ParsedExtension::BasicConstraints(bc) => vec![match (bc.ca, bc.path_len_constraint) {
            (true, Some(n)) => format!("CA: yes, path length {n}"),
            (true, None) => "CA: yes".into(),
            (false, _) => "CA: no".into(),
        }],
        ParsedExtension::SubjectAlternativeName(san) => vec![names(&san.general_names).join(", ")],
        ParsedExtension::IssuerAlternativeName(ian) => vec![names(&ian.general_names).join(", ")],
        ParsedExtension::CRLDistributionPoints(points) => points
            .points
            .iter()
            .map(|p| {
                let mut s = match &p.distribution_point {
                    Some(DistributionPointName::FullName(n)) => names(n).join(", "),
                    Some(DistributionPointName::NameRelativeToCRLIssuer(rdn)) => {
                        format!("relative name {rdn:?}")
                    }
                    None => "(no name)".into(),
                };
                if let Some(r) = &p.reasons {
                    s.push_str(&format!(" (reasons: {r})"));
                }
                if let Some(i) = &p.crl_issuer {
                    s.push_str(&format!(" (CRL issuer: {})", names(i).join(", ")));
                }
                s
            })
            .collect(),
        ParsedExtension::AuthorityInfoAccess(aia) => access_descriptions(&aia.accessdescs),
        ParsedExtension::SubjectInfoAccess(sia) => access_descriptions(&sia.accessdescs),
        ParsedExtension::CertificatePolicies(policies) => policies
            .iter()
            .map(|p| {
                let mut s = policy_name(&p.policy_id);
                for q in p.policy_qualifiers.iter().flatten() {
                    s.push_str(&format!(
                        "; {}",
                        qualifier(&q.policy_qualifier_id, q.qualifier)
                    ));
                }
                s
            })
            .collect(),
        ParsedExtension::NameConstraints(nc) => {
            let mut v = Vec::new();
            for (what, subtrees) in [
                ("permitted", &nc.permitted_subtrees),
                ("excluded", &nc.excluded_subtrees),
            ] {
                if let Some(trees) = subtrees {
                    let list: Vec<String> = trees.iter().map(|t| general_name(&t.base)).collect();
                    v.push(format!("{what}: {}", list.join(", ")));
                }
            }
            v
        }
        ParsedExtension::PolicyConstraints(pc) => {
            let mut v = Vec::new();
            if let Some(n) = pc.require_explicit_policy {
                v.push(format!("require explicit policy after {n}"));
            }
            if let Some(n) = pc.inhibit_policy_mapping {
                v.push(format!("inhibit policy mapping after {n}"));
            }
            v
        }
        ParsedExtension::PolicyMappings(pm) => pm
            .mappings
            .iter()
            .map(|m| format!("{} = {}", m.issuer_domain_policy, m.subject_domain_policy))
            .collect(),
        ParsedExtension::InhibitAnyPolicy(i) => vec![format!("after {}", i.skip_certs)],
        ParsedExtension::NSCertType(t) => vec![t.to_string()],
        ParsedExtension::NsCertComment(c) => vec![c.to_string()],
        ParsedExtension::SCT(scts) => scts
            .iter()
            .map(|s| {
                let when = ::time::OffsetDateTime::from_unix_timestamp_nanos(
                    i128::from(s.timestamp) * 1_000_000,
                )
                .ok()
                .and_then(|t| {
                    t.format(&::time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_else(|| s.timestamp.to_string());
                format!("log {} at {when}", colon_hex(s.id.key_id))
            })
            .collect(),
        ParsedExtension::ParseError { error } => {
            vec![format!("cannot be decoded ({error}): {}", raw(ext.value))]
        }
        _ => vec![raw(ext.value)],
    }
}

/// Each access description (AIA, SIA) as "method: location".
fn access_descriptions(descs: &[x509_parser::extensions::AccessDescription]) -> Vec<String> {
    descs
        .iter()
        .map(|d| {
            format!(
                "{}: {}",
                access_method(&d.access_method),
                general_name(&d.access_location)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf() -> Vec<u8> {
        let mut p = rcgen::CertificateParams::new(vec![
            "www.example.internal".to_string(),
            "10.0.0.5".to_string(),
        ])
        .unwrap();
        p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p.crl_distribution_points = vec![rcgen::CrlDistributionPoint {
            uris: vec!["http://crl.example.internal/int.crl".into()],
        }];
        p.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
            &[1, 3, 6, 1, 4, 1, 99999, 1],
            vec![0x04, 0x02, 0xab, 0xcd],
        )];
        p.not_before = rcgen::date_time_ymd(2025, 1, 1);
        p.not_after = rcgen::date_time_ymd(2025, 4, 1);
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        p.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn every_extension_is_named_and_decoded_or_shown_raw() {
        let d = details(&leaf()).unwrap();
        assert_eq!(d.signature_algorithm, "ecdsa-with-SHA256");
        assert_eq!(d.public_key.algorithm, "EC");
        assert_eq!(d.public_key.curve.as_deref(), Some("P-256"));
        assert_eq!(d.public_key.size, Some(256));
        assert_eq!(d.public_key.summary(), "EC P-256 (256 bits)");
        let by_name = |n: &str| {
            d.extensions
                .iter()
                .find(|e| e.name == n)
                .unwrap_or_else(|| panic!("no {n} in {d:#?}"))
        };
        assert_eq!(by_name("key usage").values, ["Digital Signature"]);
        assert!(by_name("key usage").critical);
        assert_eq!(
            by_name("extended key usage").values,
            ["TLS server (1.3.6.1.5.5.7.3.1)"]
        );
        assert_eq!(
            by_name("subject alternative name").values,
            ["DNS:www.example.internal, IP:10.0.0.5"]
        );
        assert_eq!(
            by_name("CRL distribution points").values,
            ["URI:http://crl.example.internal/int.crl"]
        );
        let unknown = by_name("1.3.6.1.4.1.99999.1");
        assert!(!unknown.critical);
        assert_eq!(unknown.values, ["04:02:AB:CD (4 bytes)"]);
    }
}
