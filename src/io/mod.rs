//! Effects: files (read bounded, written without following links), keys, processes,
//! servers, TLS handshakes, the state directory, hooks, metrics and the clock.

pub mod cache;
pub mod clock;
pub mod fsread;
pub mod fsutil;
pub mod hooks;
pub mod install;
pub mod keys;
pub mod metrics;
pub mod observe;
pub mod process;
pub mod server;
pub mod state;
pub mod trust;
pub mod verify;
