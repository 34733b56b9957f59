//! What a strict client needs from what a server sends (pure): the certificates after
//! the leaf must be the chain installed with it, complete and in order (a server that
//! sends the leaf alone works with browsers that cache intermediates and breaks curl,
//! Go, Java and every fresh client); and the whole must be what a client accepts: a
//! chain to the roots it trusts, the name it asked for, dates around `now`, a key and
//! signatures common clients take. Bytes and `now` in, typed problems out.

use ::time::OffsetDateTime;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, RootCertStore};
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use x509_parser::prelude::*;

/// How the certificates a server sends after the leaf differ from the installed chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChainProblem {
    /// Fewer certificates than the chain (the leaf alone, most often).
    Missing { sent: usize, expected: usize },
    /// The chain's certificates in another order.
    Order,
    /// The chain and more (a root, an old intermediate).
    Extra { sent: usize, expected: usize },
    /// Certificates that are not the chain installed with the leaf.
    Foreign,
}

/// Compares what the server sent after the leaf with the installed chain (DER each).
pub fn judge(sent: &[Vec<u8>], expected: &[Vec<u8>]) -> Option<ChainProblem> {
    if sent == expected {
        return None;
    }
    let all_known = sent.iter().all(|c| expected.contains(c));
    let all_sent = expected.iter().all(|c| sent.contains(c));
    Some(match (all_known, all_sent) {
        (true, true) if sent.len() == expected.len() => ChainProblem::Order,
        (true, _) if sent.len() < expected.len() => ChainProblem::Missing {
            sent: sent.len(),
            expected: expected.len(),
        },
        (_, true) if sent.starts_with(expected) => ChainProblem::Extra {
            sent: sent.len(),
            expected: expected.len(),
        },
        (_, true) => ChainProblem::Order,
        _ => ChainProblem::Foreign,
    })
}

fn certificates(n: usize) -> String {
    match n {
        0 => "no certificate".into(),
        1 => "1 certificate".into(),
        n => format!("{n} certificates"),
    }
}

impl ChainProblem {
    /// What the server does, after "the server" (or its kind), without the fix.
    fn what(&self) -> String {
        match self {
            ChainProblem::Missing { sent, expected } => format!(
                "sends {} after the leaf where the chain has {}: clients that do not already hold the intermediate cannot verify it",
                certificates(*sent),
                certificates(*expected)
            ),
            ChainProblem::Order => "sends the chain's certificates in another order: each must be followed by the one that signed it".into(),
            ChainProblem::Extra { sent, expected } => format!(
                "sends {} after the leaf where the chain has {}: the rest (a root, an old intermediate) only costs handshake bytes and confuses some clients",
                certificates(*sent),
                certificates(*expected)
            ),
            ChainProblem::Foreign => "sends intermediates that are not the chain installed with this certificate: it reads its chain from another file".into(),
        }
    }
}

impl fmt::Display for ChainProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fix = match self {
            ChainProblem::Missing { .. } => "point the server at the file that holds leaf and chain (the nginx layout's `cert`, the separate layout's `fullchain`, or the apache layout's `chain` as SSLCertificateChainFile)",
            _ => "point the server at certkeeper's file, which has the chain in order",
        };
        write!(f, "the server {}; {fix}", self.what())
    }
}

/// The roots a client of this certificate trusts: their DER and where they come from,
/// as messages name it ("the internal CA's roots", "verify.roots /etc/x.pem").
#[derive(Debug, Default)]
pub struct Anchors {
    pub certs: Vec<Vec<u8>>,
    pub source: String,
    /// The verifier built from `certs`, once (None: no usable root).
    verifier: std::sync::OnceLock<Option<Arc<WebPkiServerVerifier>>>,
}

impl Anchors {
    pub fn new(certs: Vec<Vec<u8>>, source: String) -> Anchors {
        Anchors {
            certs,
            source,
            verifier: Default::default(),
        }
    }

    /// A rustls/webpki verifier trusting these roots, built at the first use.
    fn verifier(&self) -> Option<&Arc<WebPkiServerVerifier>> {
        self.verifier
            .get_or_init(|| {
                let mut roots = RootCertStore::empty();
                for c in &self.certs {
                    let _ = roots.add(CertificateDer::from(c.clone()));
                }
                if roots.is_empty() {
                    return None;
                }
                let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .ok()
            })
            .as_ref()
    }
}

/// Something a strict client refuses in what a server sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The certificates after the leaf are not the installed chain.
    Chain(ChainProblem),
    /// The same, said for the server that sends it: its kind (`nginx`, `Apache`), and
    /// how to fix its settings ("point it at `/etc/nginx/tls/www.crt` (leaf + chain)").
    ChainAt {
        problem: ChainProblem,
        server: String,
        fix: String,
    },
    /// The served leaf has expired.
    Expired { not_after: OffsetDateTime },
    /// The served leaf is not valid yet.
    NotYetValid { not_before: OffsetDateTime },
    /// The served leaf is not for the name the client asked for (SNI).
    Name {
        server_name: String,
        names: Vec<String>,
    },
    /// What was sent does not lead to the roots clients trust.
    Untrusted { source: String, why: String },
    /// A key or signature that common clients refuse.
    Weak(String),
    /// `verify.client_cert` is set, and the server did not ask for a client certificate.
    NotMutual { client: String },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Chain(c) => c.fmt(f),
            Problem::ChainAt {
                problem: ChainProblem::Missing { sent, expected },
                server,
                fix,
            } => {
                let (directive, more) = if server == "nginx" {
                    ("`ssl_certificate` points at a file with", String::new())
                } else {
                    (
                        "`SSLCertificateFile` holds",
                        format!(
                            " and no `SSLCertificateChainFile` adds the {}",
                            if *expected == 1 {
                                "intermediate".to_string()
                            } else {
                                format!("{expected} intermediates")
                            }
                        ),
                    )
                };
                write!(
                    f,
                    "{server} sends the leaf without {}: {directive} {}{more}, expected leaf + {}; {fix}",
                    if *sent == 0 {
                        "its intermediate"
                    } else {
                        "all of its intermediates"
                    },
                    certificates(sent + 1),
                    if *expected == 1 {
                        "1 intermediate".to_string()
                    } else {
                        format!("{expected} intermediates")
                    },
                )
            }
            Problem::ChainAt {
                problem,
                server,
                fix,
            } => write!(f, "{server} {}; {fix}", problem.what()),
            Problem::Expired { not_after } => write!(
                f,
                "the served certificate expired on {}: every client refuses it",
                date(*not_after)
            ),
            Problem::NotYetValid { not_before } => write!(
                f,
                "the served certificate is valid only from {}: clients refuse it until then (is this host's clock or the server's behind?)",
                date(*not_before)
            ),
            Problem::Name { server_name, names } => write!(
                f,
                "the served certificate is not for `{server_name}` (it names {}): clients asking for `{server_name}` refuse it; the server answers this name from another vhost (its default one?): add `{server_name}` to the vhost's server_name / ServerName / ServerAlias",
                if names.is_empty() {
                    "nothing".to_string()
                } else {
                    names.join(", ")
                }
            ),
            Problem::Untrusted { source, why } => write!(
                f,
                "the served chain does not lead to {source}: {why}; clients that trust only those roots refuse it"
            ),
            Problem::Weak(what) => f.write_str(what),
            Problem::NotMutual { client } => write!(
                f,
                "the server did not ask for a client certificate although verify.client_cert is `{client}`: mutual TLS is off there; turn it on (nginx ssl_verify_client on, Apache SSLVerifyClient require)"
            ),
        }
    }
}

fn date(t: OffsetDateTime) -> String {
    t.format(&::time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

/// What a strict client asking for `server_name` at `now` and trusting `anchors`
/// refuses in `served` (DER, leaf first, in the order sent). Empty: a client accepts it.
/// The chain's shape (missing, order, extra) is [`judge`]'s, against the installed chain.
pub fn as_a_client(
    served: &[Vec<u8>],
    server_name: &str,
    anchors: &Anchors,
    now: OffsetDateTime,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let Some(leaf_der) = served.first() else {
        return problems;
    };
    let Ok((_, leaf)) = X509Certificate::from_der(leaf_der) else {
        problems.push(Problem::Untrusted {
            source: anchors.source.clone(),
            why: "the leaf is not a certificate a client can read".into(),
        });
        return problems;
    };
    let not_after = leaf.validity().not_after.to_datetime();
    let not_before = leaf.validity().not_before.to_datetime();
    let expired = now > not_after;
    if expired {
        problems.push(Problem::Expired { not_after });
    } else if now < not_before {
        problems.push(Problem::NotYetValid { not_before });
    }
    let names = leaf_names(&leaf);
    if !covers(&names, server_name) {
        problems.push(Problem::Name {
            server_name: server_name.into(),
            names: names.clone(),
        });
    }
    if let Some(why) = untrusted(served, anchors, now) {
        // The leaf's own dates are said above; a chain that fails only on them (or on
        // the name, said above too) adds nothing.
        if !(why.dates && (expired || now < not_before)) {
            problems.push(Problem::Untrusted {
                source: anchors.source.clone(),
                why: why.text,
            });
        }
    }
    problems.extend(weak(served).into_iter().map(Problem::Weak));
    problems
}

/// The DNS names and addresses a leaf is for (its SANs; its CN only without SANs, as
/// no client accepts that any more, it is listed for the message alone).
fn leaf_names(leaf: &X509Certificate<'_>) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(Some(san)) = leaf.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    names.push(IpAddr::from(<[u8; 4]>::try_from(*b).expect("4")).to_string())
                }
                GeneralName::IPAddress(b) if b.len() == 16 => {
                    names.push(IpAddr::from(<[u8; 16]>::try_from(*b).expect("16")).to_string())
                }
                _ => {}
            }
        }
    }
    names
}

/// Whether `names` (from SANs) cover `server_name` the way RFC 6125 clients match: exact
/// (case-insensitive), or a `*.` wildcard for exactly one leftmost label.
pub fn covers(names: &[String], server_name: &str) -> bool {
    let wanted = server_name.trim_end_matches('.').to_ascii_lowercase();
    if let Ok(ip) = wanted.parse::<IpAddr>() {
        return names.iter().any(|n| n.parse::<IpAddr>() == Ok(ip));
    }
    names.iter().any(|n| {
        let n = n.trim_end_matches('.');
        if n == wanted {
            return true;
        }
        match (n.strip_prefix("*."), wanted.split_once('.')) {
            (Some(base), Some((label, rest))) => !label.is_empty() && rest == base,
            _ => false,
        }
    })
}

struct Untrust {
    text: String,
    /// Only a date was wrong (some certificate of the chain expired or not yet valid).
    dates: bool,
}

/// Why a client trusting `anchors` refuses the chain (webpki's path building, the
/// verifier rustls clients use; the name is judged by [`covers`]).
fn untrusted(served: &[Vec<u8>], anchors: &Anchors, now: OffsetDateTime) -> Option<Untrust> {
    let Some(verifier) = anchors.verifier() else {
        return Some(Untrust {
            text: "there are no roots to check it against".into(),
            dates: false,
        });
    };
    let leaf = CertificateDer::from(served[0].as_slice());
    let rest: Vec<CertificateDer<'_>> = served[1..]
        .iter()
        .map(|c| CertificateDer::from(c.as_slice()))
        .collect();
    // Any name the leaf has, so that only the chain is judged here.
    let (_, parsed) = X509Certificate::from_der(&served[0]).ok()?;
    let name = leaf_names(&parsed)
        .into_iter()
        .find_map(|n| ServerName::try_from(n.trim_start_matches("*.").to_string()).ok())
        .unwrap_or_else(|| ServerName::try_from("invalid.invalid").expect("a name"));
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        now.unix_timestamp().max(0) as u64,
    ));
    use rustls::client::danger::ServerCertVerifier;
    let err = verifier
        .verify_server_cert(&leaf, &rest, &name, &[], at)
        .err()?;
    let (text, dates) = match err {
        rustls::Error::InvalidCertificate(e) => match e {
            CertificateError::UnknownIssuer => (
                "no certificate it sends or trusts signed it (the issuing intermediate is missing, or the chain is another CA's)".to_string(),
                false,
            ),
            CertificateError::BadSignature => (
                "a signature in the chain does not verify".into(),
                false,
            ),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => (
                "a certificate of the chain has expired".into(),
                true,
            ),
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => (
                "a certificate of the chain is not valid yet".into(),
                true,
            ),
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                return None
            }
            CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. } => (
                "the leaf's extended key usage does not allow TLS servers".into(),
                false,
            ),
            CertificateError::UnsupportedSignatureAlgorithmContext { .. } => (
                "the chain is signed with an algorithm clients do not accept".into(),
                false,
            ),
            other => (format!("{other:?}"), false),
        },
        other => (other.to_string(), false),
    };
    Some(Untrust { text, dates })
}

/// Keys and signatures in what was sent that common clients refuse.
fn weak(served: &[Vec<u8>]) -> Vec<String> {
    let mut out = Vec::new();
    for (i, der) in served.iter().enumerate() {
        let Ok((_, cert)) = X509Certificate::from_der(der) else {
            continue;
        };
        let what = if i == 0 {
            "the served certificate".to_string()
        } else {
            format!("certificate {} of the chain", i + 1)
        };
        if i == 0 {
            let spki = cert.public_key();
            match spki.algorithm.algorithm.to_id_string().as_str() {
                "1.3.101.112" => out.push(format!(
                    "{what} has an Ed25519 key: Chromium, Firefox and Safari refuse Ed25519 server certificates (ERR_SSL_VERSION_OR_CIPHER_MISMATCH); use key: p256"
                )),
                _ => match spki.parsed() {
                    Ok(x509_parser::public_key::PublicKey::RSA(rsa)) if rsa.key_size() < 2048 => out.push(format!(
                        "{what} has an RSA key of {} bits: clients refuse RSA keys under 2048 bits; use key: rsa2048 or p256",
                        rsa.key_size()
                    )),
                    Ok(x509_parser::public_key::PublicKey::EC(ec)) if ec.key_size() > 384 => out.push(format!(
                        "{what} has a P-521 key: Chromium refuses P-521 server certificates; use key: p256 or p384"
                    )),
                    _ => {}
                },
            }
        }
        // A root's own signature is never checked by clients.
        if i > 0 && cert.subject() == cert.issuer() {
            continue;
        }
        let sig = cert.signature_algorithm.algorithm.to_id_string();
        let hash = match sig.as_str() {
            "1.2.840.113549.1.1.4" => Some("MD5"),
            "1.2.840.113549.1.1.5" | "1.2.840.10045.4.1" | "1.2.840.10040.4.3" => Some("SHA-1"),
            _ => None,
        };
        if let Some(hash) = hash {
            out.push(format!(
                "{what} is signed with {hash}, which browsers and current TLS libraries refuse; reissue it"
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u8) -> Vec<u8> {
        vec![n; 4]
    }

    #[test]
    fn each_difference_has_its_own_verdict() {
        let chain = vec![c(1), c(2)];
        assert_eq!(judge(&chain, &chain), None);
        assert_eq!(
            judge(&[], &chain),
            Some(ChainProblem::Missing {
                sent: 0,
                expected: 2
            })
        );
        assert_eq!(
            judge(&[c(1)], &chain),
            Some(ChainProblem::Missing {
                sent: 1,
                expected: 2
            })
        );
        assert_eq!(judge(&[c(2), c(1)], &chain), Some(ChainProblem::Order));
        assert_eq!(
            judge(&[c(1), c(2), c(9)], &chain),
            Some(ChainProblem::Extra {
                sent: 3,
                expected: 2
            })
        );
        assert_eq!(
            judge(&[c(2), c(1), c(9)], &chain),
            Some(ChainProblem::Order)
        );
        assert_eq!(judge(&[c(7)], &chain), Some(ChainProblem::Foreign));
        assert_eq!(judge(&[c(1), c(7)], &chain), Some(ChainProblem::Foreign));
        assert!(judge(&[], &chain)
            .unwrap()
            .to_string()
            .contains("no certificate after the leaf where the chain has 2 certificates"));
    }

    struct Pki {
        root: Vec<u8>,
        int: Vec<u8>,
        int_key: rcgen::KeyPair,
        int_params: rcgen::CertificateParams,
    }

    fn ca(name: &str) -> Pki {
        let root_key = rcgen::KeyPair::generate().unwrap();
        let mut rp = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        rp.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} Root"));
        rp.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let root = rp.self_signed(&root_key).unwrap();
        let int_key = rcgen::KeyPair::generate().unwrap();
        let mut ip = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ip.distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} Intermediate"));
        ip.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
        let issuer = rcgen::Issuer::from_params(&rp, &root_key);
        let int = ip.signed_by(&int_key, &issuer).unwrap();
        Pki {
            root: root.der().to_vec(),
            int: int.der().to_vec(),
            int_key,
            int_params: ip,
        }
    }

    fn leaf(
        pki: &Pki,
        names: &[&str],
        days: (i64, i64),
        alg: &'static rcgen::SignatureAlgorithm,
    ) -> Vec<u8> {
        let key = rcgen::KeyPair::generate_for(alg).unwrap();
        let mut p =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = OffsetDateTime::now_utc();
        p.not_before = now + ::time::Duration::days(days.0);
        p.not_after = now + ::time::Duration::days(days.1);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        let issuer = rcgen::Issuer::from_params(&pki.int_params, &pki.int_key);
        p.signed_by(&key, &issuer).unwrap().der().to_vec()
    }

    fn anchors(pki: &Pki) -> Anchors {
        Anchors::new(vec![pki.root.clone()], "the internal CA's roots".into())
    }

    #[test]
    fn a_client_accepts_a_good_chain_and_names_each_refusal() {
        let now = OffsetDateTime::now_utc();
        let pki = ca("Ours");
        let p256 = &rcgen::PKCS_ECDSA_P256_SHA256;
        let good = leaf(&pki, &["www.example.test"], (-1, 30), p256);
        let a = anchors(&pki);
        assert_eq!(
            as_a_client(
                &[good.clone(), pki.int.clone()],
                "www.example.test",
                &a,
                now
            ),
            vec![]
        );
        // The leaf alone: no path to the root.
        let alone = as_a_client(std::slice::from_ref(&good), "www.example.test", &a, now);
        assert!(
            matches!(&alone[..], [Problem::Untrusted { why, .. }] if why.contains("issuing intermediate is missing")),
            "{alone:?}"
        );
        // Another CA's intermediate after our leaf; and a chain of another CA.
        let other = ca("Theirs");
        let foreign = as_a_client(
            &[good.clone(), other.int.clone()],
            "www.example.test",
            &a,
            now,
        );
        assert!(
            matches!(&foreign[..], [Problem::Untrusted { .. }]),
            "{foreign:?}"
        );
        let theirs = leaf(&other, &["www.example.test"], (-1, 30), p256);
        let problems = as_a_client(&[theirs, other.int.clone()], "www.example.test", &a, now);
        assert!(
            problems[0]
                .to_string()
                .contains("does not lead to the internal CA's roots"),
            "{problems:?}"
        );
        // The wrong name: a default vhost's certificate.
        let wrong = as_a_client(
            &[good.clone(), pki.int.clone()],
            "api.example.test",
            &a,
            now,
        );
        assert_eq!(
            wrong,
            vec![Problem::Name {
                server_name: "api.example.test".into(),
                names: vec!["www.example.test".into()]
            }]
        );
        assert!(
            wrong[0].to_string().contains("it names www.example.test"),
            "{}",
            wrong[0]
        );
        // Expired: the date alone, not a second trust complaint about it.
        let old = leaf(&pki, &["www.example.test"], (-30, -1), p256);
        let expired = as_a_client(&[old, pki.int.clone()], "www.example.test", &a, now);
        assert!(
            matches!(&expired[..], [Problem::Expired { .. }]),
            "{expired:?}"
        );
        assert!(expired[0]
            .to_string()
            .starts_with("the served certificate expired on "));
        let later = leaf(&pki, &["www.example.test"], (2, 30), p256);
        let early = as_a_client(&[later, pki.int.clone()], "www.example.test", &a, now);
        assert!(
            matches!(&early[..], [Problem::NotYetValid { .. }]),
            "{early:?}"
        );
        // Ed25519: trusted, refused by browsers.
        let ed = leaf(&pki, &["www.example.test"], (-1, 30), &rcgen::PKCS_ED25519);
        let ed = as_a_client(&[ed, pki.int.clone()], "www.example.test", &a, now);
        assert!(
            matches!(&ed[..], [Problem::Weak(w)] if w.contains("Ed25519")),
            "{ed:?}"
        );
        // No roots at all.
        let none = as_a_client(
            &[good, pki.int],
            "www.example.test",
            &Anchors::default(),
            now,
        );
        assert!(
            matches!(&none[..], [Problem::Untrusted { why, .. }] if why.contains("no roots")),
            "{none:?}"
        );
    }

    #[test]
    fn names_match_like_clients_do() {
        let n = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(covers(&n(&["www.example.test"]), "WWW.example.test"));
        assert!(covers(&n(&["*.example.test"]), "a.example.test"));
        assert!(!covers(&n(&["*.example.test"]), "example.test"));
        assert!(!covers(&n(&["*.example.test"]), "a.b.example.test"));
        assert!(covers(&n(&["10.0.0.5"]), "10.0.0.5"));
        assert!(!covers(&n(&["www.example.test"]), "10.0.0.5"));
        assert!(!covers(&[], "www.example.test"));
    }
}
