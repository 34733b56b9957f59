//! The internal CA's name constraints (`ca.permitted`, `ca.excluded`) end to end: the CA
//! certificates carry them (critical), certkeeper refuses names outside them, and OpenSSL
//! and rustls refuse a leaf outside them even when it is signed with the CA's own key.

use crate::support::*;
use certkeeper::constraints::{NameConstraints, NameRule};
use certkeeper::model::San;
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::RootCertStore;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

const CA: &str = "state_dir: $DIR/state\n\
     ca:\n  organization: Test Org\n  common_name: Test CA\n\
     \x20 permitted: [\".example.internal\", \"10.0.0.0/8\"]\n\
     \x20 excluded: [secret.example.internal, 10.99.0.0/16, \"fd00::/8\"]\n";

/// A sandbox whose configuration constrains the CA and manages `certs`.
fn constrained(certs: &[CertDef]) -> Sandbox {
    let sb = Sandbox::new();
    let mut yaml = String::from(CA);
    yaml.push_str(if certs.is_empty() {
        "certificates: []\n"
    } else {
        "certificates:\n"
    });
    for c in certs {
        yaml.push_str(&c.yaml());
    }
    sb.write_config(&yaml);
    sb
}

fn ca_file(sb: &Sandbox, name: &str) -> PathBuf {
    sb.state_dir().join("ca").join(name)
}

/// A leaf for `sans` (DNS names or addresses) with common name `cn`, signed directly
/// with the CA's intermediate key: nothing of certkeeper's checks is on the way.
fn sign_with_intermediate(sb: &Sandbox, cn: &str, sans: &[&str], out: &str) -> PathBuf {
    let key = fs::read_to_string(ca_file(sb, "intermediate.key")).unwrap();
    let crt = fs::read_to_string(ca_file(sb, "intermediate.crt")).unwrap();
    let key = rcgen::KeyPair::from_pem(&key).expect("the intermediate key");
    let issuer = rcgen::Issuer::from_ca_cert_pem(&crt, key).expect("the intermediate");
    let mut p =
        rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .expect("leaf parameters");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.is_ca = rcgen::IsCa::ExplicitNoCa;
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = p.signed_by(&leaf_key, &issuer).expect("sign the leaf");
    let path = sb.path(out);
    fs::write(&path, leaf.pem()).unwrap();
    path
}

/// `openssl verify` of `leaf` against the sandbox's root, through its intermediate.
fn openssl_verify(sb: &Sandbox, leaf: &Path) -> Run {
    verify(
        &ca_file(sb, "root.crt"),
        &ca_file(sb, "intermediate.crt"),
        leaf,
        "sslserver",
    )
}

/// rustls (webpki) on the same chain, for `server_name`.
fn rustls_verify(sb: &Sandbox, leaf: &Path, server_name: &str) -> Result<(), String> {
    let der = |p: &Path| CertificateDer::from_pem_file(p).expect("a PEM certificate");
    let mut roots = RootCertStore::empty();
    roots.add(der(&ca_file(sb, "root.crt"))).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .unwrap();
    verifier
        .verify_server_cert(
            &der(leaf),
            &[der(&ca_file(sb, "intermediate.crt"))],
            &ServerName::try_from(server_name.to_string()).unwrap(),
            &[],
            UnixTime::now(),
        )
        .map(|_| ())
        .map_err(|e| format!("{e:?}"))
}

#[test]
fn constraints_are_critical_in_the_root_and_the_intermediate() {
    let sb = constrained(&[]);
    sb.ck(&["ca", "init"]).ok();
    for name in ["root.crt", "intermediate.crt"] {
        let text = cert_text(&ca_file(&sb, name));
        let at = text
            .find("X509v3 Name Constraints: critical\n")
            .unwrap_or_else(|| panic!("{name} has no critical name constraints:\n{text}"));
        let ext: Vec<&str> = text[at..].lines().skip(1).take(7).map(str::trim).collect();
        assert_eq!(
            ext,
            [
                "Permitted:",
                "DNS:.example.internal",
                "IP:10.0.0.0/255.0.0.0",
                "Excluded:",
                "DNS:secret.example.internal",
                "IP:10.99.0.0/255.255.0.0",
                "IP:FD00:0:0:0:0:0:0:0/FF00:0:0:0:0:0:0:0",
            ],
            "{name}:\n{text}"
        );
    }
    // Without `ca.permitted` / `ca.excluded` the CA certificates carry no constraints.
    let plain = Sandbox::new();
    plain.write_certs(&[]);
    plain.ck(&["ca", "init"]).ok();
    let text = cert_text(&ca_file(&plain, "intermediate.crt"));
    assert!(!text.contains("Name Constraints"), "{text}");
}

#[test]
fn constraints_issue_inside_verifies_and_outside_is_refused_before_anything_exists() {
    let sb = constrained(&[]);
    let out = sb.path("out");
    // Outside: a usage error, and neither the CA nor a file nor a ledger line is made.
    for (san, says) in [
        (
            "www.other.com",
            "`www.other.com` is outside ca.permitted (.example.internal, 10.0.0.0/8)",
        ),
        (
            "db.secret.example.internal",
            "`db.secret.example.internal` is inside ca.excluded (secret.example.internal)",
        ),
    ] {
        let r = sb.ck(&[
            "issue",
            "--name",
            "x",
            "--san",
            "www.example.internal",
            "--san",
            san,
            "--out",
            path_str(&out),
        ]);
        r.expect_code(2);
        r.stderr_has(says);
        assert!(!out.exists(), "{san}: {r:?}");
        assert!(!sb.state_dir().join("ca").exists(), "{san}: {r:?}");
        assert!(sb.ledger().is_empty(), "{san}: {r:?}");
    }
    // Only an address: OpenSSL would check the common name (the address) as a DNS name.
    let r = sb.ck(&[
        "issue",
        "--name",
        "x",
        "--san",
        "10.0.0.5",
        "--out",
        path_str(&out),
    ]);
    r.expect_code(2);
    r.stderr_has("the common name `10.0.0.5` is outside ca.permitted");
    assert!(!out.exists(), "{r:?}");

    // Inside: issued, and OpenSSL and rustls accept the chain.
    let r = sb.ck(&[
        "issue",
        "--name",
        "www",
        "--san",
        "www.example.internal",
        "--san",
        "10.1.2.3",
        "--out",
        path_str(&out),
    ]);
    r.ok();
    let leaf = out.join("www.crt");
    openssl_verify(&sb, &leaf).ok().stdout_has(": OK");
    rustls_verify(&sb, &leaf, "www.example.internal").unwrap();
    assert!(cert_text(&ca_file(&sb, "intermediate.crt")).contains("Name Constraints: critical"));
}

#[test]
fn constraints_check_names_each_certificate_outside() {
    let www = CertDef::new("www", Layout::Combined).sans(&["www.example.internal", "10.0.0.5"]);
    let sb = constrained(&[
        www.clone(),
        CertDef::new("vault", Layout::Nginx).sans(&["vault.secret.example.internal"]),
        CertDef::new("other", Layout::Nginx).sans(&["www.other.com"]),
    ]);
    let r = sb.ck(&["check"]);
    r.expect_code(2);
    r.stderr_has("certificate `vault`, field `certificates[1].sans`: `vault.secret.example.internal` is inside ca.excluded (secret.example.internal)");
    r.stderr_has("certificate `other`, field `certificates[2].sans`: `www.other.com` is outside ca.permitted (.example.internal, 10.0.0.0/8)");
    assert!(!r.stderr.contains("`www`"), "{r:?}");
    assert!(!sb.state_dir().join("ca").exists(), "check writes nothing");

    // Within the constraints the same file is fine, and `renew` issues what verifies.
    let sb = constrained(std::slice::from_ref(&www));
    sb.ck(&["check"]).ok();
    sb.renew_all().ok();
    www.files(&sb).check(&ca_file(&sb, "root.crt"), "sslserver");
    rustls_verify(&sb, &sb.path("tls/www.pem"), "10.0.0.5").unwrap();
}

#[test]
fn constraints_are_enforced_by_openssl_and_rustls_on_a_leaf_signed_past_certkeeper() {
    let sb = constrained(&[]);
    sb.ck(&["ca", "init"]).ok();

    let inside = sign_with_intermediate(
        &sb,
        "inside",
        &["www.example.internal", "10.9.9.9"],
        "in.crt",
    );
    openssl_verify(&sb, &inside).ok();
    rustls_verify(&sb, &inside, "www.example.internal").unwrap();

    for (sans, violation, name) in [
        (
            &["www.other.com"][..],
            "permitted subtree violation",
            "www.other.com",
        ),
        (
            &["example.internal"][..],
            "permitted subtree violation",
            "example.internal",
        ),
        (
            &["www.example.internal", "11.0.0.1"][..],
            "permitted subtree violation",
            "www.example.internal",
        ),
        (
            &["db.secret.example.internal"][..],
            "excluded subtree violation",
            "db.secret.example.internal",
        ),
        (
            &["www.example.internal", "10.99.1.1"][..],
            "excluded subtree violation",
            "www.example.internal",
        ),
        // An IPv6 address, with only an IPv4 range permitted, is outside (OpenSSL
        // judges permitted before excluded).
        (
            &["www.example.internal", "fd00::1"][..],
            "permitted subtree violation",
            "www.example.internal",
        ),
    ] {
        let leaf = sign_with_intermediate(&sb, "outside", sans, "out.crt");
        let r = openssl_verify(&sb, &leaf);
        assert_ne!(r.code, 0, "{sans:?}: {r:?}");
        assert!(r.all().contains(violation), "{sans:?}: {r:?}");
        let e = rustls_verify(&sb, &leaf, name).unwrap_err();
        assert!(e.contains("NameConstraintViolation"), "{sans:?}: {e}");
    }

    // No DNS name among the SANs: OpenSSL checks a common name that looks like a DNS
    // name, an address included, against the DNS rules; rustls never reads it.
    let by_address = sign_with_intermediate(&sb, "10.0.0.5", &["10.0.0.5"], "cn.crt");
    let r = openssl_verify(&sb, &by_address);
    assert!(r.all().contains("permitted subtree violation"), "{r:?}");
    rustls_verify(&sb, &by_address, "10.0.0.5").unwrap();
    let by_words = sign_with_intermediate(&sb, "db server", &["10.0.0.5"], "cn2.crt");
    openssl_verify(&sb, &by_words).ok();

    // A wildcard that stands for an excluded name: OpenSSL 3 compares it as text and
    // lets it through, rustls refuses it; certkeeper refuses it (the stricter of the two).
    let wildcard = sign_with_intermediate(&sb, "wild", &["*.example.internal"], "wild.crt");
    openssl_verify(&sb, &wildcard).ok();
    let e = rustls_verify(&sb, &wildcard, "www.example.internal").unwrap_err();
    assert!(e.contains("NameConstraintViolation"), "{e}");
    let r = sb.ck(&[
        "issue",
        "--name",
        "w",
        "--san",
        "*.example.internal",
        "--out",
        path_str(&sb.path("o")),
    ]);
    r.expect_code(2);
    r.stderr_has("`*.example.internal` is inside ca.excluded (secret.example.internal)");
}

#[test]
fn constraints_allows_exactly_what_openssl_and_rustls_both_accept() {
    let sb = constrained(&[]);
    sb.ck(&["ca", "init"]).ok();
    let rules =
        |list: &[&str]| -> Vec<NameRule> { list.iter().map(|r| r.parse().unwrap()).collect() };
    let nc = NameConstraints {
        permitted: rules(&[".example.internal", "10.0.0.0/8"]),
        excluded: rules(&["secret.example.internal", "10.99.0.0/16", "fd00::/8"]),
    };
    let mut accepted = Vec::new();
    for name in [
        "example.internal",
        "www.example.internal",
        "a.b.example.internal",
        "evilexample.internal",
        "example.internal.other.com",
        "*.example.internal",
        "*.www.example.internal",
        "secret.example.internal",
        "x.secret.example.internal",
        "notsecret.example.internal",
        "*.secret.example.internal",
        "www.other.com",
        "10.0.0.1",
        "10.255.255.255",
        "9.255.255.255",
        "11.0.0.0",
        "10.99.0.1",
        "10.98.255.255",
        "10.100.0.0",
        "fd00::1",
        "fe80::1",
    ] {
        let leaf = sign_with_intermediate(&sb, "leaf", &[name], "probe.crt");
        let by_openssl = openssl_verify(&sb, &leaf).code == 0;
        let server_name = name.replace('*', "x");
        let by_rustls = rustls_verify(&sb, &leaf, &server_name);
        let ours = nc.allows(&San::parse(name).unwrap());
        assert_eq!(
            ours.is_ok(),
            by_openssl && by_rustls.is_ok(),
            "{name}: certkeeper {ours:?}, openssl {by_openssl}, rustls {by_rustls:?}"
        );
        // The two verifiers differ only on a wildcard that stands for an excluded name.
        if name != "*.example.internal" {
            assert_eq!(by_openssl, by_rustls.is_ok(), "{name}: {by_rustls:?}");
        }
        if ours.is_ok() {
            accepted.push(name);
        }
    }
    assert_eq!(
        accepted,
        [
            "www.example.internal",
            "a.b.example.internal",
            "*.www.example.internal",
            "notsecret.example.internal",
            "10.0.0.1",
            "10.255.255.255",
            "10.98.255.255",
            "10.100.0.0",
        ]
    );
}

/// A CA made before constraints were configured gets them at its next intermediate
/// rotation; `ca rotate` applies them at once, and OpenSSL then enforces them on what
/// the new intermediate signs.
#[test]
fn constraints_reach_an_existing_ca_with_ca_rotate() {
    let sb = Sandbox::new();
    sb.write_config(
        "state_dir: $DIR/state\nca:\n  organization: Test Org\n  common_name: Test CA\ncertificates: []\n",
    );
    sb.ck(&["ca", "init"]).ok();
    let text = |name: &str| {
        openssl(&[
            "x509",
            "-in",
            path_str(&ca_file(&sb, name)),
            "-noout",
            "-text",
        ])
        .stdout
    };
    assert!(!text("intermediate.crt").contains("Name Constraints"));
    sb.write_config(&format!("{CA}certificates: []\n"));
    sb.ck(&["ca", "rotate"])
        .ok()
        .stdout_has("rotated the CA intermediate: generation 2");
    let now = text("intermediate.crt");
    assert!(now.contains("X509v3 Name Constraints: critical"), "{now}");
    assert!(now.contains("DNS:.example.internal"), "{now}");
    let outside = sign_with_intermediate(&sb, "www.other.com", &["www.other.com"], "outside.pem");
    let chain = sb.path("chain.pem");
    fs::copy(ca_file(&sb, "intermediate.crt"), &chain).unwrap();
    let v = verify(&ca_file(&sb, "root.crt"), &chain, &outside, "sslserver");
    assert_ne!(v.code, 0, "{v:?}");
    assert!(v.all().contains("permitted subtree violation"), "{v:?}");
}
