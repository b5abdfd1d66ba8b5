//! Embeds the eBPF objects built by `cargo xtask build-ebpf`: the agent's programs
//! (`rasp-ebpf`) and the benchmark floor's empty programs (`rasp-floor`, found next to the
//! first unless `RASP_FLOOR_OBJ` says otherwise). Without them (a plain `cargo build` or
//! clippy run) empty objects are embedded and `rasp-agent run` / `rasp-agent floor` refuse
//! to start with a message saying how to build properly; every other part of the binary
//! works.

use std::{env, fs, path::Path, path::PathBuf};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let default = manifest.join("../target/ebpf/bpfel-unknown-none/release/rasp-ebpf");
    let object = env::var_os("RASP_EBPF_OBJ")
        .map(PathBuf::from)
        .unwrap_or(default);
    let floor = env::var_os("RASP_FLOOR_OBJ")
        .map(PathBuf::from)
        .unwrap_or_else(|| object.with_file_name("rasp-floor"));
    println!("cargo:rerun-if-env-changed=RASP_EBPF_OBJ");
    println!("cargo:rerun-if-env-changed=RASP_FLOOR_OBJ");

    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets it"));
    embed(&object, &out.join("rasp-ebpf.o"));
    embed(&floor, &out.join("rasp-floor.o"));
}

fn embed(object: &Path, out: &Path) {
    println!("cargo:rerun-if-changed={}", object.display());
    match fs::read(object) {
        Ok(bytes) => fs::write(out, bytes).expect("write OUT_DIR object"),
        Err(e) => {
            println!(
                "cargo:warning=eBPF object {} not found ({e}); embedding none: run `cargo xtask build`",
                object.display()
            );
            fs::write(out, []).expect("write OUT_DIR object");
        }
    }
}
