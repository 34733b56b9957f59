//! Vocabulary and pure rules: no file, process, network or clock. Time is a parameter,
//! so every decision here is tested without waiting.

pub mod constraints;
pub mod discover;
pub mod duration;
pub mod encoding;
pub mod layout;
pub mod model;
pub mod par;
pub mod pkcs12;
pub mod policy;
pub mod served;
pub mod x509;
