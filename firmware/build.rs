//! Links the Cortex-M4F example: cortex-m-rt's `link.x` needs the board's `memory.x` on the
//! linker's search path. Nothing happens for host builds or without the `cortex-m` feature.

use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
    let target = env::var("TARGET").unwrap_or_default();
    if env::var_os("CARGO_FEATURE_CORTEX_M").is_none() || !target.starts_with("thumb") {
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rustc-link-arg-examples=-Tlink.x");
}
