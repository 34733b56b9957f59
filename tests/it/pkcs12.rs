//! `layout: pkcs12` and `issue --pkcs12`: the `.p12` file is read by the programs that
//! import client certificates (OpenSSL 3 without `-legacy`, NSS `pk12util` into a fresh
//! database, Java `keytool` when a JRE is installed), and the certificate in it is
//! accepted by a real nginx with `ssl_verify_client on`, on a free 127.0.0.1 port.
//! Also: what a missing, misplaced or too open `password_file` does, and what a new
//! password does.

use crate::support::servers::{write_file, Nginx, SERVER_NAME};
use crate::support::*;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The password of the client certificate `alice` in these tests.
const PASSWORD: &str = "Correct-Horse-Battery-7";
/// How long nginx may take to apply a new configuration after SIGHUP.
const NGINX_SWITCH: Duration = Duration::from_secs(5);

fn alice() -> CertDef {
    CertDef::new("alice", Layout::Pkcs12)
        .usage("client")
        .sans(&["alice.example.internal"])
}

fn www() -> CertDef {
    CertDef::new("www", Layout::Nginx).sans(&[SERVER_NAME])
}

/// Writes `$DIR/NAME.pass` with `text` and `mode`.
fn password_file(sb: &Sandbox, name: &str, text: &str, mode: u32) -> PathBuf {
    let p = sb.path(&format!("{name}.pass"));
    fs::write(&p, text).unwrap();
    set_mode(&p, mode);
    p
}

/// Runs a program that must be installed (it fails the test, naming the package, when
/// it is not).
#[track_caller]
fn run(program: &str, package: &str, args: &[&str]) -> Run {
    let out = Command::new(program)
        .args(args)
        .env("SSL_CERT_FILE", "/dev/null")
        .env("SSL_CERT_DIR", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}): install {package}"));
    Run {
        what: format!("{program} {}", args.join(" ")),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(program).is_file()))
}

/// How a client presents itself to nginx.
enum Client<'a> {
    None,
    /// Certificates (leaf + intermediate) and key as PEM files.
    Pem {
        cert: &'a Path,
        key: &'a Path,
    },
    /// The `.p12` file itself, with its password.
    P12 {
        file: &'a Path,
        password: &'a str,
    },
}

/// `GET https://SERVER_NAME:PORT/` with curl, trusting only `root`: the HTTP status.
/// A failure to connect or to trust the server fails the test.
fn status_code(port: u16, root: &Path, client: Client) -> u16 {
    let mut cmd = Command::new("curl");
    cmd.env("SSL_CERT_FILE", "/dev/null")
        .env("SSL_CERT_DIR", "/nonexistent")
        .stdin(Stdio::null())
        .args(["--http1.1", "-sS", "--max-time", "5", "-o", "/dev/null"])
        .args(["-w", "%{http_code}", "--cacert", path_str(root)])
        .args(["--resolve", &format!("{SERVER_NAME}:{port}:127.0.0.1")]);
    match client {
        Client::None => {}
        Client::Pem { cert, key } => {
            cmd.args(["--cert", path_str(cert), "--key", path_str(key)]);
        }
        Client::P12 { file, password } => {
            cmd.args([
                "--cert-type",
                "P12",
                "--cert",
                &format!("{}:{password}", path_str(file)),
            ]);
        }
    }
    cmd.arg(format!("https://{SERVER_NAME}:{port}/"));
    let out = cmd.output().expect("run curl");
    assert!(
        out.status.success(),
        "curl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .parse()
        .unwrap_or_else(|_| panic!("curl printed no status code: {text:?}"))
}

/// The child processes of nginx's master (its workers).
fn workers(master: i32) -> Vec<String> {
    fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
        .map(|t| t.split_whitespace().map(String::from).collect())
        .unwrap_or_default()
}

#[test]
fn pkcs12_client_certificate_opens_in_openssl_nss_and_java_and_nginx_accepts_it() {
    let sb = Sandbox::new();
    let pass = password_file(&sb, "alice", &format!("{PASSWORD}\n"), 0o600);
    sb.write_certs(&[www(), alice()]);
    let r = sb.renew_all();
    r.ok();
    let p12 = sb.path("tls/alice.p12");
    let root = sb.root_bundle();

    // One plain file of the key's mode, no key or PEM beside it, and no password in
    // anything certkeeper printed.
    let meta = fs::symlink_metadata(&p12).unwrap();
    assert!(meta.is_file(), "a plain file, not a link");
    assert_eq!(mode(&p12), 0o600);
    let beside: Vec<String> = fs::read_dir(sb.path("tls"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("alice"))
        .collect();
    assert_eq!(beside, ["alice.p12"]);
    assert!(!r.all().contains(PASSWORD), "{r:?}");
    alice().files(&sb).check(&root, "sslclient");

    // status reads the installed certificate back out of the file.
    let row = sb.status_row("alice");
    assert_eq!(row["state"], "ok", "{row}");
    assert!(row["not_after"].is_string(), "{row}");
    assert_eq!(row["files"][0], path_str(&p12), "{row}");
    assert!(!sb.ck(&["status"]).all().contains(PASSWORD));

    // OpenSSL 3 reads it without -legacy: PBES2 with PBKDF2-HMAC-SHA256 and AES-256-CBC
    // for the key and the certificates, an HMAC-SHA256 MAC.
    let passin = format!("file:{}", path_str(&pass));
    let info = openssl(&[
        "pkcs12",
        "-info",
        "-noout",
        "-in",
        path_str(&p12),
        "-passin",
        &passin,
    ]);
    info.ok();
    let info_text = info.all();
    eprintln!("openssl pkcs12 -info:\n{info_text}");
    assert!(
        info_text.contains("MAC: sha256, Iteration 200000"),
        "{info_text}"
    );
    assert!(
        info_text.contains(
            "PKCS7 Encrypted data: PBES2, PBKDF2, AES-256-CBC, Iteration 200000, PRF hmacWithSHA256"
        ),
        "{info_text}"
    );
    assert!(
        info_text.contains(
            "Shrouded Keybag: PBES2, PBKDF2, AES-256-CBC, Iteration 200000, PRF hmacWithSHA256"
        ),
        "{info_text}"
    );
    let wrong = password_file(&sb, "wrong", "not the password\n", 0o600);
    openssl(&[
        "pkcs12",
        "-info",
        "-noout",
        "-in",
        path_str(&p12),
        "-passin",
        &format!("file:{}", path_str(&wrong)),
    ])
    .expect_code(1);

    // Key, leaf and chain come back out; the key is the leaf's, the leaf a client
    // certificate of the CA, and the key's friendly name is the certificate's name.
    let out = sb.path("out");
    fs::create_dir(&out).unwrap();
    let u = p12_unpack(&p12, &pass, &out);
    assert_eq!(
        pem_blocks(&u.all, "CERTIFICATE").len(),
        2,
        "leaf + intermediate"
    );
    assert_eq!(pubkey_of_key(&u.key), pubkey_of_cert(&u.leaf));
    verify(&root, &u.chain, &u.leaf, "sslclient").ok();
    assert!(cert_text(&u.leaf).contains("TLS Web Client Authentication"));
    assert!(
        fs::read_to_string(&u.all)
            .unwrap()
            .contains("friendlyName: alice\n"),
        "the key's friendly name"
    );

    // NSS imports it into a fresh database and lists the certificate with its key.
    let db = sb.path("nssdb");
    fs::create_dir(&db).unwrap();
    let sql = format!("sql:{}", path_str(&db));
    run(
        "certutil",
        "libnss3-tools",
        &["-N", "--empty-password", "-d", &sql],
    )
    .ok();
    run(
        "pk12util",
        "libnss3-tools",
        &["-i", path_str(&p12), "-d", &sql, "-w", path_str(&pass)],
    )
    .ok()
    .stdout_has("PKCS12 IMPORT SUCCESSFUL");
    let listed = run("certutil", "libnss3-tools", &["-L", "-d", &sql]);
    listed.ok();
    let line = listed
        .stdout
        .lines()
        .find(|l| l.starts_with("CN=alice.example.internal"))
        .unwrap_or_else(|| panic!("alice is not listed: {listed:?}"));
    assert!(
        line.trim_end().ends_with("u,u,u"),
        "a certificate with its key: {line}"
    );
    run("certutil", "libnss3-tools", &["-K", "-d", &sql])
        .ok()
        .stdout_has("CN=alice.example.internal");

    // Java lists one private key entry under the alias `alice`.
    if on_path("keytool") {
        let listed = run(
            "keytool",
            "a JRE",
            &[
                "-list",
                "-keystore",
                path_str(&p12),
                "-storetype",
                "PKCS12",
                "-storepass:file",
                path_str(&pass),
            ],
        );
        listed.ok();
        assert!(
            listed.stdout.contains("Your keystore contains 1 entry"),
            "{listed:?}"
        );
        assert!(
            listed
                .stdout
                .lines()
                .any(|l| l.starts_with("alice, ") && l.contains("PrivateKeyEntry")),
            "{listed:?}"
        );
    } else {
        eprintln!("note: keytool is not on the PATH; the Java part of this test was skipped");
    }

    // nginx requires a client certificate of the CA: the one from the .p12 gets in,
    // nothing else does.
    let nginx = Nginx::start(
        &sb.path("nginx"),
        &sb.path("tls/www.crt"),
        &sb.path("tls/www.key"),
    );
    let marker = "location / {";
    nginx.rewrite(|conf| {
        assert!(conf.contains(marker));
        conf.replace(
            marker,
            &format!(
                "ssl_verify_client on;\n        ssl_verify_depth 2;\n        ssl_client_certificate {};\n        {marker}",
                path_str(&root)
            ),
        )
    });
    // The port answers once the master listens, maybe before its worker is forked.
    wait_for(NGINX_SWITCH, "nginx's worker", || {
        !workers(nginx.pid()).is_empty()
    });
    let old_workers = workers(nginx.pid());
    nginx.reload_by_hand();
    // The new worker asks for certificates; the old one may answer a few more requests
    // until it has left.
    wait_for(NGINX_SWITCH, "nginx to require client certificates", || {
        let now = workers(nginx.pid());
        !now.is_empty()
            && !now.iter().any(|w| old_workers.contains(w))
            && status_code(nginx.port(), &root, Client::None) == 400
    });
    let client_pem = out.join("client.pem");
    write_file(
        &client_pem,
        &format!(
            "{}{}",
            fs::read_to_string(&u.leaf).unwrap(),
            fs::read_to_string(&u.chain).unwrap()
        ),
        0o600,
    );
    let with_cert = Client::Pem {
        cert: &client_pem,
        key: &u.key,
    };
    assert_eq!(
        status_code(nginx.port(), &root, with_cert),
        200,
        "{}",
        nginx.error_log()
    );
    assert_eq!(status_code(nginx.port(), &root, Client::None), 400);
    // curl (OpenSSL 3) also presents the .p12 file as it is.
    assert_eq!(
        status_code(
            nginx.port(),
            &root,
            Client::P12 {
                file: &p12,
                password: PASSWORD
            }
        ),
        200,
        "{}",
        nginx.error_log()
    );
    // A certificate from elsewhere is turned away.
    let stranger_key = out.join("stranger.key");
    let stranger_crt = out.join("stranger.crt");
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=alice.example.internal",
        "-days",
        "1",
        "-keyout",
        path_str(&stranger_key),
        "-out",
        path_str(&stranger_crt),
    ])
    .ok();
    let stranger = Client::Pem {
        cert: &stranger_crt,
        key: &stranger_key,
    };
    assert_eq!(status_code(nginx.port(), &root, stranger), 400);

    // A second pass finds the file in order and leaves it alone.
    let before = fs::read(&p12).unwrap();
    sb.renew_all().ok();
    assert_eq!(
        fs::read(&p12).unwrap(),
        before,
        "an unchanged .p12 is not rewritten"
    );
}

#[test]
fn pkcs12_a_new_password_is_taken_at_the_next_pass() {
    let sb = Sandbox::new();
    let pass = password_file(&sb, "alice", "first password\n", 0o600);
    sb.write_certs(&[alice()]);
    sb.renew_all().ok();
    let p12 = sb.path("tls/alice.p12");
    let old_serial = alice().files(&sb).serial();

    // The file no longer opens with the password: it is written again with the new one
    // (and the old pair archived), without --force.
    fs::write(&pass, "second password\n").unwrap();
    let row = sb.status_row("alice");
    assert_eq!(row["state"], "damaged", "{row}");
    let detail = row["detail"].as_str().unwrap();
    assert!(
        detail.contains("does not open with the password in"),
        "{detail}"
    );
    assert!(
        !detail.contains("password\n") && !detail.contains("second"),
        "{detail}"
    );
    let r = sb.renew_all();
    r.ok();
    assert!(!r.all().contains("second password"), "{r:?}");
    let new_serial = alice().files(&sb).serial();
    assert_ne!(new_serial, old_serial);
    assert_eq!(mode(&p12), 0o600);
    assert_eq!(sb.status_row("alice")["state"], "ok");
}

#[test]
fn pkcs12_a_password_file_others_can_read_is_refused_before_anything_is_issued() {
    let sb = Sandbox::new();
    let pass = password_file(&sb, "alice", &format!("{PASSWORD}\n"), 0o644);
    sb.write_certs(&[alice()]);
    let r = sb.renew_all();
    r.expect_code(1);
    let all = r.all();
    assert!(all.contains(path_str(&pass)), "names the file: {r:?}");
    assert!(
        all.contains("lets every user read the PKCS#12 password"),
        "{r:?}"
    );
    assert!(
        all.contains(&format!("chmod 600 {}", path_str(&pass))),
        "{r:?}"
    );
    assert!(!all.contains(PASSWORD), "{r:?}");
    assert!(!sb.path("tls/alice.p12").exists());
    assert_eq!(count_events(&sb.ledger(), "issued", Some("alice")), 0);

    // An empty password is refused too, naming the file.
    fs::write(&pass, "\n").unwrap();
    set_mode(&pass, 0o600);
    let r = sb.renew_all();
    r.expect_code(1);
    assert!(r.all().contains("the password is empty"), "{r:?}");
    assert!(!sb.path("tls/alice.p12").exists());

    fs::write(&pass, format!("{PASSWORD}\n")).unwrap();
    sb.renew_all().ok();
    alice().files(&sb).check(&sb.root_bundle(), "sslclient");
}

#[test]
fn pkcs12_config_errors_name_the_file_line_and_field() {
    let sb = Sandbox::new();
    let pass = password_file(&sb, "alice", "pw\n", 0o600);
    let cases = [
        // No password_file.
        (
            "    files: { layout: pkcs12, p12: $DIR/tls/alice.p12 }\n",
            "certificates[0].files.password_file",
            "is missing: layout `pkcs12` encrypts the .p12 file",
        ),
        // A relative one.
        (
            "    files: { layout: pkcs12, p12: $DIR/tls/alice.p12, password_file: alice.pass }\n",
            "certificates[0].files.password_file",
            "relative path",
        ),
        // The .p12 file itself.
        (
            "    files: { layout: pkcs12, p12: $DIR/alice.pass, password_file: $DIR/alice.pass }\n",
            "certificates[0].files.password_file",
            "is the `p12` file itself",
        ),
        // A password for a layout that encrypts nothing.
        (
            "    files: { layout: nginx, cert: $DIR/tls/a.crt, key: $DIR/tls/a.key, password_file: $DIR/alice.pass }\n",
            "certificates[0].files.password_file",
            "layout `nginx` writes no encrypted file",
        ),
        // `cert:` where the layout writes `p12:`.
        (
            "    files: { layout: pkcs12, cert: $DIR/tls/alice.p12, password_file: $DIR/alice.pass }\n",
            "certificates[0].files.p12",
            "is missing: layout `pkcs12` writes one `p12` file",
        ),
    ];
    for (files, field, message) in cases {
        let yaml = format!(
            "{}  - name: alice\n    usage: client\n    sans: [alice.example.internal]\n{files}",
            header()
        );
        let config = sb.write_config(&yaml);
        let r = sb.ck(&["check"]);
        r.expect_code(2);
        let line = r
            .stderr
            .lines()
            .find(|l| l.contains(field))
            .unwrap_or_else(|| panic!("no error names {field}: {r:?}"));
        // FILE:LINE: the `files:` line is line 9 of the generated config.
        assert!(line.contains(&format!("{}:9", path_str(&config))), "{line}");
        assert!(line.contains(message), "{line}");
        assert!(!sb.path("tls").exists(), "nothing was written");
    }

    // A password file that does not exist (yet) leaves the configuration valid: `check`
    // warns (exit 1), and a pass fails for that certificate, naming the file, before
    // anything is issued.
    let missing = sb.path("nope.pass");
    sb.write_config(&format!(
        "{}  - name: alice\n    usage: client\n    sans: [alice.example.internal]\n    files: {{ layout: pkcs12, p12: $DIR/tls/alice.p12, password_file: {} }}\n",
        header(),
        path_str(&missing)
    ));
    let r = sb.ck(&["check"]);
    r.expect_code(1);
    assert!(
        r.stderr.contains(&format!(
            "warning: certificate `alice`: files.password_file: cannot read the PKCS#12 password: {}: no such file",
            path_str(&missing)
        )),
        "{r:?}"
    );
    let r = sb.renew_all();
    r.expect_code(1);
    assert!(r.all().contains(path_str(&missing)), "{r:?}");
    assert!(!sb.path("tls/alice.p12").exists());
    assert_eq!(count_events(&sb.ledger(), "issued", Some("alice")), 0);
    assert!(pass.exists());
}

#[test]
fn pkcs12_issue_writes_an_encrypted_file_and_no_key_beside_it() {
    let sb = Sandbox::new();
    sb.write_certs(&[]);
    let pass = password_file(&sb, "bob", &format!("{PASSWORD}\n"), 0o600);
    let out = sb.path("out");
    fs::create_dir(&out).unwrap();
    let args = |pw: &Path| {
        [
            "issue",
            "--name",
            "bob",
            "--san",
            "bob.example.internal",
            "--client",
            "--pkcs12",
            "--password-file",
            path_str(pw),
            "--out",
            path_str(&out),
        ]
        .map(String::from)
    };

    // A password file others can read: refused as a usage error, nothing written.
    let open = password_file(&sb, "open", "x\n", 0o604);
    let a = args(&open);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = sb.ck(&refs);
    r.expect_code(2);
    assert!(r.stderr.contains("--password-file"), "{r:?}");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 0);

    // --pkcs12 and --password-file go together.
    sb.ck(&[
        "issue",
        "--name",
        "bob",
        "--san",
        "bob.example.internal",
        "--pkcs12",
        "--out",
        path_str(&out),
    ])
    .expect_code(2)
    .stderr_has("--password-file");

    let a = args(&pass);
    let refs: Vec<&str> = a.iter().map(String::as_str).collect();
    let r = sb.ck(&refs);
    r.ok();
    assert!(!r.all().contains(PASSWORD));
    let mut names: Vec<String> = fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["bob.crt", "bob.p12"]);
    assert_eq!(mode(&out.join("bob.p12")), 0o600);
    let tmp = sb.path("unpacked");
    fs::create_dir(&tmp).unwrap();
    let u = p12_unpack(&out.join("bob.p12"), &pass, &tmp);
    assert_eq!(pubkey_of_key(&u.key), pubkey_of_cert(&u.leaf));
    assert_eq!(
        pem_blocks(&u.all, "CERTIFICATE"),
        pem_blocks(&out.join("bob.crt"), "CERTIFICATE"),
        "the .p12 holds what bob.crt holds"
    );
    verify(&sb.root_bundle(), &u.chain, &u.leaf, "sslclient").ok();
    let issued = sb
        .ledger()
        .into_iter()
        .find(|e| e["event"] == "issued" && e["name"] == "bob")
        .expect("an issued line");
    assert!(
        issued["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f == path_str(&out.join("bob.p12"))),
        "{issued}"
    );
}
