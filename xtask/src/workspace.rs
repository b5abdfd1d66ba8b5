//! Where things are: the workspace root, the eBPF crate, and the artifacts each task hands
//! to the next. Paths are derived here once so build, run and test agree on them.

use std::path::{Path, PathBuf};

/// The eBPF target; the object keeps the crate's name.
pub const EBPF_TARGET: &str = "bpfel-unknown-none";

/// Cargo profile shared by the eBPF object and the agent built from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Release,
    Debug,
}

impl Profile {
    pub fn from_debug_flag(debug: bool) -> Self {
        if debug {
            Profile::Debug
        } else {
            Profile::Release
        }
    }

    /// Directory name cargo uses under its target dir.
    pub fn dir(self) -> &'static str {
        match self {
            Profile::Release => "release",
            Profile::Debug => "debug",
        }
    }

    /// Arguments selecting this profile on a cargo command line.
    pub fn cargo_args(self) -> &'static [&'static str] {
        match self {
            Profile::Release => &["--release"],
            Profile::Debug => &[],
        }
    }
}

pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    /// The workspace is the parent of this crate, fixed at compile time: `cargo xtask`
    /// rebuilds xtask in place, so the path follows the checkout.
    pub fn locate() -> Self {
        let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest_dir
            .parent()
            .expect("xtask lives one level below the workspace root")
            .to_path_buf();
        Workspace { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn ebpf_crate(&self) -> PathBuf {
        self.root.join("rasp-ebpf")
    }

    /// Host builds use the workspace's usual target dir, passed explicitly so the paths
    /// printed here are where the binaries really are.
    pub fn host_target_dir(&self) -> PathBuf {
        self.root.join("target")
    }

    /// The eBPF build gets its own target dir: it is another toolchain with another
    /// std, and sharing one dir would make the two builds invalidate each other.
    pub fn ebpf_target_dir(&self) -> PathBuf {
        self.host_target_dir().join("ebpf")
    }

    pub fn ebpf_object(&self, profile: Profile) -> PathBuf {
        self.ebpf_target_dir()
            .join(EBPF_TARGET)
            .join(profile.dir())
            .join("rasp-ebpf")
    }

    pub fn agent_bin(&self, profile: Profile) -> PathBuf {
        self.host_target_dir()
            .join(profile.dir())
            .join("rasp-agent")
    }
}
