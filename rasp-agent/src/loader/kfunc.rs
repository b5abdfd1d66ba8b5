//! Kernel function calls for a Rust eBPF object. aya (0.14) has no kfunc relocations, so
//! the programs call placeholder helper ids (`rasp_common::offsets::KFUNC_*_PLACEHOLDER`)
//! and this rewrites each such `call` in the object's code sections into a kfunc call:
//! `src_reg = BPF_PSEUDO_KFUNC_CALL`, `imm` = the function's id in the running kernel's
//! BTF, `off` = 0 (vmlinux). A placeholder left unrewritten is refused by the verifier
//! ("invalid func"), so a miss cannot go unnoticed.

use super::LoadError;

const BPF_JMP_CALL: u8 = 0x85;
const BPF_PSEUDO_KFUNC_CALL: u8 = 2;
const SHF_EXECINSTR: u64 = 0x4;
const INSN: usize = 8;

/// An object's bytes, 8-byte aligned as aya's parser wants them (the embedded object is
/// `include_bytes_aligned!`; a plain `Vec<u8>` need not be).
pub struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr() as *const u8, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr() as *mut u8, self.len) }
    }
}

fn malformed(what: String) -> LoadError {
    LoadError::Kfunc(format!(
        "the embedded eBPF object is not the ELF expected: {what}"
    ))
}

fn field<const N: usize>(data: &[u8], at: usize) -> Result<[u8; N], LoadError> {
    at.checked_add(N)
        .and_then(|end| data.get(at..end))
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| malformed(format!("{N}-byte field at {at} past the end")))
}

fn u16_at(data: &[u8], at: usize) -> Result<usize, LoadError> {
    Ok(u16::from_le_bytes(field(data, at)?) as usize)
}

fn u64_at(data: &[u8], at: usize) -> Result<u64, LoadError> {
    Ok(u64::from_le_bytes(field(data, at)?))
}

/// Copy `object` and turn every `call placeholder` into a call of kernel function
/// `btf_id`. Returns the patched object and how many calls were rewritten.
pub fn link(
    object: &[u8],
    placeholder: u32,
    btf_id: u32,
) -> Result<(AlignedObject, usize), LoadError> {
    let mut obj = AlignedObject {
        words: vec![0u64; object.len().div_ceil(8)],
        len: object.len(),
    };
    obj.bytes_mut().copy_from_slice(object);
    let data = obj.bytes_mut();
    // ELF64 little-endian header: e_shoff at 0x28, e_shentsize at 0x3a, e_shnum at 0x3c.
    if data.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(malformed("not a little-endian ELF64 file".into()));
    }
    let shoff = usize::try_from(u64_at(data, 0x28)?).map_err(|e| malformed(e.to_string()))?;
    let shentsize = u16_at(data, 0x3a)?;
    let shnum = u16_at(data, 0x3c)?;
    let mut rewritten = 0;
    for index in 0..shnum {
        let header = index
            .checked_mul(shentsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or_else(|| malformed(format!("section header {index}")))?;
        // sh_flags at +8, sh_offset at +0x18, sh_size at +0x20.
        if u64_at(data, header + 8)? & SHF_EXECINSTR == 0 {
            continue;
        }
        let start =
            usize::try_from(u64_at(data, header + 0x18)?).map_err(|e| malformed(e.to_string()))?;
        let size =
            usize::try_from(u64_at(data, header + 0x20)?).map_err(|e| malformed(e.to_string()))?;
        let code = start
            .checked_add(size)
            .and_then(|end| data.get_mut(start..end))
            .ok_or_else(|| malformed(format!("section {index} runs past the end")))?;
        for insn in code.chunks_exact_mut(INSN) {
            // opcode, dst/src registers, off (i16), imm (i32).
            let imm = u32::from_le_bytes([insn[4], insn[5], insn[6], insn[7]]);
            if insn[0] == BPF_JMP_CALL && insn[1] == 0 && imm == placeholder {
                insn[1] = BPF_PSEUDO_KFUNC_CALL << 4;
                insn[2] = 0;
                insn[3] = 0;
                insn[4..8].copy_from_slice(&btf_id.to_le_bytes());
                rewritten += 1;
            }
        }
    }
    Ok((obj, rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64: header, one executable section of three instructions, one data
    /// section holding a placeholder-looking word that must not change.
    fn elf(code: &[[u8; 8]], data: [u8; 8]) -> Vec<u8> {
        let code_at = 64;
        let data_at = code_at + code.len() * 8;
        let shoff = data_at + 8;
        let mut f = vec![0u8; shoff + 3 * 64];
        f[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        f[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        f[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        for (i, insn) in code.iter().enumerate() {
            f[code_at + i * 8..code_at + i * 8 + 8].copy_from_slice(insn);
        }
        f[data_at..data_at + 8].copy_from_slice(&data);
        let mut section = |index: usize, flags: u64, at: usize, size: usize| {
            let h = shoff + index * 64;
            f[h + 8..h + 16].copy_from_slice(&flags.to_le_bytes());
            f[h + 0x18..h + 0x20].copy_from_slice(&(at as u64).to_le_bytes());
            f[h + 0x20..h + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
        };
        section(1, SHF_EXECINSTR | 2, code_at, code.len() * 8);
        section(2, 2, data_at, 8);
        f
    }

    fn call(imm: u32) -> [u8; 8] {
        let mut i = [BPF_JMP_CALL, 0, 0, 0, 0, 0, 0, 0];
        i[4..].copy_from_slice(&imm.to_le_bytes());
        i
    }

    #[test]
    fn rewrites_placeholder_calls_only() {
        const P: u32 = 0x7261_6b00;
        let mov = [0xb7, 0x01, 0, 0, 0, 0x6b, 0x61, 0x72]; // r1 = imm that looks like P
        let object = elf(&[call(14), call(P), mov], call(P));
        let (patched, n) = link(&object, P, 65477).unwrap();
        assert_eq!(n, 1);
        let b = patched.bytes();
        assert_eq!(b.as_ptr() as usize % 8, 0);
        assert_eq!(&b[64..72], &call(14), "a real helper call stays");
        assert_eq!(b[72], BPF_JMP_CALL);
        assert_eq!(b[73], 0x20, "src_reg = BPF_PSEUDO_KFUNC_CALL");
        assert_eq!(u32::from_le_bytes(b[76..80].try_into().unwrap()), 65477);
        assert_eq!(&b[80..88], &mov);
        assert_eq!(&b[88..96], &call(P), "data sections are not code");
    }

    #[test]
    fn refuses_what_is_not_an_elf_object() {
        assert!(link(b"not an elf", 1, 2).is_err());
        let mut truncated = elf(&[call(1)], [0; 8]);
        truncated.truncate(100);
        assert!(link(&truncated, 1, 2).is_err());
    }
}
