//! The daemon's memory of what it last checked: per certificate, the identity of each
//! file (device, inode, size, mtime, ctime) when it was fully read and verified, and
//! the leaf facts the renewal decision needs. A file whose identity is unchanged is
//! not read again, which keeps start-up with thousands of certificates fast. Any change
//! to a file (a rename, a write, a chmod: ctime cannot be set back) or to the CA
//! invalidates the entry. Persisted in `state_dir/observed.json`; a cache that cannot
//! be read is ignored, never trusted.

use crate::config::CertSpec;
use crate::fsutil::{write_atomic_with, FileSpec};
use crate::model::{KeyType, San, Usage};
use crate::policy::{Present, Seen};
use crate::state::StateDir;
use crate::x509::CertInfo;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// The file's format: a first line with the version and the intermediate, then one
/// line per entry, `["name",{...}]` (version 2 was one JSON object; still read).
const VERSION: u32 = 3;

/// A file's identity: device, inode, size, mtime and ctime (nanoseconds since 1970,
/// which fit 64 bits until 2262). Stamps are kept in the order of the certificate's
/// files.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stamp(u64, u64, u64, i64, i64);

/// An entry as the file has it.
#[derive(Clone, Serialize, Deserialize)]
struct EntryText {
    stamps: Vec<Stamp>,
    serial: String,
    not_before: i64,
    not_after: i64,
    common_name: Option<String>,
    sans: Vec<String>,
    other_names: Vec<String>,
    key_type: Option<String>,
    usage: Option<String>,
    fingerprint: String,
    from_issuer: bool,
    /// The end of the CA certificate that signed it (absent in older caches).
    #[serde(default)]
    issuer_not_after: Option<i64>,
    /// Signed by the intermediate that issues now (not a retired one).
    #[serde(default = "yes")]
    issuer_current: bool,
}

/// Kept for every certificate the daemon manages, so kept small: two allocations
/// (the stamps; every string, one after another), the key type and usage as what they
/// mean and the fingerprint as its 32 bytes. Read and written as [`EntryText`], the
/// text it has always been.
#[derive(Debug, Clone, Serialize)]
#[serde(into = "EntryText")]
struct Entry {
    stamps: Box<[Stamp]>,
    /// The serial, the common name (when there is one), the SANs, then the other names.
    texts: Texts,
    has_common_name: bool,
    sans: u32,
    not_before: i64,
    not_after: i64,
    key_type: Option<KeyType>,
    usage: Option<Usage>,
    fingerprint: [u8; 32],
    from_issuer: bool,
    issuer_not_after: Option<i64>,
    issuer_current: bool,
}

impl Entry {
    fn serial(&self) -> &str {
        self.texts.iter().next().unwrap_or_default()
    }

    fn common_name(&self) -> Option<&str> {
        self.has_common_name
            .then(|| self.texts.iter().nth(1))
            .flatten()
    }

    fn sans(&self) -> impl Iterator<Item = &str> {
        self.texts
            .iter()
            .skip(1 + usize::from(self.has_common_name))
            .take(self.sans as usize)
    }

    fn other_names(&self) -> impl Iterator<Item = &str> {
        self.texts
            .iter()
            .skip(1 + usize::from(self.has_common_name) + self.sans as usize)
    }
}

/// An entry as the file has it, read with its strings borrowed from the file's text
/// (copied only where JSON escapes changed them): no string of its own per field.
#[derive(Deserialize)]
struct EntryRef<'a> {
    stamps: Vec<Stamp>,
    #[serde(borrow)]
    serial: Text<'a>,
    not_before: i64,
    not_after: i64,
    #[serde(borrow)]
    common_name: Option<Text<'a>>,
    #[serde(borrow)]
    sans: Vec<Text<'a>>,
    #[serde(borrow)]
    other_names: Vec<Text<'a>>,
    #[serde(borrow)]
    key_type: Option<Text<'a>>,
    #[serde(borrow)]
    usage: Option<Text<'a>>,
    #[serde(borrow)]
    fingerprint: Text<'a>,
    from_issuer: bool,
    #[serde(default)]
    issuer_not_after: Option<i64>,
    #[serde(default = "yes")]
    issuer_current: bool,
}

/// A string of the file, borrowed from its text when it has no escape.
struct Text<'a>(std::borrow::Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visit<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(s.into()))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'a>, E> {
                Ok(Text(s.to_owned().into()))
            }
        }
        d.deserialize_str(Visit(std::marker::PhantomData))
    }
}

fn text<'b>(t: &'b Text) -> &'b str {
    &t.0
}

impl<'de> Deserialize<'de> for Entry {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let t = EntryRef::deserialize(d)?;
        entry(
            t.stamps,
            &t.serial.0,
            t.common_name.as_ref().map(text),
            t.sans.iter().map(text),
            t.other_names.iter().map(text),
            (t.not_before, t.not_after),
            t.key_type.as_ref().map(text),
            t.usage.as_ref().map(text),
            &t.fingerprint.0,
            (t.from_issuer, t.issuer_not_after, t.issuer_current),
        )
        .map_err(serde::de::Error::custom)
    }
}

impl TryFrom<EntryText> for Entry {
    type Error = &'static str;

    fn try_from(t: EntryText) -> Result<Entry, &'static str> {
        entry(
            t.stamps,
            &t.serial,
            t.common_name.as_deref(),
            t.sans.iter().map(String::as_str),
            t.other_names.iter().map(String::as_str),
            (t.not_before, t.not_after),
            t.key_type.as_deref(),
            t.usage.as_deref(),
            &t.fingerprint,
            (t.from_issuer, t.issuer_not_after, t.issuer_current),
        )
    }
}

/// An entry from its fields as the file has them. A key type or usage certkeeper does
/// not know is none, as for a field the entry lacks; a fingerprint that is not 32
/// bytes of hex makes the cache unreadable (and so ignored), not an entry that matches
/// nothing.
#[allow(clippy::too_many_arguments)]
fn entry<'a>(
    stamps: Vec<Stamp>,
    serial: &'a str,
    common_name: Option<&'a str>,
    sans: impl ExactSizeIterator<Item = &'a str> + Clone,
    other_names: impl Iterator<Item = &'a str>,
    (not_before, not_after): (i64, i64),
    key_type: Option<&str>,
    usage: Option<&str>,
    fingerprint: &str,
    (from_issuer, issuer_not_after, issuer_current): (bool, Option<i64>, bool),
) -> Result<Entry, &'static str> {
    let fingerprint = crate::encoding::hex_decode(fingerprint)
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or("not a SHA-256 fingerprint")?;
    Ok(Entry {
        stamps: stamps.into(),
        sans: u32::try_from(sans.len()).unwrap_or(u32::MAX),
        texts: Texts::of(
            std::iter::once(serial)
                .chain(common_name)
                .chain(sans)
                .chain(other_names),
        ),
        has_common_name: common_name.is_some(),
        not_before,
        not_after,
        key_type: key_type.and_then(|k| k.parse().ok()),
        usage: usage.and_then(|u| u.parse().ok()),
        fingerprint,
        from_issuer,
        issuer_not_after,
        issuer_current,
    })
}

impl From<Entry> for EntryText {
    fn from(e: Entry) -> EntryText {
        EntryText {
            stamps: e.stamps.to_vec(),
            serial: e.serial().to_string(),
            not_before: e.not_before,
            not_after: e.not_after,
            common_name: e.common_name().map(String::from),
            sans: e.sans().map(String::from).collect(),
            other_names: e.other_names().map(String::from).collect(),
            key_type: e.key_type.map(|k| k.to_string()),
            usage: e.usage.map(|u| u.to_string()),
            fingerprint: crate::encoding::hex(&e.fingerprint),
            from_issuer: e.from_issuer,
            issuer_not_after: e.issuer_not_after,
            issuer_current: e.issuer_current,
        }
    }
}

/// Strings kept one after another in one allocation, each as its length in bytes,
/// `:`, and its text (which may hold any character).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Texts(Box<str>);

impl Texts {
    fn of<'a>(items: impl Iterator<Item = &'a str>) -> Texts {
        let mut s = String::new();
        for item in items {
            s.push_str(&item.len().to_string());
            s.push(':');
            s.push_str(item);
        }
        Texts(s.into_boxed_str())
    }

    fn iter(&self) -> impl Iterator<Item = &str> {
        let mut rest = &*self.0;
        std::iter::from_fn(move || {
            let (len, after) = rest.split_once(':')?;
            let len: usize = len.parse().ok()?;
            let item = after.get(..len)?;
            rest = &after[len..];
            Some(item)
        })
    }
}

fn yes() -> bool {
    true
}

/// The file's first line.
#[derive(Serialize, Deserialize)]
struct Header<'a> {
    version: u32,
    intermediate: std::borrow::Cow<'a, str>,
}

/// In memory; and the whole file in version 2 (which the tests write).
#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Serialize))]
struct CacheFile {
    version: u32,
    /// Fingerprint of the intermediate the entries were checked against.
    intermediate: String,
    entries: HashMap<Box<str>, Box<Entry>>,
}

/// The cache file read line by line: each line parsed from a slice (serde_json reads
/// a slice several times faster than a reader, which looks at every byte through the
/// reader and counts lines and columns as it goes), and never the whole file in memory
/// at once (5 MB with 10,000 certificates, at the daemon's busiest moment). None when
/// it cannot be read: it is then ignored.
fn read_lines(mut r: impl std::io::BufRead) -> Option<CacheFile> {
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line).ok()?;
    let header: Header = serde_json::from_slice(&line).ok()?;
    match header.version {
        VERSION => {}
        // Version 2: one object on one line (written without line breaks).
        2 => return serde_json::from_slice::<CacheFile>(&line).ok(),
        _ => return None,
    }
    let mut file = CacheFile {
        version: VERSION,
        intermediate: header.intermediate.into_owned(),
        entries: HashMap::new(),
    };
    loop {
        line.clear();
        if r.read_until(b'\n', &mut line).ok()? == 0 {
            return Some(file);
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (name, entry): (Box<str>, Box<Entry>) = serde_json::from_slice(&line).ok()?;
        file.entries.insert(name, entry);
    }
}

#[derive(Default)]
pub struct ObserveCache {
    file: CacheFile,
    dirty: bool,
}

/// What one observation adds to the cache.
pub struct Learned(Box<str>, Box<Entry>);

impl ObserveCache {
    /// The entries checked against the intermediate whose fingerprint is
    /// `intermediate`: none when they were checked against another one.
    pub fn for_intermediate(mut self, intermediate: &str) -> ObserveCache {
        if self.file.intermediate != intermediate {
            self.file.intermediate = intermediate.to_string();
            self.dirty |= !self.file.entries.is_empty();
            self.file.entries.clear();
        }
        self
    }

    /// The cache as saved, whichever CA its entries were checked against (see
    /// [`ObserveCache::intermediate`]); empty when there is none or it cannot be read.
    pub fn read(state: &StateDir) -> ObserveCache {
        let path = state.root.join("observed.json");
        let file = std::fs::File::open(&path)
            .ok()
            .and_then(|f| read_lines(std::io::BufReader::with_capacity(64 << 10, f)))
            .unwrap_or_else(|| CacheFile {
                version: VERSION,
                intermediate: String::new(),
                entries: HashMap::new(),
            });
        // A file of version 2 is written again in this version at the next save.
        let dirty = file.version != VERSION;
        ObserveCache { file, dirty }
    }

    pub fn intermediate(&self) -> &str {
        &self.file.intermediate
    }

    pub fn save(&mut self, state: &StateDir) {
        if !self.dirty {
            return;
        }
        let spec = FileSpec {
            path: state.root.join("observed.json"),
            bytes: Zeroizing::new(Vec::new()),
            mode: 0o600,
            uid: None,
            gid: None,
            follow_symlinks: false,
        };
        // Written as it is made: with 10,000 certificates the text is 5 MB.
        let file = &self.file;
        let mut fill = |f: &mut std::fs::File| -> std::io::Result<()> {
            use std::io::Write;
            let mut w = std::io::BufWriter::with_capacity(64 * 1024, f);
            let header = Header {
                version: VERSION,
                intermediate: file.intermediate.as_str().into(),
            };
            serde_json::to_writer(&mut w, &header)?;
            for entry in &file.entries {
                w.write_all(b"\n")?;
                serde_json::to_writer(&mut w, &entry)?;
            }
            w.write_all(b"\n")?;
            w.flush()
        };
        match write_atomic_with(&spec, &mut fill) {
            Ok(()) => self.dirty = false,
            Err(e) => tracing::warn!(error = %e, "cannot save the observation cache"),
        }
    }

    /// Forgets certificates no longer in the configuration.
    pub fn retain(&mut self, names: &std::collections::HashSet<&str>) {
        let before = self.file.entries.len();
        self.file.entries.retain(|n, _| names.contains(&**n));
        self.dirty |= before != self.file.entries.len();
    }

    /// The identities of a certificate's files (and of the password file of a `pkcs12`
    /// layout: a new password makes the file be opened again), or None when one cannot
    /// be stat'ed; with the metadata of the key's file (see `observe::key_path`), which
    /// the look at its mode and owner uses.
    pub fn stamps(spec: &CertSpec) -> Option<(Vec<Stamp>, std::fs::Metadata)> {
        let key = crate::observe::key_path(spec);
        let mut key_meta = None;
        let stamps = spec
            .files
            .paths()
            .iter()
            .map(|(_, p)| *p)
            .chain(spec.files.password_file())
            .map(|p| {
                let m = std::fs::metadata(p).ok()?;
                let stamp = Stamp(
                    m.dev(),
                    m.ino(),
                    m.size(),
                    m.mtime().saturating_mul(1_000_000_000) + m.mtime_nsec(),
                    m.ctime().saturating_mul(1_000_000_000) + m.ctime_nsec(),
                );
                if p == key && key_meta.is_none() {
                    key_meta = Some(m);
                }
                Some(stamp)
            })
            .collect::<Option<Vec<Stamp>>>()?;
        let key_meta = match key_meta {
            Some(m) => m,
            None => std::fs::metadata(key).ok()?,
        };
        Some((stamps, key_meta))
    }

    /// What the cache knows of `spec` when its files are unchanged.
    pub fn lookup(&self, spec: &CertSpec, stamps: &[Stamp]) -> Option<Seen> {
        let e = self.file.entries.get(spec.name.as_str())?;
        if *e.stamps != *stamps {
            return None;
        }
        let leaf = CertInfo {
            der: Vec::new(),
            subject: String::new(),
            issuer: String::new(),
            common_name: e.common_name().map(String::from),
            sans: e.sans().map(San::parse).collect::<Result<_, _>>().ok()?,
            other_names: e.other_names().map(String::from).collect(),
            not_before: OffsetDateTime::from_unix_timestamp(e.not_before).ok()?,
            not_after: OffsetDateTime::from_unix_timestamp(e.not_after).ok()?,
            serial: e.serial().to_string(),
            is_ca: false,
            path_len: None,
            usage: e.usage,
            key_type: e.key_type,
            spki: Vec::new(),
            public_key_raw: Vec::new(),
            fingerprint: crate::encoding::hex(&e.fingerprint),
            subject_key_id: None,
            authority_key_id: None,
        };
        Some(Seen::Present(Box::new(Present {
            leaf,
            chain: Vec::new(),
            from_issuer: e.from_issuer,
            issuer_not_after: e
                .issuer_not_after
                .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
            issuer_current: e.issuer_current,
        })))
    }

    /// The entry to remember for a certificate found present at `stamps`.
    pub fn learn(spec: &CertSpec, stamps: Vec<Stamp>, seen: &Seen) -> Option<Learned> {
        let Seen::Present(p) = seen else { return None };
        let l = &p.leaf;
        Some(Learned(
            spec.name.as_str().into(),
            Box::new(
                Entry::try_from(EntryText {
                    stamps,
                    serial: l.serial.clone(),
                    not_before: l.not_before.unix_timestamp(),
                    not_after: l.not_after.unix_timestamp(),
                    common_name: l.common_name.clone(),
                    sans: l.sans.iter().map(|s| s.to_string()).collect(),
                    other_names: l.other_names.clone(),
                    key_type: l.key_type.map(|k| k.to_string()),
                    usage: l.usage.map(|u| u.to_string()),
                    fingerprint: l.fingerprint.clone(),
                    from_issuer: p.from_issuer,
                    issuer_not_after: p.issuer_not_after.map(|t| t.unix_timestamp()),
                    issuer_current: p.issuer_current,
                })
                .ok()?,
            ),
        ))
    }

    /// Takes out the entries of `names` into a cache of their own, for a pass over those
    /// certificates while other passes (over others) run beside it.
    pub fn split_off(&mut self, names: &std::collections::HashSet<&str>) -> ObserveCache {
        let entries = names
            .iter()
            .filter_map(|n| self.file.entries.remove_entry(*n))
            .collect();
        ObserveCache {
            file: CacheFile {
                version: VERSION,
                intermediate: self.file.intermediate.clone(),
                entries,
            },
            dirty: false,
        }
    }

    /// Puts back what `split_off` took out, with what its pass learned; entries checked
    /// against another intermediate (the CA changed meanwhile) are dropped.
    pub fn absorb(&mut self, part: ObserveCache) {
        if part.file.intermediate != self.file.intermediate {
            self.dirty = true;
            return;
        }
        self.dirty |= part.dirty;
        self.file.entries.extend(part.file.entries);
    }

    pub fn insert(&mut self, learned: Learned) {
        self.file.entries.insert(learned.0, learned.1);
        self.dirty = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry as the cache has always been written: the compact form in memory reads
    /// it with the same meaning and writes it back the same.
    #[test]
    fn entries_read_and_write_the_same_text() {
        let fp = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let text = format!(
            r#"{{"stamps":[[2049,131,1234,1700000000000000001,1700000000000000002]],"serial":"1a2b","not_before":1700000000,"not_after":1790000000,"common_name":"www.example.internal","sans":["www.example.internal","10.0.0.1"],"other_names":[],"key_type":"{}","usage":"{}","fingerprint":"{fp}","from_issuer":true,"issuer_not_after":1900000000,"issuer_current":true}}"#,
            KeyType::EcdsaP384,
            Usage::ServerClient
        );
        let e: Entry = serde_json::from_str(&text).unwrap();
        assert_eq!(e.key_type, Some(KeyType::EcdsaP384));
        assert_eq!(e.usage, Some(Usage::ServerClient));
        assert_eq!(crate::encoding::hex(&e.fingerprint), fp);
        assert_eq!(e.serial(), "1a2b");
        assert_eq!(e.common_name(), Some("www.example.internal"));
        assert_eq!(
            e.sans().collect::<Vec<_>>(),
            ["www.example.internal", "10.0.0.1"]
        );
        assert_eq!(e.other_names().count(), 0);
        assert_eq!(serde_json::to_string(&e).unwrap(), text);
        // Null, absent-as-null and unknown texts are no key type or usage, as before.
        let other = text
            .replace(&format!("\"{}\"", KeyType::EcdsaP384), "null")
            .replace(&format!("\"{}\"", Usage::ServerClient), "\"sideways\"");
        let e: Entry = serde_json::from_str(&other).unwrap();
        assert_eq!((e.key_type, e.usage), (None, None));
        // A fingerprint that is not 32 bytes of hex makes the cache unreadable (and so
        // ignored), not an entry that matches nothing.
        assert!(serde_json::from_str::<Entry>(&text.replace(fp, "abc")).is_err());
        // Strings with escapes (read as copies, not borrowed) mean the same, and an
        // entry read from a reader (nothing to borrow from) too.
        let escaped = text.replace(
            "\"common_name\":\"www.example.internal\"",
            "\"common_name\":\"db \\\"main\\\" \\u00e9\"",
        );
        assert_ne!(escaped, text);
        let e: Entry = serde_json::from_str(&escaped).unwrap();
        assert_eq!(e.common_name(), Some("db \"main\" é"));
        let e: Entry = serde_json::from_reader(escaped.as_bytes()).unwrap();
        assert_eq!(e.common_name(), Some("db \"main\" é"));
        assert_eq!(e.sans().count(), 2);
    }

    /// Saved line by line and read back the same; a cache of version 2 (one object) is
    /// still read, and rewritten at the next save; a damaged one is none.
    #[test]
    fn the_file_is_read_line_by_line_and_as_it_was() {
        let fp = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let entry = |serial: &str| -> Box<Entry> {
            Box::new(
                Entry::try_from(EntryText {
                    stamps: vec![Stamp(1, 2, 3, 4, 5)],
                    serial: serial.into(),
                    not_before: 1,
                    not_after: 2,
                    common_name: Some("a \"b\"\nc".into()),
                    sans: vec!["a.example".into()],
                    other_names: vec![],
                    key_type: None,
                    usage: None,
                    fingerprint: fp.into(),
                    from_issuer: true,
                    issuer_not_after: None,
                    issuer_current: true,
                })
                .unwrap(),
            )
        };
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::new(dir.path());
        let mut cache = ObserveCache {
            file: CacheFile {
                version: VERSION,
                intermediate: "ab12".into(),
                entries: (0..50)
                    .map(|i| (format!("c{i}").into(), entry(&format!("{i:x}"))))
                    .collect(),
            },
            dirty: true,
        };
        cache.save(&state);
        let text = std::fs::read_to_string(dir.path().join("observed.json")).unwrap();
        assert_eq!(text.lines().count(), 51, "{text}");
        let back = ObserveCache::read(&state);
        assert!(!back.dirty);
        assert_eq!(back.intermediate(), "ab12");
        assert_eq!(back.file.entries.len(), 50);
        assert_eq!(back.file.entries["c7"].serial(), "7");
        assert_eq!(back.file.entries["c7"].common_name(), Some("a \"b\"\nc"));

        // Version 2, as it was written.
        let old = serde_json::to_string(&CacheFile {
            version: 2,
            intermediate: "cd34".into(),
            entries: [("w".into(), entry("99"))].into_iter().collect(),
        })
        .unwrap();
        std::fs::write(dir.path().join("observed.json"), &old).unwrap();
        let mut back = ObserveCache::read(&state);
        assert!(back.dirty);
        assert_eq!(back.file.entries["w"].serial(), "99");
        back.save(&state);
        assert_eq!(ObserveCache::read(&state).file.entries["w"].serial(), "99");
        assert!(!ObserveCache::read(&state).dirty);

        // Damaged: a line cut short, an unknown version, nothing.
        let cut = &text[..text.len() - 10];
        for bad in [cut, "{\"version\":9,\"intermediate\":\"x\"}\n", ""] {
            std::fs::write(dir.path().join("observed.json"), bad).unwrap();
            assert!(
                ObserveCache::read(&state).file.entries.is_empty(),
                "{bad:.40}"
            );
        }
    }

    #[test]
    fn texts_give_back_any_strings_in_their_order() {
        let items = ["", "12:ab", ":", "é€ 3:x", "", "\n\"0"];
        let t = Texts::of(items.iter().copied());
        assert_eq!(t.iter().collect::<Vec<_>>(), items);
        assert_eq!(Texts::of(std::iter::empty()).iter().count(), 0);
        // A certificate without a common name: the SANs follow the serial.
        let e = Entry::try_from(EntryText {
            stamps: Vec::new(),
            serial: "1".into(),
            not_before: 0,
            not_after: 1,
            common_name: None,
            sans: vec!["a:b".into(), "2".into()],
            other_names: vec!["x".into()],
            key_type: None,
            usage: None,
            fingerprint: "07".repeat(32),
            from_issuer: false,
            issuer_not_after: None,
            issuer_current: true,
        })
        .unwrap();
        assert_eq!(e.common_name(), None);
        assert_eq!(e.sans().collect::<Vec<_>>(), ["a:b", "2"]);
        assert_eq!(e.other_names().collect::<Vec<_>>(), ["x"]);
    }
}
