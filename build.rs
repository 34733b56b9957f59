//! Lays out the program's code so that what every start and every pass runs sits in one
//! block at the front: the kernel maps a program's code into memory 64 KiB at a time
//! around each page it runs, so 1.3 MB of code used at start-up scattered over 7 MB
//! of program costs 5 MB of resident memory, and packed together about 1.5 MB.
//!
//! The list is `packaging/hot-code.txt`, made by `packaging/hot-code.sh` from what a
//! daemon runs while it issues, installs and restarts. Its names belong to one
//! toolchain, one `Cargo.lock` and the `release` profile without dev-dependencies
//! (`cargo build --release`, `cargo run --release`, the packages; the benches build
//! that program for themselves): after an update, names that no longer exist are
//! skipped (nothing breaks, the layout is the linker's own again) until the list is
//! made anew. Used only where LLD links (Rust's own linker for x86_64 Linux since
//! 1.90) and no other linker was asked for.

use std::env;
use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=packaging/hot-code.txt");
    println!("cargo:rerun-if-env-changed=RUSTC_LINKER");
    if env::var("PROFILE").as_deref() != Ok("release") || !rust_lld_links() {
        return;
    }
    let list = Path::new(&env::var("CARGO_MANIFEST_DIR").expect("set by cargo"))
        .join("packaging")
        .join("hot-code.txt");
    if list.is_file() {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--symbol-ordering-file={}",
            list.display()
        );
        println!("cargo:rustc-link-arg-bins=-Wl,--no-warn-symbol-ordering");
    }
}

/// Whether the program is linked by the LLD that comes with Rust: the default for
/// x86_64-unknown-linux-gnu from Rust 1.90, unless a linker is chosen.
fn rust_lld_links() -> bool {
    if env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu")
        || env::var_os("RUSTC_LINKER").is_some()
    {
        return false;
    }
    let flags = env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|f| flags.contains(f))
    {
        return false;
    }
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let Ok(out) = Command::new(rustc).arg("--version").output() else {
        return false;
    };
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let version = String::from_utf8_lossy(&out.stdout);
    let minor = version
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.split('.').nth(1))
        .and_then(|m| m.parse::<u32>().ok());
    minor.is_some_and(|m| m >= 90)
}
