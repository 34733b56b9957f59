//! `inspect` as scripts and operators use it: `--json` read back by a JSON parser,
//! `--long` like `openssl x509 -text`, and `--connect` against a real nginx serving a
//! certkeeper-issued chain (verified, the wrong name refused, a closed port reported
//! quickly). The text view's other behaviour is in `cli.rs`.

use crate::support::servers::{free_port, Nginx, SERVER_NAME};
use crate::support::*;
use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// `www` (nginx layout) for `SERVER_NAME` and 10.0.0.5, issued in `sb`.
fn www_issued(sb: &Sandbox) -> (CertDef, Installed) {
    let www = CertDef::new("www", Layout::Nginx).sans(&[SERVER_NAME, "10.0.0.5"]);
    sb.write_certs(std::slice::from_ref(&www));
    sb.renew_all().ok();
    let f = www.files(sb);
    (www, f)
}

fn json(r: &Run) -> serde_json::Value {
    serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("inspect --json printed no JSON ({e}): {r:?}"))
}

#[test]
fn inspect_json_describes_every_certificate_and_key_and_which_belong_together() {
    let sb = Sandbox::new();
    let (_, f) = www_issued(&sb);
    let (cert, key) = (path_str(&f.cert), path_str(f.key.as_ref().unwrap()));
    let r = sb.run(&["inspect", "--json", cert, key]);
    r.ok();
    let v = json(&r);
    assert_eq!(v["ok"], true, "{v:#}");
    assert!(v.get("connection").is_none(), "{v:#}");
    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 2);
    assert_eq!(files[0]["file"], cert);
    assert!(files[0]["error"].is_null());
    assert_eq!(files[0]["chain"]["in_order"], true, "{v:#}");
    let items = files[0]["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "leaf and intermediate: {v:#}");
    let leaf = &items[0];
    assert_eq!(leaf["kind"], "certificate");
    assert_eq!(leaf["index"], 1);
    assert_eq!(leaf["subject"], format!("CN={SERVER_NAME}"));
    assert!(
        leaf["issuer"].as_str().unwrap().contains("Test CA"),
        "{leaf}"
    );
    assert_eq!(leaf["sans"], serde_json::json!([SERVER_NAME, "10.0.0.5"]));
    assert_eq!(
        leaf["serial"],
        f.serial().trim_start_matches('0').to_ascii_lowercase()
    );
    for field in ["not_before", "not_after"] {
        let t = leaf[field].as_str().unwrap();
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
            .unwrap_or_else(|e| panic!("{field} {t} is not RFC 3339: {e}"));
    }
    assert_eq!(leaf["validity"], "valid");
    assert!(
        leaf["seconds_left"].as_i64().unwrap() > 80 * 86400,
        "{leaf}"
    );
    assert_eq!(leaf["key_type"], "ecdsa-p256");
    assert_eq!(leaf["key_size"], 256);
    assert_eq!(leaf["public_key"]["curve"], "P-256");
    let fp = openssl(&["x509", "-in", cert, "-noout", "-fingerprint", "-sha256"]);
    let fp = fp
        .stdout
        .trim()
        .rsplit('=')
        .next()
        .unwrap()
        .replace(':', "");
    assert_eq!(leaf["fingerprint_sha256"], fp.to_ascii_lowercase());
    assert_eq!(leaf["is_ca"], false);
    assert_eq!(leaf["usage"], "server");
    assert_eq!(leaf["signature_algorithm"], "ecdsa-with-SHA256");
    assert_eq!(
        leaf["matching_keys"],
        serde_json::json!([{ "source": key, "index": 1 }])
    );
    let ku = leaf["extensions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["oid"] == "2.5.29.15")
        .unwrap_or_else(|| panic!("no key usage: {leaf}"));
    assert_eq!(ku["name"], "key usage");
    assert_eq!(ku["critical"], true);
    assert_eq!(ku["values"], serde_json::json!(["Digital Signature"]));
    let int = &items[1];
    assert_eq!(int["is_ca"], true);
    assert_eq!(int["matching_keys"], serde_json::json!([]));
    let k = &files[1]["items"][0];
    assert_eq!(k["kind"], "private_key");
    assert_eq!(k["key_type"], "ecdsa-p256");
    assert_eq!(
        k["matching_certificates"],
        serde_json::json!([{ "source": cert, "index": 1 }])
    );

    // Same exit codes as the text view: another key, a missing file.
    let other = sb.path("other.key");
    fs::write(&other, openssl_p256_key()).unwrap();
    let missing = sb.path("missing.pem");
    let r = sb.run(&[
        "inspect",
        "--json",
        cert,
        path_str(&other),
        path_str(&missing),
    ]);
    r.expect_code(1);
    let v = json(&r);
    assert_eq!(v["ok"], false);
    assert_eq!(
        v["files"][1]["items"][0]["matching_certificates"],
        serde_json::json!([])
    );
    assert!(
        v["files"][2]["error"]
            .as_str()
            .is_some_and(|e| !e.is_empty()),
        "{v:#}"
    );
    assert_eq!(v["files"][2]["items"], serde_json::json!([]));
}

#[test]
fn inspect_long_shows_signature_public_key_and_every_extension() {
    let sb = Sandbox::new();
    let (_, f) = www_issued(&sb);
    let r = sb.run(&["inspect", "--long", path_str(&f.cert)]);
    r.ok()
        .stdout_has("signature: ecdsa-with-SHA256")
        .stdout_has("public key: EC P-256 (256 bits)")
        .stdout_has("extensions:")
        .stdout_has("key usage (critical): Digital Signature\n")
        .stdout_has("extended key usage: TLS server (1.3.6.1.5.5.7.3.1)")
        .stdout_has("basic constraints (critical): CA: no")
        .stdout_has(&format!(
            "subject alternative name: DNS:{SERVER_NAME}, IP:10.0.0.5"
        ))
        .stdout_has("subject key identifier: ")
        .stdout_has("authority key identifier: key id ")
        // The intermediate.
        .stdout_has("key usage (critical): Digital Signature, Key Cert Sign, CRL Sign")
        .stdout_has("basic constraints (critical): CA: yes, path length 0");
    // Without --long, none of it.
    let r = sb.run(&["inspect", path_str(&f.cert)]);
    assert!(!r.stdout.contains("extensions:"), "{r:?}");
}

/// A reader that stops after the first line (`| head -1`) ends the output quietly.
#[test]
fn inspect_piped_into_head_exits_0() {
    let sb = Sandbox::new();
    let (_, f) = www_issued(&sb);
    let cert = path_str(&f.cert);
    // Far more than a pipe holds, so that the write after `head` is gone fails.
    let many: Vec<&str> = std::iter::repeat_n(cert, 300).collect();
    for json in [false, true] {
        let mut args = vec!["inspect", "--long"];
        if json {
            args.push("--json");
        }
        args.extend(&many);
        let mut child = sb
            .command(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 1];
        std::io::Read::read_exact(&mut out, &mut first).unwrap();
        drop(out);
        let done = child.wait_with_output().unwrap();
        assert_eq!(
            done.status.code(),
            Some(0),
            "json {json}: {}",
            String::from_utf8_lossy(&done.stderr)
        );
        assert!(done.stderr.is_empty(), "json {json}: {done:?}");
    }
}

#[test]
fn inspect_connect_shows_and_verifies_what_nginx_serves() {
    let sb = Sandbox::new();
    let (_, f) = www_issued(&sb);
    let key = f.key.clone().unwrap();
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, &key);
    let addr = nginx.connect();
    let serial = f.serial().trim_start_matches('0').to_ascii_lowercase();

    // Trusting the internal CA of the configuration given.
    let r = sb.ck(&["inspect", "--connect", &addr, "--server-name", SERVER_NAME]);
    r.ok()
        .stdout_has(&format!("{addr} (server name {SERVER_NAME}):"))
        .stdout_has("  TLS:       TLSv1.")
        .stdout_has(&format!("serial:    {serial}"))
        .stdout_has("chain: in order")
        .stdout_has("trusted:   yes, by the internal CA's roots")
        .stdout_has(&format!("name:      {SERVER_NAME} matches the certificate"))
        .stdout_has("verified:  OK");
    assert!(!r.stdout.contains("PROBLEM"), "{r:?}");

    // The same as JSON, with the local key matched against the served leaf.
    let r = sb.ck(&[
        "inspect",
        "--json",
        "--connect",
        &addr,
        "--server-name",
        SERVER_NAME,
        path_str(&key),
    ]);
    r.ok();
    let v = json(&r);
    let c = &v["connection"];
    assert_eq!(v["ok"], true, "{v:#}");
    assert_eq!(c["connect"], addr.as_str());
    assert_eq!(c["server_name"], SERVER_NAME);
    assert!(c["error"].is_null());
    assert!(c["protocol"].as_str().unwrap().starts_with("TLSv1."), "{c}");
    assert!(!c["cipher_suite"].as_str().unwrap().is_empty(), "{c}");
    assert_eq!(c["certificates"].as_array().unwrap().len(), 2, "{c:#}");
    assert_eq!(c["certificates"][0]["serial"], serial.as_str());
    assert_eq!(
        c["certificates"][0]["matching_keys"],
        serde_json::json!([{ "source": path_str(&key), "index": 1 }])
    );
    assert_eq!(c["chain"]["in_order"], true);
    let ver = &c["verification"];
    assert_eq!(ver["ok"], true, "{ver}");
    assert_eq!(ver["trusted"], true);
    assert_eq!(ver["hostname_match"], true);
    assert_eq!(ver["leaf_validity"], "valid");
    assert_eq!(ver["problems"], serde_json::json!([]));

    // --ca-file alone, and without any configuration.
    let root = sb.root_bundle();
    sb.run(&[
        "inspect",
        "--connect",
        &addr,
        "--server-name",
        SERVER_NAME,
        "--ca-file",
        path_str(&root),
    ])
    .ok()
    .stdout_has(&format!(
        "trusted:   yes, by the roots of {}",
        root.display()
    ));

    // The wrong name: shown, refused, exit 1.
    let r = sb.ck(&[
        "inspect",
        "--connect",
        &addr,
        "--server-name",
        "wrong.example.internal",
    ]);
    r.expect_code(1)
        .stdout_has(&format!("serial:    {serial}"))
        .stdout_has("name:      wrong.example.internal does NOT match the certificate")
        .stdout_has("not for `wrong.example.internal`")
        .stdout_has("verified:  FAILED");

    // No root trusts it (only the system's, which are none here): still shown, exit 1.
    let r = sb.run(&["inspect", "--connect", &addr, "--server-name", SERVER_NAME]);
    r.expect_code(1)
        .stdout_has(&format!("serial:    {serial}"))
        .stdout_has("trusted:   NO")
        .stdout_has("verified:  FAILED");

    // An IP address is matched against the IP SANs; the test nginx has one vhost.
    let r = sb.ck(&["inspect", "--json", "--connect", &addr]);
    r.expect_code(1);
    let v = json(&r);
    assert_eq!(v["connection"]["server_name"], "127.0.0.1");
    assert_eq!(v["connection"]["verification"]["hostname_match"], false);
}

#[test]
fn inspect_connect_to_a_closed_port_fails_quickly_and_says_why() {
    let sb = Sandbox::new();
    let addr = format!("127.0.0.1:{}", free_port());
    let started = Instant::now();
    let r = sb.run(&["inspect", "--connect", &addr]);
    let took = started.elapsed();
    r.expect_code(1).stdout_has(&format!(
        "{addr} (server name 127.0.0.1): ERROR: cannot connect"
    ));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let r = sb.run(&["inspect", "--json", "--connect", &addr]);
    r.expect_code(1);
    let v = json(&r);
    assert_eq!(v["ok"], false);
    assert!(
        v["connection"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect")),
        "{v:#}"
    );
    // Usage errors: exit 2.
    for args in [
        &["inspect", "--connect", "127.0.0.1:http"][..],
        &["inspect", "--server-name", SERVER_NAME, "x.pem"],
        &["inspect"],
        &[
            "inspect",
            "--connect",
            &addr,
            "--ca-file",
            "/nonexistent/roots.pem",
        ],
    ] {
        sb.run(args).expect_code(2);
    }
}
