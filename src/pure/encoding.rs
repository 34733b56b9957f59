//! The encodings certificates and keys are written in: PEM with LF line endings, and
//! hex as certkeeper prints serials and fingerprints. Below both `keys` and `x509`.

/// PEM with LF line endings, as every Unix tool writes it.
pub fn pem_encode(tag: &str, der: &[u8]) -> String {
    let config = ::pem::EncodeConfig::new().set_line_ending(::pem::LineEnding::LF);
    ::pem::encode_config(&::pem::Pem::new(tag, der.to_vec()), config)
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

pub fn serial_hex(raw: &[u8]) -> String {
    let h = hex(raw);
    let t = h.trim_start_matches('0');
    if t.is_empty() {
        "0".into()
    } else {
        t.to_string()
    }
}

/// Lower-case hex, two digits a byte (one string made, not one per byte: fingerprints
/// of thousands of certificates are spelt out at every start).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    s
}

/// `ab:cd:...`, as `openssl x509 -fingerprint` prints it (upper case there).
pub fn colon_hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Hex digits (an odd count gets a leading zero) to bytes; None when not hex.
pub fn hex_decode(hex: &str) -> Option<Vec<u8>> {
    let padded;
    let hex = if hex.len() % 2 == 1 {
        padded = format!("0{hex}");
        padded.as_str()
    } else {
        hex
    };
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_spells_every_byte_in_two_lower_case_digits_and_reads_back() {
        let all: Vec<u8> = (0..=255).collect();
        let h = super::hex(&all);
        assert_eq!(h.len(), 512);
        assert!(h.starts_with("000102") && h.ends_with("fdfeff"), "{h}");
        assert_eq!(super::hex_decode(&h), Some(all));
        assert_eq!(super::hex(&[]), "");
    }
}
