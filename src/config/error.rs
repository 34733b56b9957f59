//! Configuration errors: each names the file, the line, the certificate and the field,
//! and quotes at most a short excerpt of a bad value.

use crate::fsread::ReadError;
use crate::model::excerpt;
use std::fmt;
use std::path::PathBuf;

/// The longest message, field or word an error prints: a value the deserializer quotes
/// whole is cut here too.
const MAX_MESSAGE_CHARS: usize = 2000;
const MAX_WORD_CHARS: usize = 200;

/// One problem in the configuration, with where it is and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    /// The YAML path of the field, e.g. `certificates[1].files.cert`.
    pub field: String,
    pub certificate: Option<String>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        write!(f, ": ")?;
        if let Some(cert) = &self.certificate {
            write!(f, "certificate `{}`, ", excerpt(cert))?;
        }
        if !self.field.is_empty() {
            write!(f, "field `{}`: ", bounded(&self.field))?;
        }
        f.write_str(&bounded(&self.message))
    }
}

/// `text` with every word longer than `MAX_WORD_CHARS` cut to an excerpt, and cut
/// itself after `MAX_MESSAGE_CHARS`: whatever a message quotes, it stays a message.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    let long_word = text
        .split_whitespace()
        .any(|w| w.chars().nth(MAX_WORD_CHARS).is_some());
    if !long_word && text.chars().nth(MAX_MESSAGE_CHARS).is_none() {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::new();
    let mut chars = 0;
    for (i, piece) in text.split(' ').enumerate() {
        if i > 0 {
            out.push(' ');
            chars += 1;
        }
        let piece = if piece.chars().nth(MAX_WORD_CHARS).is_some() {
            excerpt(piece)
        } else {
            std::borrow::Cow::Borrowed(piece)
        };
        let n = piece.chars().count();
        if chars + n > MAX_MESSAGE_CHARS {
            out.extend(piece.chars().take(MAX_MESSAGE_CHARS.saturating_sub(chars)));
            out.push('…');
            break;
        }
        out.push_str(&piece);
        chars += n;
    }
    std::borrow::Cow::Owned(out)
}

/// Every problem found, in file order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Why the configuration was not loaded: the file could not be read (nothing is wrong
/// *in* it), or what it says is wrong.
#[derive(Debug)]
pub enum LoadError {
    Unreadable(ReadError),
    Invalid(ConfigErrors),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Unreadable(e @ ReadError::PermissionDenied { .. }) => write!(
                f,
                "cannot read the configuration: {e}; run certkeeper as a user who may read the file (root, or with sudo), or pass another file with -c"
            ),
            LoadError::Unreadable(e) => write!(
                f,
                "cannot read the configuration: {e}; pass another file with -c or set CERTKEEPER_CONFIG"
            ),
            LoadError::Invalid(errs) => write!(f, "{errs}"),
        }
    }
}

impl std::error::Error for LoadError {}
