//! The configuration exactly as written: serde types that refuse unknown keys.
//! Values that need checking (durations, key types, paths) stay strings here;
//! `config::resolve` turns them into typed values and reports every problem.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A file mode. YAML 1.2 reads `0640` as the number 640, so modes must be strings.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum RawMode {
    Text(String),
    Number(i64),
}

/// A scalar that must be text but that YAML may have read as a number (`90` for a
/// duration): kept as text so the checker can say what is missing (the unit).
#[derive(Debug, Clone, PartialEq)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            S(String),
            I(i64),
            F(f64),
        }
        Ok(Text(match Any::deserialize(d)? {
            Any::S(s) => s,
            Any::I(i) => i.to_string(),
            Any::F(f) => f.to_string(),
        }))
    }
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct RawCa {
    pub organization: Option<String>,
    pub common_name: Option<String>,
    pub key: Option<String>,
    pub root_lifetime: Option<Text>,
    pub intermediate_lifetime: Option<Text>,
    pub rotate_before: Option<Text>,
    pub root_overlap: Option<Text>,
    pub permitted: Option<Vec<String>>,
    pub excluded: Option<Vec<String>>,
    pub key_passphrase_file: Option<String>,
    pub allow_ed25519: Option<bool>,
}

/// The certificate fields that `defaults:` may also set.
#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDefaults {
    pub key: Option<String>,
    pub lifetime: Option<Text>,
    pub renew_before: Option<Text>,
    pub usage: Option<String>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub key_mode: Option<RawMode>,
    pub cert_mode: Option<RawMode>,
    pub issuer: Option<String>,
    pub reload: Option<Vec<String>>,
    pub follow_symlinks: Option<bool>,
    pub warn_before: Option<Text>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawFiles {
    pub layout: Option<String>,
    pub cert: Option<String>,
    pub chain: Option<String>,
    pub fullchain: Option<String>,
    pub key: Option<String>,
    pub p12: Option<String>,
    pub password_file: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawVerify {
    pub connect: String,
    pub server_name: Option<String>,
    pub timeout: Option<Text>,
    pub every: Option<Text>,
    pub roots: Option<String>,
    pub client_cert: Option<String>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    pub name: Option<String>,
    pub common_name: Option<String>,
    pub sans: Option<Vec<String>>,
    pub usage: Option<String>,
    pub key: Option<String>,
    pub lifetime: Option<Text>,
    pub renew_before: Option<Text>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub key_mode: Option<RawMode>,
    pub cert_mode: Option<RawMode>,
    pub issuer: Option<String>,
    pub files: Option<RawFiles>,
    pub reload: Option<Vec<String>>,
    /// One target (a mapping) or a list of them; read by [`RawVerify`] each.
    pub verify: Option<serde_yaml::Value>,
    pub follow_symlinks: Option<bool>,
    pub watch: Option<String>,
    pub warn_before: Option<Text>,
    pub hooks: Option<RawHooks>,
    pub fallback: Option<Vec<String>>,
    pub fallback_before: Option<Text>,
    pub profile: Option<String>,
}

/// One command (`[systemctl, reload, postfix]`) or several (`[[a, b], [c]]`).
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub enum RawCommands {
    One(Vec<String>),
    Many(Vec<Vec<String>>),
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawHooks {
    pub renewed: Option<RawCommands>,
    pub failed: Option<RawCommands>,
    pub expiring: Option<RawCommands>,
    pub timeout: Option<Text>,
}

#[derive(Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawArchive {
    pub keep: Option<i64>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    #[serde(rename = "type")]
    pub kind: String,
    pub pid_file: Option<String>,
    pub binary: Option<String>,
    pub config: Option<String>,
    pub unit: Option<String>,
    pub test: Option<Vec<String>>,
    pub reload: Option<Vec<String>>,
    pub timeout: Option<Text>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawTrust {
    pub path: String,
    pub contents: Option<String>,
    pub reload: Option<Vec<String>>,
    pub run: Option<Vec<String>>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub follow_symlinks: Option<bool>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawIssuer {
    pub acme: RawAcme,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawAcme {
    pub directory: String,
    pub ca_bundle: Option<String>,
    pub contact: Option<Vec<String>>,
    pub eab: Option<RawEab>,
    pub challenge: RawChallenge,
    pub profile: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawEab {
    pub kid: String,
    pub hmac_key_file: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawChallenge {
    pub http01: Option<RawHttp01>,
    pub dns01: Option<RawDns01>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawDns01 {
    pub command: Option<Vec<String>>,
    pub rfc2136: Option<RawRfc2136>,
    pub resolvers: Option<Vec<String>>,
    pub timeout: Option<Text>,
    pub propagation_timeout: Option<Text>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawRfc2136 {
    pub server: String,
    pub key_name: String,
    pub key_algorithm: Option<String>,
    pub key_secret_file: String,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawHttp01 {
    pub webroot: Option<String>,
    pub standalone: Option<String>,
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawMetrics {
    pub listen: String,
}

pub type RawServers = BTreeMap<String, RawServer>;
pub type RawIssuers = BTreeMap<String, RawIssuer>;
