//! Builds the kernel relay's eBPF program (`bpf/relay.bpf.c`) with clang, when clang and the
//! kernel's and libbpf's headers are here (Debian: `clang llvm libbpf-dev linux-libc-dev`;
//! `.ci/run` installs them). Where they are not, pointsman builds without the kernel relay
//! (`media.kernel_relay` then leaves every packet to the relay's threads, saying so) and cargo
//! prints why; with `POINTSMAN_REQUIRE_KERNEL_RELAY` set (CI), it fails instead.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(pointsman_kernel_relay)");
    println!("cargo::rerun-if-changed=bpf/relay.bpf.c");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=POINTSMAN_CLANG");
    println!("cargo::rerun-if-env-changed=POINTSMAN_REQUIRE_KERNEL_RELAY");
    let Some(out_dir) = env::var_os("OUT_DIR") else {
        return;
    };
    let object = PathBuf::from(out_dir).join("relay.bpf.o");
    // The multiarch include directory holds asm/types.h, which linux/types.h includes.
    let multiarch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("x86_64") => "x86_64-linux-gnu",
        Ok("aarch64") => "aarch64-linux-gnu",
        _ => {
            println!("cargo::warning=no kernel relay: eBPF is built for x86_64 and aarch64 only");
            return;
        }
    };
    let candidates = env::var("POINTSMAN_CLANG").map_or_else(
        |_| {
            [
                "clang", "clang-19", "clang-18", "clang-17", "clang-16", "clang-15", "clang-14",
            ]
            .map(String::from)
            .to_vec()
        },
        |c| vec![c],
    );
    let mut last_error = String::from("no clang on PATH");
    for clang in candidates {
        let built = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .args(["-c", "bpf/relay.bpf.c", "-o"])
            .arg(&object)
            .output();
        match built {
            Ok(out) if out.status.success() => {
                println!("cargo::rustc-cfg=pointsman_kernel_relay");
                return;
            }
            Ok(out) => {
                last_error = format!(
                    "{clang} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .next()
                        .unwrap_or("")
                );
            }
            Err(_) => continue,
        }
    }
    let why = format!("{last_error}: apt-get install clang llvm libbpf-dev");
    // CI sets this: there, a build without the program would turn its tests into ignored ones.
    if env::var_os("POINTSMAN_REQUIRE_KERNEL_RELAY").is_some() {
        eprintln!(
            "POINTSMAN_REQUIRE_KERNEL_RELAY is set, but the kernel relay did not build ({why})"
        );
        std::process::exit(1);
    }
    println!("cargo::warning=built without the kernel relay ({why})");
}
