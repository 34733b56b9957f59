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

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
