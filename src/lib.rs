//! certkeeper: keeps TLS certificates issued, installed, renewed and served.
//!
//! The modules by layer, each using only the layers above it:
//! - vocabulary and pure rules (no I/O; time is a parameter): `model`, `duration`,
//!   `encoding`, `x509`, `config` (apart from reading the file), `policy` (the renewal
//!   decision, `policy::retry`), `layout` (which bytes go where), `reconcile::plan`;
//! - effects (files, processes, network, the clock): `fsread`, `fsutil`, `keys`,
//!   `issuer` (`internal`, `acme`), `observe`, `install`, `state`, `cache`, `process`,
//!   `server`, `verify`, `trust`, `hooks`, `metrics`, `clock`;
//! - orchestration: `reconcile` (one pass), `status`, `daemon`;
//! - the command line: `cli`.

// Vocabulary and pure rules.
pub mod config;
pub mod duration;
pub mod encoding;
pub mod layout;
pub mod model;
pub mod policy;
pub mod x509;

// Effects.
pub mod cache;
pub mod clock;
pub mod fsread;
pub mod fsutil;
pub mod hooks;
pub mod install;
pub mod issuer;
pub mod keys;
pub mod metrics;
pub mod observe;
pub mod process;
pub mod server;
pub mod state;
pub mod trust;
pub mod verify;

// Orchestration.
pub mod daemon;
pub mod reconcile;
pub mod status;

// The command line.
pub mod cli;
