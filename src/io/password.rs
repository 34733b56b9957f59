//! Reading the password of a `.p12` file (`files.password_file`, `issue
//! --password-file`): read again each time it is needed, through no link, and refused
//! when it lets someone read it who may not read the `.p12` file itself.
//!
//! Must not: put the password in an error, a log line or `Debug` output.

use crate::fsread::{read_own_with_meta, ReadError};
use crate::pkcs12::Password;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The most read from a password file.
pub const PASSWORD_MAX: u64 = 4 << 10;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("cannot read the PKCS#12 password: {0}")]
    Read(ReadError),
    #[error("{path}: mode {mode:04o} lets {who} read the PKCS#12 password, which only the readers of the .p12 file (mode {key_mode:04o}) may read; run `chmod 600 {path}`")]
    TooOpen {
        path: PathBuf,
        mode: u32,
        key_mode: u32,
        who: &'static str,
    },
    #[error("{path}: {problem}; write the PKCS#12 password as one line (a final newline is fine)")]
    Malformed {
        path: PathBuf,
        problem: &'static str,
    },
}

impl PasswordError {
    /// The problem as a sentence of its own, for callers that name the password file
    /// first (`/etc/x.pass is damaged: mode 0644 lets every user read ...`).
    pub fn reason(&self) -> String {
        let text = self.to_string();
        match self {
            PasswordError::Read(e) => e.reason(),
            PasswordError::TooOpen { path, .. } | PasswordError::Malformed { path, .. } => text
                .strip_prefix(&format!("{}: ", path.display()))
                .map(String::from)
                .unwrap_or(text),
        }
    }

    /// The password file concerned.
    pub fn path(&self) -> &Path {
        match self {
            PasswordError::Read(e) => e.path(),
            PasswordError::TooOpen { path, .. } | PasswordError::Malformed { path, .. } => path,
        }
    }
}

/// Who may read a `.p12` file: its mode (`key_mode`) and its group (the configured
/// one; None: certkeeper's own).
#[derive(Debug, Clone, Copy)]
pub struct Readers {
    pub key_mode: u32,
    pub gid: Option<u32>,
}

impl Readers {
    /// The owner alone (mode 0600), as `issue` writes its files.
    pub const OWNER: Readers = Readers {
        key_mode: 0o600,
        gid: None,
    };
}

/// Reads a password file: a regular file reached through no link, at most
/// [`PASSWORD_MAX`] bytes. Every other user is refused as a reader, and so is the
/// file's group unless the `.p12` file's own mode lets that same group read it. One
/// final newline (`\n` or `\r\n`) is not part of the password; the rest is one line of
/// UTF-8 text, not empty.
pub fn read_password(path: &Path, readers: Readers) -> Result<Password, PasswordError> {
    let (mut bytes, meta) = read_own_with_meta(path, PASSWORD_MAX).map_err(PasswordError::Read)?;
    let mode = meta.mode() & 0o7777;
    let same_group = meta.gid()
        == readers
            .gid
            .unwrap_or_else(|| nix::unistd::getegid().as_raw());
    let group_ok = readers.key_mode & 0o040 != 0 && same_group;
    let who = if mode & 0o004 != 0 {
        Some("every user")
    } else if mode & 0o040 != 0 && !group_ok {
        Some("its group")
    } else {
        None
    };
    if let Some(who) = who {
        return Err(PasswordError::TooOpen {
            path: path.to_path_buf(),
            mode,
            key_mode: readers.key_mode,
            who,
        });
    }
    crate::cakey::strip_final_newline(&mut bytes);
    Password::new(bytes).map_err(|problem| PasswordError::Malformed {
        path: path.to_path_buf(),
        problem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn file(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    #[test]
    fn one_final_newline_is_stripped_and_the_rest_is_the_password() {
        let d = tempfile::tempdir().unwrap();
        let (key, certs) = {
            let k = crate::keys::PrivateKey::generate(crate::model::KeyType::EcdsaP256).unwrap();
            let mut p = rcgen::CertificateParams::new(vec!["a.example".into()]).unwrap();
            p.distinguished_name
                .push(rcgen::DnType::CommonName, "a.example");
            let c = p.self_signed(k.pair()).unwrap();
            (k.pkcs8_der(), vec![c.der().to_vec()])
        };
        let refs: Vec<&[u8]> = certs.iter().map(|c| c.as_slice()).collect();
        let written = crate::pkcs12::encode(
            "a",
            &key,
            &refs,
            &read_password(&file(d.path(), "w", b"pass word\n", 0o600), Readers::OWNER).unwrap(),
        )
        .unwrap();
        for (i, text) in [&b"pass word"[..], b"pass word\n", b"pass word\r\n"]
            .into_iter()
            .enumerate()
        {
            let p = read_password(
                &file(d.path(), &format!("p{i}"), text, 0o400),
                Readers::OWNER,
            )
            .unwrap();
            crate::pkcs12::decode(&written, &p).unwrap();
        }
        // A trailing space is part of the password.
        let p =
            read_password(&file(d.path(), "s", b"pass word \n", 0o600), Readers::OWNER).unwrap();
        assert!(crate::pkcs12::decode(&written, &p).is_err());
    }

    #[test]
    fn empty_multi_line_or_binary_passwords_are_refused_without_showing_them() {
        let d = tempfile::tempdir().unwrap();
        for (name, text, problem) in [
            ("empty", &b""[..], "is empty"),
            ("newline", b"\n", "is empty"),
            ("two", b"first\nsecond\n", "more than one line"),
            ("nul", b"se\0cret", "NUL"),
        ] {
            let e = read_password(&file(d.path(), name, text, 0o600), Readers::OWNER).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, PasswordError::Malformed { .. }),
                "{name}: {e:?}"
            );
            assert!(msg.contains(problem), "{name}: {msg}");
            assert!(msg.starts_with(&d.path().join(name).display().to_string()));
            assert!(!msg.contains("first") && !msg.contains("second") && !msg.contains("cret"));
        }
    }

    #[test]
    fn a_password_others_can_read_is_refused_and_the_group_only_with_the_p12s() {
        let d = tempfile::tempdir().unwrap();
        let mine = nix::unistd::getegid().as_raw();
        for mode in [0o644, 0o604, 0o640, 0o440] {
            let p = file(d.path(), &format!("p{mode:o}"), b"secret\n", mode);
            let e = read_password(&p, Readers::OWNER).unwrap_err();
            assert!(
                matches!(e, PasswordError::TooOpen { mode: m, .. } if m == mode),
                "{mode:o}: {e:?}"
            );
            let msg = e.to_string();
            assert!(
                msg.ends_with(&format!("run `chmod 600 {}`", p.display())),
                "{msg}"
            );
            assert!(!msg.contains("secret\n"));
        }
        // key_mode 0640: the .p12's group may read the password too, but not others.
        let group = Readers {
            key_mode: 0o640,
            gid: Some(mine),
        };
        read_password(&file(d.path(), "g", b"secret\n", 0o640), group).unwrap();
        assert!(read_password(&file(d.path(), "o", b"secret\n", 0o644), group).is_err());
        let other_group = Readers {
            key_mode: 0o640,
            gid: Some(mine.wrapping_add(1)),
        };
        assert!(read_password(&file(d.path(), "h", b"secret\n", 0o640), other_group).is_err());
        for mode in [0o600, 0o400] {
            read_password(
                &file(d.path(), &format!("q{mode:o}"), b"x\n", mode),
                Readers::OWNER,
            )
            .unwrap();
        }
    }

    #[test]
    fn a_password_file_is_read_through_no_link_and_a_missing_one_is_named() {
        let d = tempfile::tempdir().unwrap();
        let real = file(d.path(), "real", b"secret\n", 0o600);
        let link = d.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert!(matches!(
            read_password(&link, Readers::OWNER).unwrap_err(),
            PasswordError::Read(_)
        ));
        let missing = d.path().join("missing");
        let e = read_password(&missing, Readers::OWNER).unwrap_err();
        assert!(
            e.to_string().contains(&missing.display().to_string()),
            "{e}"
        );
    }
}
