//! What a client needs from the chain a server sends, judged after each reload by a real
//! nginx: a server that reads the leaf alone (a `separate` layout's `cert` where the
//! `fullchain` belongs) is found and named; the new pair stays installed, since the fault
//! is the server's file setting; `openssl s_client -verify_return_error` agrees.

use crate::support::servers::{q, server_yaml, Nginx, SERVER_NAME};
use crate::support::*;

#[test]
fn served_a_leaf_without_its_intermediate_is_named_and_the_pair_stays() {
    let sb = Sandbox::new();
    let cert = CertDef::new("www", Layout::Separate).sans(&[SERVER_NAME]);
    sb.write_config_with("", &[], std::slice::from_ref(&cert));
    sb.renew_all().ok();
    let f = cert.files(&sb);
    // nginx reads the leaf alone.
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, f.key.as_ref().unwrap());
    let served = cert.clone().extra("reload: [nginx]").extra(&format!(
        "verify: {{ connect: {}, server_name: {SERVER_NAME} }}",
        q(&nginx.connect())
    ));
    sb.write_config_with(
        "",
        &[server_yaml(&nginx.server_spec("nginx"), None, None)],
        &[served],
    );
    // A client that is not ours refuses what nginx serves.
    let root = sb.root_bundle();
    let s_client = |root: &std::path::Path| {
        openssl(&[
            "s_client",
            "-connect",
            &nginx.connect(),
            "-servername",
            SERVER_NAME,
            "-verify_return_error",
            "-no-CApath",
            "-no-CAstore",
            "-CAfile",
            path_str(root),
        ])
    };
    let r = s_client(&root);
    assert!(!r.stdout.contains("Verify return code: 0 (ok)"), "{r:?}");

    let old = f.serial();
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok().stderr_has(
        "the server sends no certificate after the leaf where the chain has 1 certificate",
    );
    assert_ne!(f.serial(), old, "the new pair stays installed");
    let installed = sb
        .ledger()
        .into_iter()
        .rfind(|e| e["event"] == "installed")
        .unwrap();
    let note = installed["note"].as_str().unwrap_or_default();
    assert!(
        note.starts_with(&format!(
            "served at {} (SNI {SERVER_NAME}): ",
            nginx.connect()
        )),
        "{installed}"
    );
    let r = sb.ck(&["status", "--check"]);
    r.expect_code(1).stdout_has("\nwww: ok (expires in ");
    assert!(
        r.stdout
            .contains("the server sends no certificate after the leaf"),
        "{r:?}"
    );

    // Pointed at the full chain, the next renewal is clean and openssl agrees.
    drop(nginx);
    let nginx = Nginx::start(
        &sb.path("nginx2"),
        f.fullchain.as_ref().unwrap(),
        f.key.as_ref().unwrap(),
    );
    let served = cert.clone().extra("reload: [nginx]").extra(&format!(
        "verify: {{ connect: {}, server_name: {SERVER_NAME} }}",
        q(&nginx.connect())
    ));
    sb.write_config_with(
        "",
        &[server_yaml(&nginx.server_spec("nginx"), None, None)],
        &[served],
    );
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok();
    assert!(!r.stderr.contains("the server sends"), "{r:?}");
    sb.ck(&["status", "--check"]).ok();
    let r = openssl(&[
        "s_client",
        "-connect",
        &nginx.connect(),
        "-servername",
        SERVER_NAME,
        "-verify_return_error",
        "-no-CApath",
        "-no-CAstore",
        "-CAfile",
        path_str(&root),
    ]);
    assert!(r.stdout.contains("Verify return code: 0 (ok)"), "{r:?}");
}
