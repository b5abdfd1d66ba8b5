//! Embeds the eBPF object built by `cargo xtask build-ebpf`. Without it (a plain `cargo
//! build` or clippy run) an empty object is embedded and `rasp-agent run` refuses to start
//! with a message saying how to build properly; every other part of the binary works.

use std::{env, fs, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let default = manifest.join("../target/ebpf/bpfel-unknown-none/release/rasp-ebpf");
    let object = env::var_os("RASP_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-env-changed=RASP_EBPF_OBJ");
    println!("cargo:rerun-if-changed={}", object.display());

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it")).join("rasp-ebpf.o");
    match fs::read(&object) {
        Ok(bytes) => fs::write(&out, bytes).expect("write OUT_DIR/rasp-ebpf.o"),
        Err(e) => {
            println!(
                "cargo:warning=eBPF object {} not found ({e}); embedding none: run `cargo xtask build`",
                object.display()
            );
            fs::write(&out, []).expect("write OUT_DIR/rasp-ebpf.o");
        }
    }
}
