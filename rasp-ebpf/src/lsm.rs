//! BPF-LSM programs. For now only the capability probe: the agent loads (never attaches)
//! `rasp_lsm_probe` at start to learn whether this kernel accepts LSM programs at all, and
//! reports why not in `status`. Enforcement hooks (bprm_check_security, file_open,
//! socket_connect) land here.

use aya_ebpf::{macros::lsm, programs::LsmContext};

#[lsm(hook = "bprm_check_security")]
pub fn rasp_lsm_probe(_ctx: LsmContext) -> i32 {
    0
}
