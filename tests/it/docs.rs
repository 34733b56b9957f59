//! The manual pages and shell completions, as the packages install them: every page
//! renders without warnings, lists what `--help` lists, and the configuration page has
//! every key; completion offers values and never the hidden `manpage` command.

use crate::support::*;
use std::collections::BTreeSet;
use std::process::Command;

/// The long options `certkeeper ARGS --help` lists.
fn long_options(sb: &Sandbox, args: &[&str]) -> BTreeSet<String> {
    let mut all = args.to_vec();
    all.push("--help");
    let help = sb.run(&all);
    help.ok();
    help.stdout
        .split_whitespace()
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
                .split(['=', '<', ','])
                .next()
                .unwrap()
                .to_string()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

/// Text without the terminal's overstrike (bold `X\bX`, underline `_\bX`).
fn plain(text: &str) -> String {
    let mut out: Vec<char> = Vec::with_capacity(text.len());
    for c in text.chars() {
        if c == '\u{8}' {
            out.pop();
        } else {
            out.push(c);
        }
    }
    out.into_iter().collect()
}

/// `man -l PAGE`, rendered 100 columns wide, with groff's warnings on stderr.
fn render(page: &std::path::Path) -> (String, String) {
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "100")
        .env("MAN_KEEP_FORMATTING", "0")
        .env("LC_ALL", "C.UTF-8")
        .output()
        .expect("man (Debian package man-db)");
    assert!(out.status.success(), "man -l {}", page.display());
    (
        plain(&String::from_utf8_lossy(&out.stdout)),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn man_pages_render_for_every_subcommand_and_the_configuration_file() {
    let sb = Sandbox::new();
    let dir = sb.path("man");
    let dir_s = dir.display().to_string();
    sb.run(&["manpage", &dir_s]).ok();
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["check"],
        &["status"],
        &["renew"],
        &["inspect"],
        &["ca"],
        &["ca", "init"],
        &["ca", "rotate"],
        &["ca", "rotate-root"],
        &["ca", "show"],
        &["ca", "bundle"],
        &["ca", "revoke"],
        &["ca", "crl"],
        &["ca", "encrypt"],
        &["revoke"],
        &["issue"],
        &["discover"],
        &["completions"],
    ];
    for args in commands {
        let mut name = vec!["certkeeper"];
        name.extend_from_slice(args);
        let name = name.join("-");
        let page = dir.join(format!("{name}.1"));
        let (text, warnings) = render(&page);
        assert!(warnings.trim().is_empty(), "{name}: {warnings}");
        for section in ["NAME", "SYNOPSIS", "EXIT STATUS", "ENVIRONMENT", "SEE ALSO"] {
            assert!(
                text.lines().any(|l| l == section),
                "{name}(1) has no {section}:\n{text}"
            );
        }
        // Every option `--help` shows is on the page: both come from one definition.
        for opt in long_options(&sb, args) {
            assert!(
                text.contains(&format!("--{opt}")),
                "{name}(1) lacks --{opt}:\n{text}"
            );
        }
    }
    let (run, _) = render(&dir.join("certkeeper-run.1"));
    for needle in [
        "SIGNALS",
        "SIGHUP",
        "SIGTERM",
        "NOTIFY_SOCKET",
        "--log-format",
        "EXAMPLES",
    ] {
        assert!(
            run.contains(needle),
            "certkeeper-run(1) lacks {needle}:\n{run}"
        );
    }
    // The hidden command has no page.
    assert!(!dir.join("certkeeper-manpage.1").exists());

    let (yaml, warnings) = render(&dir.join("certkeeper.yaml.5"));
    assert!(warnings.trim().is_empty(), "certkeeper.yaml(5): {warnings}");
    for section in ["KEYS", "FILES", "EXAMPLES", "LAYOUTS"] {
        assert!(yaml.lines().any(|l| l == section), "no {section}:\n{yaml}");
    }
    // One line, without the hyphenation of long words at line ends.
    let mut flat = String::new();
    for line in yaml.lines().map(str::trim) {
        match line.strip_suffix('\u{2010}') {
            Some(head) => flat.push_str(head),
            None => {
                flat.push_str(line);
                flat.push(' ');
            }
        }
    }
    let flat = flat.split_whitespace().collect::<Vec<_>>().join(" ");
    for key in certkeeper::config::reference::KEYS {
        assert!(
            flat.contains(&format!("{} (default: ", key.key)),
            "certkeeper.yaml(5) lacks {}",
            key.key
        );
    }
}

/// What bash completes for `words` (the last one being completed), through the script
/// `certkeeper completions bash` prints, with certkeeper on the PATH.
fn bash_complete(sb: &Sandbox, words: &[&str]) -> Vec<String> {
    let bin_dir = std::path::Path::new(BIN).parent().unwrap();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap());
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        r#"source <(certkeeper completions bash) || exit 3
COMP_WORDS=({words}); COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 )); COMP_TYPE=9
_clap_complete_certkeeper certkeeper "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
printf '%s\n' "${{COMPREPLY[@]}}""#,
        words = quoted.join(" ")
    );
    let out = Command::new("bash")
        .args(["--norc", "-c", &script])
        .env("PATH", path)
        .env("CERTKEEPER_CONFIG", sb.config_path())
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn completion_offers_key_types_and_certificate_names_and_hides_manpage() {
    let sb = Sandbox::new();
    sb.write_certs(&[
        CertDef::new("www", Layout::Nginx),
        CertDef::new("api-gateway", Layout::Nginx),
    ]);
    let top = bash_complete(&sb, &["certkeeper", ""]);
    for cmd in ["run", "renew", "status", "inspect", "ca", "completions"] {
        assert!(top.contains(&cmd.to_string()), "{top:?}");
    }
    assert!(!top.iter().any(|c| c.contains("manpage")), "{top:?}");

    let keys = bash_complete(&sb, &["certkeeper", "issue", "--key", ""]);
    assert_eq!(
        keys,
        [
            "ecdsa-p256",
            "ecdsa-p384",
            "ed25519",
            "rsa-2048",
            "rsa-3072",
            "rsa-4096"
        ],
    );

    let renew = bash_complete(&sb, &["certkeeper", "renew", ""]);
    assert!(renew.contains(&"www".to_string()), "{renew:?}");
    assert!(renew.contains(&"api-gateway".to_string()), "{renew:?}");
    assert_eq!(
        bash_complete(&sb, &["certkeeper", "revoke", "ap"]),
        ["api-gateway"]
    );
    assert!(bash_complete(&sb, &["certkeeper", "status", "w"]).contains(&"www".to_string()));

    // An unreadable configuration offers no names, and no error reaches the terminal.
    std::fs::remove_file(sb.config_path()).unwrap();
    let none = bash_complete(&sb, &["certkeeper", "renew", "w"]);
    assert!(none.is_empty(), "{none:?}");

    // A wrong key type is refused by the parser, naming the choices.
    let issue = sb.run(&[
        "issue", "--name", "x", "--san", "x.test", "--key", "dsa", "--out", "o",
    ]);
    issue.expect_code(2).stderr_has("ecdsa-p256");
}
