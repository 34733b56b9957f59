//! certkeeper: keeps TLS certificates issued, installed, renewed and served.
//!
//! The tree by layer, each using only the layers above it:
//! - `pure/`: vocabulary and pure rules (no I/O; time is a parameter): `model`,
//!   `duration`, `constraints` (the CA's name constraints), `encoding`, `x509`, `layout`
//!   (which bytes go where), `policy` (the renewal decision, `policy::retry`,
//!   `policy::watch`, `policy::ca`); with them
//!   `config/` (apart from reading the file) and `reconcile::plan`;
//! - `io/`: effects (files, processes, network, the clock): `fsread`, `fsutil`, `keys`, `cakey`,
//!   `observe`, `install`, `state`, `cache`, `process`, `server`, `verify`, `trust`,
//!   `hooks`, `metrics`, `clock`; and `issuer/` (`internal`, `acme`);
//! - orchestration: `reconcile/` (one pass), `status`, `daemon/`;
//! - the command line: `cli/`.
//!
//! Every module is also reachable at the crate root (`certkeeper::policy`, ...).

pub mod pure;
pub use pure::{
    constraints, discover, duration, encoding, layout, model, par, pkcs12, policy, served, x509,
};

pub mod config;

pub mod io;
pub use io::{
    ari, cache, cakey, clock, discover as discover_io, dns01, drift, fsread, fsutil, hooks,
    install, keys, metrics, observe, password, process, server, state, trust, verify,
};
pub mod issuer;

pub mod daemon;
pub mod reconcile;
pub mod status;

pub mod cli;
