//! A BPF program loaded into the kernel by a program of its own, as a BPF rootkit's loader
//! does: bpf(BPF_PROG_LOAD) of the smallest valid socket filter (`r0 = 0; exit`), closed
//! at once (nothing is attached).

use anyhow::{bail, Result};

const BPF_PROG_LOAD: i64 = 5;
const BPF_PROG_TYPE_SOCKET_FILTER: u32 = 1;

pub fn load() -> Result<String> {
    // r0 = 0 (BPF_ALU64 | BPF_MOV | BPF_K), exit (BPF_JMP | BPF_EXIT).
    let insns: [u64; 2] = [0xb7, 0x95];
    let license = c"GPL";
    // union bpf_attr, BPF_PROG_LOAD's part: prog_type, insn_cnt, insns, license, ...,
    // prog_name at byte 48.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_SOCKET_FILTER.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..57].copy_from_slice(b"rasp_test");
    // SAFETY: bpf(2) with a valid attribute block of its stated size.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            attr.as_ptr(),
            attr.len() as u32,
        )
    };
    if fd < 0 {
        bail!("bpf(BPF_PROG_LOAD): {}", std::io::Error::last_os_error());
    }
    // SAFETY: the program's descriptor, ours.
    unsafe { libc::close(fd as i32) };
    Ok(format!("loaded a socket filter (fd {fd}) and closed it"))
}
