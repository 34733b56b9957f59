//! Every configuration key, its default and what it means: the one source of the
//! README's configuration table and of `certkeeper.yaml(5)`. A unit test checks that
//! every key the parser accepts is here, and that the README carries this table.

/// One key of the configuration file.
pub struct Key {
    /// The key's path (`ca.key`, `certificates[].files.cert`, `servers.NAME.type`).
    pub key: &'static str,
    /// Its default, or what happens when it is not written (`required`, `none`).
    pub default: &'static str,
    /// What it does, in inline Markdown: `code`, [links](#anchor) (rendered as their
    /// text outside the README).
    pub meaning: &'static str,
}

const fn k(key: &'static str, default: &'static str, meaning: &'static str) -> Key {
    Key {
        key,
        default,
        meaning,
    }
}

pub const KEYS: &[Key] = &[
    k(
        "state_dir",
        "`/var/lib/certkeeper`",
        "CA, archive, ledger and lock; created 0700. One that group or others can write, or that belongs to another user than certkeeper's (or root), is refused. Resolved once when the configuration is read; nothing under it is ever reached through a link.",
    ),
    k(
        "ca.organization",
        "`certkeeper`",
        "organization of the CA's subject.",
    ),
    k(
        "ca.common_name",
        "\"ORGANIZATION Internal CA\"",
        "the root is \"`common_name` Root\", the intermediate \"`common_name` Intermediate\".",
    ),
    k(
        "ca.key",
        "`ecdsa-p256`",
        "`ecdsa-p256`, `ecdsa-p384`, `ed25519`, `rsa-2048`, `rsa-3072`, `rsa-4096`. Nothing weaker. `ed25519` is refused unless `ca.allow_ed25519: true`.",
    ),
    k(
        "ca.allow_ed25519",
        "`false`",
        "`true` allows an Ed25519 CA: NSS (Firefox, Chromium on Linux) cannot import an Ed25519 root, so every site it signs would break in those browsers.",
    ),
    k("ca.root_lifetime", "`10y`", "lifetime of a root."),
    k("ca.intermediate_lifetime", "`3y`", "lifetime of an intermediate."),
    k(
        "ca.rotate_before",
        "`33%`",
        "a CA certificate is replaced at the latest when this share of its lifetime (or this duration) is left; earlier when it could no longer carry what it signs.",
    ),
    k(
        "ca.root_overlap",
        "`90d`, or a fortieth of a shorter `ca.root_lifetime`",
        "how long trust targets carry a new root before issuance moves to it; less than half of `ca.root_lifetime`.",
    ),
    k(
        "ca.permitted",
        "none",
        "name constraints: DNS names (`example.internal`, `.example.internal`) and IP ranges (`10.0.0.0/8`, `fd00::/8`; a bare address is that one address) the CA may certify. See [Name constraints](#name-constraints).",
    ),
    k(
        "ca.excluded",
        "none",
        "names and ranges the CA may never certify, even when permitted.",
    ),
    k(
        "ca.key_passphrase_file",
        "the systemd credential `ca-passphrase` if the service has one, else none",
        "absolute path of a file (mode 0600 or 0400) holding the passphrase of the CA keys encrypted at rest. Read again at each use, so a change needs no restart. See [CA keys encrypted at rest](#ca-keys-encrypted-at-rest).",
    ),
    k(
        "defaults.*",
        "none",
        "any certificate field below except `name`, `common_name`, `sans`, `files`, `verify`, `watch`, `hooks`, `fallback`, `fallback_before`, `profile`.",
    ),
    k(
        "servers.NAME.type",
        "required",
        "`nginx`, `apache`, `systemd` or `command`.",
    ),
    k(
        "servers.NAME.pid_file",
        "none",
        "where an nginx or Apache master process writes its pid; the reload signals it (SIGHUP for nginx, SIGUSR1 for Apache). Needed by those types unless `reload` is given.",
    ),
    k(
        "servers.NAME.binary",
        "`/usr/sbin/nginx`, `/usr/sbin/apachectl`",
        "the server's program, for its configuration test (nginx and apache only).",
    ),
    k(
        "servers.NAME.config",
        "the server's own default",
        "the server's main configuration file, given to its configuration test (nginx and apache only).",
    ),
    k(
        "servers.NAME.unit",
        "none",
        "the systemd unit to reload (`type: systemd`).",
    ),
    k(
        "servers.NAME.test",
        "`nginx -t`, `apachectl -t`; none for others",
        "the configuration test, a command as a list; a failing test stops the reload and rolls the pair back.",
    ),
    k(
        "servers.NAME.reload",
        "the signal or `systemctl reload UNIT`",
        "the reload, a command as a list (required for `type: command`).",
    ),
    k(
        "servers.NAME.timeout",
        "`60s`",
        "a configuration test or reload that runs longer is killed.",
    ),
    k(
        "certificates",
        "required",
        "the list of managed (and watched) certificates. A file without it (empty, comment-only, or cut off after `certificates:`) is an error, so a truncated file never stops the daemon managing what it manages; write `certificates: []` to manage nothing yet.",
    ),
    k(
        "certificates[].name",
        "required",
        "unique, `[a-z0-9._-]+`, not `.` or `..` (names become directory names).",
    ),
    k(
        "certificates[].sans",
        "required",
        "DNS names (wildcards `*.example.internal` allowed) and IP addresses.",
    ),
    k(
        "certificates[].common_name",
        "the first DNS name (the first address when there is none)",
        "the subject's common name.",
    ),
    k(
        "certificates[].usage",
        "`server`",
        "`server`, `client`, `server+client` (the extended key usage).",
    ),
    k(
        "certificates[].key",
        "`ecdsa-p256`",
        "key type, as for `ca.key` (`ed25519` draws a warning from `check`: Chromium and Firefox refuse it).",
    ),
    k(
        "certificates[].lifetime",
        "`90d`",
        "from `30s` (demos, tests) to the intermediate's lifetime. No lifetime (CA ones included) may exceed `1000y`.",
    ),
    k(
        "certificates[].renew_before",
        "`33%`",
        "a share of the lifetime, or a duration (`30d`) shorter than the lifetime. See [Renewal timing](#renewal-timing).",
    ),
    k(
        "certificates[].owner",
        "the user running certkeeper",
        "user (name or id) of the installed files.",
    ),
    k(
        "certificates[].group",
        "the group of the user running certkeeper",
        "group (name or id) of the installed files.",
    ),
    k(
        "certificates[].key_mode",
        "`\"0600\"`",
        "mode of the key file, a quoted octal string. A mode that lets other users read the key is refused.",
    ),
    k(
        "certificates[].cert_mode",
        "`\"0644\"`",
        "mode of the certificate files, a quoted octal string.",
    ),
    k(
        "certificates[].files",
        "required (except with `watch`)",
        "`layout` and the files it needs (below).",
    ),
    k(
        "certificates[].files.layout",
        "required",
        "`nginx`, `apache`, `combined`, `separate` or `pkcs12`; see [Layouts](#layouts).",
    ),
    k(
        "certificates[].files.cert",
        "required",
        "absolute path of the certificate (with the chain for `nginx`, with the key for `combined`).",
    ),
    k(
        "certificates[].files.chain",
        "required by `apache` and `separate`",
        "absolute path of the intermediates.",
    ),
    k(
        "certificates[].files.fullchain",
        "required by `separate`",
        "absolute path of leaf + intermediates.",
    ),
    k(
        "certificates[].files.key",
        "required by `nginx`, `apache` and `separate`",
        "absolute path of the private key.",
    ),
    k(
        "certificates[].files.p12",
        "required by `pkcs12`",
        "absolute path of the PKCS#12 file: key + leaf + intermediates, encrypted (mode of the key).",
    ),
    k(
        "certificates[].files.password_file",
        "required by `pkcs12`",
        "absolute path of the file holding the `.p12` file's password (one line; others may not read it); read, never written.",
    ),
    k(
        "certificates[].follow_symlinks",
        "`false`",
        "`false`: a symlink at a target path, or in any directory on the way to it, is refused (certkeeper's own links into its store excepted, see [Files on disk](#files-on-disk)); `true`: a symlink of yours, at the file or on the way, is written through, file by file.",
    ),
    k(
        "certificates[].reload",
        "none",
        "names under `servers:` to test and reload after installing.",
    ),
    k(
        "certificates[].verify",
        "none",
        "one target or a list of them (a name served on several ports or hosts), each with the keys below; checked after every reload and every `every` (see [Lifecycle rules](#lifecycle-rules)).",
    ),
    k(
        "certificates[].verify.connect",
        "required",
        "`HOST:PORT` to connect to.",
    ),
    k(
        "certificates[].verify.server_name",
        "the first DNS SAN",
        "the name sent (SNI) and checked.",
    ),
    k(
        "certificates[].verify.timeout",
        "`10s`",
        "for the connection and handshake.",
    ),
    k(
        "certificates[].verify.every",
        "`1h`",
        "how often the served certificate is checked besides after each reload; `0` off.",
    ),
    k(
        "certificates[].verify.roots",
        "the internal CA's roots, or the system store for ACME certificates",
        "a PEM file of the roots the server's clients trust.",
    ),
    k(
        "certificates[].verify.client_cert",
        "none",
        "a managed certificate with `usage: client` presented when the server asks (mutual TLS).",
    ),
    k(
        "certificates[].issuer",
        "`internal`",
        "`internal` or a name under `issuers:`.",
    ),
    k(
        "certificates[].fallback",
        "none",
        "issuers (`internal` or names under `issuers:`) tried in order when `issuer` fails and only `fallback_before` of the certificate's life is left, or none is in place; see [Fleets](#fleets-an-acme-ca-instead-of-the-internal-one).",
    ),
    k(
        "certificates[].fallback_before",
        "half of `renew_before`",
        "a duration or a share of the lifetime.",
    ),
    k(
        "certificates[].profile",
        "the issuer's `profile`",
        "the ACME profile to order (e.g. Let's Encrypt's `shortlived`, `tlsserver`); refused before any order when the CA's directory does not list it. Only with an ACME `issuer`.",
    ),
    k(
        "certificates[].watch",
        "none",
        "path of a certificate certkeeper does not own: only read and reported (with `name` and `warn_before`; no `sans` or `files`).",
    ),
    k(
        "certificates[].warn_before",
        "`21d`",
        "a watched certificate is reported as expiring when less than this is left.",
    ),
    k(
        "certificates[].hooks",
        "none",
        "the certificate's own hooks, keys as `hooks` below; run after the global ones.",
    ),
    k(
        "trust[].path",
        "required",
        "absolute path where the CA's trust material goes (see [Mutual TLS](#mutual-tls)).",
    ),
    k(
        "trust[].contents",
        "`roots`",
        "`roots` (every root clients must trust now), `chain` (roots and intermediates) or `crl`.",
    ),
    k(
        "trust[].reload",
        "none",
        "names under `servers:` reloaded when the file changes.",
    ),
    k(
        "trust[].run",
        "none",
        "a command (as a list) run when the file changes, e.g. `update-ca-certificates`.",
    ),
    k(
        "trust[].owner",
        "the user running certkeeper",
        "user of the file.",
    ),
    k(
        "trust[].group",
        "the group of the user running certkeeper",
        "group of the file.",
    ),
    k(
        "trust[].follow_symlinks",
        "`false`",
        "as for certificates.",
    ),
    k(
        "issuers.NAME.acme.directory",
        "required",
        "the RFC 8555 directory URL; see [Fleets](#fleets-an-acme-ca-instead-of-the-internal-one).",
    ),
    k(
        "issuers.NAME.acme.ca_bundle",
        "the system store",
        "a PEM file of the roots the ACME server's own certificate is checked against.",
    ),
    k(
        "issuers.NAME.acme.contact",
        "none",
        "contact URLs for the account (`mailto:ops@example.com`).",
    ),
    k(
        "issuers.NAME.acme.eab.kid",
        "none",
        "external account binding: the key id the CA gave.",
    ),
    k(
        "issuers.NAME.acme.eab.hmac_key_file",
        "required with `eab`",
        "file holding the base64url HMAC key the CA gave.",
    ),
    k(
        "issuers.NAME.acme.profile",
        "none",
        "the ACME profile ordered for this issuer's certificates.",
    ),
    k(
        "issuers.NAME.acme.challenge",
        "required",
        "`http01`, `dns01` or both (http-01 proves plain names and IP addresses, DNS-01 wildcards).",
    ),
    k(
        "issuers.NAME.acme.challenge.http01.webroot",
        "none",
        "a directory a web server serves at `/.well-known/acme-challenge/`.",
    ),
    k(
        "issuers.NAME.acme.challenge.http01.standalone",
        "none",
        "`HOST:PORT` where certkeeper answers the challenge itself.",
    ),
    k(
        "issuers.NAME.acme.challenge.dns01.command",
        "none",
        "a program and its arguments that writes and removes the TXT record (`CERTKEEPER_DNS_ACTION`, `_NAME`, `_VALUE`, `_DOMAIN` in its environment).",
    ),
    k(
        "issuers.NAME.acme.challenge.dns01.rfc2136",
        "none",
        "dynamic updates signed with TSIG: `server` (`HOST:PORT`), `key_name`, `key_algorithm` (default `hmac-sha256`; `hmac-sha384`, `hmac-sha512`), `key_secret_file`.",
    ),
    k(
        "issuers.NAME.acme.challenge.dns01.resolvers",
        "the zone's name servers",
        "`HOST:PORT` resolvers asked until the record is visible.",
    ),
    k(
        "issuers.NAME.acme.challenge.dns01.timeout",
        "`60s`",
        "how long the `command` may run.",
    ),
    k(
        "issuers.NAME.acme.challenge.dns01.propagation_timeout",
        "`2m`",
        "how long to wait until the record is visible.",
    ),
    k(
        "metrics.listen",
        "none (no metrics)",
        "`ADDRESS:PORT` where the daemon serves Prometheus metrics; see [Metrics](#metrics).",
    ),
    k(
        "archive.keep",
        "`5`",
        "superseded pairs kept per certificate under `state_dir/archive/NAME/` besides the installed one (0 to 1000); older archived keys are deleted.",
    ),
    k(
        "hooks.renewed",
        "none",
        "commands run after a certificate was installed, with the facts in the environment (see [Hooks](#hooks)).",
    ),
    k(
        "hooks.failed",
        "none",
        "commands run when an attempt failed.",
    ),
    k(
        "hooks.expiring",
        "none",
        "commands run once per certificate serial, when it enters its last 10 % of validity without a successful renewal.",
    ),
    k("hooks.timeout", "`60s`", "a hook that runs longer is killed."),
];

/// The keys as the README's Markdown table.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for key in KEYS {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            key.key,
            key.default.replace('|', "\\|"),
            key.meaning.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::raw::*;
    use super::*;
    use serde::de::{self, Visitor};

    /// The field names a `#[derive(Deserialize)]` struct asks for: a deserializer that
    /// records them and then gives up.
    fn fields_of<'de, T: serde::Deserialize<'de>>() -> Vec<&'static str> {
        struct Tracer(Vec<&'static str>);
        #[derive(Debug)]
        struct Stop;
        impl std::fmt::Display for Stop {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("stop")
            }
        }
        impl std::error::Error for Stop {}
        impl de::Error for Stop {
            fn custom<M: std::fmt::Display>(_: M) -> Self {
                Stop
            }
        }
        impl<'de> de::Deserializer<'de> for &mut Tracer {
            type Error = Stop;
            fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
                Err(Stop)
            }
            fn deserialize_struct<V: Visitor<'de>>(
                self,
                _: &'static str,
                fields: &'static [&'static str],
                _: V,
            ) -> Result<V::Value, Stop> {
                self.0.extend_from_slice(fields);
                Err(Stop)
            }
            serde::forward_to_deserialize_any! {
                bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
                bytes byte_buf option unit unit_struct newtype_struct seq tuple
                tuple_struct map enum identifier ignored_any
            }
        }
        let mut t = Tracer(Vec::new());
        let _ = T::deserialize(&mut t);
        t.0
    }

    #[test]
    fn every_key_the_parser_accepts_is_documented() {
        let documented: Vec<&str> = KEYS.iter().map(|k| k.key).collect();
        let mut missing = Vec::new();
        let mut expect = |prefix: &str, fields: Vec<&'static str>| {
            assert!(!fields.is_empty(), "no fields traced under {prefix}");
            for f in fields {
                let key = format!("{prefix}{f}");
                if !documented.contains(&key.as_str()) {
                    missing.push(key);
                }
            }
        };
        expect("", super::super::TOP_KEYS.to_vec());
        expect("ca.", fields_of::<RawCa>());
        // `defaults:` takes certificate fields.
        expect("certificates[].", fields_of::<RawDefaults>());
        expect("certificates[].", fields_of::<RawCertificate>());
        expect("certificates[].files.", fields_of::<RawFiles>());
        expect("certificates[].verify.", fields_of::<RawVerify>());
        expect("servers.NAME.", fields_of::<RawServer>());
        expect("trust[].", fields_of::<RawTrust>());
        expect("issuers.NAME.", fields_of::<RawIssuer>());
        expect("issuers.NAME.acme.", fields_of::<RawAcme>());
        expect("issuers.NAME.acme.eab.", fields_of::<RawEab>());
        expect("issuers.NAME.acme.challenge.", fields_of::<RawChallenge>());
        expect(
            "issuers.NAME.acme.challenge.http01.",
            fields_of::<RawHttp01>(),
        );
        expect(
            "issuers.NAME.acme.challenge.dns01.",
            fields_of::<RawDns01>(),
        );
        expect("metrics.", fields_of::<RawMetrics>());
        expect("archive.", fields_of::<RawArchive>());
        expect("hooks.", fields_of::<RawHooks>());
        // Sections documented as a whole rather than key by key.
        missing.retain(|k| {
            !matches!(
                k.as_str(),
                "ca" | "defaults"
                    | "servers"
                    | "trust"
                    | "issuers"
                    | "metrics"
                    | "archive"
                    | "hooks"
                    | "issuers.NAME.acme"
                    | "issuers.NAME.acme.eab"
                    | "issuers.NAME.acme.challenge.http01"
                    | "issuers.NAME.acme.challenge.dns01"
            )
        });
        assert!(
            missing.is_empty(),
            "configuration keys missing from src/config/reference.rs: {missing:?}"
        );
        let mut sorted = documented.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), documented.len(), "a key is documented twice");
    }

    /// The README's table is this table. `CERTKEEPER_BLESS=1 cargo test --lib
    /// readme_configuration` writes it there.
    #[test]
    fn readme_configuration_table_is_generated_from_this_one() {
        const BEGIN: &str = "<!-- configuration keys: generated from src/config/reference.rs -->\n";
        const END: &str = "<!-- end of configuration keys -->\n";
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
        let readme = std::fs::read_to_string(path).unwrap();
        let start = readme.find(BEGIN).expect("README has the begin marker") + BEGIN.len();
        let end = readme.find(END).expect("README has the end marker");
        let want = markdown_table();
        if readme[start..end] != want {
            if std::env::var_os("CERTKEEPER_BLESS").is_some() {
                let updated = format!("{}{want}{}", &readme[..start], &readme[end..]);
                std::fs::write(path, updated).unwrap();
            } else {
                panic!(
                    "README.md's configuration table differs from src/config/reference.rs; \
                     run `CERTKEEPER_BLESS=1 cargo test --lib readme_configuration`"
                );
            }
        }
    }
}
