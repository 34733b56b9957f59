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
