//! The manual pages, as the packages install them: `certkeeper(1)`, one page per
//! subcommand (`certkeeper-run(1)` … `certkeeper-ca-rotate(1)`) rendered from the same
//! clap definitions as `--help`, and `certkeeper.yaml(5)` from the configuration
//! reference (src/config/reference.rs) that the README's table is generated from.

use crate::config::reference::KEYS;
use clap::Command;
use roff::{bold, italic, roman, Inline, Roff};
use std::io::Write;
use std::path::{Path, PathBuf};

const MANUAL: &str = "certkeeper manual";

/// Writes every page into `dir` (created when missing) and returns their paths.
pub fn write_all(root: Command, dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut root = root.disable_help_subcommand(true);
    root.build();
    let mut pages = Vec::new();
    let mut all = Vec::new();
    collect(&root, &mut all);
    let names: Vec<String> = all.iter().map(page_name).collect();
    for cmd in &all {
        let name = page_name(cmd);
        let path = dir.join(format!("{name}.1"));
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&command_page(cmd, &name, &names)?)?;
        pages.push(path);
    }
    let path = dir.join("certkeeper.yaml.5");
    std::fs::write(&path, config_page())?;
    pages.push(path);
    Ok(pages)
}

/// The command and its subcommands, depth first, hidden ones left out.
fn collect(cmd: &Command, out: &mut Vec<Command>) {
    out.push(cmd.clone());
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        collect(sub, out);
    }
}

/// `certkeeper`, `certkeeper-run`, `certkeeper-ca-rotate`.
fn page_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or(cmd.get_name())
        .replace(' ', "-")
}

/// The subcommand's path below `certkeeper`: "", "run", "ca rotate".
fn path_of(name: &str) -> String {
    name.strip_prefix("certkeeper")
        .unwrap_or(name)
        .trim_start_matches('-')
        .replace('-', " ")
}

fn command_page(cmd: &Command, name: &str, all: &[String]) -> std::io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cmd.clone())
        .title(name.to_uppercase())
        .manual(MANUAL)
        .source(format!("certkeeper {}", env!("CARGO_PKG_VERSION")));
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    if cmd
        .get_arguments()
        .any(|a| !a.is_hide_set() && a.get_id() != "help" && a.get_id() != "version")
    {
        man.render_options_section(&mut out)?;
    }
    if cmd.get_subcommands().any(|s| !s.is_hide_set()) {
        man.render_subcommands_section(&mut out)?;
    }
    let path = path_of(name);
    let mut r = Roff::new();
    section(&mut r, "EXIT STATUS", exit_status(&path));
    let takes_config = cmd.get_arguments().any(|a| a.get_id() == "path");
    let mut env: Vec<(&str, &str)> = Vec::new();
    if takes_config || path.is_empty() {
        env.push((
            "CERTKEEPER_CONFIG",
            "The configuration file, when -c is not given (default /etc/certkeeper/config.yaml).",
        ));
    }
    env.push((
        "CERTKEEPER_LOG",
        "What is logged on standard error: error, warn, info (the default), debug or trace, or a tracing filter such as certkeeper=debug.",
    ));
    if path == "run" || path.is_empty() {
        env.push((
            "NOTIFY_SOCKET",
            "Set by systemd: the daemon reports READY, RELOADING, STOPPING and its status there (Type=notify).",
        ));
        env.push((
            "CREDENTIALS_DIRECTORY",
            "Set by systemd: a credential named ca-passphrase there is the passphrase of the CA keys when ca.key_passphrase_file is not set.",
        ));
    }
    if path == "completions" || path.is_empty() {
        env.push((
            "CERTKEEPER_COMPLETE",
            "Set by the shell's completion script when it asks certkeeper for candidates; not for use by hand.",
        ));
    }
    r.control("SH", ["ENVIRONMENT"]);
    for (var, text) in env {
        tagged(&mut r, vec![bold(var)], text);
    }
    if takes_config || path.is_empty() {
        r.control("SH", ["FILES"]);
        tagged(
            &mut r,
            vec![italic("/etc/certkeeper/config.yaml")],
            "The configuration; see certkeeper.yaml(5).",
        );
        tagged(
            &mut r,
            vec![italic("/var/lib/certkeeper/")],
            "The state directory (state_dir): the internal CA under ca/, the archive of issued pairs, the ledger (ledger.jsonl), ACME accounts, and the lock every command that changes something takes.",
        );
    }
    if path == "run" || path.is_empty() {
        r.control("SH", ["SIGNALS"]);
        tagged(
            &mut r,
            vec![bold("SIGHUP")],
            "Read the configuration again (so does a change of the file); a configuration with errors is refused and the running one stays.",
        );
        tagged(
            &mut r,
            vec![bold("SIGTERM"), roman(", "), bold("SIGINT")],
            "Stop between certificates: no install is left half done; running hooks get up to 5 s.",
        );
    }
    let examples = examples(&path);
    if !examples.is_empty() {
        r.control("SH", ["EXAMPLES"]);
        for (what, cmdline) in examples {
            r.control("PP", []).text(md(what));
            r.control("IP", []).text([bold(*cmdline)]);
        }
    }
    r.control("SH", ["SEE ALSO"]);
    let mut see: Vec<Inline> = Vec::new();
    let related = all.iter().filter(|n| {
        n.as_str() != name
            && (name == "certkeeper"
                || n.as_str() == "certkeeper"
                || n.starts_with(&format!("{name}-"))
                || name.starts_with(&format!("{n}-")))
    });
    for n in related.chain(std::iter::once(&"certkeeper.yaml".to_string())) {
        if !see.is_empty() {
            see.push(roman(", "));
        }
        let section = if n == "certkeeper.yaml" { 5 } else { 1 };
        see.push(bold(n.as_str()));
        see.push(roman(format!("({section})")));
    }
    r.text(see);
    out.extend_from_slice(r.to_roff().as_bytes());
    if cmd.get_version().is_some() {
        man.render_version_section(&mut out)?;
    }
    Ok(out)
}

fn section(r: &mut Roff, title: &str, text: Vec<(&'static str, &'static str)>) {
    r.control("SH", [title]);
    for (tag, body) in text {
        tagged(r, vec![bold(tag)], body);
    }
}

fn tagged(r: &mut Roff, tag: Vec<Inline>, body: &str) {
    r.control("TP", []).text(tag).text(md(body));
}

/// Inline Markdown (`code`, [text](#anchor)) as roff: code in bold, links as their text
/// ("… in the README" for the README's sections).
fn md(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    let mut plain = String::new();
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if c == '`' {
            if let Some(end) = rest[1..].find('`') {
                if !plain.is_empty() {
                    out.push(roman(std::mem::take(&mut plain)));
                }
                out.push(bold(&rest[1..1 + end]));
                rest = &rest[end + 2..];
                continue;
            }
        }
        if c == '[' {
            if let Some(close) = rest.find("](") {
                if let Some(end) = rest[close..].find(')') {
                    plain.push_str(&rest[1..close]);
                    if rest[close + 2..].starts_with('#') {
                        // A section of the README, which the packages ship.
                        plain.push_str(" in the README");
                    }
                    rest = &rest[close + end + 1..];
                    continue;
                }
            }
        }
        plain.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !plain.is_empty() {
        out.push(roman(plain));
    }
    out
}

fn exit_status(path: &str) -> Vec<(&'static str, &'static str)> {
    let usage = ("2", "A usage or configuration error; the message names the file, line and field. Nothing was changed.");
    match path {
        "check" => vec![
            ("0", "The configuration is valid and nothing needs attention."),
            ("1", "Valid, but a CA certificate is due and cannot be replaced here, or has expired."),
            usage,
        ],
        "status" => vec![
            ("0", "Shown. With --check: everything is in order."),
            ("1", "With --check: something is due, missing, damaged, expiring or failing, or the CA cannot rotate; one line per problem."),
            usage,
        ],
        "renew" => vec![
            ("0", "Every certificate named is in order (issued, installed, served) or was not due."),
            ("1", "At least one certificate failed; the others were still done."),
            usage,
        ],
        "inspect" => vec![
            ("0", "Every file was read, chains are in order, and every key matches a certificate given."),
            ("1", "A file could not be read, a chain is out of order, or a key matches none of the certificates."),
            ("2", "A usage error."),
        ],
        "discover" => vec![
            ("0", "Every file found was read and every key matches its certificate."),
            ("1", "A file could not be read or a key does not match."),
            usage,
        ],
        "ca show" => vec![
            ("0", "The CA is in order."),
            ("1", "A CA certificate is due and cannot be replaced here, or has expired."),
            usage,
        ],
        _ => vec![
            ("0", "Success."),
            ("1", "A runtime failure (an unreachable server, a failing reload, an unwritable file); the message says which."),
            usage,
        ],
    }
}

fn examples(path: &str) -> &'static [(&'static str, &'static str)] {
    match path {
        "" => &[
            ("Check a configuration, then see what the daemon would do:", "certkeeper check -c /etc/certkeeper/config.yaml"),
            ("Every certificate, its expiry and its last result:", "certkeeper status"),
            ("Renew one certificate now, even if it is not due:", "certkeeper renew --force www"),
        ],
        "run" => &[
            ("Run in the foreground with JSON logs (systemd runs it this way, `Type=notify`):", "certkeeper run --log-format json"),
            ("Read the configuration again without a restart:", "systemctl reload certkeeper"),
        ],
        "check" => &[
            ("Validate a new configuration before installing it:", "certkeeper check -c ./config.yaml"),
        ],
        "status" => &[
            ("One row per certificate:", "certkeeper status"),
            ("Every detail of one certificate:", "certkeeper status www"),
            ("A monitoring check (exit 1 on any problem):", "certkeeper status --check"),
            ("For scripts:", "certkeeper status --json"),
        ],
        "renew" => &[
            ("Issue what is missing or due:", "certkeeper renew --all"),
            ("What would be done, changing nothing:", "certkeeper renew --all --dry-run"),
            ("Replace one pair now:", "certkeeper renew --force www"),
        ],
        "inspect" => &[
            ("A certificate and a key: do they match, is the chain in order?", "certkeeper inspect /etc/nginx/tls/www.crt /etc/nginx/tls/www.key"),
            ("A DER certificate from standard input:", "certkeeper inspect - < cert.der"),
        ],
        "ca" => &[
            ("Create the CA before the first issuance:", "certkeeper ca init"),
            ("The roots clients must trust:", "certkeeper ca bundle > /usr/local/share/ca-certificates/certkeeper.crt"),
        ],
        "ca init" => &[("Create the CA of a configuration:", "certkeeper ca init -c /etc/certkeeper/config.yaml")],
        "ca show" => &[("Every root and intermediate, and when each is replaced:", "certkeeper ca show")],
        "ca bundle" => &[("Install the roots for the system's clients:", "certkeeper ca bundle > /usr/local/share/ca-certificates/certkeeper.crt && update-ca-certificates")],
        "ca rotate" => &[("Replace the intermediate with the root key kept offline:", "certkeeper ca rotate --root-key /media/usb/root.key")],
        "ca rotate-root" => &[("Publish the next root now:", "certkeeper ca rotate-root")],
        "ca revoke" => &[("Revoke a serial (as `status` prints it) for a compromised key:", "certkeeper ca revoke 5f3a9c01d2 --reason key-compromise")],
        "ca crl" => &[("The current CRLs:", "certkeeper ca crl > crl.pem")],
        "ca encrypt" => &[("Encrypt the CA keys with the configured passphrase:", "certkeeper ca encrypt")],
        "revoke" => &[("Revoke the certificate in place for `www` and reissue it:", "certkeeper revoke www --reason superseded")],
        "issue" => &[("A client certificate for a service, into a directory:", "certkeeper issue --name backup-agent --san backup.example.internal --client --out /etc/backup/tls")],
        "discover" => &[
            ("What the local nginx and Apache serve:", "certkeeper discover"),
            ("A `certificates:` block adopting it:", "certkeeper discover --yaml"),
        ],
        "completions" => &[("Completions for bash, for the current user:", "certkeeper completions bash > ~/.local/share/bash-completion/completions/certkeeper")],
        _ => &[],
    }
}

/// `certkeeper.yaml(5)`: every key, its default and meaning, from the reference.
fn config_page() -> String {
    let mut r = Roff::new();
    r.control(
        "TH",
        [
            "CERTKEEPER.YAML",
            "5",
            "",
            &format!("certkeeper {}", env!("CARGO_PKG_VERSION")),
            MANUAL,
        ],
    );
    r.control("SH", ["NAME"]);
    r.text([roman("certkeeper.yaml - the configuration of certkeeper")]);
    r.control("SH", ["SYNOPSIS"]);
    r.text([italic("/etc/certkeeper/config.yaml")]);
    r.control("SH", ["DESCRIPTION"]);
    r.text(md("A YAML file that says which certificates certkeeper issues, where it installs them, which servers it reloads and how it checks what they serve. `certkeeper check` validates it; the daemon reads it again on SIGHUP or when the file changes, and keeps the running configuration when the new one has errors."));
    r.control("PP", []);
    r.text(md("Unknown keys are errors, never silently ignored. Every error names the file, the line, the certificate and the field, and says what to do; `check` reports every error at once and exits 2."));
    r.control("PP", []);
    r.text(md("Durations are a number and a unit (`s m h d w y`), several may be combined (`1h30m`); a share of a lifetime is written `33%`. File modes are quoted octal strings (`\"0640\"`), because YAML reads 0640 as a number. Paths are absolute."));
    r.control("SH", ["KEYS"]);
    for key in KEYS {
        let mut tag = vec![bold(key.key)];
        tag.push(roman(" (default: "));
        tag.extend(md(key.default));
        tag.push(roman(")"));
        r.control("TP", []).text(tag).text(md(key.meaning));
    }
    r.control("SH", ["LAYOUTS"]);
    for (layout, text) in [
        ("nginx", "`cert` = leaf + intermediates (\"fullchain\"), for `ssl_certificate`; `key`."),
        ("apache", "`cert` = leaf, `chain` = intermediates, `key`; for `SSLCertificateFile`, `SSLCertificateChainFile`, `SSLCertificateKeyFile`."),
        ("combined", "`cert` = key + leaf + intermediates in one file (mode of the key), for HAProxy `crt`."),
        ("separate", "`cert`, `chain`, `fullchain` and `key`, each its own file."),
        ("pkcs12", "`p12` = key + leaf + intermediates in one PKCS#12 file (PBES2: PBKDF2-HMAC-SHA256 and AES-256-CBC, HMAC-SHA256 MAC; mode of the key), encrypted with the password in `password_file`; for client certificates that go into browsers, Java and Windows."),
    ] {
        tagged(&mut r, vec![bold(layout)], text);
    }
    r.control("SH", ["FILES"]);
    tagged(
        &mut r,
        vec![italic("/etc/certkeeper/config.yaml")],
        "The default location; `-c FILE` or `CERTKEEPER_CONFIG` choose another.",
    );
    tagged(
        &mut r,
        vec![italic("/usr/share/doc/certkeeper/example.yaml")],
        "A complete, commented example.",
    );
    r.control("SH", ["EXAMPLES"]);
    r.text(md("A certificate for nginx, renewed by the internal CA, reloaded and checked where it is served:"));
    r.control("PP", []);
    r.control("nf", []);
    r.control("RS", ["4"]);
    r.text([roman(EXAMPLE)]);
    r.control("RE", []);
    r.control("fi", []);
    r.control("SH", ["SEE ALSO"]);
    r.text([
        bold("certkeeper"),
        roman("(1), "),
        bold("certkeeper-check"),
        roman("(1), "),
        bold("certkeeper-run"),
        roman("(1)"),
    ]);
    r.to_roff()
}

/// The example of `certkeeper.yaml(5)` (a unit test checks that it is valid).
const EXAMPLE: &str = "\
servers:
  web:
    type: nginx
    pid_file: /run/nginx.pid
certificates:
  - name: www
    sans: [www.example.internal, 10.0.0.5]
    lifetime: 30d
    files:
      layout: nginx
      cert: /etc/nginx/tls/www.crt
      key: /etc/nginx/tls/www.key
    reload: [web]
    verify:
      connect: 127.0.0.1:443
";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_of_the_configuration_page_is_valid() {
        if let Err(e) = crate::config::parse(EXAMPLE, Path::new("certkeeper.yaml.5")) {
            panic!("{e}");
        }
    }

    #[test]
    fn inline_markdown_becomes_bold_and_plain_text() {
        let r = Roff::new()
            .text(md("see [Hooks](#hooks): `a|b` and more"))
            .to_roff();
        assert!(r.contains("see Hooks in the README: "), "{r}");
        assert!(r.contains("\\fBa|b\\fR"), "{r}");
    }
}
