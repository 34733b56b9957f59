//! What clients see, judged like a strict client by certkeeper and by clients that are
//! not ours (`openssl s_client -verify_return_error`, `curl`), with a real nginx and a
//! real Apache: the leaf without its intermediate, a chain in the wrong order, a chain
//! from another CA, the wrong default vhost for the SNI name and an expired served
//! certificate, each named with its own sentence after a reload (`renew --force`) and
//! by the daemon's periodic check (`verify.every`).
//!
//! The vhost reads `served.pem`, which a reload script assembles from certkeeper's
//! files the way the test's `variant` file says (as a deploy script or config
//! management would), then signals the server.

use crate::support::servers::{
    q, s_client, self_signed_for, server_yaml, write_file, Apache, Nginx, TestCa, SERVER_NAME,
};
use crate::support::*;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Nginx,
    Apache,
}

enum Server {
    Nginx(Nginx),
    Apache(Apache),
}

impl Server {
    fn connect(&self) -> String {
        match self {
            Server::Nginx(s) => s.connect(),
            Server::Apache(s) => s.connect(),
        }
    }
    fn port(&self) -> u16 {
        match self {
            Server::Nginx(s) => s.port(),
            Server::Apache(s) => s.port(),
        }
    }
    fn pid_file(&self) -> PathBuf {
        match self {
            Server::Nginx(s) => s.pid_file().to_path_buf(),
            Server::Apache(s) => s.pid_file().to_path_buf(),
        }
    }
    fn spec(&self) -> certkeeper::config::ServerSpec {
        match self {
            Server::Nginx(s) => s.server_spec("web"),
            Server::Apache(s) => s.server_spec("web"),
        }
    }
    fn rewrite(&self, edit: impl FnOnce(&str) -> String) {
        match self {
            Server::Nginx(s) => s.rewrite(edit),
            Server::Apache(s) => s.rewrite(edit),
        }
    }
}

/// The vhost settings a variant needs, as an edit of the server's good configuration:
/// `Some(other)`: a default vhost serving `other` comes first and the `SERVER_NAME`
/// vhost is misnamed; `expired`: the vhost serves that certificate instead.
struct Vhost<'a> {
    default_other: Option<(&'a Path, &'a Path)>,
    serve_instead: Option<(&'a Path, &'a Path)>,
}

fn edit(kind: Kind, port: u16, served: (&Path, &Path), v: &Vhost) -> impl FnOnce(&str) -> String {
    let (cert, key) = (
        served.0.display().to_string(),
        served.1.display().to_string(),
    );
    let default_other = v
        .default_other
        .map(|(c, k)| (c.display().to_string(), k.display().to_string()));
    let instead = v
        .serve_instead
        .map(|(c, k)| (c.display().to_string(), k.display().to_string()));
    move |good: &str| {
        let mut text = good.to_string();
        if kind == Kind::Apache {
            // One file with leaf and chain (Apache 2.4.8+): the chain directive goes.
            text = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("SSLCertificateChainFile"))
                .collect::<Vec<_>>()
                .join("\n");
        }
        if let Some((c, k)) = &instead {
            text = text.replace(&cert, c).replace(&key, k);
        }
        if let Some((c, k)) = &default_other {
            text = match kind {
                Kind::Nginx => text
                    .replace(
                        &format!("server_name {SERVER_NAME};"),
                        "server_name wrong.example.internal;",
                    )
                    .replace(
                        "    server {",
                        &format!(
                            "    server {{\n        listen 127.0.0.1:{port} ssl default_server;\n        server_name other.example.internal;\n        ssl_certificate {c};\n        ssl_certificate_key {k};\n    }}\n    server {{"
                        ),
                    ),
                Kind::Apache => text
                    .replace(
                        &format!("    ServerName {SERVER_NAME}"),
                        "    ServerName wrong.example.internal",
                    )
                    .replace(
                        &format!("<VirtualHost 127.0.0.1:{port}>"),
                        &format!(
                            "<VirtualHost 127.0.0.1:{port}>\n    ServerName other.example.internal\n    SSLEngine on\n    SSLCertificateFile {c}\n    SSLCertificateKeyFile {k}\n</VirtualHost>\n<VirtualHost 127.0.0.1:{port}>"
                        ),
                    ),
            };
        }
        text
    }
}

/// `openssl s_client` and `curl`, each trusting only `root`: whether they accept what
/// is served for `SERVER_NAME` (s_client prints "Verify return code: 0 (ok)" even
/// after it refused: its exit code says).
fn others_accept(connect: &str, port: u16, root: &Path) -> (bool, bool) {
    let s = s_client(connect, root, &[]);
    let curl = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "--max-time",
            "10",
            "--cacert",
            path_str(root),
            "--capath",
            "/nonexistent",
            "--resolve",
            &format!("{SERVER_NAME}:{port}:127.0.0.1"),
            &format!("https://{SERVER_NAME}:{port}/"),
        ])
        .output()
        .expect("run curl");
    (s.code == 0, curl.status.success())
}

struct Rig {
    sb: Sandbox,
    server: Server,
    kind: Kind,
    served: (PathBuf, PathBuf),
    script: PathBuf,
    root: PathBuf,
    other: (PathBuf, PathBuf),
    expired: (PathBuf, PathBuf),
}

impl Rig {
    fn new(kind: Kind) -> Rig {
        let sb = Sandbox::new();
        let cert = CertDef::new("www", Layout::Separate).sans(&[SERVER_NAME]);
        sb.write_config_with("", &[], std::slice::from_ref(&cert));
        sb.renew_all().ok();
        let f = cert.files(&sb);
        let root = sb.root_bundle();
        // Another CA's intermediate, for a chain from another CA.
        let theirs = TestCa::new(&sb.path("theirs")).issue();
        let their_int = sb.path("their-intermediate.pem");
        write_file(&their_int, &theirs.chain_pem, 0o644);
        let served = (sb.path("served.pem"), sb.path("served.key"));
        let script = sb.path("assemble.sh");
        let variant = sb.path("variant");
        write_file(&variant, "good", 0o644);
        let signal = if kind == Kind::Nginx { "HUP" } else { "USR1" };
        let pid_file = sb.path(if kind == Kind::Nginx {
            "web/run/nginx.pid"
        } else {
            "web/run/apache2.pid"
        });
        let p = |p: &Path| p.display().to_string();
        write_file(
            &script,
            &format!(
                "#!/bin/sh\nset -e\ncase \"$(cat {variant})\" in\n  good) cat {full} > {out}.$$ ;;\n  leaf) cat {leaf} > {out}.$$ ;;\n  order) cat {leaf} {root} {chain} > {out}.$$ ;;\n  foreign) cat {leaf} {theirs} > {out}.$$ ;;\nesac\nmv {out}.$$ {out}\ncp {key} {outkey}.$$\nmv {outkey}.$$ {outkey}\nif [ -f {pid} ]; then kill -{signal} \"$(cat {pid})\"; fi\n",
                variant = p(&variant),
                full = p(f.fullchain.as_ref().unwrap()),
                leaf = p(&f.cert),
                root = p(&root),
                chain = p(f.chain.as_ref().unwrap()),
                theirs = p(&their_int),
                out = p(&served.0),
                key = p(f.key.as_ref().unwrap()),
                outkey = p(&served.1),
                pid = p(&pid_file),
            ),
            0o755,
        );
        assert!(std::process::Command::new(&script)
            .status()
            .unwrap()
            .success());
        let dir = sb.path("web");
        let server = match kind {
            Kind::Nginx => Server::Nginx(Nginx::start(&dir, &served.0, &served.1)),
            Kind::Apache => Server::Apache(Apache::start(&dir, &served.0, &served.0, &served.1)),
        };
        assert_eq!(server.pid_file(), pid_file);
        let other = self_signed_for(sb.dir(), "other", &["other.example.internal"], -1, 30);
        let expired = self_signed_for(sb.dir(), "expired", &[SERVER_NAME], -30, -2);
        let rig = Rig {
            sb,
            server,
            kind,
            served,
            script,
            root,
            other,
            expired,
        };
        rig.vhost(&Vhost {
            default_other: None,
            serve_instead: None,
        });
        rig.configure(&cert, "timeout: 3s");
        rig.assemble("good");
        rig
    }

    fn configure(&self, cert: &CertDef, verify: &str) {
        let script = self.script.display().to_string();
        let served = cert.clone().extra("reload: [web]").extra(&format!(
            "verify: {{ connect: {}, server_name: {SERVER_NAME}, {verify} }}",
            q(&self.server.connect())
        ));
        self.sb.write_config_with(
            "",
            &[server_yaml(
                &self.server.spec(),
                None,
                Some(&[script.as_str()]),
            )],
            &[served],
        );
    }

    fn vhost(&self, v: &Vhost) {
        self.server.rewrite(edit(
            self.kind,
            self.server.port(),
            (&self.served.0, &self.served.1),
            v,
        ));
    }

    /// Sets the variant and runs the script by hand (assemble, signal the server), as
    /// a deploy would, while certkeeper may be running it too (each run has its own
    /// temporary files).
    fn assemble(&self, variant: &str) {
        write_file(&self.sb.path("variant"), variant, 0o644);
        let out = std::process::Command::new(&self.script).output().unwrap();
        assert!(out.status.success(), "{out:?}");
    }

    /// What s_client and curl make of what is served, once the server has settled: a
    /// reloaded nginx or Apache lets its old workers answer for a moment, so the same
    /// chain must come back five times in a row first.
    fn others_accept(&self) -> (bool, bool) {
        let connect = self.server.connect();
        let mut last: Option<Vec<Vec<u8>>> = None;
        let mut same = 0;
        let settled = wait_until(Duration::from_secs(15), || {
            let now = certkeeper::verify::served_chain(
                &connect,
                SERVER_NAME,
                Duration::from_secs(2),
                None,
            )
            .ok()
            .map(|s| s.chain);
            same = if now.is_some() && now == last {
                same + 1
            } else {
                0
            };
            last = now;
            std::thread::sleep(Duration::from_millis(100));
            same >= 4
        });
        assert!(
            settled,
            "{connect} never served one chain for half a second"
        );
        others_accept(&connect, self.server.port(), &self.root)
    }

    /// The variants: (name, vhost, what certkeeper says, whether the new pair stays
    /// after a reload, whether s_client and curl accept what is served).
    fn variants(&self) -> Vec<(&'static str, Vhost<'_>, &'static str, bool, bool)> {
        let leaf_alone = match self.kind {
            Kind::Nginx => "nginx sends the leaf without its intermediate: `ssl_certificate` points at a file with 1 certificate, expected leaf + 1 intermediate; point `ssl_certificate` at ",
            Kind::Apache => "Apache sends the leaf without its intermediate: `SSLCertificateFile` holds 1 certificate and no `SSLCertificateChainFile` adds the intermediate, expected leaf + 1 intermediate; point `SSLCertificateFile` at ",
        };
        let plain = || Vhost {
            default_other: None,
            serve_instead: None,
        };
        vec![
            (
                "leaf",
                plain(),
                leaf_alone,
                true,
                false,
            ),
            (
                // openssl and curl build the path whatever the order: they accept it.
                "order",
                plain(),
                "sends the chain's certificates in another order",
                true,
                true,
            ),
            (
                "foreign",
                plain(),
                "sends intermediates that are not the chain installed with this certificate",
                true,
                false,
            ),
            (
                "good",
                Vhost {
                    default_other: Some((&self.other.0, &self.other.1)),
                    serve_instead: None,
                },
                "the served certificate is not for `www.example.internal` (it names other.example.internal)",
                false,
                false,
            ),
            (
                "good",
                Vhost {
                    default_other: None,
                    serve_instead: Some((&self.expired.0, &self.expired.1)),
                },
                "the served certificate expired on ",
                false,
                false,
            ),
        ]
    }
}

fn each_problem_is_named_after_a_reload_and_by_the_periodic_check(kind: Kind) {
    let rig = Rig::new(kind);
    let sb = &rig.sb;
    // All well: certkeeper, openssl and curl agree.
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok();
    assert!(!r.stderr.contains("clients refuse"), "{r:?}");
    sb.ck(&["status", "--check"]).ok();
    assert_eq!(rig.others_accept(), (true, true));

    // After a reload: each variant named; the pair stays when the leaf is ours.
    for (variant, vhost, says, stays, accepted) in rig.variants() {
        rig.vhost(&vhost);
        write_file(&sb.path("variant"), variant, 0o644);
        let before = rig.sb.ledger().len();
        let r = sb.ck(&["renew", "--all", "--force"]);
        r.expect_code(if stays { 0 } else { 1 });
        r.stderr_has(says);
        let installed = sb.ledger()[before..]
            .iter()
            .any(|e| e["event"] == "installed");
        assert_eq!(installed, stays, "{variant}: {r:?}");
        if !stays {
            // Rolled back, and what was served is still being served: s_client and
            // curl judge it as certkeeper did.
            assert_eq!(rig.others_accept(), (false, false), "{variant}");
        } else {
            let check = sb.ck(&["status", "--check"]);
            let server = if kind == Kind::Nginx {
                "nginx"
            } else {
                "Apache"
            };
            check.expect_code(1).stdout_has(&format!(
                "www: unverified: {} (SNI {SERVER_NAME}): {server} ",
                rig.server.connect()
            ));
            check.stdout_has(says);
            assert_eq!(rig.others_accept(), (accepted, accepted), "{variant}");
        }
        rig.vhost(&Vhost {
            default_other: None,
            serve_instead: None,
        });
        rig.assemble("good");
    }
    let r = sb.ck(&["renew", "--all", "--force"]);
    r.ok();
    sb.ck(&["status", "--check"]).ok();

    // The periodic check: the daemon checks every second; each variant, put in place
    // by hand behind its back, is named in `status --check` within a few checks.
    let cert = CertDef::new("www", Layout::Separate).sans(&[SERVER_NAME]);
    rig.configure(&cert, "timeout: 3s, every: 1s");
    let from = sb.ledger().len();
    let mut d = crate::support::daemon::Daemon::start_ready(sb, &[]);
    for (variant, vhost, says, stays, _) in rig.variants() {
        rig.vhost(&vhost);
        rig.assemble(variant);
        let state = if stays { "unverified" } else { "drift" };
        let mut last = String::new();
        let seen = wait_until(Duration::from_secs(30), || {
            last = sb.ck(&["status", "--check"]).stdout;
            last.contains(&format!("www: {state}: {}", rig.server.connect())) && last.contains(says)
        });
        assert!(seen, "{variant}: `{says}` not in:\n{last}\n{}", d.log());
        rig.vhost(&Vhost {
            default_other: None,
            serve_instead: None,
        });
        rig.assemble("good");
        let clean = wait_until(Duration::from_secs(30), || {
            sb.ck(&["status", "--check"]).code == 0
        });
        assert!(clean, "{variant}: never clean again:\n{}", d.log());
    }
    // Each finding was recorded once when it appeared, not at every check.
    let ledger = sb.ledger()[from..].to_vec();
    assert_eq!(
        count_events(&ledger, "unverified", Some("www")),
        3,
        "{ledger:#?}"
    );
    assert!(count_events(&ledger, "drift", Some("www")) >= 2);
    assert!(d.alive());
    d.stop();
}

#[test]
fn clients_nginx_each_problem_is_named_after_a_reload_and_by_the_periodic_check() {
    each_problem_is_named_after_a_reload_and_by_the_periodic_check(Kind::Nginx);
}

#[test]
fn clients_apache_each_problem_is_named_after_a_reload_and_by_the_periodic_check() {
    each_problem_is_named_after_a_reload_and_by_the_periodic_check(Kind::Apache);
}

/// `verify.client_cert` at a server that does not ask for client certificates: mutual
/// TLS is off there, and certkeeper says so (the pair stays: the server is serving it).
#[test]
fn clients_a_server_that_does_not_ask_for_the_client_certificate_is_named() {
    let sb = Sandbox::new();
    let www = CertDef::new("www", Layout::Nginx).sans(&[SERVER_NAME]);
    let probe = CertDef::new("probe", Layout::Nginx)
        .sans(&["probe.clients.example.internal"])
        .usage("client");
    sb.write_config_with("", &[], &[www.clone(), probe.clone()]);
    sb.renew_all().ok();
    let f = www.files(&sb);
    let nginx = Nginx::start(&sb.path("nginx"), &f.cert, f.key.as_ref().unwrap());
    let checked = www.clone().extra("reload: [nginx]").extra(&format!(
        "verify: {{ connect: {}, client_cert: probe }}",
        q(&nginx.connect())
    ));
    sb.write_config_with(
        "",
        &[server_yaml(&nginx.server_spec("nginx"), None, None)],
        &[checked, probe],
    );
    let r = sb.ck(&["renew", "www", "--force"]);
    r.ok().stderr_has(
        "the server did not ask for a client certificate although verify.client_cert is `probe`",
    );
    sb.ck(&["status", "--check"])
        .expect_code(1)
        .stdout_has("www: unverified: ");
}
