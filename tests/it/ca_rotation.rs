//! The CA's own lifecycle with the real daemon and a real nginx, on short lifetimes
//! (an 8-minute root, 3-minute intermediates, 60-second leaves): a client that reads
//! the `contents: roots` trust target before every handshake and verifies chain and
//! name handshakes without pause through an intermediate rotation, a root publication,
//! the switch to the new root and the drop of the old one, and never fails; `openssl
//! verify` accepts every installed chain, against the trust target, and (while the old
//! root is trusted) against the old root alone through the cross certificate.

use crate::support::daemon::{wait_until, Daemon};
use crate::support::servers::{q, server_yaml, tls_handshake, Nginx, SERVER_NAME};
use crate::support::*;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const HANDSHAKE: Duration = Duration::from_secs(5);
/// Enough to leave the two cores to the daemon and nginx.
const CLIENT_PAUSE: Duration = Duration::from_millis(20);

/// One full handshake trusting exactly the roots in `bundle` (read now), checking the
/// chain and `SERVER_NAME`; the served certificates.
fn handshake(bundle: &Path, addr: SocketAddr) -> Result<Vec<Vec<u8>>, String> {
    let pem = fs::read(bundle).map_err(|e| format!("reading the bundle: {e}"))?;
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(c.map_err(|e| format!("bundle: {e}"))?)
            .map_err(|e| format!("bundle: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    tls_handshake(Arc::new(config), addr, HANDSHAKE)
}

fn count(sb: &Sandbox, event: &str) -> usize {
    sb.ledger().iter().filter(|e| e["event"] == event).count()
}

/// The subjects of the certificates in `bundle`.
fn roots_in(bundle: &Path) -> Vec<String> {
    let bytes = fs::read(bundle).unwrap_or_default();
    certkeeper::x509::parse_certs(&bytes, "bundle")
        .map(|certs| certs.into_iter().map(|c| c.subject).collect())
        .unwrap_or_default()
}

/// What the continuous client saw: handshakes, failures (with when), and the lengths
/// of the served chains in the order they changed.
#[derive(Default)]
struct Seen {
    handshakes: usize,
    failures: Vec<String>,
    chain_lens: Vec<usize>,
}

#[test]
fn ca_rotation_intermediate_and_root_rotate_under_continuous_handshakes() {
    let sb = Sandbox::new();
    let cert = CertDef::new("www", Layout::Nginx)
        .sans(&[SERVER_NAME])
        .extra("lifetime: 60s");
    let ca = "ca: { organization: Test Org, common_name: Test CA, root_lifetime: 8m, intermediate_lifetime: 3m, root_overlap: 30s }\n";
    let trust = "trust:\n  - { path: $DIR/tls/roots.pem, contents: roots }\n  - { path: $DIR/tls/chain.pem, contents: chain }\n";
    let write = |servers: &str, certs: &str| {
        sb.write_config(&format!(
            "state_dir: $DIR/state\n{ca}{servers}{trust}certificates:\n{certs}"
        ));
    };
    write("", &cert.yaml());
    sb.renew_all().ok();
    let f = cert.files(&sb);
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, f.key.as_ref().unwrap());
    let served = cert.clone().extra("reload: [nginx]").extra(&format!(
        "verify: {{ connect: {}, server_name: {SERVER_NAME} }}",
        q(&nginx.connect())
    ));
    write(
        &format!(
            "servers:\n{}",
            server_yaml(&nginx.server_spec("nginx"), None, None)
        ),
        &served.yaml(),
    );
    sb.ck(&["check"]).ok();
    let bundle = sb.path("tls/roots.pem");
    let first_root = sb.path("first-root.pem");
    fs::copy(sb.state_dir().join("ca/root.crt"), &first_root).unwrap();
    let addr: SocketAddr = nginx.connect().parse().unwrap();
    handshake(&bundle, addr).expect("nginx serves a chain the bundle verifies");

    let mut d = Daemon::start_ready(&sb, &[]);
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let client = {
        let (stop, seen, bundle) = (stop.clone(), seen.clone(), bundle.clone());
        std::thread::spawn(move || {
            let t0 = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let r = handshake(&bundle, addr);
                let mut s = seen.lock().unwrap();
                s.handshakes += 1;
                match r {
                    Ok(chain) => {
                        if s.chain_lens.last() != Some(&chain.len()) {
                            s.chain_lens.push(chain.len());
                        }
                    }
                    Err(e) => s
                        .failures
                        .push(format!("{:.1}s: {e}", t0.elapsed().as_secs_f64())),
                }
                drop(s);
                std::thread::sleep(CLIENT_PAUSE);
            }
        })
    };

    // Every install, checked by openssl against the bundle of that moment and, while
    // the first root is still trusted, against the first root alone.
    let mut checked: Vec<String> = Vec::new();
    let mut via_first_root = 0;
    let t = Instant::now();
    let done = wait_until(Duration::from_secs(480), || {
        let installed: Vec<String> = sb
            .ledger()
            .iter()
            .filter(|e| e["event"] == "installed")
            .filter_map(|e| e["serial"].as_str().map(str::to_string))
            .collect();
        if let Some(last) = installed.last() {
            if !checked.contains(last) && f.serial().eq_ignore_ascii_case(last) {
                let v = verify(&bundle, &f.cert, &f.cert, "sslserver");
                assert!(
                    v.stdout.contains("OK"),
                    "openssl verify of install {last} against the bundle: {v:?}\n{}",
                    d.log()
                );
                if roots_in(&bundle).len() > 1 || count(&sb, "ca-switch-root") == 0 {
                    let v = verify(&first_root, &f.cert, &f.cert, "sslserver");
                    assert!(
                        v.stdout.contains("OK"),
                        "openssl verify of install {last} against the first root alone: {v:?}"
                    );
                    via_first_root += 1;
                }
                checked.push(last.clone());
            }
        }
        count(&sb, "ca-drop-root") >= 1
    });
    let elapsed = t.elapsed();
    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let Seen {
        handshakes,
        failures,
        chain_lens,
    } = std::mem::take(&mut *seen.lock().unwrap());
    let log = d.log();
    let timeline: Vec<String> = sb
        .ledger()
        .iter()
        .filter(|e| {
            e["event"]
                .as_str()
                .is_some_and(|e| e.starts_with("ca-") || e == "installed")
        })
        .map(|e| {
            format!(
                "{} {} {}",
                e["time"],
                e["event"],
                e["note"].as_str().unwrap_or("")
            )
        })
        .collect();
    eprintln!(
        "ca rotation: {handshakes} handshakes in {elapsed:?}, {} installs checked ({via_first_root} also against the first root alone), served chain lengths {chain_lens:?}\n  {}",
        checked.len(),
        timeline.join("\n  ")
    );
    assert!(
        done,
        "no root was dropped within 8 minutes:\n  {}\n--- log ---\n{log}",
        timeline.join("\n  ")
    );
    assert!(
        failures.is_empty(),
        "{} of {handshakes} handshakes failed: {failures:#?}\n  {}\n--- log ---\n{log}",
        failures.len(),
        timeline.join("\n  ")
    );
    for event in [
        "ca-rotate-intermediate",
        "ca-publish-root",
        "ca-switch-root",
        "ca-drop-root",
    ] {
        assert!(
            count(&sb, event) >= 1,
            "no {event}:\n  {}",
            timeline.join("\n  ")
        );
    }
    assert!(handshakes > 1000, "{handshakes}");
    assert!(checked.len() >= 4, "{checked:?}");
    assert!(via_first_root >= 1);
    // After the overlap: the bundle holds the new root only, and it is not the first.
    // The ledger says `ca-drop-root` when the CA changes; the trust targets are written
    // later in the same pass.
    wait_until(Duration::from_secs(30), || roots_in(&bundle).len() == 1);
    let roots = roots_in(&bundle);
    assert_eq!(roots.len(), 1, "{roots:?}");
    assert!(roots[0].contains("Root G2"), "{roots:?}");
    // The chain trust target holds the root and every intermediate that carries leaves.
    let chain = pem_blocks(&sb.path("tls/chain.pem"), "CERTIFICATE");
    assert!(chain.len() >= 2, "{chain:?}");
    // `ca show` tells the generations.
    let show = sb.ck(&["ca", "show"]);
    show.stdout_has("root (generation 2, issuing)");
    assert!(d.alive(), "{log}");
    d.stop();
}

/// The root key kept offline: when the intermediate is due, nothing rotates, `check`
/// exits 1 and `status` warns, naming the command; `ca rotate --root-key FILE` rotates
/// with the key from where it is kept, without copying it into the CA directory.
#[test]
fn ca_rotation_with_the_root_key_offline_is_an_alarm_until_ca_rotate_root_key() {
    let sb = Sandbox::new();
    // A 60 s intermediate must carry a 30 s leaf and its 10 s window: it is due 20 s
    // after it was made.
    sb.write_config(
        "state_dir: $DIR/state\n\
         ca: { organization: Test Org, common_name: Test CA, root_lifetime: 10m, intermediate_lifetime: 60s }\n\
         certificates:\n  - name: www\n    sans: [www.example.internal]\n    lifetime: 30s\n    files: { layout: combined, cert: $DIR/tls/www.pem }\n",
    );
    sb.ck(&["ca", "init"]).ok();
    let ca_dir = sb.state_dir().join("ca");
    let offline = sb.path("offline-root.key");
    fs::rename(ca_dir.join("root.key"), &offline).unwrap();
    sb.renew_all().ok();
    let r = sb.ck(&["check"]);
    r.ok();
    let t = Instant::now();
    let alarm = wait_until(Duration::from_secs(40), || sb.ck(&["check"]).code == 1);
    assert!(alarm, "check never raised the alarm");
    eprintln!("root offline: check exits 1 after {:?}", t.elapsed());
    let r = sb.ck(&["check"]);
    r.stderr_has("warning: the CA intermediate certificate expires")
        .stderr_has("the root key is not on this host: run `certkeeper ca rotate --root-key FILE`");
    let r = sb.ck(&["status"]);
    r.stderr_has("the root key is not on this host");
    // A renewal does not rotate without the key, and says nothing broke.
    sb.renew_all().ok();
    assert_eq!(count(&sb, "ca-rotate-intermediate"), 0);
    let before = fs::read(ca_dir.join("intermediate.crt")).unwrap();

    let r = sb.ck(&["ca", "rotate", "--root-key", path_str(&offline)]);
    r.ok()
        .stdout_has("rotated the CA intermediate: generation 2 issues from now on");
    assert_ne!(fs::read(ca_dir.join("intermediate.crt")).unwrap(), before);
    assert!(
        !ca_dir.join("root.key").exists(),
        "the root key stays offline"
    );
    assert_eq!(count(&sb, "ca-rotate-intermediate"), 1);
    // The retired intermediate is kept with its key (it signs its CRL), and every
    // installed chain still verifies; `www` renews under the new one when due.
    assert!(ca_dir.join("old/intermediate-1.crt").exists());
    sb.ck(&["check"]).ok();
    let show = sb.ck(&["ca", "show"]);
    show.ok()
        .stdout_has("intermediate (generation 2, issuing)")
        .stdout_has("intermediate (generation 1, retired");
    let v = verify(
        &sb.root_bundle(),
        &sb.path("tls/www.pem"),
        &sb.path("tls/www.pem"),
        "sslserver",
    );
    assert!(v.stdout.contains("OK"), "{v:?}");
    // A wrong key is refused, and nothing changes.
    let other = sb.path("other.key");
    fs::write(&other, openssl_p256_key()).unwrap();
    let snap = snapshot(&ca_dir);
    let r = sb.ck(&["ca", "rotate", "--root-key", path_str(&other)]);
    assert_ne!(r.code, 0, "{r:?}");
    r.stderr_has("this key does not belong to");
    snap.assert_same(&snapshot(&ca_dir), "a refused rotation");
}
