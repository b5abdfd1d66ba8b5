//! Reads the running kernel's BTF (`/sys/kernel/btf/vmlinux`) to find the byte offsets of the
//! struct members the probes read. aya-ebpf has no CO-RE relocations for Rust programs, so the
//! agent resolves `KernelOffsets` here once at start-up and writes them into the eBPF object.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rasp_common::offsets::{OFFSETS_MAGIC, OFFSET_UNKNOWN};
use rasp_common::KernelOffsets;

/// Errors from reading BTF or resolving a member in it.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "cannot read BTF from {}: {source}; is /sys/kernel/btf/vmlinux present? the kernel \
         needs CONFIG_DEBUG_INFO_BTF=y (and the agent needs read access to the file)",
        .path.display()
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "malformed BTF: {0}; expected the raw contents of /sys/kernel/btf/vmlinux \
         (is the file truncated or not BTF?)"
    )]
    Malformed(String),
    #[error("unsupported BTF: {0}")]
    Unsupported(String),
    #[error(
        "struct {0} has no definition in the kernel BTF (at most a forward declaration); \
         check the name with `bpftool btf dump file /sys/kernel/btf/vmlinux format c`"
    )]
    StructNotFound(String),
    #[error(
        "struct {structure} has no member `{member}` (anonymous struct/union members were \
         searched too); this kernel's layout differs, compare with `bpftool btf dump file \
         /sys/kernel/btf/vmlinux format c`"
    )]
    MemberNotFound { structure: String, member: String },
    #[error(
        "{structure}.{member} is a bitfield and has no byte offset; read the word that \
         contains it and mask instead"
    )]
    Bitfield { structure: String, member: String },
    #[error(
        "{structure}.{member} starts at bit {bit_offset}, not on a byte boundary; it cannot \
         be read by byte offset"
    )]
    Unaligned {
        structure: String,
        member: String,
        bit_offset: u64,
    },
    #[error(
        "{structure}.{member} is a {kind}, not an embedded struct or union, so the path cannot \
         continue past it (pointers are not followed: resolve the pointed-to struct separately)"
    )]
    NotComposite {
        structure: String,
        member: String,
        kind: &'static str,
    },
    #[error(
        "invalid member path `{0}`: expected dot-separated member names such as `d_name.name`"
    )]
    InvalidPath(String),
    #[error("{kind} {name} is not in the kernel BTF{hint}")]
    TypeNotFound {
        kind: &'static str,
        name: String,
        hint: &'static str,
    },
    #[error(
        "struct {structure} has several definitions in the kernel BTF that disagree on the \
         offset of `{member}` ({offsets:?}); cannot tell which one the kernel uses"
    )]
    Ambiguous {
        structure: String,
        member: String,
        offsets: Vec<u32>,
    },
}

const BTF_MAGIC: u16 = 0xeb9f;
const BTF_VERSION: u8 = 1;
/// Size of the fixed part of `struct btf_header`; `hdr_len` may announce a longer header.
const HEADER_LEN: usize = 24;
/// `struct btf_type`: name_off, info, size/type.
const TYPE_HEADER_LEN: usize = 12;
/// `struct btf_member`: name_off, type, offset.
const MEMBER_LEN: usize = 12;

// Kind numbers from include/uapi/linux/btf.h.
const KIND_INT: u8 = 1;
const KIND_PTR: u8 = 2;
const KIND_ARRAY: u8 = 3;
const KIND_STRUCT: u8 = 4;
const KIND_UNION: u8 = 5;
const KIND_ENUM: u8 = 6;
const KIND_FWD: u8 = 7;
const KIND_TYPEDEF: u8 = 8;
const KIND_VOLATILE: u8 = 9;
const KIND_CONST: u8 = 10;
const KIND_RESTRICT: u8 = 11;
const KIND_FUNC: u8 = 12;
const KIND_FUNC_PROTO: u8 = 13;
const KIND_VAR: u8 = 14;
const KIND_DATASEC: u8 = 15;
const KIND_FLOAT: u8 = 16;
const KIND_DECL_TAG: u8 = 17;
const KIND_TYPE_TAG: u8 = 18;
const KIND_ENUM64: u8 = 19;

/// Modifier chains and anonymous members nest a few levels in vmlinux; anything deeper than
/// this is a reference cycle in a corrupt blob, and must not overflow the stack.
const MAX_DEPTH: u32 = 32;
/// Members one lookup may visit. task_struct with its anonymous members is a few hundred;
/// the cap stops a hostile blob (wide structs of anonymous members of wide structs) from
/// turning a lookup into an exponential walk.
const MAX_MEMBER_VISITS: u32 = 1 << 20;

/// One entry of the type section, located but not decoded further.
#[derive(Clone, Copy)]
struct TypeEntry {
    /// Absolute byte offset of the entry in the blob, for bounds-checked reads and errors.
    at: usize,
    name_off: u32,
    info: u32,
    size_or_type: u32,
}

impl TypeEntry {
    const VOID: Self = Self {
        at: 0,
        name_off: 0,
        info: 0,
        size_or_type: 0,
    };

    fn kind(&self) -> u8 {
        ((self.info >> 24) & 0x1f) as u8
    }

    fn vlen(&self) -> usize {
        (self.info & 0xffff) as usize
    }

    fn kind_flag(&self) -> bool {
        self.info >> 31 == 1
    }
}

/// A member found by name, relative to the composite it was searched in.
struct FoundMember {
    bit_offset: u64,
    bitfield: bool,
    type_id: u32,
}

/// The kernel's BTF, parsed once: every type located, every named struct indexed by name.
pub struct KernelBtf {
    data: Vec<u8>,
    str_start: usize,
    str_end: usize,
    /// Indexed by type id; id 0 is `void`.
    types: Vec<TypeEntry>,
    /// Struct name → ids of the STRUCT entries with members. Usually one; BTF dedup leaves
    /// several when a struct was compiled with differing definitions.
    structs: HashMap<Box<[u8]>, Vec<u32>>,
}

impl fmt::Debug for KernelBtf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KernelBtf")
            .field("bytes", &self.data.len())
            .field("types", &self.types.len().saturating_sub(1))
            .field("named_structs", &self.structs.len())
            .finish()
    }
}

impl KernelBtf {
    pub const VMLINUX: &'static str = "/sys/kernel/btf/vmlinux";

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = std::fs::read(path).map_err(|source| BtfError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(data)
    }

    pub fn from_bytes(data: Vec<u8>) -> Result<Self, BtfError> {
        let magic = data.get(0..2).ok_or_else(|| {
            malformed(format!("{} bytes, too short for a BTF header", data.len()))
        })?;
        if magic == BTF_MAGIC.to_be_bytes() {
            return Err(BtfError::Unsupported(
                "big-endian BTF (magic 0xeb9f stored big-endian); only little-endian hosts are \
                 supported"
                    .into(),
            ));
        }
        if magic != BTF_MAGIC.to_le_bytes() {
            return Err(malformed(format!(
                "bad magic {magic:02x?} at byte 0, expected [9f, eb]"
            )));
        }
        if data.len() < HEADER_LEN {
            return Err(malformed(format!(
                "{} bytes, too short for the {HEADER_LEN}-byte BTF header",
                data.len()
            )));
        }
        let version = data.get(2).copied().unwrap_or(0);
        if version != BTF_VERSION {
            return Err(BtfError::Unsupported(format!(
                "BTF version {version} at byte 2, this reader knows version {BTF_VERSION}"
            )));
        }
        let hdr_len = read_u32(&data, 4)? as usize;
        if hdr_len < HEADER_LEN || hdr_len > data.len() {
            return Err(malformed(format!(
                "hdr_len {hdr_len} at byte 4 is outside {HEADER_LEN}..={}",
                data.len()
            )));
        }
        let (type_start, type_end) = section(&data, hdr_len, 8, "type")?;
        let (str_start, str_end) = section(&data, hdr_len, 16, "string")?;
        // Name offset 0 is the empty name of every anonymous type; the spec requires the string
        // section to open with it.
        if data.get(str_start) != Some(&0) {
            return Err(malformed(format!(
                "string section at byte {str_start} does not start with the empty string"
            )));
        }

        // A type entry is at least 12 bytes; vmlinux averages a little over 16.
        let mut types = Vec::with_capacity((type_end - type_start) / 16 + 1);
        types.push(TypeEntry::VOID);
        let mut structs: HashMap<Box<[u8]>, Vec<u32>> = HashMap::new();
        let mut pos = type_start;
        while pos < type_end {
            let id = types.len();
            let entry = TypeEntry {
                at: pos,
                name_off: read_u32(&data, pos)?,
                info: read_u32(&data, pos + 4)?,
                size_or_type: read_u32(&data, pos + 8)?,
            };
            let vlen = entry.vlen();
            let trailing = match entry.kind() {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                0 => {
                    return Err(malformed(format!(
                        "type id {id} at byte {pos} has kind 0 (UNKN)"
                    )))
                }
                kind => {
                    return Err(BtfError::Unsupported(format!(
                        "type id {id} at byte {pos} has kind {kind}, newer than this reader \
                         (kinds 1..=19); rasp's BTF reader needs updating for this kernel"
                    )))
                }
            };
            let next = pos
                .checked_add(TYPE_HEADER_LEN + trailing)
                .filter(|&next| next <= type_end)
                .ok_or_else(|| {
                    malformed(format!(
                        "type id {id} at byte {pos} ({} with vlen {vlen}) runs past the end of \
                         the type section at byte {type_end}",
                        kind_name(entry.kind())
                    ))
                })?;
            if entry.kind() == KIND_STRUCT && vlen > 0 && entry.name_off != 0 {
                let name = name_in(&data, str_start, str_end, entry.name_off)
                    .map_err(|e| malformed(format!("type id {id} at byte {pos}: {e}")))?;
                if !name.is_empty() {
                    let id = u32::try_from(id)
                        .map_err(|_| malformed(format!("more than {} types", u32::MAX)))?;
                    structs.entry(name.into()).or_default().push(id);
                }
            }
            types.push(entry);
            pos = next;
        }
        Ok(KernelBtf {
            data,
            str_start,
            str_end,
            types,
            structs,
        })
    }

    /// Byte offset of `path` (dot-separated, e.g. "f_path" or "d_name.name") inside `struct <structure>`,
    /// looking through anonymous struct/union members (e.g. mm_struct keeps its fields in an anonymous struct)
    /// and through typedef/const/volatile/restrict/type_tag modifiers for the intermediate members.
    pub fn member_offset(&self, structure: &str, path: &str) -> Result<u32, BtfError> {
        if path.split('.').any(str::is_empty) {
            return Err(BtfError::InvalidPath(path.to_owned()));
        }
        let candidates = self
            .structs
            .get(structure.as_bytes())
            .ok_or_else(|| BtfError::StructNotFound(structure.to_owned()))?;
        let mut resolved: Vec<u32> = Vec::new();
        let mut first_error = None;
        for &id in candidates {
            match self.resolve_path(id, structure, path) {
                Ok(offset) => {
                    if !resolved.contains(&offset) {
                        resolved.push(offset);
                    }
                }
                // A same-named struct without this member is some other subsystem's type.
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match (resolved.as_slice(), first_error) {
            ([offset], _) => Ok(*offset),
            ([], Some(e)) => Err(e),
            ([], None) => Err(BtfError::StructNotFound(structure.to_owned())),
            _ => Err(BtfError::Ambiguous {
                structure: structure.to_owned(),
                member: path.to_owned(),
                offsets: resolved,
            }),
        }
    }

    /// The type id of `struct <structure>` (its definition, not a forward declaration), for
    /// `bpf_rdonly_cast`.
    pub fn struct_id(&self, structure: &str) -> Result<u32, BtfError> {
        self.structs
            .get(structure.as_bytes())
            .and_then(|ids| ids.first().copied())
            .ok_or_else(|| BtfError::StructNotFound(structure.to_owned()))
    }

    /// `sizeof(struct <structure>)` (the first definition's; the size of an array element).
    pub fn struct_size(&self, structure: &str) -> Result<u32, BtfError> {
        let id = self.struct_id(structure)?;
        self.types
            .get(id as usize)
            .map(|t| t.size_or_type)
            .ok_or_else(|| BtfError::StructNotFound(structure.to_owned()))
    }

    /// The type id of the function `name` (a kfunc's id for a `BPF_PSEUDO_KFUNC_CALL`).
    pub fn func_id(&self, name: &str) -> Result<u32, BtfError> {
        self.types
            .iter()
            .enumerate()
            .find(|(_, t)| {
                t.kind() == KIND_FUNC && self.name(t.name_off).ok() == Some(name.as_bytes())
            })
            .and_then(|(id, _)| u32::try_from(id).ok())
            .ok_or_else(|| BtfError::TypeNotFound {
                kind: "function",
                name: name.to_owned(),
                hint: " (kfuncs need CONFIG_DEBUG_INFO_BTF; bpf_rdonly_cast needs Linux 6.2+)",
            })
    }

    fn resolve_path(&self, struct_id: u32, structure: &str, path: &str) -> Result<u32, BtfError> {
        let mut composite = struct_id;
        let mut bits: u64 = 0;
        let mut prefix_end = 0;
        let mut previous: Option<u32> = None;
        for component in path.split('.') {
            if let Some(member_type) = previous {
                composite = self.skip_modifiers(member_type)?;
                let kind = self.type_at(composite)?.kind();
                if kind != KIND_STRUCT && kind != KIND_UNION {
                    return Err(BtfError::NotComposite {
                        structure: structure.to_owned(),
                        member: prefix(path, prefix_end),
                        kind: kind_name(kind),
                    });
                }
                prefix_end += 1; // the '.'
            }
            prefix_end += component.len();
            let mut budget = MAX_MEMBER_VISITS;
            let found = self
                .find_member(composite, component.as_bytes(), 0, &mut budget)?
                .ok_or_else(|| BtfError::MemberNotFound {
                    structure: structure.to_owned(),
                    member: prefix(path, prefix_end),
                })?;
            if found.bitfield {
                return Err(BtfError::Bitfield {
                    structure: structure.to_owned(),
                    member: prefix(path, prefix_end),
                });
            }
            if found.bit_offset % 8 != 0 {
                return Err(BtfError::Unaligned {
                    structure: structure.to_owned(),
                    member: prefix(path, prefix_end),
                    bit_offset: found.bit_offset,
                });
            }
            bits = bits.saturating_add(found.bit_offset);
            previous = Some(found.type_id);
        }
        u32::try_from(bits / 8).map_err(|_| {
            malformed(format!(
                "offset of {structure}.{path} ({bits} bits) does not fit in 32 bits"
            ))
        })
    }

    /// Finds the member called `name` in the struct/union `composite_id`, descending into its
    /// anonymous struct/union members the way C name lookup does.
    fn find_member(
        &self,
        composite_id: u32,
        name: &[u8],
        depth: u32,
        budget: &mut u32,
    ) -> Result<Option<FoundMember>, BtfError> {
        if depth > MAX_DEPTH {
            return Err(malformed(format!(
                "anonymous members nested more than {MAX_DEPTH} deep at type id {composite_id} \
                 (reference cycle?)"
            )));
        }
        let composite = *self.type_at(composite_id)?;
        for index in 0..composite.vlen() {
            *budget = budget.checked_sub(1).ok_or_else(|| {
                malformed(format!(
                    "lookup visited more than {MAX_MEMBER_VISITS} members below type id \
                     {composite_id}"
                ))
            })?;
            let (name_off, type_id, raw_offset) = self.member(&composite, composite_id, index)?;
            // With kind_flag set the offset word packs the bitfield size above a 24-bit bit
            // offset; without it, the whole word is the bit offset.
            let (bit_offset, bitfield_size) = if composite.kind_flag() {
                (raw_offset & 0x00ff_ffff, raw_offset >> 24)
            } else {
                (raw_offset, 0)
            };
            let member_name = self.name(name_off).map_err(|e| {
                malformed(format!(
                    "member {index} of type id {composite_id} at byte {}: {e}",
                    composite.at
                ))
            })?;
            if member_name == name {
                let bitfield = bitfield_size != 0
                    || (!composite.kind_flag() && self.is_int_bitfield(type_id)?);
                return Ok(Some(FoundMember {
                    bit_offset: u64::from(bit_offset),
                    bitfield,
                    type_id,
                }));
            }
            if member_name.is_empty() {
                let inner = self.skip_modifiers(type_id)?;
                let kind = self.type_at(inner)?.kind();
                if kind == KIND_STRUCT || kind == KIND_UNION {
                    if let Some(mut found) = self.find_member(inner, name, depth + 1, budget)? {
                        found.bit_offset = found.bit_offset.saturating_add(u64::from(bit_offset));
                        return Ok(Some(found));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Without kind_flag, old encoders mark a bitfield through its INT type: fewer bits than
    /// the type's size, or a non-zero bit offset inside it.
    fn is_int_bitfield(&self, type_id: u32) -> Result<bool, BtfError> {
        let id = self.skip_modifiers(type_id)?;
        let int = self.type_at(id)?;
        if int.kind() != KIND_INT {
            return Ok(false);
        }
        let encoding = read_u32(&self.data, int.at + TYPE_HEADER_LEN)?;
        let bits = u64::from(encoding & 0xff);
        let offset = (encoding >> 16) & 0xff;
        Ok(offset != 0 || bits != u64::from(int.size_or_type) * 8)
    }

    fn skip_modifiers(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_DEPTH {
            match self.type_at(id)?.kind() {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = self.type_at(id)?.size_or_type;
                }
                _ => return Ok(id),
            }
        }
        Err(malformed(format!(
            "typedef/modifier chain longer than {MAX_DEPTH} at type id {id} (reference cycle?)"
        )))
    }

    fn type_at(&self, id: u32) -> Result<&TypeEntry, BtfError> {
        self.types.get(id as usize).ok_or_else(|| {
            malformed(format!(
                "reference to type id {id}, but the BTF has {} types (split/module BTF needs \
                 its base, which this reader does not load)",
                self.types.len().saturating_sub(1)
            ))
        })
    }

    fn member(
        &self,
        composite: &TypeEntry,
        composite_id: u32,
        index: usize,
    ) -> Result<(u32, u32, u32), BtfError> {
        let at = index
            .checked_mul(MEMBER_LEN)
            .and_then(|o| o.checked_add(composite.at + TYPE_HEADER_LEN))
            .ok_or_else(|| malformed(format!("member {index} of type id {composite_id}")))?;
        Ok((
            read_u32(&self.data, at)?,
            read_u32(&self.data, at + 4)?,
            read_u32(&self.data, at + 8)?,
        ))
    }

    fn name(&self, name_off: u32) -> Result<&[u8], String> {
        name_in(&self.data, self.str_start, self.str_end, name_off)
    }
}

/// Resolve every field of rasp_common::KernelOffsets and set magic = rasp_common::offsets::OFFSETS_MAGIC.
pub fn resolve_offsets(btf: &KernelBtf) -> Result<KernelOffsets, BtfError> {
    let at = |structure: &str, path: &str| btf.member_offset(structure, path);
    // A struct literal rather than field assignments: a field added to KernelOffsets fails to
    // compile here until it is resolved, instead of silently staying 0.
    Ok(KernelOffsets {
        magic: OFFSETS_MAGIC,
        task_pid: at("task_struct", "pid")?,
        task_tgid: at("task_struct", "tgid")?,
        task_real_parent: at("task_struct", "real_parent")?,
        task_mm: at("task_struct", "mm")?,
        task_fs: at("task_struct", "fs")?,
        task_exit_code: at("task_struct", "exit_code")?,
        task_signal: at("task_struct", "signal")?,
        // atomic_t: the counter is its only member, at +0.
        signal_live: at("signal_struct", "live")?,
        mm_arg_start: at("mm_struct", "arg_start")?,
        mm_arg_end: at("mm_struct", "arg_end")?,
        binprm_file: at("linux_binprm", "file")?,
        binprm_filename: at("linux_binprm", "filename")?,
        file_f_path: at("file", "f_path")?,
        fs_root: at("fs_struct", "root")?,
        fs_pwd: at("fs_struct", "pwd")?,
        path_mnt: at("path", "mnt")?,
        path_dentry: at("path", "dentry")?,
        dentry_parent: at("dentry", "d_parent")?,
        dentry_name_ptr: at("dentry", "d_name.name")?,
        mount_mnt: at("mount", "mnt")?,
        mount_parent: at("mount", "mnt_parent")?,
        mount_mountpoint: at("mount", "mnt_mountpoint")?,
        vfsmount_root: at("vfsmount", "mnt_root")?,
        task_files: at("task_struct", "files")?,
        files_fdt: at("files_struct", "fdt")?,
        fdtable_fd: at("fdtable", "fd")?,
        fdtable_max_fds: at("fdtable", "max_fds")?,
        file_f_flags: at("file", "f_flags")?,
        file_f_mode: at("file", "f_mode")?,
        regs_arg2: syscall_arg(btf, 2)?,
        regs_arg3: syscall_arg(btf, 3)?,
        dentry_name_len: at("dentry", "d_name.len")?,
        dentry_inline_name: at("dentry", "d_shortname").or_else(|_| at("dentry", "d_iname"))?,
        btf_file: btf.struct_id("file")?,
        btf_mount: btf.struct_id("mount")?,
        task_cred: at("task_struct", "cred")?,
        // kuid_t/kgid_t wrap the id in `val` at +0; kernel_cap_t is 8 bytes either way
        // (a u64 since 6.3, two u32 words before).
        cred_euid: at("cred", "euid")?,
        cred_egid: at("cred", "egid")?,
        cred_cap_effective: at("cred", "cap_effective")?,
        task_group_leader: at("task_struct", "group_leader")?,
        task_start_time: at("task_struct", "start_boottime")?,
        dentry_inode: at("dentry", "d_inode")?,
        inode_ino: at("inode", "i_ino")?,
        inode_sb: at("inode", "i_sb")?,
        sb_dev: at("super_block", "s_dev")?,
        vma_file: at("vm_area_struct", "vm_file")?,
        file_f_inode: at("file", "f_inode")?,
        file_private_data: at("file", "private_data")?,
        inode_i_mode: at("inode", "i_mode")?,
        inode_i_rdev: at("inode", "i_rdev")?,
        socket_sk: at("socket", "sk")?,
        sock_family: at("sock", "__sk_common.skc_family")?,
        btf_socket: btf.struct_id("socket")?,
        task_nsproxy: at("task_struct", "nsproxy")?,
        nsproxy_mnt_ns: at("nsproxy", "mnt_ns")?,
        mnt_ns_inum: at("mnt_namespace", "ns.inum")?,
        task_thread_pid: at("task_struct", "thread_pid")?,
        pid_level: at("pid", "level")?,
        pid_numbers: at("pid", "numbers")?,
        upid_size: btf.struct_size("upid")?,
        upid_ns: at("upid", "ns")?,
        pid_ns_inum: at("pid_namespace", "ns.inum")?,
        task_flags: at("task_struct", "flags")?,
        // Optional: a kernel without io_uring has no io_kiocb, and its hook stays silent.
        io_kiocb_opcode: at("io_kiocb", "opcode").unwrap_or(OFFSET_UNKNOWN),
        io_kiocb_user_data: at("io_kiocb", "cqe.user_data").unwrap_or(OFFSET_UNKNOWN),
        regs_args: [
            syscall_arg(btf, 1)?,
            syscall_arg(btf, 2)?,
            syscall_arg(btf, 3)?,
            syscall_arg(btf, 4)?,
            syscall_arg(btf, 5)?,
            syscall_arg(btf, 6)?,
            syscall_arg(btf, 6)?,
            syscall_arg(btf, 6)?,
        ],
    })
}

/// Offset in `struct pt_regs` of the register holding syscall argument `n` (1-based) as the
/// syscall entry code saved it.
fn syscall_arg(btf: &KernelBtf, n: u32) -> Result<u32, BtfError> {
    #[cfg(target_arch = "x86_64")]
    {
        // x86_64 syscall convention: rdi, rsi, rdx, r10, r8, r9.
        let register = ["di", "si", "dx", "r10", "r8", "r9"]
            .get(n.wrapping_sub(1) as usize)
            .ok_or_else(|| BtfError::InvalidPath(format!("syscall argument {n}")))?;
        btf.member_offset("pt_regs", register)
    }
    #[cfg(target_arch = "aarch64")]
    {
        // arm64 keeps x0..x30 in `regs[31]`; x0 is overwritten by the return value at exit,
        // and the first argument survives in `orig_x0`.
        if n == 1 {
            return btf.member_offset("pt_regs", "orig_x0");
        }
        Ok(btf.member_offset("pt_regs", "regs")? + 8 * (n - 1))
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    compile_error!("syscall_arg: add this architecture's pt_regs argument registers");
}

fn malformed(message: String) -> BtfError {
    BtfError::Malformed(message)
}

fn read_u32(data: &[u8], at: usize) -> Result<u32, BtfError> {
    at.checked_add(4)
        .and_then(|end| data.get(at..end))
        .and_then(|bytes| bytes.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| {
            malformed(format!(
                "4-byte read at byte {at} is past the end ({} bytes)",
                data.len()
            ))
        })
}

/// Reads the (offset, length) pair at `field` of the header; sections are relative to the
/// end of the header.
fn section(
    data: &[u8],
    hdr_len: usize,
    field: usize,
    what: &str,
) -> Result<(usize, usize), BtfError> {
    let off = read_u32(data, field)? as usize;
    let len = read_u32(data, field + 4)? as usize;
    let start = hdr_len.checked_add(off);
    let end = start.and_then(|start| start.checked_add(len));
    match (start, end) {
        (Some(start), Some(end)) if end <= data.len() => Ok((start, end)),
        _ => Err(malformed(format!(
            "{what} section (offset {off}, length {len} after the {hdr_len}-byte header) runs \
             past the end of the {}-byte blob",
            data.len()
        ))),
    }
}

fn name_in(data: &[u8], str_start: usize, str_end: usize, name_off: u32) -> Result<&[u8], String> {
    let tail = str_start
        .checked_add(name_off as usize)
        .and_then(|start| data.get(start..str_end))
        .filter(|tail| !tail.is_empty())
        .ok_or_else(|| format!("name offset {name_off} is outside the string section"))?;
    let len = tail
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| format!("name at string offset {name_off} is not NUL-terminated"))?;
    tail.get(..len)
        .ok_or_else(|| format!("name at string offset {name_off}"))
}

/// `path` up to byte `end`, which always falls on a '.' boundary or the end.
fn prefix(path: &str, end: usize) -> String {
    path.get(..end).unwrap_or(path).to_owned()
}

fn kind_name(kind: u8) -> &'static str {
    match kind {
        0 => "void",
        KIND_INT => "int",
        KIND_PTR => "pointer",
        KIND_ARRAY => "array",
        KIND_STRUCT => "struct",
        KIND_UNION => "union",
        KIND_ENUM => "enum",
        KIND_FWD => "forward declaration",
        KIND_TYPEDEF => "typedef",
        KIND_VOLATILE => "volatile",
        KIND_CONST => "const",
        KIND_RESTRICT => "restrict",
        KIND_FUNC => "function",
        KIND_FUNC_PROTO => "function prototype",
        KIND_VAR => "variable",
        KIND_DATASEC => "data section",
        KIND_FLOAT => "float",
        KIND_DECL_TAG => "decl tag",
        KIND_TYPE_TAG => "type tag",
        KIND_ENUM64 => "enum64",
        _ => "unknown kind",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assembles a BTF blob: header, type section, string section, in that order, so any
    /// truncation cuts into a section the header announces.
    struct Blob {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Blob {
        fn new() -> Self {
            Self {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn name(&mut self, name: &str) -> u32 {
            if name.is_empty() {
                return 0;
            }
            let off = self.strings.len() as u32;
            self.strings.extend_from_slice(name.as_bytes());
            self.strings.push(0);
            off
        }

        fn words(&mut self, words: &[u32]) {
            for word in words {
                self.types.extend_from_slice(&word.to_le_bytes());
            }
        }

        fn ty(
            &mut self,
            name: &str,
            kind: u8,
            kind_flag: bool,
            vlen: u16,
            size_or_type: u32,
        ) -> u32 {
            let name_off = self.name(name);
            let info = (u32::from(kind) << 24) | (u32::from(kind_flag) << 31) | u32::from(vlen);
            self.words(&[name_off, info, size_or_type]);
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        /// A struct/union followed by its (name, type, offset word) members.
        fn composite(
            &mut self,
            name: &str,
            kind: u8,
            kind_flag: bool,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let id = self.ty(name, kind, kind_flag, members.len() as u16, size);
            for &(member, type_id, offset) in members {
                let name_off = self.name(member);
                self.words(&[name_off, type_id, offset]);
            }
            id
        }

        fn build(&self) -> Vec<u8> {
            let mut blob = Vec::new();
            blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
            blob.extend_from_slice(&[BTF_VERSION, 0]);
            let type_len = self.types.len() as u32;
            let str_len = self.strings.len() as u32;
            for word in [HEADER_LEN as u32, 0, type_len, type_len, str_len] {
                blob.extend_from_slice(&word.to_le_bytes());
            }
            blob.extend_from_slice(&self.types);
            blob.extend_from_slice(&self.strings);
            blob
        }
    }

    /// One of every kind before the structs, so a wrong trailing-data size for any kind
    /// misplaces the structs and fails the offset assertions.
    fn synthetic() -> Vec<u8> {
        let mut b = Blob::new();
        let int = b.ty("int", KIND_INT, false, 0, 4);
        b.words(&[(1 << 24) | 32]); // signed, 32 bits
        let int_ptr = b.ty("", KIND_PTR, false, 0, int);
        b.ty("", KIND_ARRAY, false, 0, 0);
        b.words(&[int, int, 4]);
        b.ty("color", KIND_ENUM, false, 2, 4);
        let (red, blue) = (b.name("RED"), b.name("BLUE"));
        b.words(&[red, 0, blue, 1]);
        let proto = b.ty("", KIND_FUNC_PROTO, false, 1, int);
        let arg = b.name("arg");
        b.words(&[arg, int]);
        b.ty("f", KIND_FUNC, false, 0, proto);
        let var = b.ty("v", KIND_VAR, false, 0, int);
        b.words(&[1]);
        b.ty(".data", KIND_DATASEC, false, 1, 4);
        b.words(&[var, 0, 4]);
        b.ty("double", KIND_FLOAT, false, 0, 8);
        b.ty("tag", KIND_DECL_TAG, false, 0, var);
        b.words(&[u32::MAX]);
        let user_ptr = b.ty("user", KIND_TYPE_TAG, false, 0, int_ptr);
        b.ty("big", KIND_ENUM64, false, 1, 8);
        let huge = b.name("HUGE");
        b.words(&[huge, 1, 2]);
        b.ty("outer", KIND_FWD, false, 0, 0);
        b.ty("outer", KIND_STRUCT, false, 0, 0); // empty definition: never picked
        b.ty("ghost", KIND_FWD, false, 0, 0);
        let anon = b.composite("", KIND_UNION, false, 4, &[("a", int, 0), ("b", int, 0)]);
        let qs = b.composite(
            "qs",
            KIND_STRUCT,
            false,
            16,
            &[("len", int, 0), ("name", user_ptr, 64)],
        );
        let const_qs = b.ty("", KIND_CONST, false, 0, qs);
        let qs_t = b.ty("qs_t", KIND_TYPEDEF, false, 0, const_qs);
        let volatile_qs_t = b.ty("", KIND_VOLATILE, false, 0, qs_t);
        b.composite(
            "outer",
            KIND_STRUCT,
            true,
            40,
            &[
                ("x", int, 0),
                ("", anon, 32),
                ("flags", int, (3 << 24) | 64),
                ("odd", int, 76),
                ("q", volatile_qs_t, 128),
                ("p", int_ptr, 256),
            ],
        );
        let u3 = b.ty("u3", KIND_INT, false, 0, 4);
        b.words(&[3]);
        b.composite(
            "legacy",
            KIND_STRUCT,
            false,
            8,
            &[("bits", u3, 0), ("whole", int, 32)],
        );
        b.composite("twin", KIND_STRUCT, false, 8, &[("m", int, 0)]);
        b.composite("twin", KIND_STRUCT, false, 8, &[("m", int, 32)]);
        b.composite("same", KIND_STRUCT, false, 8, &[("m", int, 32)]);
        b.composite("same", KIND_STRUCT, false, 8, &[("m", int, 32)]);
        b.composite("same", KIND_STRUCT, false, 8, &[("other", int, 0)]);
        b.build()
    }

    /// Every lookup the synthetic blob supports, for exercising mutated blobs.
    const LOOKUPS: &[(&str, &str)] = &[
        ("outer", "x"),
        ("outer", "a"),
        ("outer", "b"),
        ("outer", "flags"),
        ("outer", "odd"),
        ("outer", "q.len"),
        ("outer", "q.name"),
        ("outer", "q.nope"),
        ("outer", "p.x"),
        ("legacy", "bits"),
        ("twin", "m"),
        ("same", "m"),
        ("ghost", "x"),
    ];

    #[test]
    fn resolves_synthetic_offsets() {
        let btf = KernelBtf::from_bytes(synthetic()).unwrap();
        let at = |s: &str, p: &str| btf.member_offset(s, p);
        assert_eq!(at("outer", "x").unwrap(), 0);
        assert_eq!(at("outer", "a").unwrap(), 4, "through the anonymous union");
        assert_eq!(at("outer", "b").unwrap(), 4);
        assert_eq!(at("outer", "q").unwrap(), 16);
        assert_eq!(at("outer", "q.len").unwrap(), 16);
        assert_eq!(
            at("outer", "q.name").unwrap(),
            24,
            "through volatile/typedef/const"
        );
        assert_eq!(at("outer", "p").unwrap(), 32);
        assert_eq!(at("qs", "name").unwrap(), 8);
        assert_eq!(at("legacy", "whole").unwrap(), 4);
        assert_eq!(at("same", "m").unwrap(), 4, "agreeing duplicates resolve");
    }

    #[test]
    fn reports_what_cannot_be_resolved() {
        let btf = KernelBtf::from_bytes(synthetic()).unwrap();
        let at = |s: &str, p: &str| btf.member_offset(s, p);
        assert!(matches!(at("ghost", "x"), Err(BtfError::StructNotFound(s)) if s == "ghost"));
        assert!(matches!(
            at("color", "RED"),
            Err(BtfError::StructNotFound(_))
        ));
        assert!(matches!(
            at("nosuch", "x"),
            Err(BtfError::StructNotFound(_))
        ));
        assert!(matches!(
            at("outer", "nope"),
            Err(BtfError::MemberNotFound { structure, member }) if structure == "outer" && member == "nope"
        ));
        assert!(matches!(
            at("outer", "q.nope"),
            Err(BtfError::MemberNotFound { member, .. }) if member == "q.nope"
        ));
        assert!(matches!(
            at("outer", "flags"),
            Err(BtfError::Bitfield { member, .. }) if member == "flags"
        ));
        assert!(matches!(
            at("legacy", "bits"),
            Err(BtfError::Bitfield { .. })
        ));
        assert!(matches!(
            at("outer", "odd"),
            Err(BtfError::Unaligned { bit_offset: 76, .. })
        ));
        assert!(matches!(
            at("outer", "x.y"),
            Err(BtfError::NotComposite { member, kind: "int", .. }) if member == "x"
        ));
        assert!(matches!(
            at("outer", "p.x"),
            Err(BtfError::NotComposite {
                kind: "pointer",
                ..
            })
        ));
        assert!(matches!(
            at("twin", "m"),
            Err(BtfError::Ambiguous { offsets, .. }) if offsets == [0, 4]
        ));
        for bad in ["", ".x", "x.", "q..name"] {
            assert!(
                matches!(at("outer", bad), Err(BtfError::InvalidPath(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn rejects_truncated_and_garbage_input_without_panicking() {
        let blob = synthetic();
        for len in 0..blob.len() {
            let truncated = blob.get(..len).unwrap().to_vec();
            assert!(
                KernelBtf::from_bytes(truncated).is_err(),
                "truncated to {len} bytes"
            );
        }
        // Corrupt every byte in turn; parsing and lookups may fail but never panic or hang.
        for at in 0..blob.len() {
            for value in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut corrupt = blob.clone();
                corrupt[at] = value;
                if let Ok(btf) = KernelBtf::from_bytes(corrupt) {
                    for (structure, path) in LOOKUPS {
                        let _ = btf.member_offset(structure, path);
                    }
                }
            }
        }
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in [0, 1, 2, 23, 24, 25, 100, 4096] {
            let mut garbage: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (seed >> 56) as u8
                })
                .collect();
            assert!(KernelBtf::from_bytes(garbage.clone()).is_err());
            // Valid magic and version in front of garbage.
            if let Some(head) = garbage.get_mut(..4) {
                head.copy_from_slice(&[0x9f, 0xeb, 1, 0]);
                if let Ok(btf) = KernelBtf::from_bytes(garbage) {
                    let _ = btf.member_offset("outer", "x");
                }
            }
        }
    }

    #[test]
    fn rejects_unsupported_headers() {
        let blob = synthetic();
        let mut big_endian = blob.clone();
        big_endian.swap(0, 1);
        assert!(matches!(
            KernelBtf::from_bytes(big_endian),
            Err(BtfError::Unsupported(_))
        ));
        let mut version = blob.clone();
        version[2] = 2;
        assert!(matches!(
            KernelBtf::from_bytes(version),
            Err(BtfError::Unsupported(_))
        ));
        let mut b = Blob::new();
        b.ty("future", 25, false, 0, 0);
        assert!(matches!(
            KernelBtf::from_bytes(b.build()),
            Err(BtfError::Unsupported(_))
        ));
    }

    #[test]
    fn reference_cycles_are_errors_not_stack_overflows() {
        let mut b = Blob::new();
        let looped = b.ty("loop", KIND_TYPEDEF, false, 0, 1); // refers to itself
        assert_eq!(looped, 1);
        // Type 3 is an anonymous struct whose only member is itself, anonymously.
        b.composite("s", KIND_STRUCT, false, 4, &[("", 3, 0), ("t", looped, 0)]);
        b.composite("", KIND_STRUCT, false, 4, &[("", 3, 0)]);
        let btf = KernelBtf::from_bytes(b.build()).unwrap();
        assert!(matches!(
            btf.member_offset("s", "missing"),
            Err(BtfError::Malformed(_))
        ));
        assert!(matches!(
            btf.member_offset("s", "t.x"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn finds_type_ids_of_structs_and_functions() {
        let btf = KernelBtf::from_bytes(synthetic()).unwrap();
        let f = btf.func_id("f").unwrap();
        assert_eq!(btf.type_at(f).unwrap().kind(), KIND_FUNC);
        let qs = btf.struct_id("qs").unwrap();
        assert_eq!(btf.type_at(qs).unwrap().kind(), KIND_STRUCT);
        assert!(matches!(
            btf.struct_id("ghost"),
            Err(BtfError::StructNotFound(_))
        ));
        let err = btf.func_id("qs").unwrap_err();
        assert!(
            matches!(
                err,
                BtfError::TypeNotFound {
                    kind: "function",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("6.2"), "{err}");
    }

    #[test]
    fn missing_file_error_names_the_file_and_the_fix() {
        let err = KernelBtf::from_file(Path::new("/nonexistent/btf/vmlinux")).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("/nonexistent/btf/vmlinux"), "{message}");
        assert!(message.contains("CONFIG_DEBUG_INFO_BTF=y"), "{message}");
    }

    /// Needs the running kernel's BTF; fails (never skips) where it is missing.
    #[test]
    fn resolves_offsets_from_running_kernel() {
        let started = std::time::Instant::now();
        let btf = KernelBtf::from_file(Path::new(KernelBtf::VMLINUX)).unwrap_or_else(|e| {
            panic!(
                "this test needs {} (CONFIG_DEBUG_INFO_BTF=y): {e}",
                KernelBtf::VMLINUX
            )
        });
        let parsed = started.elapsed();
        let offsets = resolve_offsets(&btf).unwrap();
        let rdonly_cast = btf.func_id("bpf_rdonly_cast").unwrap();
        assert_eq!(btf.type_at(rdonly_cast).unwrap().kind(), KIND_FUNC);
        assert_eq!(btf.type_at(offsets.btf_file).unwrap().kind(), KIND_STRUCT);
        println!(
            "{btf:?} parsed in {parsed:?}, offsets resolved in {:?}",
            started.elapsed() - parsed
        );
        println!("{offsets:#?}");

        assert_eq!(offsets.magic, OFFSETS_MAGIC);
        assert_eq!(offsets.path_mnt, 0);
        assert_eq!(offsets.path_dentry, 8);
        assert_eq!(
            offsets.task_tgid,
            offsets.task_pid + 4,
            "pid and tgid are adjacent"
        );
        // `struct path root, pwd;` and `unsigned long arg_start, arg_end, ...;` are adjacent.
        assert_eq!(offsets.fs_pwd, offsets.fs_root + 16);
        assert_eq!(offsets.mm_arg_end, offsets.mm_arg_start + 8);
        // `unsigned int max_fds; struct file **fd;` open struct fdtable.
        assert_eq!(offsets.fdtable_max_fds, 0);
        assert_eq!(offsets.fdtable_fd, 8);
        // pt_regs keeps dx just below si (x86_64); regs[] is in order (arm64).
        #[cfg(target_arch = "x86_64")]
        assert_eq!(offsets.regs_arg2, offsets.regs_arg3 + 8);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(offsets.regs_arg3, offsets.regs_arg2 + 8);
        // The inline name follows the name's qstr; a file and a mount are distinct types.
        assert!(offsets.dentry_inline_name > offsets.dentry_name_ptr);
        assert_ne!(offsets.btf_file, offsets.btf_mount);
        // vfsmount.mnt_root and fdtable.max_fds are first members and mount.mnt may move;
        // every other field sits behind at least one earlier member.
        let KernelOffsets {
            magic: _,
            path_mnt: _,
            vfsmount_root: _,
            mount_mnt: _,
            fdtable_max_fds: _,
            // Type ids: any value (checked above).
            btf_file: _,
            btf_mount: _,
            task_pid,
            task_tgid,
            task_real_parent,
            task_mm,
            task_fs,
            task_exit_code,
            task_signal,
            signal_live,
            mm_arg_start,
            mm_arg_end,
            binprm_file,
            binprm_filename,
            file_f_path,
            fs_root,
            fs_pwd,
            path_dentry,
            dentry_parent,
            dentry_name_ptr,
            mount_parent,
            mount_mountpoint,
            task_files,
            files_fdt,
            fdtable_fd,
            file_f_flags,
            file_f_mode,
            regs_arg2,
            regs_arg3,
            dentry_name_len,
            dentry_inline_name,
            task_cred,
            cred_euid,
            cred_egid,
            cred_cap_effective,
            task_group_leader,
            task_start_time,
            dentry_inode,
            inode_ino: _,
            inode_sb,
            sb_dev,
            vma_file,
            file_f_inode,
            // `umode_t i_mode` opens struct inode.
            inode_i_mode: _,
            btf_socket: _,
            // Optional (io_uring may be compiled out); checked below when present.
            io_kiocb_opcode,
            io_kiocb_user_data,
            upid_size,
            regs_args,
            file_private_data,
            inode_i_rdev,
            socket_sk,
            sock_family,
            task_nsproxy,
            nsproxy_mnt_ns,
            mnt_ns_inum,
            task_thread_pid,
            pid_level,
            pid_numbers,
            upid_ns,
            pid_ns_inum,
            task_flags,
        } = offsets;
        assert_eq!(upid_size, 16, "struct upid is an int and a pointer");
        assert_eq!(btf.type_at(offsets.btf_socket).unwrap().kind(), KIND_STRUCT);
        for (i, arg) in regs_args.iter().enumerate() {
            assert_ne!(*arg, 0, "syscall argument {} resolved to 0", i + 1);
        }
        #[cfg(target_arch = "x86_64")]
        assert_eq!(regs_args[1], regs_arg2);
        if io_kiocb_opcode != OFFSET_UNKNOWN {
            assert_ne!(io_kiocb_user_data, OFFSET_UNKNOWN);
        }
        for (field, value) in [
            ("task_pid", task_pid),
            ("task_tgid", task_tgid),
            ("task_real_parent", task_real_parent),
            ("task_mm", task_mm),
            ("task_fs", task_fs),
            ("task_exit_code", task_exit_code),
            ("task_signal", task_signal),
            ("signal_live", signal_live),
            ("mm_arg_start", mm_arg_start),
            ("mm_arg_end", mm_arg_end),
            ("binprm_file", binprm_file),
            ("binprm_filename", binprm_filename),
            ("file_f_path", file_f_path),
            ("fs_root", fs_root),
            ("fs_pwd", fs_pwd),
            ("path_dentry", path_dentry),
            ("dentry_parent", dentry_parent),
            ("dentry_name_ptr", dentry_name_ptr),
            ("mount_parent", mount_parent),
            ("mount_mountpoint", mount_mountpoint),
            ("task_files", task_files),
            ("files_fdt", files_fdt),
            ("fdtable_fd", fdtable_fd),
            ("file_f_flags", file_f_flags),
            ("file_f_mode", file_f_mode),
            ("regs_arg2", regs_arg2),
            ("regs_arg3", regs_arg3),
            ("dentry_name_len", dentry_name_len),
            ("dentry_inline_name", dentry_inline_name),
            ("task_cred", task_cred),
            ("cred_euid", cred_euid),
            ("cred_egid", cred_egid),
            ("cred_cap_effective", cred_cap_effective),
            ("task_group_leader", task_group_leader),
            ("task_start_time", task_start_time),
            ("dentry_inode", dentry_inode),
            ("inode_sb", inode_sb),
            ("sb_dev", sb_dev),
            ("vma_file", vma_file),
            ("file_f_inode", file_f_inode),
            ("file_private_data", file_private_data),
            ("inode_i_rdev", inode_i_rdev),
            ("socket_sk", socket_sk),
            ("sock_family", sock_family),
            ("task_nsproxy", task_nsproxy),
            ("nsproxy_mnt_ns", nsproxy_mnt_ns),
            ("mnt_ns_inum", mnt_ns_inum),
            ("task_thread_pid", task_thread_pid),
            ("pid_level", pid_level),
            ("pid_numbers", pid_numbers),
            ("upid_ns", upid_ns),
            ("pid_ns_inum", pid_ns_inum),
            ("task_flags", task_flags),
        ] {
            assert_ne!(value, 0, "{field} resolved to 0");
        }
    }
}
