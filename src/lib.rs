//! certkeeper: keeps TLS certificates issued, installed, renewed and served.
//!
//! Layers: vocabulary and pure logic (`model`, `duration`, `config`, `x509`, `policy`,
//! `layout::render`), effects (`keys`, `ca`, `fsread`, `fsutil`, `install`, `state`,
//! `process`, `server`, `hooks`), orchestration (`reconcile`, `status`) and the command
//! line (`cli`).

pub mod acme;
pub mod ca;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod duration;
pub mod fsread;
pub mod fsutil;
pub mod hooks;
pub mod install;
pub mod keys;
pub mod layout;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod process;
pub mod reconcile;
pub mod server;
pub mod state;
pub mod status;
pub mod trust;
pub mod verify;
pub mod x509;
