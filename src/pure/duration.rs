//! Human durations (`30s`, `90d`, `1h30m`) and renewal windows (`33%` or a duration).
//! Pure parsing and formatting: no clock, no I/O.

use crate::model::excerpt;
use std::fmt;
use std::time::Duration;

const UNITS: &[(char, u64)] = &[
    ('s', 1),
    ('m', 60),
    ('h', 3_600),
    ('d', 86_400),
    ('w', 7 * 86_400),
    ('y', 365 * 86_400),
];

/// Parses `90d`, `1h30m`, `10y`. Every number needs a unit; zero is refused.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration; write a number and a unit, e.g. 90d".into());
    }
    let mut total: u64 = 0;
    let mut digits = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
            continue;
        }
        let Some(&(_, secs)) = UNITS.iter().find(|(u, _)| *u == c) else {
            return Err(format!(
                "`{}` is not a duration: unknown unit `{c}` (use s, m, h, d, w or y, e.g. 90d)",
                excerpt(text)
            ));
        };
        if digits.is_empty() {
            return Err(format!(
                "`{}` is not a duration: a number must come before `{c}`",
                excerpt(text)
            ));
        }
        let n: u64 = digits
            .parse()
            .map_err(|_| format!("`{}` is not a duration: number too large", excerpt(text)))?;
        total = n
            .checked_mul(secs)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(|| format!("`{}` is too long a duration", excerpt(text)))?;
        digits.clear();
    }
    if !digits.is_empty() {
        return Err(format!(
            "`{}` is not a duration: `{}` has no unit (use s, m, h, d, w or y, e.g. {}d)",
            excerpt(text),
            excerpt(&digits),
            excerpt(&digits)
        ));
    }
    if total == 0 {
        return Err(format!(
            "`{}` is zero; a duration must be positive",
            excerpt(text)
        ));
    }
    Ok(Duration::from_secs(total))
}

/// Formats a duration compactly with its two largest units: `89d 23h`, `29s`.
pub fn format_duration(d: Duration) -> String {
    let mut secs = d.as_secs();
    let mut parts = Vec::new();
    for &(unit, size) in UNITS.iter().rev().filter(|(u, _)| *u != 'w') {
        if secs >= size {
            parts.push(format!("{}{}", secs / size, unit));
            secs %= size;
        }
        if parts.len() == 2 {
            break;
        }
    }
    if parts.is_empty() {
        "0s".into()
    } else {
        parts.join(" ")
    }
}

/// How long before notAfter a certificate is renewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenewBefore {
    /// A share of the certificate's lifetime, in per mille (33% = 330).
    Share(u32),
    Fixed(Duration),
}

impl RenewBefore {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if let Some(num) = text.strip_suffix('%') {
            let value: f64 = num
                .trim()
                .parse()
                .map_err(|_| format!("`{}` is not a share; write e.g. 33%", excerpt(text)))?;
            if !(value > 0.0 && value < 100.0) {
                return Err(format!(
                    "`{}` must be more than 0% and less than 100%",
                    excerpt(text)
                ));
            }
            return Ok(RenewBefore::Share((value * 10.0).round() as u32));
        }
        parse_duration(text).map(RenewBefore::Fixed)
    }

    /// The window for a certificate whose lifetime is `lifetime`.
    pub fn of(&self, lifetime: Duration) -> Duration {
        match *self {
            RenewBefore::Share(permille) => lifetime * permille / 1000,
            RenewBefore::Fixed(d) => d,
        }
    }
}

impl fmt::Display for RenewBefore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RenewBefore::Share(p) if p % 10 == 0 => write!(f, "{}%", p / 10),
            RenewBefore::Share(p) => write!(f, "{}.{}%", p / 10, p % 10),
            RenewBefore::Fixed(d) => f.write_str(&format_duration(*d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        let table = [
            ("30s", 30),
            ("5m", 300),
            ("2h", 7200),
            ("90d", 90 * 86400),
            ("1w", 604800),
            ("10y", 3650 * 86400),
            ("1h30m", 5400),
        ];
        for (text, secs) in table {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_secs(secs)),
                "{text}"
            );
        }
    }

    #[test]
    fn bad_durations_say_why() {
        for (text, needle) in [
            ("90", "has no unit"),
            ("3x", "unknown unit `x`"),
            ("d", "number must come before"),
            ("0d", "zero"),
            ("", "empty"),
            ("99999999999999999999y", "too"),
        ] {
            let err = parse_duration(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn renew_before_share_and_fixed() {
        assert_eq!(RenewBefore::parse("33%"), Ok(RenewBefore::Share(330)));
        assert_eq!(RenewBefore::parse("12.5%"), Ok(RenewBefore::Share(125)));
        assert_eq!(
            RenewBefore::parse("30d"),
            Ok(RenewBefore::Fixed(Duration::from_secs(30 * 86400)))
        );
        assert!(RenewBefore::parse("100%").is_err());
        assert!(RenewBefore::parse("0%").is_err());
        assert_eq!(
            RenewBefore::Share(330).of(Duration::from_secs(1000)),
            Duration::from_secs(330)
        );
        assert_eq!(RenewBefore::Share(125).to_string(), "12.5%");
    }

    #[test]
    fn formats_compactly() {
        assert_eq!(format_duration(Duration::from_secs(29)), "29s");
        assert_eq!(
            format_duration(Duration::from_secs(90 * 86400 - 3600)),
            "89d 23h"
        );
        assert_eq!(format_duration(Duration::from_secs(0)), "0s");
    }
}
