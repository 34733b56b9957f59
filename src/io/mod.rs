//! Effects: files (read bounded, written without following links), keys (and the CA's
//! at rest, encrypted or not), processes,
//! servers, TLS handshakes, the state directory, hooks, metrics and the clock.

pub mod ari;
pub mod cache;
pub mod cakey;
pub mod clock;
pub mod discover;
pub mod dns01;
pub mod drift;
pub mod fsread;
pub mod fsutil;
pub mod hooks;
pub mod install;
pub mod keys;
pub mod metrics;
pub mod observe;
pub mod password;
pub mod process;
pub mod server;
pub mod state;
pub mod trust;
pub mod verify;
