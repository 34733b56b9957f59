//! certkeeper's integration tests, in one binary: every test runs the real `certkeeper`
//! binary (or the daemon on a virtual clock) against real files, and, where a server is
//! reloaded, a real nginx or Apache on 127.0.0.1. `support` is the one harness.

mod support;

mod acme;
mod ca_rotation;
mod cakey;
mod cli;
mod clients;
mod constraints;
mod crash;
mod daemon;
mod daemon_servers;
mod discover;
mod dns01;
mod docs;
mod faults;
mod hooks;
mod hostile;
mod inspect;
mod mtls;
mod pkcs12;
mod reads;
mod served;
mod servers;
mod state_bounds;
