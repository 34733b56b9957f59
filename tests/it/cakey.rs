//! CA keys encrypted at rest: what certkeeper encrypts, OpenSSL and GnuTLS read with
//! the passphrase and refuse without it; what OpenSSL encrypts, certkeeper reads; and
//! `certkeeper ca encrypt` on a real CA.

use crate::support::*;
use certkeeper::cakey::{self, CaKeyError, Passphrase};
use certkeeper::keys::PrivateKey;
use certkeeper::model::KeyType;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const TYPES: [KeyType; 4] = [
    KeyType::EcdsaP256,
    KeyType::EcdsaP384,
    KeyType::Ed25519,
    KeyType::Rsa2048,
];

/// The most one openssl or certtool run may take before it counts as hung (one waiting
/// for a passphrase on a terminal, say).
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// Runs `program ARGS...` in a session of its own (no controlling terminal, so nothing
/// can prompt for a passphrase) with stdin closed, and waits for it, at most
/// `TOOL_LIMIT`.
#[track_caller]
fn tool(dir: &Path, program: &str, args: &[&str]) -> Run {
    let what = format!("{program} {}", args.join(" "));
    let out = dir.join(format!("{program}.stdout"));
    let err = dir.join(format!("{program}.stderr"));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env("SSL_CERT_FILE", "/dev/null")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(fs::File::create(&err).unwrap());
    // SAFETY: setsid is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| nix::unistd::setsid().map(|_| ()).map_err(Into::into));
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let mut status = None;
    let ended = wait_until(TOOL_LIMIT, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!("`{what}` did not end within {TOOL_LIMIT:?}");
    }
    Run {
        what,
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: fs::read_to_string(&out).unwrap_or_default(),
        stderr: fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// Writes a file with `mode`.
fn write(path: &Path, bytes: &[u8], mode: u32) -> PathBuf {
    fs::write(path, bytes).unwrap();
    set_mode(path, mode);
    path.to_path_buf()
}

fn spki_pem(key: &PrivateKey) -> String {
    certkeeper::encoding::pem_encode("PUBLIC KEY", &key.spki_der())
}

#[test]
fn openssl_reads_our_encrypted_keys_only_with_the_passphrase() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pass_file = write(&dir.join("pass"), b"correct horse battery staple\n", 0o600);
    let pass = cakey::read_passphrase(&pass_file).unwrap();
    let passin = format!("file:{}", path_str(&pass_file));
    for kind in TYPES {
        let key = PrivateKey::generate(kind).unwrap();
        let enc = write(
            &dir.join(format!("{kind}.key")),
            cakey::encode(&key, Some(&pass)).unwrap().as_bytes(),
            0o600,
        );
        let enc = path_str(&enc);
        let r = tool(
            dir,
            "openssl",
            &["pkey", "-in", enc, "-passin", &passin, "-noout"],
        );
        r.ok();
        // And it is the same key.
        let r = tool(
            dir,
            "openssl",
            &["pkey", "-in", enc, "-passin", &passin, "-pubout"],
        );
        r.ok();
        assert_eq!(r.stdout, spki_pem(&key), "{kind}");

        let r = tool(
            dir,
            "openssl",
            &["pkey", "-in", enc, "-passin", "pass:wrong", "-noout"],
        );
        assert_ne!(r.code, 0, "{kind}: a wrong passphrase was accepted: {r:?}");
        // No passphrase, no terminal to ask on, stdin closed.
        let r = tool(dir, "openssl", &["pkey", "-in", enc, "-noout"]);
        assert_ne!(r.code, 0, "{kind}: read without a passphrase: {r:?}");
        assert!(!r.stdout.contains("PRIVATE KEY"), "{r:?}");
    }
}

#[test]
fn gnutls_certtool_reads_our_encrypted_keys_only_with_the_passphrase() {
    if Command::new("certtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        println!("skipped: GnuTLS certtool is not installed (Debian package gnutls-bin)");
        return;
    }
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pass = Passphrase::new(b"correct horse battery staple".to_vec()).unwrap();
    for kind in TYPES {
        let key = PrivateKey::generate(kind).unwrap();
        let enc = write(
            &dir.join(format!("{kind}.key")),
            cakey::encode(&key, Some(&pass)).unwrap().as_bytes(),
            0o600,
        );
        let enc = path_str(&enc);
        tool(
            dir,
            "certtool",
            &[
                "--load-privkey",
                enc,
                "--password",
                "correct horse battery staple",
                "-k",
            ],
        )
        .ok();
        let r = tool(
            dir,
            "certtool",
            &[
                "--load-privkey",
                enc,
                "--password",
                "correct horse battery staple",
                "--pubkey-info",
            ],
        );
        r.ok();
        assert!(r.stdout.ends_with(&spki_pem(&key)), "{kind}: {r:?}");
        let r = tool(
            dir,
            "certtool",
            &["--load-privkey", enc, "--password", "wrong", "-k"],
        );
        assert_ne!(r.code, 0, "{kind}: a wrong passphrase was accepted: {r:?}");
    }
}

#[test]
fn keys_openssl_encrypted_decode_with_the_passphrase() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path();
    let pass_file = write(&dir.join("pass"), b"s3cret\n", 0o600);
    let pass = cakey::read_passphrase(&pass_file).unwrap();
    let wrong = Passphrase::new(b"S3cret".to_vec()).unwrap();
    let passout = format!("file:{}", path_str(&pass_file));
    for (kind, args) in [
        (
            KeyType::EcdsaP256,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"][..],
        ),
        (
            KeyType::EcdsaP384,
            &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
        ),
        (KeyType::Ed25519, &["-algorithm", "ED25519"]),
        (
            KeyType::Rsa2048,
            &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        ),
    ] {
        let path = dir.join(format!("{kind}.key"));
        let mut all = vec!["genpkey"];
        all.extend_from_slice(args);
        all.extend(["-aes-256-cbc", "-pass", &passout, "-out", path_str(&path)]);
        tool(dir, "openssl", &all).ok();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----"),
            "{text}"
        );
        assert!(cakey::is_encrypted(&text));
        let key =
            cakey::decode(&text, Some(&pass), &path).unwrap_or_else(|e| panic!("{kind}: {e}"));
        assert_eq!(key.key_type(), Some(kind));
        let r = tool(
            dir,
            "openssl",
            &[
                "pkey",
                "-in",
                path_str(&path),
                "-passin",
                &passout,
                "-pubout",
            ],
        );
        r.ok();
        assert_eq!(r.stdout, spki_pem(&key), "{kind}");
        let e = cakey::decode(&text, Some(&wrong), &path).unwrap_err();
        assert!(
            matches!(e, CaKeyError::WrongPassphrase { .. }),
            "{kind}: {e:?}"
        );
        let e = cakey::decode(&text, None, &path).unwrap_err();
        assert!(
            matches!(e, CaKeyError::NoPassphrase { .. }),
            "{kind}: {e:?}"
        );
    }
}

/// A config with `ca.key_passphrase_file` (when given) and no certificates.
fn write_config(sb: &Sandbox, passphrase_file: Option<&Path>) {
    let mut y = String::from("state_dir: $DIR/state\nca:\n  common_name: Test CA\n");
    if let Some(p) = passphrase_file {
        y.push_str(&format!("  key_passphrase_file: {}\n", p.display()));
    }
    y.push_str("certificates: []\n");
    sb.write_config(&y);
}

#[test]
fn ca_encrypt_encrypts_every_ca_key_once() {
    let sb = Sandbox::new();
    write_config(&sb, None);
    sb.ck(&["ca", "init"]).ok();
    let ca = sb.state_dir().join("ca");
    sb.ck(&["ca", "show"])
        .ok()
        .stdout_has("intermediate key: not encrypted at rest");

    // Another key further down, as an archived CA would have.
    fs::create_dir(ca.join("old")).unwrap();
    let old = PrivateKey::generate(KeyType::Ed25519).unwrap();
    write(
        &ca.join("old/intermediate.key"),
        old.pem().as_bytes(),
        0o600,
    );
    let keys = [
        ca.join("intermediate.key"),
        ca.join("old/intermediate.key"),
        ca.join("root.key"),
    ];
    let public: Vec<String> = keys
        .iter()
        .map(|k| {
            let r = tool(
                sb.dir(),
                "openssl",
                &["pkey", "-in", path_str(k), "-pubout"],
            );
            r.ok();
            r.stdout.clone()
        })
        .collect();

    // No passphrase configured: a usage error that says how to give one.
    let before = snapshot(&ca);
    let r = sb.ck(&["ca", "encrypt"]);
    r.expect_code(2)
        .stderr_has("ca.key_passphrase_file")
        .stderr_has("LoadCredentialEncrypted=ca-passphrase");
    before.assert_same(&snapshot(&ca), "ca encrypt without a passphrase");

    // A passphrase file others may read is refused.
    let pass_file = write(&sb.path("ca-passphrase"), b"correct horse\n", 0o644);
    write_config(&sb, Some(&pass_file));
    sb.ck(&["ca", "encrypt"])
        .expect_code(1)
        .stderr_has(&format!("run `chmod 600 {}`", pass_file.display()));
    before.assert_same(&snapshot(&ca), "ca encrypt with a readable passphrase");

    set_mode(&pass_file, 0o600);
    let r = sb.ck(&["ca", "encrypt"]);
    r.ok();
    let expected: Vec<String> = keys
        .iter()
        .map(|k| format!("encrypted {}", k.display()))
        .collect();
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), expected, "{r:?}");
    let passin = format!("file:{}", path_str(&pass_file));
    for (k, public) in keys.iter().zip(&public) {
        let text = fs::read_to_string(k).unwrap();
        assert!(
            text.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----\n"),
            "{}: {text}",
            k.display()
        );
        assert_eq!(mode(k), 0o600, "{}", k.display());
        let r = tool(
            sb.dir(),
            "openssl",
            &["pkey", "-in", path_str(k), "-passin", &passin, "-pubout"],
        );
        r.ok();
        assert_eq!(&r.stdout, public, "{}: another key", k.display());
        let r = tool(sb.dir(), "openssl", &["pkey", "-in", path_str(k), "-noout"]);
        assert_ne!(r.code, 0, "{}: read without a passphrase", k.display());
        let r = tool(
            sb.dir(),
            "openssl",
            &[
                "pkey",
                "-in",
                path_str(k),
                "-passin",
                "pass:wrong",
                "-noout",
            ],
        );
        assert_ne!(r.code, 0, "{}: read with a wrong passphrase", k.display());
    }
    let encrypted = snapshot(&ca);
    assert!(
        !encrypted
            .paths()
            .iter()
            .any(|p| p.to_string_lossy().contains(".certkeeper-tmp-")),
        "temporary files left: {:?}",
        encrypted.paths()
    );

    // Again: nothing to do, nothing written.
    let r = sb.ck(&["ca", "encrypt"]);
    r.ok();
    let expected: Vec<String> = keys
        .iter()
        .map(|k| format!("already encrypted {}", k.display()))
        .collect();
    assert_eq!(r.stdout.lines().collect::<Vec<_>>(), expected, "{r:?}");
    encrypted.assert_same(&snapshot(&ca), "second ca encrypt");

    // The systemd credential serves when no file is configured.
    let creds = sb.path("credentials");
    fs::create_dir(&creds).unwrap();
    write(&creds.join("ca-passphrase"), b"correct horse", 0o400);
    write_config(&sb, None);
    let config = sb.config();
    let out = sb
        .command(&["ca", "encrypt", "-c", &config])
        .env("CREDENTIALS_DIRECTORY", &creds)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("already encrypted"));

    // A wrong passphrase: an error naming the keys, and nothing changes, not even the
    // plain key that a right one would have encrypted.
    let extra = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    write(&ca.join("extra.key"), extra.pem().as_bytes(), 0o600);
    let before = snapshot(&ca);
    write(&pass_file, b"wrong horse\n", 0o600);
    write_config(&sb, Some(&pass_file));
    let r = sb.ck(&["ca", "encrypt"]);
    r.expect_code(1)
        .stderr_has(&format!(
            "{}: wrong passphrase",
            ca.join("root.key").display()
        ))
        .stderr_has(&format!(
            "{}: wrong passphrase",
            ca.join("intermediate.key").display()
        ))
        .stderr_has("no key was changed");
    assert!(!r.all().contains("wrong horse"), "{r:?}");
    before.assert_same(&snapshot(&ca), "ca encrypt with a wrong passphrase");
}

#[test]
fn ca_encrypt_follows_no_link_and_changes_nothing_then() {
    let sb = Sandbox::new();
    let pass_file = write(&sb.path("ca-passphrase"), b"secret\n", 0o600);
    write_config(&sb, Some(&pass_file));
    sb.ck(&["ca", "init"]).ok();
    let ca = sb.state_dir().join("ca");
    let outside = PrivateKey::generate(KeyType::EcdsaP256).unwrap();
    let outside_path = write(&sb.path("outside.key"), outside.pem().as_bytes(), 0o600);
    std::os::unix::fs::symlink(&outside_path, ca.join("linked.key")).unwrap();
    let before = snapshot(&ca);
    sb.ck(&["ca", "encrypt"])
        .expect_code(1)
        .stderr_has(&format!(
            "{}: is a symbolic link",
            ca.join("linked.key").display()
        ))
        .stderr_has("no key was changed");
    before.assert_same(&snapshot(&ca), "ca encrypt with a link in the CA");
    assert_eq!(fs::read_to_string(&outside_path).unwrap(), outside.pem());
}

/// A CA made with a passphrase configured: every key it writes (at creation, and at a
/// rotation) is encrypted at rest, it issues and rotates with the passphrase, and a
/// wrong or missing passphrase is a clear error that changes nothing.
#[test]
fn an_encrypted_ca_issues_rotates_and_refuses_a_wrong_passphrase() {
    let sb = Sandbox::new();
    let pass_file = write(&sb.path("ca-passphrase"), b"correct horse\n", 0o600);
    let config = |pass: &Path| {
        sb.write_config(&format!(
            "state_dir: $DIR/state\nca:\n  common_name: Test CA\n  key_passphrase_file: {}\n\
             certificates:\n  - name: www\n    sans: [www.example.internal]\n    files: {{ layout: combined, cert: $DIR/tls/www.pem }}\n",
            pass.display()
        ));
    };
    config(&pass_file);
    sb.renew_all().ok();
    let ca = sb.state_dir().join("ca");
    let encrypted = |k: &Path| {
        fs::read_to_string(k)
            .unwrap()
            .starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----")
    };
    for k in ["root.key", "intermediate.key"] {
        assert!(encrypted(&ca.join(k)), "{k} is not encrypted at rest");
        assert_eq!(mode(&ca.join(k)), 0o600);
    }
    let r = tool(
        sb.dir(),
        "openssl",
        &[
            "pkey",
            "-in",
            path_str(&ca.join("intermediate.key")),
            "-passin",
            &format!("file:{}", pass_file.display()),
            "-noout",
        ],
    );
    r.ok();
    // A rotation writes the new intermediate's key encrypted and keeps the old one so.
    sb.ck(&["ca", "rotate"])
        .ok()
        .stdout_has("rotated the CA intermediate");
    assert!(encrypted(&ca.join("intermediate.key")));
    assert!(encrypted(&ca.join("old/intermediate-1.key")));
    sb.ck(&["renew", "--all", "--force"]).ok();
    // A wrong passphrase: a clear error naming the key, and nothing changes.
    let wrong = write(&sb.path("wrong-passphrase"), b"battery staple\n", 0o600);
    config(&wrong);
    let before = (snapshot(&sb.path("tls")), snapshot(&ca));
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.expect_code(1).stderr_has("wrong passphrase");
    before.0.assert_same(
        &snapshot(&sb.path("tls")),
        "renew with a wrong CA passphrase",
    );
    before
        .1
        .assert_same(&snapshot(&ca), "renew with a wrong CA passphrase");
    // No passphrase at all: the same.
    sb.write_config(
        "state_dir: $DIR/state\nca:\n  common_name: Test CA\n\
         certificates:\n  - name: www\n    sans: [www.example.internal]\n    files: { layout: combined, cert: $DIR/tls/www.pem }\n",
    );
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.expect_code(1)
        .stderr_has("the CA key is encrypted and certkeeper has no passphrase for it");
    before.0.assert_same(
        &snapshot(&sb.path("tls")),
        "renew without the CA passphrase",
    );
    before
        .1
        .assert_same(&snapshot(&ca), "renew without the CA passphrase");
    // status and check still read the CA (no key needed).
    sb.ck(&["status"]).ok();
}
