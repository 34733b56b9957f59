//! `certkeeper discover`: the certificates a private nginx and Apache configuration
//! load, read without starting either server (`nginx -T`, Apache's files), and the
//! `--yaml` block that adopts them, which `certkeeper check` accepts unchanged.

use crate::support::servers::{is_root, write_file, NGINX};
use crate::support::{openssl, pem_blocks, Sandbox};
use std::fs;
use std::path::Path;

const TOP: &str = "state_dir: $DIR/state\nca:\n  organization: Test Org\n  common_name: Test CA\n";

/// Issues `name` from the sandbox's internal CA into `$DIR/tls` (NAME.crt, NAME.key).
fn issue(sb: &Sandbox, name: &str, sans: &[&str]) {
    let out = sb.path("tls").display().to_string();
    let mut args = vec!["issue", "--name", name, "--out", &out];
    for s in sans {
        args.extend(["--san", s]);
    }
    sb.ck(&args).ok();
}

/// A self-signed certificate and key made by openssl (a foreign issuer).
fn self_signed(sb: &Sandbox, name: &str, dns: &str) {
    let crt = sb.path(&format!("tls/{name}.crt"));
    let key = sb.path(&format!("tls/{name}.key"));
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "30",
        "-subj",
        &format!("/CN={dns}"),
        "-addext",
        &format!("subjectAltName=DNS:{dns}"),
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        crt.to_str().unwrap(),
    ])
    .ok();
}

/// A private nginx configuration (as the server tests write theirs) in `$DIR/nginx`,
/// with `conf.d/*.conf` holding three server blocks: two TLS, one plain HTTP.
fn nginx_config(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.path("nginx");
    for sub in ["conf.d", "logs", "run", "tmp"] {
        fs::create_dir_all(dir.join(sub)).unwrap();
    }
    let d = dir.display().to_string();
    let user = if is_root() {
        "user nobody nogroup;\n"
    } else {
        ""
    };
    let main = dir.join("nginx.conf");
    write_file(
        &main,
        &format!(
            r#"# A private nginx for certkeeper's tests.
{user}worker_processes 1;
pid {d}/run/nginx.pid;
lock_file {d}/run/nginx.lock;
error_log {d}/logs/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log {d}/logs/access.log;
    client_body_temp_path {d}/tmp/client_body;
    proxy_temp_path {d}/tmp/proxy;
    fastcgi_temp_path {d}/tmp/fastcgi;
    uwsgi_temp_path {d}/tmp/uwsgi;
    scgi_temp_path {d}/tmp/scgi;
    # Inherited by the server blocks without their own.
    ssl_certificate_key ../tls/www.key;
    include conf.d/*.conf;
}}
"#
        ),
        0o644,
    );
    write_file(
        &dir.join("conf.d/10-www.conf"),
        r#"server {
    listen 127.0.0.1:18443 ssl;   # the internal CA's certificate
    server_name www.example.internal "api.example.internal";
    ssl_certificate ../tls/www.crt;
    location / { return 200 "ok; { }\n"; }
}
server {
    listen 18080;
    server_name plain.example.internal;
}
"#,
        0o644,
    );
    write_file(
        &dir.join("conf.d/20-foreign.conf"),
        &format!(
            "server {{\n    listen [::]:19443 ssl;\n    listen 19443 ssl;\n    server_name foreign.example.com;\n    ssl_certificate {0}/tls/foreign.crt;\n    ssl_certificate_key {0}/tls/foreign.key;\n}}\n",
            sb.dir().display()
        ),
        0o644,
    );
    main
}

/// An Apache configuration in `$DIR/apache` whose two TLS virtual hosts (certificate,
/// chain and key in three files) are in an included file.
fn apache_config(sb: &Sandbox) -> std::path::PathBuf {
    let dir = sb.path("apache");
    fs::create_dir_all(dir.join("sites")).unwrap();
    let main = dir.join("apache2.conf");
    write_file(
        &main,
        &format!(
            "# A private Apache for certkeeper's tests.\nServerRoot \"{}\"\nListen 127.0.0.1:28443 https\nIncludeOptional sites/*.conf\n",
            dir.display()
        ),
        0o644,
    );
    let t = sb.dir().display().to_string();
    write_file(
        &dir.join("sites/tls.conf"),
        &format!(
            r#"<VirtualHost 127.0.0.1:28443>
    ServerName app.example.internal
    ServerAlias app2.example.internal
    SSLEngine on
    SSLCertificateFile {t}/tls/app-leaf.crt
    SSLCertificateChainFile {t}/tls/app-chain.crt
    SSLCertificateKeyFile {t}/tls/app.key
</VirtualHost>
<VirtualHost *:28444>
    ServerName shop.example.internal
    <IfModule ssl_module>
        SSLEngine on
    </IfModule>
    SSLCertificateFile {t}/tls/shop-leaf.crt
    SSLCertificateChainFile {t}/tls/shop-chain.crt
    SSLCertificateKeyFile {t}/tls/shop.key
</VirtualHost>
"#
        ),
        0o644,
    );
    main
}

/// Splits `$DIR/tls/NAME.crt` (leaf + chain) into NAME-leaf.crt and NAME-chain.crt.
fn split(sb: &Sandbox, name: &str) {
    let blocks = pem_blocks(&sb.path(&format!("tls/{name}.crt")), "CERTIFICATE");
    assert!(blocks.len() >= 2, "{name}.crt holds leaf and chain");
    let leaf = sb.path(&format!("tls/{name}-leaf.crt"));
    let chain = sb.path(&format!("tls/{name}-chain.crt"));
    write_file(&leaf, &blocks[0], 0o644);
    write_file(&chain, &blocks[1..].concat(), 0o644);
}

fn setup() -> Sandbox {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.path("tls")).unwrap();
    sb.write_config(&format!("{TOP}certificates: []\n"));
    issue(
        &sb,
        "www",
        &["www.example.internal", "api.example.internal"],
    );
    issue(
        &sb,
        "app",
        &["app.example.internal", "app2.example.internal"],
    );
    issue(&sb, "shop", &["shop.example.internal"]);
    split(&sb, "app");
    split(&sb, "shop");
    self_signed(&sb, "foreign", "foreign.example.com");
    sb
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn discover_nginx_lists_every_pair_with_its_names() {
    assert!(Path::new(NGINX).exists(), "nginx is needed");
    let sb = setup();
    let main = nginx_config(&sb);
    let r = sb.run(&["discover", "--nginx-config", &s(&main)]);
    r.ok();
    let www = s(&sb.path("tls/www.crt"));
    let foreign = s(&sb.path("tls/foreign.crt"));
    r.stdout_has(&www)
        .stdout_has(&s(&sb.path("tls/www.key")))
        .stdout_has("server names www.example.internal api.example.internal")
        .stdout_has("listen 127.0.0.1:18443 ssl")
        .stdout_has("names:      www.example.internal, api.example.internal")
        .stdout_has(&foreign)
        .stdout_has("server names foreign.example.com")
        .stdout_has("listen [::]:19443 ssl, *:19443 ssl")
        .stdout_has("issuer:     CN=foreign.example.com")
        .stdout_has("matches the certificate")
        .stdout_has("conf.d/10-www.conf:1")
        .stdout_has("2 certificate(s) loaded by 2 TLS server block(s)");
    assert!(!r.stdout.contains("plain.example.internal"), "{r:?}");
    assert!(!r.stdout.contains("DOES NOT MATCH"), "{r:?}");
}

#[test]
fn discover_apache_lists_split_files_from_an_included_file() {
    let sb = setup();
    let main = apache_config(&sb);
    let r = sb.run(&["discover", "--apache-config", &s(&main)]);
    r.ok();
    r.stdout_has(&s(&sb.path("tls/app-leaf.crt")))
        .stdout_has(&format!("chain:      {}", s(&sb.path("tls/app-chain.crt"))))
        .stdout_has(&s(&sb.path("tls/app.key")))
        .stdout_has("server names app.example.internal app2.example.internal")
        .stdout_has("sites/tls.conf:1")
        .stdout_has(&s(&sb.path("tls/shop-leaf.crt")))
        .stdout_has("server names shop.example.internal; listen *:28444 ssl")
        .stdout_has("names:      shop.example.internal")
        .stdout_has("2 certificate(s) loaded by 2 TLS server block(s)");
}

#[test]
fn discover_yaml_passes_check_and_flags_what_is_wrong() {
    let sb = setup();
    let nginx = nginx_config(&sb);
    let apache = apache_config(&sb);
    // A configuration that reloads this nginx, and manages a file no server loads.
    let servers = format!(
        "servers:\n  web:\n    type: nginx\n    config: {}\n    pid_file: {}\n",
        s(&nginx),
        s(&sb.path("nginx/run/nginx.pid"))
    );
    sb.write_config(&format!(
        "{TOP}{servers}certificates:\n  - name: unused\n    sans: [unused.example.internal]\n    files: {{ layout: nginx, cert: $DIR/tls/unused.crt, key: $DIR/tls/unused.key }}\n"
    ));
    sb.ck(&["check"]).ok();
    let r = sb.ck(&[
        "discover",
        "--nginx-config",
        &s(&nginx),
        "--apache-config",
        &s(&apache),
    ]);
    r.ok();
    r.stdout_has("(server `web`)")
        .stdout_has("managed but not loaded by any server block read: `unused`")
        .stdout_has("not managed or watched")
        .stdout_has("4 certificate(s) loaded by 4 TLS server block(s)");

    let y = sb.ck(&[
        "discover",
        "--yaml",
        "--nginx-config",
        &s(&nginx),
        "--apache-config",
        &s(&apache),
    ]);
    y.ok();
    let block = &y.stdout;
    for needle in [
        "- name: \"www.example.internal\"",
        "layout: nginx",
        "reload: [\"web\"]",
        "connect: \"127.0.0.1:18443\"",
        "server_name: \"www.example.internal\"",
        "- name: \"foreign.example.com\"",
        &format!("watch: \"{}\"", s(&sb.path("tls/foreign.crt"))),
        "- name: \"app.example.internal\"",
        "layout: apache",
        &format!("chain: \"{}\"", s(&sb.path("tls/app-chain.crt"))),
        "connect: \"127.0.0.1:28444\"",
        "server_name: \"shop.example.internal\"",
    ] {
        assert!(block.contains(needle), "`{needle}` missing:\n{block}");
    }
    // The block under a header (no `unused` entry, the same servers): valid as is.
    let adopted = sb.path("adopted.yaml");
    fs::write(&adopted, format!("{}{servers}{block}", sb.expand(TOP))).unwrap();
    let c = sb.run(&["check", "-c", &s(&adopted)]);
    c.ok();
    c.stdout_has("3 managed and 1 watched certificate(s)");

    // Once adopted, discover says so, and --yaml leaves them out.
    let again = sb.run(&["discover", "-c", &s(&adopted)]);
    again
        .ok()
        .stdout_has("managed as `www.example.internal`")
        .stdout_has("watched as `foreign.example.com`");

    // After an intermediate rotation, leaves of the earlier intermediate (kept in
    // ca/old/) are still certkeeper's: managed, not watch-only.
    sb.ck(&["ca", "rotate"]).ok();
    let rotated = sb.ck(&["discover", "--yaml", "--nginx-config", &s(&nginx)]);
    rotated.ok();
    assert!(
        rotated
            .stdout
            .contains("- name: \"www.example.internal\"\n    sans:")
            && !rotated
                .stdout
                .contains(&format!("watch: \"{}\"", s(&sb.path("tls/www.crt")))),
        "{}",
        rotated.stdout
    );

    // A key that does not match, and a file that is missing: reported, exit 1.
    fs::copy(sb.path("tls/shop.key"), sb.path("tls/app.key")).unwrap();
    fs::remove_file(sb.path("tls/shop-leaf.crt")).unwrap();
    let bad = sb.run(&["discover", "--apache-config", &s(&apache)]);
    bad.expect_code(1)
        .stdout_has("DOES NOT MATCH the certificate")
        .stdout_has(&s(&sb.path("tls/shop-leaf.crt")))
        .stdout_has("ERROR:");
}

#[test]
fn discover_usage_errors() {
    let sb = Sandbox::new();
    sb.write_config(&format!("{TOP}certificates: []\n"));
    sb.ck(&["discover"])
        .expect_code(2)
        .stderr_has("nothing to read");
    sb.run(&["discover", "--nginx-config"]).expect_code(2);
}
