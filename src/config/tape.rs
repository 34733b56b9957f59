//! A certificate entry as the split's walk saw it: its events, each scalar a slice of
//! the file, read into its fields without parsing the text a second time.
//!
//! Strict by design: whatever YAML could read as something other than the text it
//! shows is refused (plain scalars that could be numbers, null or booleans other than
//! `true`/`false`, tags, block scalars, scalars changed by escapes or folding), and
//! the entry is then read by the full parser as before. So an entry read here means
//! exactly what it means there, and errors are reported by the same path as ever.

use saphyr_parser::{Event, ScalarStyle};
use serde::de::{self, DeserializeOwned, DeserializeSeed, Visitor};

/// One event: where its text starts, and its length and kind packed in one word.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tok {
    start: u32,
    meta: u32,
}

pub(super) const MAP_START: u32 = 0;
pub(super) const MAP_END: u32 = 1;
pub(super) const SEQ_START: u32 = 2;
pub(super) const SEQ_END: u32 = 3;
/// A plain scalar, its value the text at `start`.
const PLAIN: u32 = 4;
/// A quoted scalar whose value is the text between its quotes.
const QUOTED: u32 = 5;
const KIND_BITS: u32 = 3;

impl Tok {
    fn new(kind: u32, start: usize, len: usize) -> Option<Tok> {
        let start = u32::try_from(start).ok()?;
        let len = u32::try_from(len)
            .ok()
            .filter(|l| *l < 1 << (32 - KIND_BITS))?;
        Some(Tok {
            start,
            meta: len << KIND_BITS | kind,
        })
    }

    /// A collection's start or end mark at `start`.
    pub fn structural(kind: u32, start: usize) -> Option<Tok> {
        Tok::new(kind, start, 0)
    }

    /// A plain scalar: the `len` bytes at `start`.
    pub fn plain(start: usize, len: usize) -> Option<Tok> {
        Tok::new(PLAIN, start, len)
    }

    /// A quoted scalar whose value is the `len` bytes at `start` (inside the quotes).
    pub fn quoted(start: usize, len: usize) -> Option<Tok> {
        Tok::new(QUOTED, start, len)
    }

    fn kind(self) -> u32 {
        self.meta & ((1 << KIND_BITS) - 1)
    }

    fn text(self, text: &str) -> &str {
        let start = self.start as usize;
        &text[start..start + (self.meta >> KIND_BITS) as usize]
    }
}

/// The token for one event of an entry, or None when the entry must be read by the
/// full parser. `start..end` is the event's span in `text` (ASCII, so characters are
/// bytes).
pub fn token(text: &str, event: &Event, start: usize, end: usize) -> Option<Tok> {
    match event {
        Event::MappingStart(0, None) => Tok::new(MAP_START, start, 0),
        Event::MappingEnd => Tok::new(MAP_END, start, 0),
        Event::SequenceStart(0, None) => Tok::new(SEQ_START, start, 0),
        Event::SequenceEnd => Tok::new(SEQ_END, start, 0),
        Event::Scalar(value, style, 0, None) => {
            let source = text.get(start..end)?;
            match style {
                ScalarStyle::Plain if source == value.as_ref() => {
                    Tok::new(PLAIN, start, value.len())
                }
                ScalarStyle::SingleQuoted | ScalarStyle::DoubleQuoted => {
                    // The span may take in the blanks after the closing quote.
                    let quoted = source.trim_end_matches([' ', '\t']);
                    let quote = if *style == ScalarStyle::SingleQuoted {
                        "'"
                    } else {
                        "\""
                    };
                    let inner = quoted.strip_prefix(quote)?.strip_suffix(quote)?;
                    (inner == value.as_ref()).then(|| Tok::new(QUOTED, start + 1, value.len()))?
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// `T` read from the tokens of one entry; None for anything the strict reading refuses
/// (the caller then reads the entry's text with the full parser).
pub fn read<T: DeserializeOwned>(text: &str, toks: &[Tok]) -> Option<T> {
    let mut de = De { text, toks, at: 0 };
    let value = T::deserialize(&mut de).ok()?;
    (de.at == toks.len()).then_some(value)
}

/// A plain scalar that YAML reads as the string it shows: it starts with a letter,
/// `/` or `_` and is not a null or boolean word, or it starts with a digit and is no
/// number (`30d` and `10.0.0.6` are strings; `0600`, `1e3` and `0x1f` are not read
/// here).
fn plain_string(s: &str) -> bool {
    match s.bytes().next() {
        Some(b) if b.is_ascii_alphabetic() => !matches!(
            s,
            "null" | "Null" | "NULL" | "true" | "True" | "TRUE" | "false" | "False" | "FALSE"
        ),
        Some(b'/' | b'_') => true,
        Some(b) if b.is_ascii_digit() => {
            !["0x", "0o", "0b"].iter().any(|p| s.starts_with(p)) && s.parse::<f64>().is_err()
        }
        _ => false,
    }
}

/// Why a reading was refused: only that it was (the full parser says what is wrong).
type Refused = serde::de::value::Error;

fn refused() -> Refused {
    de::Error::custom("left to the full parser")
}

struct De<'a> {
    text: &'a str,
    toks: &'a [Tok],
    at: usize,
}

impl<'a> De<'a> {
    fn peek(&self) -> Result<Tok, Refused> {
        self.toks.get(self.at).copied().ok_or_else(refused)
    }

    fn next(&mut self) -> Result<Tok, Refused> {
        let t = self.peek()?;
        self.at += 1;
        Ok(t)
    }

    /// The next token's text if it is a scalar read as a string.
    fn string(&mut self) -> Result<&'a str, Refused> {
        let t = self.next()?;
        let s = t.text(self.text);
        match t.kind() {
            QUOTED => Ok(s),
            PLAIN if plain_string(s) => Ok(s),
            _ => Err(refused()),
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut De<'de> {
    type Error = Refused;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        let t = self.peek()?;
        match t.kind() {
            MAP_START => self.deserialize_map(visitor),
            SEQ_START => self.deserialize_seq(visitor),
            PLAIN if matches!(t.text(self.text), "true" | "false") => {
                self.deserialize_bool(visitor)
            }
            _ => visitor.visit_borrowed_str(self.string()?),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        let t = self.next()?;
        match (t.kind(), t.text(self.text)) {
            (PLAIN, "true") => visitor.visit_bool(true),
            (PLAIN, "false") => visitor.visit_bool(false),
            _ => Err(refused()),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        visitor.visit_borrowed_str(self.string()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_str(visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        // A null is refused like any other doubt: only values that are there are read.
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Refused> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        if self.next()?.kind() != SEQ_START {
            return Err(refused());
        }
        visitor.visit_seq(Items { de: self })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Refused> {
        if self.next()?.kind() != MAP_START {
            return Err(refused());
        }
        visitor.visit_map(Items { de: self })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Refused> {
        self.deserialize_map(visitor)
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char bytes byte_buf unit
        unit_struct tuple tuple_struct enum ignored_any
    }
}

/// The entries of a sequence or mapping, up to its end.
struct Items<'r, 'a> {
    de: &'r mut De<'a>,
}

impl<'de> Items<'_, 'de> {
    /// The next entry (a sequence's element or a mapping's key), or None at the
    /// collection's end (which is then taken).
    fn next<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<Option<S::Value>, Refused> {
        if matches!(self.de.peek()?.kind(), MAP_END | SEQ_END) {
            self.de.at += 1;
            return Ok(None);
        }
        seed.deserialize(&mut *self.de).map(Some)
    }
}

impl<'de> de::SeqAccess<'de> for Items<'_, 'de> {
    type Error = Refused;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Refused> {
        self.next(seed)
    }
}

impl<'de> de::MapAccess<'de> for Items<'_, 'de> {
    type Error = Refused;

    fn next_key_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, Refused> {
        self.next(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, Refused> {
        seed.deserialize(&mut *self.de)
    }
}
