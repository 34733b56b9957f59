//! Parsing and checking: the full example resolves; every class of bad input is
//! reported with its line and field, all at once.

use super::*;

fn ok(text: &str) -> Config {
    parse(text, Path::new("/etc/certkeeper/config.yaml")).unwrap_or_else(|e| panic!("{e}"))
}

fn errors(text: &str) -> Vec<ConfigError> {
    match parse(text, Path::new("/etc/certkeeper/config.yaml")) {
        Ok(_) => panic!("expected errors for:\n{text}"),
        Err(e) => e.0,
    }
}

fn one_error(text: &str) -> ConfigError {
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    errs.into_iter().next().unwrap()
}

const FULL: &str = r#"
state_dir: /var/lib/certkeeper
ca:
  organization: XYZ Corporation
  common_name: XYZ Corporation Internal CA
  key: ecdsa-p384
  root_lifetime: 10y
  intermediate_lifetime: 3y
  key_passphrase_file: /etc/certkeeper/ca-passphrase
defaults:
  key: ecdsa-p256
  lifetime: 90d
  renew_before: 33%
  owner: root
  group: root
  key_mode: "0600"
servers:
  nginx:
    type: nginx
    pid_file: /run/nginx.pid
  apache:
    type: apache
    pid_file: /run/apache2/apache2.pid
  haproxy:
    type: command
    test: [haproxy, -c, -f, /etc/haproxy/haproxy.cfg]
    reload: [systemctl, reload, haproxy]
certificates:
  - name: www
    common_name: www.example.internal
    sans: [www.example.internal, 10.0.0.5]
    usage: server
    files:
      layout: nginx
      cert: /etc/nginx/tls/www.crt
      key: /etc/nginx/tls/www.key
    reload: [nginx]
    verify:
      connect: 127.0.0.1:443
      server_name: www.example.internal
  - name: api
    sans: [api.example.internal]
    renew_before: 30d
    key: rsa-3072
    files:
      layout: apache
      cert: /etc/apache2/tls/api.crt
      chain: /etc/apache2/tls/api.chain.crt
      key: /etc/apache2/tls/api.key
    reload: [apache]
  - name: lb
    sans: [lb.example.internal]
    usage: server+client
    files: { layout: combined, cert: /etc/haproxy/certs/lb.pem }
    reload: [haproxy]
  - name: vendor-portal
    watch: /etc/ssl/vendor/portal.crt
    warn_before: 21d
trust:
  - path: /etc/nginx/tls/clients-ca.pem
    reload: [nginx]
  - path: /etc/nginx/tls/clients.crl
    contents: crl
    reload: [nginx]
  - path: /usr/local/share/ca-certificates/certkeeper.crt
    run: [update-ca-certificates]
issuers:
  fleet:
    acme:
      directory: https://ca.example.internal/acme/acme/directory
      ca_bundle: /etc/certkeeper/fleet-ca.pem
      contact: [mailto:ops@example.com]
      eab: { kid: KEY_ID, hmac_key_file: /etc/certkeeper/eab.key }
      challenge:
        http01: { webroot: /var/www/acme }
metrics:
  listen: 127.0.0.1:9717
"#;

#[test]
fn the_design_example_resolves() {
    let c = ok(FULL);
    assert_eq!(c.state_dir, PathBuf::from("/var/lib/certkeeper"));
    assert_eq!(c.ca.key, KeyType::EcdsaP384);
    assert_eq!(
        c.ca.key_passphrase_file.as_deref(),
        Some(Path::new("/etc/certkeeper/ca-passphrase"))
    );
    assert_eq!(c.certificates.len(), 3);
    assert_eq!(c.watched.len(), 1);
    let www = &c.certificates[0];
    assert_eq!(www.sans.len(), 2);
    assert_eq!(www.lifetime, Duration::from_secs(90 * 86400));
    assert_eq!(www.renew_before, RenewBefore::Share(330));
    assert_eq!(www.owner.as_ref().map(|o| o.id), Some(0));
    assert_eq!(www.key_mode, 0o600);
    assert_eq!(www.verify[0].timeout, Duration::from_secs(10));
    let api = &c.certificates[1];
    assert_eq!(api.key, KeyType::Rsa3072);
    assert_eq!(api.common_name, "api.example.internal");
    assert_eq!(
        api.files.chain(),
        Some(Path::new("/etc/apache2/tls/api.chain.crt"))
    );
    assert_eq!(c.certificates[2].usage, Usage::ServerClient);
    assert_eq!(c.trust[1].contents, TrustContents::Crl);
    assert_eq!(
        c.issuers["fleet"].webroot.as_deref(),
        Some(Path::new("/var/www/acme"))
    );
    assert_eq!(c.metrics, Some("127.0.0.1:9717".parse().unwrap()));
}

#[test]
fn an_empty_file_is_refused_unless_it_says_it_manages_nothing() {
    // Empty, comment-only, or cut off right after `certificates:`: a truncated file.
    for text in ["", "# nothing yet\n", "state_dir: /tmp/s\ncertificates:\n"] {
        let e = one_error(text);
        assert_eq!(e.field, "certificates", "{text:?}: {e}");
        assert!(e.message.contains("write `certificates: []`"), "{e}");
    }
    let c = ok("# nothing yet\ncertificates: []\n");
    assert!(c.certificates.is_empty());
    assert_eq!(c.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
}

#[test]
fn lifetimes_that_do_not_fit_and_path_like_names_are_refused() {
    let errs = errors(
        "state_dir: /tmp/s\nca: { root_lifetime: 9000y, intermediate_lifetime: 8000y }\n\
         defaults: { lifetime: 2000y }\ncertificates: []\n",
    );
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "ca.root_lifetime",
            "ca.intermediate_lifetime",
            "defaults.lifetime"
        ],
        "{errs:?}"
    );
    assert!(
        errs[0].message.contains("longer than certkeeper accepts"),
        "{errs:?}"
    );
    for name in [".", ".."] {
        let e = one_error(&cert(&format!(
            "  - name: \"{name}\"\n    sans: [a.b]\n    files: {{ layout: combined, cert: /a.pem }}\n"
        )));
        assert!(e.message.contains("not a valid name"), "{e}");
    }
    let e = one_error("issuers:\n  \"..\":\n    acme: { directory: \"https://x/d\", challenge: { http01: { webroot: /w } } }\ncertificates: []\n");
    assert!(e.message.contains("not a usable issuer name"), "{e}");
}

#[test]
fn the_ca_key_passphrase_file_is_optional_and_absolute() {
    let c = ok("state_dir: /tmp/s\ncertificates: []\n");
    assert_eq!(c.ca.key_passphrase_file, None);
    let e = one_error(
        "state_dir: /tmp/s\nca:\n  common_name: X\n  key_passphrase_file: ca-passphrase\ncertificates: []\n",
    );
    assert_eq!(e.field, "ca.key_passphrase_file", "{e}");
    assert_eq!(e.line, Some(4), "{e}");
    assert!(
        e.message.contains("`ca-passphrase` is a relative path"),
        "{e}"
    );
    let e = one_error("state_dir: /tmp/s\nca: { key_passphrase_file: \"\" }\ncertificates: []\n");
    assert_eq!(e.field, "ca.key_passphrase_file", "{e}");
    assert!(e.message.contains("is empty"), "{e}");
}

#[test]
fn a_state_dir_that_is_a_file_is_refused() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let e = one_error(&format!(
        "state_dir: {}\ncertificates: []\n",
        file.path().display()
    ));
    assert_eq!(e.field, "state_dir");
    assert!(e.message.contains("is not a directory"), "{e}");
}

const BASE: &str = "state_dir: /tmp/s\ncertificates:\n";

fn cert(body: &str) -> String {
    format!("{BASE}{body}")
}

#[test]
fn unknown_key_names_line_and_field() {
    let e = one_error(&cert("  - name: www\n    sanz: [a.b]\n    sans: [a.b]\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert_eq!(e.line, Some(4), "{e}");
    assert_eq!(e.certificate.as_deref(), Some("www"));
    assert_eq!(e.field, "certificates[0].sanz", "{e}");
    assert!(e.message.contains("unknown field `sanz`"), "{e}");
    let errs = errors("certficates: []\n");
    let e = errs
        .iter()
        .find(|e| e.message.contains("unknown key `certficates`"))
        .unwrap_or_else(|| panic!("{errs:?}"));
    assert_eq!(e.line, Some(1));
}

#[test]
fn every_error_is_reported_at_once() {
    let text = cert(concat!(
        "  - name: www\n",                                                      // 3
        "    sans: [www.example.internal, bad_name.example]\n",                 // 4
        "    key: rsa-1024\n",                                                  // 5
        "    files: { layout: nginx, cert: tls/www.crt, key: /tls/www.key }\n", // 6
        "    reload: [nginx]\n",                                                // 7
        "  - name: www\n",                                                      // 8
        "    sans: [10.0.0.300]\n",                                             // 9
        "    lifetime: 1h\n",                                                   // 10
        "    renew_before: 2h\n",                                               // 11
        "    files: { layout: apache, cert: /tls/b.crt, key: /tls/b.key }\n",   // 12
        "  - sans: [c.example]\n",                                              // 13
        "    files: { layout: nginx, cert: /tls/c.crt, key: /tls/www.key }\n",  // 14
    ));
    let errs = errors(&text);
    let find = |needle: &str| {
        errs.iter()
            .find(|e| e.to_string().contains(needle))
            .unwrap_or_else(|| {
                panic!(
                    "no error containing {needle:?} in:\n{}",
                    ConfigErrors(errs.clone())
                )
            })
    };
    assert_eq!(find("bad_name.example").line, Some(4));
    assert_eq!(find("rsa-1024").line, Some(5));
    assert!(find("rsa-1024").message.contains("too weak"));
    assert_eq!(find("relative path").line, Some(6));
    assert_eq!(find("unknown server `nginx`").line, Some(7));
    assert_eq!(find("10.0.0.300").line, Some(9));
    assert_eq!(find("not shorter than the lifetime").line, Some(11));
    assert_eq!(
        find("is missing: layout `apache`").field,
        "certificates[1].files.chain"
    );
    assert!(find("has no `name:`").line == Some(13));
    assert!(errs.len() >= 8, "{}", ConfigErrors(errs.clone()));
}

#[test]
fn duplicate_names_and_shared_paths() {
    let text = cert(concat!(
        "  - name: a\n",
        "    sans: [a.example]\n",
        "    files: { layout: nginx, cert: /tls/a.crt, key: /tls/a.key }\n",
        "  - name: a\n",
        "    sans: [b.example]\n",
        "    files: { layout: nginx, cert: /tls/b.crt, key: /tls/a.key }\n",
    ));
    let errs = errors(&text);
    assert_eq!(errs.len(), 2, "{}", ConfigErrors(errs.clone()));
    assert!(
        errs[0]
            .message
            .contains("already used by certificates[0] (line 3)"),
        "{}",
        errs[0]
    );
    assert_eq!(errs[0].line, Some(6));
    assert!(
        errs[1]
            .message
            .contains("/tls/a.key is also written by certificate `a` (files.key)"),
        "{}",
        errs[1]
    );
    assert_eq!(errs[1].field, "certificates[1].files.key");
}

#[test]
fn modes_must_be_quoted_and_keep_keys_private() {
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    key_mode: 640\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert!(e.message.contains("quoted octal string"), "{e}");
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    key_mode: \"0644\"\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert!(e.message.contains("every user"), "{e}");
    let c = ok(&cert("  - name: a\n    sans: [a.b]\n    key_mode: \"0640\"\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert_eq!(c.certificates[0].key_mode, 0o640);
}

#[test]
fn layouts_need_their_files_and_nothing_else() {
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    files: { layout: combined, cert: /a.pem, key: /a.key }\n"));
    assert!(e.message.contains("does not write a `key` file"), "{e}");
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    files: { layout: separate, cert: /a.crt, chain: /c.crt, key: /a.key }\n"));
    assert!(e.field.ends_with("files.fullchain"), "{e}");
    let e = one_error(&cert(
        "  - name: a\n    sans: [a.b]\n    files: { layout: iis, cert: /a.crt }\n",
    ));
    assert!(e.message.contains("not a layout"), "{e}");
}

#[test]
fn durations_and_lifetimes() {
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    lifetime: 90\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert!(e.message.contains("has no unit"), "{e}");
    assert_eq!(e.line, Some(5));
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    lifetime: 10s\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert!(e.message.contains("too short"), "{e}");
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    lifetime: 5y\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert!(e.message.contains("cannot outlive"), "{e}");
    let c = ok(&cert("  - name: a\n    sans: [a.b]\n    lifetime: 30s\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert_eq!(c.certificates[0].lifetime, Duration::from_secs(30));
}

#[test]
fn bad_defaults_are_reported_once_at_defaults() {
    let text = format!(
        "defaults:\n  key: dsa\n{}",
        &cert("  - name: a\n    sans: [a.b]\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n  - name: b\n    sans: [b.c]\n    files: { layout: nginx, cert: /b.crt, key: /b.key }\n")
    );
    let e = one_error(&text);
    assert_eq!(e.field, "defaults.key");
    assert_eq!(e.line, Some(2));
}

#[test]
fn unknown_users_servers_and_issuers() {
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    owner: no-such-user-here\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert!(e.message.contains("no user `no-such-user-here`"), "{e}");
    let e = one_error(&cert("  - name: a\n    sans: [a.b]\n    issuer: fleet\n    files: { layout: nginx, cert: /a.crt, key: /a.key }\n"));
    assert!(e.message.contains("unknown issuer `fleet`"), "{e}");
    let e = one_error("servers:\n  web:\n    type: nginx\ncertificates: []\n");
    assert!(e.message.contains("pid_file"), "{e}");
    let e = one_error(
        "servers:\n  web:\n    type: lighttpd\n    pid_file: /run/x.pid\ncertificates: []\n",
    );
    assert!(e.message.contains("not a server type"), "{e}");
    assert_eq!(e.line, Some(3));
}

#[test]
fn watch_only_certificates_take_no_managed_fields() {
    let e = one_error(&cert(
        "  - name: v\n    watch: /etc/ssl/v.crt\n    sans: [v.example]\n",
    ));
    assert!(e.message.contains("watch-only"), "{e}");
}

#[test]
fn yaml_syntax_errors_have_a_line() {
    let e = one_error("certificates:\n  - name: [unclosed\n");
    assert!(e.message.contains("not valid YAML"), "{e}");
    assert!(e.line.is_some(), "{e}");
}

#[test]
fn display_names_file_line_certificate_and_field() {
    let e = one_error(&cert("  - name: www\n    sans: [a.b]\n    files: { layout: nginx, cert: tls/a.crt, key: /a.key }\n"));
    let s = e.to_string();
    assert!(s.starts_with("/etc/certkeeper/config.yaml:5: certificate `www`, field `certificates[0].files.cert`: `tls/a.crt` is a relative path"), "{s}");
}

#[test]
fn shipped_examples_are_valid() {
    for (name, text) in [
        ("example.yaml", include_str!("../../config/example.yaml")),
        (
            "quickstart.yaml",
            include_str!("../../config/quickstart.yaml"),
        ),
    ] {
        if let Err(e) = parse(text, Path::new(name)) {
            panic!("{name}:\n{e}");
        }
    }
}

#[test]
fn archive_hooks_and_server_timeouts() {
    let c = ok("state_dir: /tmp/s\n\
         archive: { keep: 2 }\n\
         hooks:\n  renewed: [logger, renewed]\n  failed: [[a, b], [c]]\n  timeout: 5s\n\
         servers:\n  web: { type: command, reload: ['true'], timeout: 3s }\n\
         certificates:\n  - name: www\n    sans: [www.example.internal]\n    files: { layout: combined, cert: /tmp/x/www.pem }\n    hooks: { expiring: [notify-send, soon] }\n");
    assert_eq!(c.archive_keep, 2);
    assert_eq!(
        c.hooks.renewed,
        vec![vec!["logger".to_string(), "renewed".into()]]
    );
    assert_eq!(c.hooks.failed.len(), 2);
    assert_eq!(c.hooks.timeout, std::time::Duration::from_secs(5));
    assert_eq!(c.servers["web"].timeout, std::time::Duration::from_secs(3));
    let h = &c.certificates[0].hooks;
    assert_eq!(
        h.expiring,
        vec![vec!["notify-send".to_string(), "soon".into()]]
    );
    // A certificate's hooks inherit the global timeout.
    assert_eq!(h.timeout, std::time::Duration::from_secs(5));

    let d = ok("state_dir: /tmp/s\ncertificates: []\n");
    assert_eq!(d.archive_keep, crate::config::DEFAULT_ARCHIVE_KEEP);
    assert!(d.hooks.is_empty());
}

#[test]
fn bad_archive_hooks_and_timeouts_name_their_field() {
    let errs = errors(
        "state_dir: /tmp/s\narchive: { keep: -1 }\nhooks: { renewed: [], bogus: 1 }\n\
         servers:\n  web: { type: command, reload: ['true'], timeout: 0s }\ncertificates: []\n",
    );
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert!(fields.contains(&"archive.keep"), "{errs:?}");
    assert!(fields.iter().any(|f| f.starts_with("hooks")), "{errs:?}");
    assert!(fields.contains(&"servers.web.timeout"), "{errs:?}");
    let errs = errors("state_dir: /tmp/s\nhooks: { failed: [] }\ncertificates: []\n");
    assert_eq!(errs[0].field, "hooks.failed", "{errs:?}");
    assert!(errs[0].message.contains("empty command"), "{errs:?}");
}

#[test]
fn bad_values_are_quoted_as_short_excerpts() {
    let huge = "a".repeat(100_000);
    for body in [
        format!("  - name: www\n    sans: [{huge}]\n    files: {{ layout: combined, cert: /a.pem }}\n"),
        format!("  - name: www\n    sans: {huge}\n    files: {{ layout: combined, cert: /a.pem }}\n"),
        format!("  - name: www\n    lifetime: {huge}\n    sans: [a.b]\n    files: {{ layout: combined, cert: /a.pem }}\n"),
        format!("  - name: X{huge}\n    sans: [a.b]\n    files: {{ layout: combined, cert: /a.pem }}\n"),
        format!("  - name: www\n    sans: [a.b]\n    files: {{ layout: {huge}, cert: /a.pem }}\n"),
        format!("  - name: www\n    sans: [a.b]\n    files: {{ layout: combined, cert: {huge} }}\n"),
        format!("  - name: www\n    sans: [a.b]\n    files: {{ layout: combined, cert: /a.pem }}\n    reload: [{huge}]\n"),
    ] {
        let text = cert(&body);
        for e in errors(&text) {
            let shown = e.to_string();
            assert!(shown.len() < 600, "{} bytes: {}", shown.len(), &shown[..600]);
            assert!(shown.contains("aaaa…"), "{shown}");
        }
    }
}

#[test]
fn names_and_paths_have_a_length_limit() {
    let long = "a".repeat(MAX_NAME_LEN + 1);
    let e = one_error(&cert(&format!(
        "  - name: {long}\n    sans: [a.b]\n    files: {{ layout: combined, cert: /a.pem }}\n"
    )));
    assert_eq!(e.field, "certificates[0].name");
    assert!(e.message.contains("201 characters long"), "{e}");
    ok(&cert(&format!(
        "  - name: {}\n    sans: [a.b]\n    files: {{ layout: combined, cert: /a.pem }}\n",
        &long[1..]
    )));
    let path = format!("/{}", "d/".repeat(MAX_PATH_LEN / 2));
    let e = one_error(&cert(&format!(
        "  - name: www\n    sans: [a.b]\n    files: {{ layout: combined, cert: {path}a.pem }}\n"
    )));
    assert_eq!(e.field, "certificates[0].files.cert");
    assert!(
        e.message.contains("Linux opens no path longer than 4095"),
        "{e}"
    );
}

#[test]
fn deep_nesting_and_alias_bombs_are_refused_quickly() {
    let started = std::time::Instant::now();
    let e = one_error(&format!(
        "state_dir: /tmp/s\ncertificates: []\nx: {}{}\n",
        "[".repeat(100_000),
        "]".repeat(100_000)
    ));
    assert_eq!(e.line, Some(3), "{e}");
    assert!(e.message.contains("nest more than 64 levels"), "{e}");
    let mut bomb =
        String::from("state_dir: /tmp/s\ncertificates: []\na: &a [x, x, x, x, x, x, x, x, x]\n");
    let mut prev = 'a';
    for name in "bcdefghi".chars() {
        bomb.push_str(&format!(
            "{name}: &{name} [{}]\n",
            vec![format!("*{prev}"); 9].join(", ")
        ));
        prev = name;
    }
    let e = one_error(&bomb);
    assert!(e.message.contains("aliases (`*name`) expanded"), "{e}");
    assert!(started.elapsed() < std::time::Duration::from_secs(2));
}

const CONSTRAINED: &str = "state_dir: /tmp/s\nca:\n  permitted: [\".example.internal\", 10.0.0.0/8]\n  excluded:\n    - secret.example.internal\n    - fd00::/8\n";

fn constrained(certs: &str) -> String {
    format!("{CONSTRAINED}issuers:\n  fleet:\n    acme: {{ directory: \"https://acme.example/d\", challenge: {{ http01: {{ webroot: /w }} }} }}\ncertificates:\n{certs}")
}

fn managed(name: &str, extra: &str) -> String {
    format!("  - name: {name}\n{extra}    files: {{ layout: combined, cert: /tls/{name}.pem }}\n")
}

#[test]
fn ca_constraints_resolve() {
    let c = ok(&constrained(&managed(
        "www",
        "    sans: [www.example.internal, 10.1.2.3]\n",
    )));
    let nc = &c.ca.constraints;
    let shown = |rules: &[NameRule]| rules.iter().map(|r| r.to_string()).collect::<Vec<_>>();
    assert_eq!(shown(&nc.permitted), [".example.internal", "10.0.0.0/8"]);
    assert_eq!(shown(&nc.excluded), ["secret.example.internal", "fd00::/8"]);
    assert!(
        ok(&cert("").replace("certificates:\n", "certificates: []\n"))
            .ca
            .constraints
            .is_empty()
    );
}

#[test]
fn bad_ca_constraints_name_the_entry_and_its_line() {
    let errs = errors(
        "state_dir: /tmp/s\nca:\n  permitted:\n    - .example.internal\n    - 10.0.0.0/33\n    - \"*.example.internal\"\n    - .EXAMPLE.internal\n  excluded: [\"10.1.0.0/8\"]\ncertificates: []\n",
    );
    let got: Vec<(String, Option<usize>)> =
        errs.iter().map(|e| (e.field.clone(), e.line)).collect();
    assert_eq!(
        got,
        [
            ("ca.permitted[1]".to_string(), Some(5)),
            ("ca.permitted[2]".to_string(), Some(6)),
            ("ca.permitted[3]".to_string(), Some(7)),
            ("ca.excluded[0]".to_string(), Some(8)),
        ],
        "{errs:#?}"
    );
    assert!(
        errs[0]
            .message
            .starts_with("`10.0.0.0/33`: the prefix /33 is longer than 32 bits"),
        "{}",
        errs[0]
    );
    assert!(errs[1].message.contains("no wildcard"), "{}", errs[1]);
    assert!(
        errs[2]
            .message
            .contains("already listed as ca.permitted[0]"),
        "{}",
        errs[2]
    );
    assert!(errs[3].message.contains("write 10.0.0.0/8"), "{}", errs[3]);
}

#[test]
fn certificates_outside_the_ca_constraints_are_refused_by_name() {
    let errs = errors(&constrained(&format!(
        "{}{}{}{}",
        managed("ok", "    sans: [www.example.internal, 10.0.0.5]\n"),
        managed("apex", "    sans: [example.internal]\n"),
        managed("other", "    sans: [www.example.internal, www.other.com]\n"),
        managed(
            "secret",
            "    sans: [\"*.example.internal\", \"fd00::5\"]\n"
        ),
    )));
    let got: Vec<(&str, Option<&str>, &str)> = errs
        .iter()
        .map(|e| {
            (
                e.field.as_str(),
                e.certificate.as_deref(),
                e.message.split(';').next().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "certificates[1].sans",
                Some("apex"),
                "`example.internal` is outside ca.permitted (.example.internal, 10.0.0.0/8)"
            ),
            (
                "certificates[2].sans",
                Some("other"),
                "`www.other.com` is outside ca.permitted (.example.internal, 10.0.0.0/8)"
            ),
            (
                "certificates[3].sans",
                Some("secret"),
                "`*.example.internal` is inside ca.excluded (secret.example.internal)"
            ),
            (
                "certificates[3].sans",
                Some("secret"),
                "`fd00::5` is inside ca.excluded (fd00::/8)"
            ),
        ],
        "{errs:#?}"
    );
    assert_eq!(errs[1].line, Some(18), "{}", errs[1]);
}

#[test]
fn acme_certificates_are_not_held_to_the_ca_constraints() {
    let c = ok(&constrained(&managed(
        "public",
        "    sans: [www.other.com]\n    issuer: fleet\n",
    )));
    assert_eq!(c.certificates[0].issuer, IssuerRef::Acme("fleet".into()));
    let with_default = constrained(&managed("public", "    sans: [www.other.com]\n")).replace(
        "certificates:\n",
        "defaults: { issuer: fleet }\ncertificates:\n",
    );
    ok(&with_default);
}

#[test]
fn a_common_name_openssl_reads_as_dns_must_fit_the_ca_constraints() {
    // No DNS name in sans: OpenSSL checks the common name (here the address, by default).
    let e = one_error(&constrained(&managed("db", "    sans: [10.0.0.5]\n")));
    assert_eq!(e.field, "certificates[0].sans", "{e}");
    assert!(
        e.message.starts_with(
            "the common name `10.0.0.5` is outside ca.permitted (.example.internal, 10.0.0.0/8) (the common name defaults to the first SAN)"
        ),
        "{e}"
    );
    let e = one_error(&constrained(&managed(
        "db",
        "    sans: [10.0.0.5]\n    common_name: db.other.com\n",
    )));
    assert_eq!(e.field, "certificates[0].common_name", "{e}");
    ok(&constrained(&managed(
        "db",
        "    sans: [10.0.0.5]\n    common_name: db server\n",
    )));
    ok(&constrained(&managed(
        "db",
        "    sans: [10.0.0.5, db.example.internal]\n    common_name: db.other.com\n",
    )));
}

#[test]
fn ca_rotation_settings_resolve_with_their_defaults() {
    let c = ok("state_dir: /tmp/s\ncertificates: []\n");
    assert_eq!(c.ca.rotate_before, RenewBefore::Share(333));
    assert_eq!(c.ca.root_overlap, Duration::from_secs(90 * 86_400));
    let c = ok("state_dir: /tmp/s\nca: { root_lifetime: 8m, intermediate_lifetime: 3m }\ncertificates: []\n");
    assert_eq!(
        c.ca.root_overlap,
        Duration::from_secs(12),
        "a fortieth of a short root"
    );
    let c =
        ok("state_dir: /tmp/s\nca: { rotate_before: 200d, root_overlap: 30d }\ncertificates: []\n");
    assert_eq!(
        c.ca.rotate_before,
        RenewBefore::Fixed(Duration::from_secs(200 * 86_400))
    );
    assert_eq!(c.ca.root_overlap, Duration::from_secs(30 * 86_400));
    let errs = errors(
        "state_dir: /tmp/s\nca:\n  root_lifetime: 10d\n  intermediate_lifetime: 5d\n  rotate_before: 100%\n  root_overlap: 6d\ncertificates: []\n",
    );
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields, ["ca.rotate_before", "ca.root_overlap"], "{errs:#?}");
    assert!(
        errs[1]
            .message
            .contains("less than half of ca.root_lifetime"),
        "{errs:#?}"
    );
}

#[test]
fn verify_every_defaults_to_an_hour_and_0_turns_it_off() {
    let with = |extra: &str| {
        ok(&format!(
            "state_dir: /tmp/s\ncertificates:\n  - name: www\n    sans: [www.example.internal]\n    files: {{ layout: combined, cert: /tls/www.pem }}\n    verify: {{ connect: 127.0.0.1:443{extra} }}\n"
        ))
        .certificates[0]
        .verify[0]
        .every
    };
    assert_eq!(with(""), Some(Duration::from_secs(3600)));
    assert_eq!(with(", every: 5m"), Some(Duration::from_secs(300)));
    assert_eq!(with(", every: 0"), None);
}

#[test]
fn verify_takes_a_list_of_targets_each_labelled() {
    let base = "state_dir: /tmp/s\ncertificates:\n  - name: www\n    sans: [www.example.internal, alt.example.internal]\n    files: { layout: combined, cert: /tls/www.pem }\n";
    let c = ok(&format!(
        "{base}    verify:\n      - {{ connect: 127.0.0.1:443 }}\n      - {{ connect: 127.0.0.1:8443, every: 5m }}\n      - {{ connect: 127.0.0.1:8443, server_name: alt.example.internal }}\n"
    ));
    let v = &c.certificates[0].verify;
    let labels: Vec<&str> = v.iter().map(|t| t.label.as_str()).collect();
    assert_eq!(
        labels,
        [
            "127.0.0.1:443",
            "127.0.0.1:8443 www.example.internal",
            "127.0.0.1:8443 alt.example.internal"
        ]
    );
    assert_eq!(
        c.certificates[0].check_every(),
        Some(Duration::from_secs(300))
    );
    // The same target twice; a misspelt key in the second; not a mapping.
    let e = one_error(&format!(
        "{base}    verify: [{{ connect: 127.0.0.1:443 }}, {{ connect: 127.0.0.1:443 }}]\n"
    ));
    assert_eq!(e.field, "certificates[0].verify[1]");
    assert!(e.message.contains("a second time"), "{e}");
    let e = one_error(&format!(
        "{base}    verify:\n      - connect: 127.0.0.1:443\n      - connect: 127.0.0.1:444\n        sever_name: x\n"
    ));
    assert_eq!(e.field, "certificates[0].verify[1].sever_name");
    assert_eq!(e.line, Some(9), "{e}");
    let e = one_error(&format!("{base}    verify: 127.0.0.1:443\n"));
    assert!(e.message.contains("or a list of them"), "{e}");
}

#[test]
fn verify_client_cert_and_roots_are_checked() {
    let base = "state_dir: /tmp/s\ncertificates:\n  - name: www\n    sans: [www.example.internal]\n    files: { layout: combined, cert: /tls/www.pem }\n";
    let client = "  - name: probe\n    sans: [probe.example.internal]\n    usage: client\n    files: { layout: combined, cert: /tls/probe.pem }\n";
    let c = ok(&format!(
        "{base}    verify: {{ connect: 127.0.0.1:443, client_cert: probe, roots: /etc/hosts }}\n{client}"
    ));
    assert_eq!(
        c.certificates[0].verify[0].client_cert.as_deref(),
        Some("probe")
    );
    let e = one_error(&format!(
        "{base}    verify: {{ connect: 127.0.0.1:443, client_cert: nobody }}\n{client}"
    ));
    assert_eq!(e.field, "certificates[0].verify.client_cert");
    assert!(
        e.message
            .contains("no managed certificate is named `nobody`"),
        "{e}"
    );
    let e = one_error(&format!(
        "{base}    verify: {{ connect: 127.0.0.1:443, client_cert: www }}\n"
    ));
    assert!(e.message.contains("usage: server"), "{e}");
    let e = one_error(&format!(
        "{base}    verify: {{ connect: 127.0.0.1:443, roots: /nonexistent/roots.pem }}\n"
    ));
    assert_eq!(e.field, "certificates[0].verify.roots");
    assert!(e.message.contains("does not exist"), "{e}");
}

#[test]
fn an_acme_wildcard_needs_dns01_and_check_says_so() {
    let text = "state_dir: /tmp/s\nissuers:\n  fleet:\n    acme: { directory: \"https://acme.example/d\", challenge: { http01: { webroot: /w } } }\ncertificates:\n  - name: www\n    issuer: fleet\n    sans: [www.example.com, \"*.example.com\"]\n    files: { layout: combined, cert: /tls/www.pem }\n";
    let e = one_error(text);
    assert_eq!(e.field, "certificates[0].sans[1]");
    assert!(e.message.contains("DNS-01"), "{e}");
    // The internal CA issues wildcards.
    ok(&text.replace("    issuer: fleet\n", ""));
}

#[test]
fn dns01_providers_resolvers_and_what_each_challenge_can_prove() {
    let issuer = |challenge: &str| {
        format!("state_dir: /tmp/s\nissuers:\n  fleet:\n    acme:\n      directory: \"https://acme.example/d\"\n      challenge:\n{challenge}certificates:\n  - name: www\n    issuer: fleet\n    sans: [www.example.com, \"*.example.com\"]\n    files: {{ layout: combined, cert: /tls/www.pem }}\n")
    };
    let c = ok(&issuer("        dns01:\n          command: [/usr/local/bin/dns-hook, --zone, example.com]\n          resolvers: [192.0.2.53, \"ns1.example.com:5353\"]\n          propagation_timeout: 5m\n"));
    let d = c.issuers["fleet"].dns01.clone().unwrap();
    assert_eq!(
        d.provider,
        DnsProvider::Command(vec![
            "/usr/local/bin/dns-hook".into(),
            "--zone".into(),
            "example.com".into()
        ])
    );
    assert_eq!(
        d.resolvers,
        vec!["192.0.2.53:53".to_string(), "ns1.example.com:5353".into()]
    );
    assert_eq!(d.propagation_timeout, Duration::from_secs(300));
    assert_eq!(d.timeout, DEFAULT_COMMAND_TIMEOUT);
    assert!(!c.issuers["fleet"].http01());
    let c = ok(&issuer("        dns01:\n          rfc2136: { server: \"127.0.0.1:5300\", key_name: certkeeper., key_secret_file: /etc/certkeeper/tsig.key }\n"));
    let DnsProvider::Rfc2136 {
        server,
        key_algorithm,
        ..
    } = c.issuers["fleet"].dns01.clone().unwrap().provider
    else {
        panic!("rfc2136 provider");
    };
    assert_eq!(
        (server.as_str(), key_algorithm.as_str()),
        ("127.0.0.1:5300", "hmac-sha256")
    );

    // Each mistake names its field.
    for (challenge, field, says) in [
        ("        dns01: {}\n", "issuers.fleet.acme.challenge.dns01", "exactly one provider"),
        ("        dns01: { command: [] }\n", "issuers.fleet.acme.challenge.dns01.command", "is empty"),
        ("        dns01: { rfc2136: { server: \"127.0.0.1:5300\", key_name: k, key_algorithm: hmac-md5, key_secret_file: /k } }\n", "issuers.fleet.acme.challenge.dns01.rfc2136.key_algorithm", "hmac-sha256"),
        ("        dns01: { rfc2136: { server: \"ns1 example\", key_name: k, key_secret_file: /k } }\n", "issuers.fleet.acme.challenge.dns01.rfc2136.server", "HOST:PORT"),
        ("        dns01: { rfc2136: { server: ns1:53, key_name: k, key_secret_file: tsig.key } }\n", "issuers.fleet.acme.challenge.dns01.rfc2136.key_secret_file", "relative"),
        ("        dns01: { command: [hook], resolvers: [\"dns:x\"] }\n", "issuers.fleet.acme.challenge.dns01.resolvers[0]", "HOST:PORT"),
        ("        dns01: { command: [hook], propagation_timeout: 0s }\n", "issuers.fleet.acme.challenge.dns01.propagation_timeout", "must be positive"),
        ("        {}\n", "issuers.fleet.acme.challenge", "`http01:` or `dns01:`"),
    ] {
        let e = one_error(&issuer(challenge));
        assert_eq!(e.field, field, "{challenge}: {e}");
        assert!(e.message.contains(says), "{challenge}: {e}");
    }

    // DNS-01 alone cannot prove an IP address.
    let text =
        issuer("        dns01: { command: [hook] }\n").replace("\"*.example.com\"", "192.0.2.7");
    let e = one_error(&text);
    assert_eq!(e.field, "certificates[0].sans[1]");
    assert!(e.message.contains("http-01"), "{e}");
}

#[test]
fn an_acme_profile_is_named_on_the_issuer_or_the_certificate_of_an_acme_issuer() {
    let base = "state_dir: /tmp/s\nissuers:\n  fleet:\n    acme: { directory: \"https://acme.example/d\", profile: tlsserver, challenge: { http01: { webroot: /w } } }\ncertificates:\n  - name: www\n    issuer: fleet\n    sans: [www.example.com]\n    files: { layout: combined, cert: /tls/www.pem }\n";
    let c = ok(base);
    assert_eq!(c.issuers["fleet"].profile.as_deref(), Some("tlsserver"));
    assert_eq!(c.certificates[0].profile, None);
    let c = ok(&format!("{base}    profile: shortlived\n"));
    assert_eq!(c.certificates[0].profile.as_deref(), Some("shortlived"));
    let e = one_error(&format!("{base}    profile: \"short lived\"\n"));
    assert_eq!(e.field, "certificates[0].profile");
    let e = one_error(&format!(
        "{}    profile: shortlived\n",
        base.replace("    issuer: fleet\n", "")
    ));
    assert_eq!(e.field, "certificates[0].profile");
    assert!(e.message.contains("internal CA"), "{e}");
}

#[test]
fn an_ed25519_ca_is_refused_unless_allowed() {
    let e = one_error("state_dir: /tmp/s\nca:\n  key: ed25519\ncertificates: []\n");
    assert_eq!(e.field, "ca.key");
    assert!(
        e.message.contains("NSS") && e.message.contains("ecdsa-p256"),
        "{e}"
    );
    assert_eq!(e.line, Some(3));
    let c = ok("state_dir: /tmp/s\nca:\n  key: ed25519\n  allow_ed25519: true\ncertificates: []\n");
    assert_eq!(c.ca.key, KeyType::Ed25519);
}

#[test]
fn fallback_names_other_known_issuers() {
    let base = "state_dir: /tmp/s\nissuers:\n  fleet:\n    acme: { directory: \"https://acme.example/d\", challenge: { http01: { webroot: /w } } }\ncertificates:\n  - name: www\n    issuer: fleet\n    sans: [www.example.com]\n    files: { layout: combined, cert: /tls/www.pem }\n";
    let c = ok(&format!("{base}    fallback: [internal]\n"));
    assert_eq!(c.certificates[0].fallback, vec![IssuerRef::Internal]);
    // Half of the default renew_before (33%).
    assert_eq!(c.certificates[0].fallback_before, RenewBefore::Share(165));
    let c = ok(&format!(
        "{base}    fallback: [internal]\n    fallback_before: 10d\n"
    ));
    assert_eq!(
        c.certificates[0].fallback_before,
        RenewBefore::Fixed(Duration::from_secs(10 * 86400))
    );
    let e = one_error(&format!("{base}    fallback: [fleet]\n"));
    assert_eq!(e.field, "certificates[0].fallback[0]");
    assert!(e.message.contains("issuer already"), "{e}");
    let e = one_error(&format!("{base}    fallback: [internal, nowhere]\n"));
    assert_eq!(e.field, "certificates[0].fallback[1]");
    assert!(e.message.contains("unknown issuer `nowhere`"), "{e}");
}

#[test]
fn pkcs12_takes_a_p12_file_and_a_password_file_and_only_it_takes_a_password() {
    let c = ok("state_dir: /tmp/s\ncertificates:\n  - name: alice\n    usage: client\n    sans: [alice.example.internal]\n    files: { layout: pkcs12, p12: /etc/tls/alice.p12, password_file: /etc/certkeeper/alice.pass }\n");
    let files = &c.certificates[0].files;
    assert_eq!(files.layout(), crate::model::Layout::Pkcs12);
    assert_eq!(
        files.paths(),
        vec![("p12", Path::new("/etc/tls/alice.p12"))]
    );
    assert_eq!(
        files.password_file(),
        Some(Path::new("/etc/certkeeper/alice.pass"))
    );
    assert_eq!(files.key(), None);
    for (files, field, says) in [
        (
            "{ layout: pkcs12, p12: /etc/tls/alice.p12 }",
            "certificates[0].files.password_file",
            "is missing",
        ),
        (
            "{ layout: pkcs12, p12: /etc/tls/alice.p12, password_file: alice.pass }",
            "certificates[0].files.password_file",
            "relative path",
        ),
        (
            "{ layout: combined, cert: /etc/tls/alice.pem, password_file: /etc/alice.pass }",
            "certificates[0].files.password_file",
            "layout `combined` writes no encrypted file",
        ),
        (
            "{ layout: pkcs12, p12: /etc/alice.pass, password_file: /etc/alice.pass }",
            "certificates[0].files.password_file",
            "is the `p12` file itself",
        ),
        (
            "{ layout: pkcs12, key: /etc/tls/alice.key, p12: /etc/tls/alice.p12, password_file: /etc/alice.pass }",
            "certificates[0].files.key",
            "layout `pkcs12` does not write a `key` file",
        ),
    ] {
        let e = one_error(&format!(
            "state_dir: /tmp/s\ncertificates:\n  - name: alice\n    sans: [alice.example.internal]\n    files: {files}\n"
        ));
        assert_eq!(e.field, field, "{e}");
        assert!(e.to_string().contains(says), "{e}");
    }
}

/// Thousands of certificates are read on all cores, a slice at a time: every one comes
/// out in order, and a mistake in one is reported at its own index and line, as with a
/// few.
#[test]
fn long_lists_keep_their_order_and_their_errors_lines() {
    let entry = |i: usize| {
        format!("  - name: c{i}\n    sans: [c{i}.example.internal]\n    files: {{ layout: nginx, cert: /t/c{i}.crt, key: /t/c{i}.key }}\n")
    };
    let n = 2500;
    let mut body = String::new();
    for i in 0..n {
        body.push_str(&entry(i));
    }
    let c = parse(&cert(&body), Path::new("/etc/certkeeper/config.yaml")).expect("valid");
    let names: Vec<String> = c.certificates.iter().map(|c| c.name.clone()).collect();
    assert_eq!(names, (0..n).map(|i| format!("c{i}")).collect::<Vec<_>>());
    assert_eq!(
        c.certificates[2100].sans[0].to_string(),
        "c2100.example.internal"
    );

    // Certificate 1800 (in the second slice) with a misspelt key: its own index and line.
    let mut body = String::new();
    for i in 0..n {
        if i == 1800 {
            body.push_str("  - name: c1800\n    sanz: [x.example.internal]\n    files: { layout: nginx, cert: /t/x.crt, key: /t/x.key }\n");
        } else {
            body.push_str(&entry(i));
        }
    }
    let text = cert(&body);
    let e = one_error(&text);
    assert_eq!(e.field, "certificates[1800].sanz", "{e}");
    assert_eq!(e.certificate.as_deref(), Some("c1800"));
    let line = text.lines().position(|l| l.contains("sanz")).unwrap() + 1;
    assert_eq!(e.line, Some(line), "{e}");
}

/// Certificates are read many to a parser when the list allows it; what each one says
/// is the same as when it is read alone: items in flow style, with block scalars,
/// comments, quoted numbers and octal modes, and items indented differently in one list.
#[test]
fn items_read_together_mean_what_they_mean_alone() {
    let items = [
        "  - name: a0\n    sans: [a0.example.internal]\n    files: { layout: nginx, cert: /t/a0.crt, key: /t/a0.key }\n",
        "  - {name: a1, sans: [a1.example.internal], files: {layout: nginx, cert: /t/a1.crt, key: /t/a1.key}}\n",
        "  # between items\n  - name: \"0123\"\n    sans:\n      - a2.example.internal   # a comment\n    key_mode: \"0640\"\n    files: { layout: nginx, cert: /t/a2.crt, key: /t/a2.key }\n",
        "  - name: a3\n    common_name: >-\n      service\n      a3\n    sans: [a3.example.internal]\n    files:\n      layout: combined\n      cert: /t/a3.pem\n    hooks:\n      renewed: [logger, \"a3 renewed\"]\n",
        "  -   name: a4\n      sans: [a4.example.internal]\n      files: { layout: nginx, cert: /t/a4.crt, key: /t/a4.key }\n",
        "  - name: a5\n    sans: [a5.example.internal]\n    key_mode: 0600\n    files: { layout: nginx, cert: /t/a5.crt, key: /t/a5.key }\n",
        "  - name: a6\n    sans: [a6.example.internal]\n    files: { layout: nginx, cert: /t/a6.crt, key: /t/a6.key }\n    hooks:\n      renewed:\n        - printf\n        - |+\n          kept\n\n",
    ];
    // Enough of them that several go to each parser: all of them (every batch has an
    // item indented otherwise, so each is read alone), and those at one indentation
    // (read by one parser a batch).
    let all: Vec<(usize, &str)> = items.iter().copied().enumerate().collect();
    let same: Vec<(usize, &str)> = all
        .iter()
        .filter(|(_, i)| !i.contains("-   "))
        .copied()
        .collect();
    for list in [&all, &same] {
        let mut body = String::new();
        let mut alone = Vec::new();
        for round in 0..40 {
            for (k, item) in list.iter() {
                let item = item
                    .replace(&format!("a{k}"), &format!("r{round}x{k}"))
                    .replace("\"0123\"", &format!("\"0{round}{k}\""));
                body.push_str(&item);
                alone.push(ok(&cert(&item)).certificates.remove(0));
            }
        }
        let together = ok(&cert(&body)).certificates;
        assert_eq!(together.len(), alone.len());
        for (t, a) in together.iter().zip(&alone) {
            assert_eq!(t, a);
        }
        assert_eq!(together[2].name, "002");
        assert_eq!(together[3].common_name, "service r0x3");
        // A kept block scalar keeps its line breaks, as when it is read alone.
        let kept = together.iter().find(|c| c.name == "r0x6").unwrap();
        assert_eq!(kept.hooks.renewed, [["printf", "kept\n\n"]]);
    }

    // Items at one indentation are read by one parser, as the list they come from.
    let same: Vec<&str> = same.iter().map(|(_, i)| *i).collect();
    let text = cert(&same.concat());
    let split = split::split_checked(&text).unwrap().unwrap();
    let texts: Vec<String> = split.items.iter().map(|i| i.text(&text)).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    let read = read_together(&texts).expect("read together");
    assert_eq!(read.len(), same.len());
    assert_eq!(read[1].name.as_deref(), Some("a1"));
    // Not when one of them is indented otherwise.
    let text = cert(&items.concat());
    let split = split::split_checked(&text).unwrap().unwrap();
    let texts: Vec<String> = split.items.iter().map(|i| i.text(&text)).collect();
    let texts: Vec<&str> = texts.iter().map(String::as_str).collect();
    assert!(read_together(&texts).is_none());
}

/// Items the split's walk recorded are read from its events, without a second parse;
/// each one, and each that is refused there, means what the full parser reads it to
/// mean: the same certificate, or the same errors at the same lines.
#[test]
fn items_read_from_the_walk_mean_what_the_full_parser_reads() {
    // (item, whether it is read from the walk's events)
    let items: &[(&str, bool)] = &[
        ("- name: a\n  sans: [a.example.internal]\n  files: { layout: nginx, cert: /t/a.crt, key: /t/a.key }\n", true),
        ("- {name: b, sans: [b.example.internal], files: {layout: combined, cert: /t/b.pem}, reload: [web], follow_symlinks: true}\n", true),
        ("- name: 'c'\n  sans: [\"c.example.internal\"]\n  key_mode: \"0640\"\n  lifetime: 30d\n  files:\n    layout: nginx\n    cert: /t/c.crt   # a comment\n    key: /t/c.key\n", true),
        ("- name: d\n  sans: [d.example.internal]\n  files: { layout: combined, cert: /t/d.pem }\n  hooks: { renewed: [[logger, d], [\"true\"]], timeout: 5s }\n  verify: { connect: \"127.0.0.1:443\", server_name: d.example.internal }\n", true),
        ("- name: e\n  sans: [e.example.internal]\n  files: { layout: combined, cert: /t/e.pem }\n  follow_symlinks: True\n", false),
        ("- name: f\n  sans: [f.example.internal, 10.0.0.6]\n  files: { layout: combined, cert: /t/f.pem }\n", true),
        ("- name: 1e3\n  sans: [w.example.internal]\n  files: { layout: combined, cert: /t/w.pem }\n", false),
        ("- name: 0123\n  sans: [x.example.internal]\n  files: { layout: combined, cert: /t/x.pem }\n", false),
        ("- name: y\n  sans: [y.example.internal]\n  files: { layout: combined, cert: /t/y.pem }\n  lifetime: 0x30\n", false),
        ("- name: g\n  sans: [g.example.internal]\n  key_mode: 0600\n  files: { layout: combined, cert: /t/g.pem }\n", false),
        ("- name: 'it''s'\n  sans: [h.example.internal]\n  files: { layout: combined, cert: /t/h.pem }\n", false),
        ("- name: \"i\\x41\"\n  sans: [i.example.internal]\n  files: { layout: combined, cert: /t/i.pem }\n", false),
        ("- name: j\n  common_name: a long\n    name\n  sans: [j.example.internal]\n  files: { layout: combined, cert: /t/j.pem }\n", false),
        ("- name: !!str k\n  sans: [k.example.internal]\n  files: { layout: combined, cert: /t/k.pem }\n", false),
        ("- name: l\n  sans: [l.example.internal]\n  files: { layout: combined, cert: /t/l.pem }\n  lifetime:\n", false),
        ("- name: m\n  sans: [m.example.internal]\n  files: { layout: combined, cert: /t/m.pem }\n  renew_before: ~\n", false),
        ("- name: n\n  sans: [n.example.internal]\n  files: { layout: combined, cert: /t/n.pem }\n  lifetime: 90\n", false),
        ("- name: o\n  common_name: |\n    o\n  sans: [o.example.internal]\n  files: { layout: combined, cert: /t/o.pem }\n", false),
        ("- name: p\n  sanz: [p.example.internal]\n  files: { layout: combined, cert: /t/p.pem }\n", false),
        ("- name: q\n  name: q2\n  sans: [q.example.internal]\n  files: { layout: combined, cert: /t/q.pem }\n", false),
        ("- name: r\n  sans: r.example.internal\n  files: { layout: combined, cert: /t/r.pem }\n", false),
        ("- [name, s]\n", false),
        ("- t\n", false),
        ("- name: u\n  sans: [u.example.internal]\n  files: { layout: combined, cert: /t/u.pem }\n  follow_symlinks: yes\n", false),
        ("- name: v\n  sans: [v.example.internal]\n  files: { layout: combined, cert: /t/v.pem }\n  verify: [{ connect: v.example.internal:443 }, { connect: \"[::1]:443\" }]\n", true),
    ];
    let servers = "servers:\n  web: { type: command, reload: [/bin/true] }\n";
    for (item, read) in items {
        let text = format!("state_dir: /tmp/s\n{servers}certificates:\n{item}");
        let split = split::split_checked(&text).unwrap().expect("cut");
        let cut = &split.items[0];
        // What the events give is what the full parser gives, or nothing.
        let from_walk = cut
            .tape
            .clone()
            .and_then(|r| tape::read::<raw::RawCertificate>(&text, &split.toks[r]));
        let full = serde_yaml::from_str::<raw::RawCertificate>(&cut.text(&text));
        match (&from_walk, &full) {
            (Some(w), Ok(f)) => assert_eq!(format!("{w:?}"), format!("{f:?}"), "{item}"),
            (Some(w), Err(e)) => panic!("{item}: read as {w:?} where the parser says {e}"),
            (None, _) => {}
        }
        assert_eq!(from_walk.is_some(), *read, "{item}");
        if !read {
            // Read by the full parser, as before.
            continue;
        }
        // The whole file, with the list cut and this item read from the walk, and read
        // whole (a non-ASCII comment makes the split decline).
        let whole = format!("{text}# é\n");
        assert!(split::split_checked(&whole).unwrap().is_none());
        let file = Path::new("/etc/certkeeper/config.yaml");
        match (parse(&text, file), parse(&whole, file)) {
            (Ok(a), Ok(b)) => assert_eq!(a.certificates, b.certificates, "{item}"),
            (Err(a), Err(b)) => assert_eq!(a.0, b.0, "{item}"),
            (a, b) => panic!("{item}: {:?} against {:?}", a.err(), b.err()),
        }
    }
}

#[test]
fn certificates_with_the_same_servers_and_hooks_share_one_copy() {
    let c = ok("state_dir: /tmp/s\nservers:\n  web: { type: command, reload: [/bin/true] }\n  mail: { type: command, reload: [/bin/true] }\ncertificates:\n\
         - { name: a, sans: [a.b], files: { layout: combined, cert: /t/a.pem }, reload: [web] }\n\
         - { name: b, sans: [b.b], files: { layout: combined, cert: /t/b.pem }, reload: [web] }\n\
         - { name: c, sans: [c.b], files: { layout: combined, cert: /t/c.pem }, reload: [mail], hooks: { renewed: [logger, c] } }\n\
         - { name: d, sans: [d.b], files: { layout: combined, cert: /t/d.pem }, reload: [mail] }\n");
    let [a, b, cc, d] = &c.certificates[..] else {
        panic!("four certificates")
    };
    assert!(std::sync::Arc::ptr_eq(&a.reload, &b.reload));
    assert!(std::sync::Arc::ptr_eq(&a.hooks, &b.hooks));
    assert_eq!(&*cc.reload, ["mail"]);
    assert!(std::sync::Arc::ptr_eq(&cc.reload, &d.reload));
    // What is shared is what each one says.
    assert_eq!(cc.hooks.renewed, [["logger", "c"]]);
    assert!(d.hooks.renewed.is_empty());
    assert_eq!(*d.hooks, *a.hooks);
}

#[test]
fn files_count_what_they_name() {
    let p = || PathBuf::from("/t/x");
    for f in [
        Files::Nginx {
            cert: p(),
            key: p(),
        },
        Files::Apache {
            cert: p(),
            chain: p(),
            key: p(),
        },
        Files::Combined { cert: p() },
        Files::Separate {
            cert: p(),
            chain: p(),
            fullchain: p(),
            key: p(),
        },
        Files::Pkcs12 {
            p12: p(),
            password_file: p(),
        },
    ] {
        assert_eq!(f.count(), f.paths().len(), "{f:?}");
    }
}

/// The certificates list is cut out of the file and read a slice at a time; a section
/// written after it still applies to every certificate in it, and blanks and comments
/// after it change nothing: each file means what it means read whole, errors and lines
/// included.
#[test]
fn sections_after_the_list_apply_to_every_certificate() {
    let file = Path::new("/etc/certkeeper/config.yaml");
    let entry = |i: usize| {
        format!("  - name: c{i}\n    sans: [c{i}.example.internal]\n    files: {{ layout: combined, cert: /t/c{i}.pem }}\n    reload: [web]\n")
    };
    // More certificates than the walk hands on at a time, one of them wrong.
    let mut list = String::new();
    for i in 0..1300 {
        if i == 1200 {
            list.push_str("  - name: c1200\n    sanz: [x.example.internal]\n    files: { layout: combined, cert: /t/x.pem }\n");
        } else {
            list.push_str(&entry(i));
        }
    }
    let servers = "servers:\n  web: { type: command, reload: [/bin/true] }\n";
    let defaults = "defaults:\n  lifetime: 30d\n  key: rsa-2048\n";
    let wrong_ca = "ca:\n  key: dsa\n";
    for (name, text) in [
        ("after", format!("state_dir: /tmp/s\ncertificates:\n{list}{servers}{defaults}")),
        ("before", format!("state_dir: /tmp/s\n{servers}{defaults}certificates:\n{list}")),
        ("comments after", format!("state_dir: /tmp/s\n{servers}{defaults}certificates:\n{list}\n  # the end\n\n# really\n")),
        ("errors both sides", format!("state_dir: /tmp/s\n{wrong_ca}{servers}certificates:\n{list}{defaults}trust: 3\n")),
    ] {
        let whole = format!("{text}# é\n");
        let (cut, read_whole) = (parse(&text, file), parse(&whole, file));
        let errors = cut.as_ref().unwrap_err();
        assert_eq!(errors, read_whole.as_ref().unwrap_err(), "{name}");
        let e = errors.0.iter().find(|e| e.field.contains("sanz")).unwrap();
        assert_eq!(e.field, "certificates[1200].sanz", "{name}");
        let line = text.lines().position(|l| l.contains("sanz")).unwrap() + 1;
        assert_eq!(e.line, Some(line), "{name}");
        if name == "errors both sides" {
            assert!(errors.0.iter().any(|e| e.field == "ca.key"), "{errors}");
            assert!(errors.0.iter().any(|e| e.field == "trust"), "{errors}");
            continue;
        }
        assert_eq!(errors.0.len(), 1, "{name}: {errors}");
        // Without the wrong one, every certificate takes the defaults.
        let fixed = text.replace("sanz: [x", "sans: [x");
        let c = ok(&fixed);
        assert_eq!(c.certificates.len(), 1300, "{name}");
        for spec in &c.certificates {
            assert_eq!(spec.lifetime, Duration::from_secs(30 * 86400), "{name}");
            assert_eq!(spec.key, KeyType::Rsa2048, "{name}");
        }
        assert_eq!(c.certificates, ok(&format!("{fixed}# é\n")).certificates);
    }
}
