//! Links the `pointsman` binary with its segments aligned to 2 MB, so that its whole machine
//! code can be moved onto huge pages at start-up (see `src/hugetext.rs`): the code then starts
//! on a huge page boundary and the gap after it, up to the next boundary, is left unmapped.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.contains("linux") && (target.starts_with("x86_64") || target.starts_with("aarch64")) {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,max-page-size=0x200000");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
