//! Chooses where in a function a uprobe goes. The kernel emulates a few x86-64 instructions
//! at a uprobe (push, relative jmp/call/jcc, nops: ~0.4 µs a hit here) and single-steps every
//! other one out of line (~14 µs here, KERNEL.md). So the probe goes on the first emulated
//! instruction of the function's straight-line prefix, provided nothing before it has changed
//! the argument registers the program reads (or the stack pointer, when a return probe shares
//! the point); otherwise on the entry, single-stepped.
//!
//! What the kernel emulates (arch/x86/kernel/uprobes.c, 6.x): `branch_setup_xol_ops` takes
//! `jmp rel8/rel32`, `call rel32`, `jcc rel8/rel32` and opcode 0x90, refusing (the attach
//! fails) any of these with a 0x66 prefix; `push_setup_xol_ops` takes `push r64` in one byte,
//! or two with exactly REX 0x41. From 6.16 ("uprobes/x86: Add support to emulate NOP
//! instructions") an instruction whose bytes equal the kernel's canonical `x86_nops[len]`
//! (len 1..=8, `66 90`, `0f 1f 44 00 00`...) is emulated too, prefix or not. `endbr64` is
//! none of these: it is single-stepped, so a function opening with it is probed after it.
//! `uprobe_init_insn` refuses the ES/CS/SS/DS segment and LOCK prefixes outright.
//!
//! Measured on this 6.18 kernel (tracefs uprobe events, 200k calls of a one-instruction
//! function each): `push %rbp` 3.6 µs, `jmp` 3.1, `nop` 1.9, `nopl 0(%rax,%rax)` (5 bytes)
//! 2.2, `nopw` (6 bytes) 2.0, `66 90` 2.3 — emulated; `endbr64` 39 µs and `sub $0x18,%rsp`
//! 43 µs — single-stepped. So 6.18 does emulate the canonical nops (`CanonicalNops`).
//! On the system libraries, a ctypes loop of 100k calls: `PQsendQuery` at +0 36.5 µs a call,
//! at the chosen +5 (`jmp`) 4.8 µs; `SSL_free` at +0 32.5 µs, at the chosen +3 (`je`) 5.0 µs
//! (0.75 and 0.47 µs unprobed); every call hit exactly once at the chosen points.

use std::fmt;

use iced_x86::{
    Decoder, DecoderOptions, FlowControl, Formatter, GasFormatter, Instruction,
    InstructionInfoFactory, OpAccess, OpKind, Register,
};
use serde::Serialize;

use super::elf::FunctionSymbol;

/// How far into a function an attach point is looked for.
pub const WINDOW_BYTES: usize = 32;

/// An integer argument register of the SysV x86-64 calling convention.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ArgRegister {
    Rdi,
    Rsi,
    Rdx,
    Rcx,
    R8,
    R9,
}

impl ArgRegister {
    pub const ALL: [ArgRegister; 6] = [
        ArgRegister::Rdi,
        ArgRegister::Rsi,
        ArgRegister::Rdx,
        ArgRegister::Rcx,
        ArgRegister::R8,
        ArgRegister::R9,
    ];

    const fn bit(self) -> u8 {
        1 << self as u8
    }

    fn from_full(register: Register) -> Option<Self> {
        Some(match register {
            Register::RDI => ArgRegister::Rdi,
            Register::RSI => ArgRegister::Rsi,
            Register::RDX => ArgRegister::Rdx,
            Register::RCX => ArgRegister::Rcx,
            Register::R8 => ArgRegister::R8,
            Register::R9 => ArgRegister::R9,
            _ => return None,
        })
    }
}

impl fmt::Display for ArgRegister {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            ArgRegister::Rdi => "rdi",
            ArgRegister::Rsi => "rsi",
            ArgRegister::Rdx => "rdx",
            ArgRegister::Rcx => "rcx",
            ArgRegister::R8 => "r8",
            ArgRegister::R9 => "r9",
        };
        f.write_str(name)
    }
}

/// A set of argument registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegisterSet(u8);

impl RegisterSet {
    pub const EMPTY: RegisterSet = RegisterSet(0);

    pub const fn of(registers: &[ArgRegister]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < registers.len() {
            bits |= registers[i].bit();
            i += 1;
        }
        RegisterSet(bits)
    }

    pub const fn contains(self, register: ArgRegister) -> bool {
        self.0 & register.bit() != 0
    }

    pub fn iter(self) -> impl Iterator<Item = ArgRegister> {
        ArgRegister::ALL
            .into_iter()
            .filter(move |r| self.contains(*r))
    }
}

impl Serialize for RegisterSet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// What must still hold where the probe fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeRequirements {
    /// Argument registers the program reads.
    pub intact: RegisterSet,
    /// A return probe shares this point: the kernel hijacks the return address at `[rsp]`
    /// when the probe fires (`arch_uretprobe_hijack_return_addr`), so nothing before the
    /// point may have moved the stack pointer.
    pub stack_unchanged: bool,
}

/// Which instructions the running kernel emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EmulationModel {
    /// Before 6.16: push, relative branches, opcode 0x90.
    Baseline,
    /// 6.16 and later: also the canonical multi-byte nops.
    CanonicalNops,
}

impl EmulationModel {
    pub fn for_release(major: u32, minor: u32) -> Self {
        if (major, minor) >= (6, 16) {
            EmulationModel::CanonicalNops
        } else {
            EmulationModel::Baseline
        }
    }

    /// From `/proc/sys/kernel/osrelease`; `Baseline` (never wrong, at worst slower) when it
    /// cannot be read or parsed.
    pub fn of_running_kernel() -> Self {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|release| Self::parse_release(&release))
            .unwrap_or(EmulationModel::Baseline)
    }

    fn parse_release(release: &str) -> Option<Self> {
        let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(Self::for_release(major, minor))
    }
}

/// Where probes go: at the points `choose_attach_point` picks for the running kernel's
/// emulation (the default), or each at its function's entry, where a naive tool puts it —
/// kept so the benchmark can show what the choice saves (`RASP_UPROBE_AT_ENTRY=1`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub model: EmulationModel,
    pub at_entry: bool,
}

/// Diagnostic switch: every uprobe at its function's entry (`Placement::at_entry`).
pub const AT_ENTRY_ENV: &str = "RASP_UPROBE_AT_ENTRY";

impl Placement {
    pub const fn chosen(model: EmulationModel) -> Self {
        Placement {
            model,
            at_entry: false,
        }
    }

    /// The running kernel's model; at the entry when `RASP_UPROBE_AT_ENTRY=1`.
    pub fn of_running_kernel() -> Self {
        let at_entry = std::env::var_os(AT_ENTRY_ENV).is_some_and(|v| v == "1");
        if at_entry {
            tracing::warn!(
                env = AT_ENTRY_ENV,
                "diagnostic: every uprobe at its function's entry, not the chosen point"
            );
        }
        Placement {
            model: EmulationModel::of_running_kernel(),
            at_entry,
        }
    }

    /// `function`'s attach point under this placement.
    pub fn point(&self, function: &FunctionSymbol, requirements: ProbeRequirements) -> AttachPoint {
        if self.at_entry {
            entry_point(function, self.model, AttachReason::AtEntry)
        } else {
            choose_attach_point(function, requirements, self.model)
        }
    }
}

/// How the kernel handles a uprobe on one instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Emulation {
    /// `push r64`, emulated.
    Push,
    /// A relative jmp, call or jcc, emulated.
    Branch,
    /// A nop form the kernel skips.
    Nop,
    /// Executed out of line under the trap flag: the expensive path.
    SingleStep,
    /// The kernel refuses to probe it (bad prefix, 0x66 on a branch), or emulates it
    /// wrongly (`xchg %eax,%r8d` is opcode 0x90): never chosen.
    Refused,
}

impl Emulation {
    pub fn is_emulated(self) -> bool {
        matches!(self, Emulation::Push | Emulation::Branch | Emulation::Nop)
    }
}

/// The kernel's `x86_nops[1..=8]` for 64-bit (arch/x86/include/asm/nops.h).
const CANONICAL_NOPS: [&[u8]; 8] = [
    &[0x90],
    &[0x66, 0x90],
    &[0x0f, 0x1f, 0x00],
    &[0x0f, 0x1f, 0x40, 0x00],
    &[0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00],
    &[0x0f, 0x1f, 0x80, 0x00, 0x00, 0x00, 0x00],
    &[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00],
];

/// Classifies one whole instruction (its exact bytes) the way the kernel's uprobe code does.
pub fn classify(bytes: &[u8], model: EmulationModel) -> Emulation {
    let mut at = 0;
    let mut operand_size_prefix = false;
    let mut legacy_prefixes = false;
    while let Some(&byte) = bytes.get(at) {
        match byte {
            0x26 | 0x2e | 0x36 | 0x3e | 0xf0 => return Emulation::Refused,
            0x66 => operand_size_prefix = true,
            0x64 | 0x65 | 0x67 | 0xf2 | 0xf3 => {}
            _ => break,
        }
        legacy_prefixes = true;
        at += 1;
    }
    if model == EmulationModel::CanonicalNops && CANONICAL_NOPS.contains(&bytes) {
        return Emulation::Nop;
    }
    let rex = bytes.get(at).copied().filter(|b| (0x40..=0x4f).contains(b));
    if rex.is_some() {
        at += 1;
    }
    let Some(&opcode) = bytes.get(at) else {
        return Emulation::Refused;
    };
    let branch = match opcode {
        0xeb | 0xe9 | 0xe8 | 0x70..=0x7f => true,
        0x0f => matches!(bytes.get(at + 1), Some(0x80..=0x8f)),
        _ => false,
    };
    if branch {
        return if operand_size_prefix {
            Emulation::Refused
        } else {
            Emulation::Branch
        };
    }
    match opcode {
        0x90 if rex.is_some_and(|r| r & 1 != 0) => Emulation::Refused,
        0x90 if operand_size_prefix => Emulation::Refused,
        0x90 => Emulation::Nop,
        0x50..=0x57 => match (bytes.len(), rex) {
            (1, None) => Emulation::Push,
            (2, Some(0x41)) if !legacy_prefixes => Emulation::Push,
            _ => Emulation::SingleStep,
        },
        _ => Emulation::SingleStep,
    }
}

/// Why the attach point is where it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AttachReason {
    /// The first instruction is emulated.
    EntryEmulated,
    /// `skipped` instructions before the point change none of the required registers.
    AfterPrologue { skipped: u8 },
    /// No emulated instruction qualifies in the window: the entry, single-stepped.
    Fallback { stop: ScanStop },
    /// The entry, as asked (`Placement::at_entry`).
    AtEntry,
}

/// What ended the search for an emulated instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "cause", content = "register")]
pub enum ScanStop {
    WritesRegister(ArgRegister),
    MovesStack,
    ControlTransfer,
    /// A branch in the function lands inside the prefix: a probe past it would fire again.
    BranchTarget,
    WindowEnd,
    Undecodable,
}

impl fmt::Display for AttachReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttachReason::EntryEmulated => f.write_str("entry instruction is emulated"),
            AttachReason::AfterPrologue { skipped } => write!(
                f,
                "first emulated instruction, after {skipped} that leave the arguments intact"
            ),
            AttachReason::Fallback { stop } => {
                write!(f, "no emulated instruction usable (")?;
                match stop {
                    ScanStop::WritesRegister(register) => write!(f, "{register} overwritten")?,
                    ScanStop::MovesStack => f.write_str("stack pointer moved")?,
                    ScanStop::ControlTransfer => f.write_str("control leaves the prefix")?,
                    ScanStop::BranchTarget => f.write_str("a branch lands in the prefix")?,
                    ScanStop::WindowEnd => write!(f, "none in {WINDOW_BYTES} bytes")?,
                    ScanStop::Undecodable => f.write_str("undecodable bytes")?,
                }
                f.write_str("): entry, single-stepped")
            }
            AttachReason::AtEntry => write!(f, "entry, as {AT_ENTRY_ENV}=1 asks"),
        }
    }
}

/// Where one function's uprobe goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AttachPoint {
    pub symbol: String,
    /// For aya's `UProbeAttachLocation::SymbolOffset(symbol, offset_in_symbol)`.
    pub offset_in_symbol: u64,
    /// For aya's `UProbeAttachLocation::AbsoluteOffset(file_offset)`: no second ELF parse.
    pub file_offset: u64,
    /// The probed instruction, AT&T syntax.
    pub instruction: String,
    pub emulation: Emulation,
    pub emulated: bool,
    pub reason: AttachReason,
}

/// Chooses the attach point of `function` (whose `code` holds its first bytes).
pub fn choose_attach_point(
    function: &FunctionSymbol,
    requirements: ProbeRequirements,
    model: EmulationModel,
) -> AttachPoint {
    let window_end = function.code.len().min(WINDOW_BYTES);
    let first_target = first_branch_target_into(&function.code, function.address, window_end);
    let mut decoder = Decoder::with_ip(
        64,
        &function.code[..window_end],
        function.address,
        DecoderOptions::NONE,
    );
    let mut info = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    let mut skipped = 0u8;
    let stop = loop {
        if !decoder.can_decode() {
            break ScanStop::WindowEnd;
        }
        let offset = decoder.position();
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            break ScanStop::Undecodable;
        }
        if first_target.is_some_and(|target| offset >= target && offset > 0) {
            break ScanStop::BranchTarget;
        }
        let bytes = &function.code[offset..offset + instruction.len()];
        let emulation = classify(bytes, model);
        if emulation.is_emulated() {
            let reason = if offset == 0 {
                AttachReason::EntryEmulated
            } else {
                AttachReason::AfterPrologue { skipped }
            };
            return point(function, offset, &instruction, emulation, reason);
        }
        if instruction.flow_control() != FlowControl::Next {
            break ScanStop::ControlTransfer;
        }
        if let Some(stop) = clobbers(&mut info, &instruction, requirements) {
            break stop;
        }
        skipped = skipped.saturating_add(1);
    };
    entry_point(function, model, AttachReason::Fallback { stop })
}

/// Bytes scanned for a forwarding call (`forward_call`): a public OpenSSL function checks
/// its arguments and sets up a local or two before it calls the internal one.
pub const FORWARD_WINDOW_BYTES: usize = 64;

/// How `forward_call` judges the instructions before the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forwarding {
    /// A pure forward: every instruction before the call falls through and leaves `passes`
    /// alone, so the callee receives exactly the caller's arguments.
    Pure(RegisterSet),
    /// Only where the straight-line code goes: conditional branches are stepped over (an
    /// early return on a bad argument), registers may change.
    Reaches,
}

/// The target of `function`'s first direct `call rel32` or `jmp rel32`, judged by `how`;
/// otherwise why there is none. `SSL_read_ex` is a pure forward of its four arguments to
/// the internal read function that `SSL_read` calls too: one probe there, at an emulated
/// `push`, serves both with the return probe sharing it (`SSL_read` itself opens with `sub
/// $0x18,%rsp`, so a return probe there costs a single step on every call).
pub fn forward_call(function: &FunctionSymbol, how: Forwarding) -> Result<u64, ScanStop> {
    let window_end = function.code.len().min(FORWARD_WINDOW_BYTES);
    let mut decoder = Decoder::with_ip(
        64,
        &function.code[..window_end],
        function.address,
        DecoderOptions::NONE,
    );
    let mut info = InstructionInfoFactory::new();
    let mut instruction = Instruction::default();
    loop {
        if !decoder.can_decode() {
            return Err(ScanStop::WindowEnd);
        }
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            return Err(ScanStop::Undecodable);
        }
        let direct = matches!(
            instruction.op0_kind(),
            OpKind::NearBranch32 | OpKind::NearBranch64
        );
        match instruction.flow_control() {
            FlowControl::Call | FlowControl::UnconditionalBranch if direct => {
                return Ok(instruction.near_branch_target());
            }
            FlowControl::Next => {}
            FlowControl::ConditionalBranch if how == Forwarding::Reaches => continue,
            _ => return Err(ScanStop::ControlTransfer),
        }
        if let Forwarding::Pure(passes) = how {
            let requirements = ProbeRequirements {
                intact: passes,
                stack_unchanged: false,
            };
            if let Some(stop) = clobbers(&mut info, &instruction, requirements) {
                return Err(stop);
            }
        }
    }
}

/// The first instruction's attach point, whatever it costs.
fn entry_point(
    function: &FunctionSymbol,
    model: EmulationModel,
    reason: AttachReason,
) -> AttachPoint {
    let mut decoder = Decoder::with_ip(64, &function.code, function.address, DecoderOptions::NONE);
    let instruction = decoder.decode();
    let emulation = if instruction.is_invalid() {
        Emulation::Refused
    } else {
        classify(&function.code[..instruction.len()], model)
    };
    point(function, 0, &instruction, emulation, reason)
}

fn point(
    function: &FunctionSymbol,
    offset: usize,
    instruction: &Instruction,
    emulation: Emulation,
    reason: AttachReason,
) -> AttachPoint {
    let mut text = String::new();
    if instruction.is_invalid() {
        text.push_str("(undecodable)");
    } else {
        let mut formatter = GasFormatter::new();
        formatter.options_mut().set_uppercase_hex(false);
        formatter.options_mut().set_branch_leading_zeros(false);
        formatter.format(instruction, &mut text);
    }
    AttachPoint {
        symbol: function.name.clone(),
        offset_in_symbol: offset as u64,
        file_offset: function.file_offset + offset as u64,
        instruction: text,
        emulation,
        emulated: emulation.is_emulated(),
        reason,
    }
}

/// Whether executing `instruction` breaks a requirement.
fn clobbers(
    info: &mut InstructionInfoFactory,
    instruction: &Instruction,
    requirements: ProbeRequirements,
) -> Option<ScanStop> {
    if requirements.stack_unchanged && instruction.stack_pointer_increment() != 0 {
        return Some(ScanStop::MovesStack);
    }
    for used in info.info(instruction).used_registers() {
        let writes = matches!(
            used.access(),
            OpAccess::Write | OpAccess::CondWrite | OpAccess::ReadWrite | OpAccess::ReadCondWrite
        );
        if !writes {
            continue;
        }
        let full = used.register().full_register();
        if requirements.stack_unchanged && full == Register::RSP {
            return Some(ScanStop::MovesStack);
        }
        if let Some(register) = ArgRegister::from_full(full) {
            if requirements.intact.contains(register) {
                return Some(ScanStop::WritesRegister(register));
            }
        }
    }
    None
}

/// The smallest offset in `(0, window_end)` that a relative branch anywhere in `code`
/// targets. The whole decoded body is scanned linearly; bytes that are data decode as noise
/// and can only add targets, which makes the choice more conservative, never less.
fn first_branch_target_into(code: &[u8], address: u64, window_end: usize) -> Option<usize> {
    let mut decoder = Decoder::with_ip(64, code, address, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut first: Option<usize> = None;
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        let near = matches!(
            instruction.op0_kind(),
            OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64
        );
        if !near {
            continue;
        }
        let Some(offset) = instruction.near_branch_target().checked_sub(address) else {
            continue;
        };
        if offset > 0 && offset < window_end as u64 {
            let offset = offset as usize;
            first = Some(first.map_or(offset, |f| f.min(offset)));
        }
    }
    first
}

#[cfg(test)]
mod tests {
    use super::super::elf::{read_image, SymbolTable};
    use super::*;

    const MODEL: EmulationModel = EmulationModel::CanonicalNops;
    const QUERY: ProbeRequirements = ProbeRequirements {
        intact: RegisterSet::of(&[ArgRegister::Rdi, ArgRegister::Rsi]),
        stack_unchanged: false,
    };
    const TLS_WRITE: ProbeRequirements = ProbeRequirements {
        intact: RegisterSet::of(&[ArgRegister::Rdi, ArgRegister::Rsi, ArgRegister::Rdx]),
        stack_unchanged: false,
    };

    fn function(code: &[u8]) -> FunctionSymbol {
        FunctionSymbol {
            name: "f".into(),
            address: 0x1000,
            size: code.len() as u64,
            file_offset: 0x200,
            table: SymbolTable::Dynsym,
            code: code.to_vec(),
        }
    }

    #[test]
    fn classifies_what_the_kernel_emulates() {
        let cases: &[(&[u8], Emulation)] = &[
            (&[0x55], Emulation::Push),                     // push %rbp
            (&[0x41, 0x54], Emulation::Push),               // push %r12
            (&[0x48, 0x50], Emulation::SingleStep),         // rex.W push: not 0x41
            (&[0x66, 0x50], Emulation::SingleStep),         // push %ax
            (&[0xe9, 1, 0, 0, 0], Emulation::Branch),       // jmp rel32
            (&[0xeb, 0x10], Emulation::Branch),             // jmp rel8
            (&[0xe8, 1, 0, 0, 0], Emulation::Branch),       // call rel32
            (&[0x74, 0x23], Emulation::Branch),             // je rel8
            (&[0x0f, 0x84, 1, 0, 0, 0], Emulation::Branch), // je rel32
            (&[0x66, 0xe8, 1, 0], Emulation::Refused),      // callw
            (&[0xf2, 0xe9, 1, 0, 0, 0], Emulation::Branch), // bnd jmp
            (&[0x90], Emulation::Nop),
            (&[0x41, 0x90], Emulation::Refused), // xchg %eax,%r8d
            (&[0x0f, 0x1f, 0x44, 0x00, 0x00], Emulation::Nop),
            (&[0x66, 0x0f, 0x1f, 0x44, 0x00, 0x00], Emulation::Nop),
            (&[0xf3, 0x0f, 0x1e, 0xfa], Emulation::SingleStep), // endbr64
            (&[0xba, 1, 0, 0, 0], Emulation::SingleStep),       // mov $1,%edx
            (&[0x48, 0x83, 0xec, 0x18], Emulation::SingleStep), // sub $0x18,%rsp
            (&[0xf0, 0x48, 0x0f, 0xb1, 0x0a], Emulation::Refused), // lock cmpxchg
            (&[0x3e, 0xff, 0xe0], Emulation::Refused),          // notrack jmp *%rax
        ];
        for (bytes, expected) in cases {
            assert_eq!(classify(bytes, MODEL), *expected, "{bytes:02x?}");
        }
        // Before 6.16 multi-byte nops are single-stepped and 66 90 is refused.
        let baseline = EmulationModel::Baseline;
        assert_eq!(
            classify(&[0x0f, 0x1f, 0x44, 0, 0], baseline),
            Emulation::SingleStep
        );
        assert_eq!(classify(&[0x66, 0x90], baseline), Emulation::Refused);
        assert_eq!(classify(&[0x66, 0x90], MODEL), Emulation::Nop);
    }

    #[test]
    fn parses_kernel_releases() {
        assert_eq!(
            EmulationModel::parse_release("6.18.0-rasp\n"),
            Some(EmulationModel::CanonicalNops)
        );
        assert_eq!(
            EmulationModel::parse_release("6.1.0-27-amd64"),
            Some(EmulationModel::Baseline)
        );
        assert_eq!(EmulationModel::parse_release("garbage"), None);
    }

    #[test]
    fn push_at_entry_is_chosen_at_once() {
        // push %rbp; mov %rsp,%rbp
        let point = choose_attach_point(&function(&[0x55, 0x48, 0x89, 0xe5]), QUERY, MODEL);
        assert_eq!(point.offset_in_symbol, 0);
        assert_eq!(point.file_offset, 0x200);
        assert!(point.emulated);
        assert_eq!(point.reason, AttachReason::EntryEmulated);
        assert_eq!(point.instruction, "push %rbp");
    }

    #[test]
    fn skips_an_immediate_load_of_a_register_not_needed() {
        // mov $1,%edx; jmp rel32 — PQsendQuery's shape: rdx is not one of its arguments.
        let code = [0xba, 1, 0, 0, 0, 0xe9, 0xa6, 0xeb, 0xff, 0xff];
        let point = choose_attach_point(&function(&code), QUERY, MODEL);
        assert_eq!(point.offset_in_symbol, 5);
        assert_eq!(point.file_offset, 0x205);
        assert_eq!(point.emulation, Emulation::Branch);
        assert_eq!(point.reason, AttachReason::AfterPrologue { skipped: 1 });
        // The same code when rdx is an argument: the entry, single-stepped.
        let point = choose_attach_point(&function(&code), TLS_WRITE, MODEL);
        assert_eq!(point.offset_in_symbol, 0);
        assert!(!point.emulated);
        assert_eq!(
            point.reason,
            AttachReason::Fallback {
                stop: ScanStop::WritesRegister(ArgRegister::Rdx)
            }
        );
    }

    #[test]
    fn sub_rsp_is_skipped_unless_a_return_probe_shares_the_point() {
        // sub $0x18,%rsp; xor %eax,%eax; test %edx,%edx; js +0x2f
        let code = [0x48, 0x83, 0xec, 0x18, 0x31, 0xc0, 0x85, 0xd2, 0x78, 0x2f];
        let point = choose_attach_point(&function(&code), TLS_WRITE, MODEL);
        assert_eq!(point.offset_in_symbol, 8);
        assert_eq!(point.reason, AttachReason::AfterPrologue { skipped: 3 });
        let with_return = ProbeRequirements {
            stack_unchanged: true,
            ..TLS_WRITE
        };
        let point = choose_attach_point(&function(&code), with_return, MODEL);
        assert_eq!(point.offset_in_symbol, 0);
        assert_eq!(
            point.reason,
            AttachReason::Fallback {
                stop: ScanStop::MovesStack
            }
        );
    }

    #[test]
    fn endbr64_is_stepped_over_to_the_push() {
        // endbr64; push %rbp
        let point = choose_attach_point(&function(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]), QUERY, MODEL);
        assert_eq!(point.offset_in_symbol, 4);
        assert_eq!(point.instruction, "push %rbp");
        // A return probe may share it too: endbr64 does not move rsp.
        let with_return = ProbeRequirements {
            stack_unchanged: true,
            ..QUERY
        };
        let point = choose_attach_point(
            &function(&[0xf3, 0x0f, 0x1e, 0xfa, 0x55]),
            with_return,
            MODEL,
        );
        assert_eq!(point.offset_in_symbol, 4);
    }

    #[test]
    fn stops_at_control_transfer_and_branch_targets() {
        // ret at +0: a control transfer, not emulated.
        let point = choose_attach_point(&function(&[0xc3, 0x55]), QUERY, MODEL);
        assert_eq!(point.offset_in_symbol, 0);
        assert_eq!(
            point.reason,
            AttachReason::Fallback {
                stop: ScanStop::ControlTransfer
            }
        );
        // mov $1,%eax; push %rbp; ...; jmp back to +5 (the push): probing the push would fire
        // on every loop iteration.
        let code = [0xb8, 1, 0, 0, 0, 0x55, 0x90, 0xeb, 0xfc];
        let point = choose_attach_point(&function(&code), QUERY, MODEL);
        assert_eq!(point.offset_in_symbol, 0);
        assert_eq!(
            point.reason,
            AttachReason::Fallback {
                stop: ScanStop::BranchTarget
            }
        );
    }

    #[test]
    fn forwarding_calls_are_found_and_judged() {
        let four = RegisterSet::of(&[
            ArgRegister::Rdi,
            ArgRegister::Rsi,
            ArgRegister::Rdx,
            ArgRegister::Rcx,
        ]);
        // SSL_read_ex's shape: sub $0x8,%rsp; call +0x100 — a pure forward.
        let ex = function(&[0x48, 0x83, 0xec, 0x08, 0xe8, 0x00, 0x01, 0, 0]);
        assert_eq!(
            forward_call(&ex, Forwarding::Pure(four)),
            Ok(0x1009 + 0x100)
        );
        // A tail call (jmp rel32) forwards too.
        let tail = function(&[0xe9, 0x10, 0, 0, 0]);
        assert_eq!(forward_call(&tail, Forwarding::Pure(four)), Ok(0x1015));
        // SSL_read's: test %edx,%edx; js; mov %rsp,%rcx; call — not pure (the branch, and
        // rcx changes), but it reaches the call.
        let int = function(&[
            0x85, 0xd2, 0x78, 0x20, 0x48, 0x89, 0xe1, 0xe8, 0x00, 0x02, 0, 0,
        ]);
        assert_eq!(
            forward_call(&int, Forwarding::Pure(four)),
            Err(ScanStop::ControlTransfer)
        );
        assert_eq!(forward_call(&int, Forwarding::Reaches), Ok(0x100c + 0x200));
        // rcx rewritten before the call: not a pure forward of four arguments.
        let flags = function(&[0x31, 0xc9, 0xe8, 0x00, 0x01, 0, 0]);
        assert_eq!(
            forward_call(&flags, Forwarding::Pure(four)),
            Err(ScanStop::WritesRegister(ArgRegister::Rcx))
        );
        // No call in the window, an indirect call, a return.
        assert_eq!(
            forward_call(&function(&[0x90; 80]), Forwarding::Reaches),
            Err(ScanStop::WindowEnd)
        );
        assert_eq!(
            forward_call(&function(&[0xff, 0xd0]), Forwarding::Reaches),
            Err(ScanStop::ControlTransfer)
        );
        assert_eq!(
            forward_call(&function(&[0xc3]), Forwarding::Reaches),
            Err(ScanStop::ControlTransfer)
        );
    }

    #[test]
    fn the_naive_placement_is_every_entry() {
        let naive = Placement {
            model: MODEL,
            at_entry: true,
        };
        // mov $1,%edx; jmp: the chosen point is +5, the naive one +0.
        let code = [0xba, 1, 0, 0, 0, 0xe9, 0xa6, 0xeb, 0xff, 0xff];
        assert_eq!(
            Placement::chosen(MODEL)
                .point(&function(&code), QUERY)
                .offset_in_symbol,
            5
        );
        let point = naive.point(&function(&code), QUERY);
        assert_eq!(point.offset_in_symbol, 0);
        assert_eq!(point.reason, AttachReason::AtEntry);
        assert!(!point.emulated);
    }

    #[test]
    fn undecodable_and_empty_code_fall_back_without_panicking() {
        for code in [&[][..], &[0x0f][..], &[0xba, 1][..]] {
            let point = choose_attach_point(&function(code), QUERY, MODEL);
            assert_eq!(point.offset_in_symbol, 0);
            assert!(!point.emulated);
        }
    }

    #[test]
    fn random_code_never_panics_and_keeps_the_invariants() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut code = vec![0u8; 40];
            for byte in &mut code {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
            let code = &code[..(state as usize % 41)];
            for req in [QUERY, TLS_WRITE] {
                let f = function(code);
                let point = choose_attach_point(&f, req, MODEL);
                assert!(point.offset_in_symbol < WINDOW_BYTES as u64 || code.is_empty());
                if !code.is_empty() {
                    assert_invariants(&f, req, &point);
                }
            }
        }
    }

    /// Debian bookworm's builds measured for KERNEL.md; other builds check only invariants.
    const DEBIAN_LIBPQ_BUILD_ID: &str = "181dbe0347a9ccef5f8dbe207a524e46922fbe8e";
    const DEBIAN_LIBSSL_BUILD_ID: &str = "c0b9959017cf64b03131964573944fc72958bb2b";

    /// The chosen point is emulated, or the entry; every instruction before it (decoded
    /// independently here) leaves the required registers and, if asked, the stack alone.
    fn assert_invariants(function: &FunctionSymbol, req: ProbeRequirements, point: &AttachPoint) {
        let offset = point.offset_in_symbol as usize;
        assert!(point.emulated || offset == 0, "{point:?}");
        let mut decoder = Decoder::with_ip(
            64,
            &function.code[..offset],
            function.address,
            DecoderOptions::NONE,
        );
        let mut info = InstructionInfoFactory::new();
        for instruction in &mut decoder {
            assert_eq!(instruction.flow_control(), FlowControl::Next);
            assert_eq!(clobbers(&mut info, &instruction, req), None, "{point:?}");
        }
        assert_eq!(point.file_offset, function.file_offset + offset as u64);
    }

    fn choose_in(path: &str, name: &str, req: ProbeRequirements) -> (String, AttachPoint) {
        let image = read_image(std::path::Path::new(path), &[name], &[]).unwrap();
        let function = image.function(name).unwrap();
        let point = choose_attach_point(function, req, MODEL);
        assert_invariants(function, req, &point);
        let build_id = image.build_id.map(|b| b.to_string()).unwrap_or_default();
        (build_id, point)
    }

    #[test]
    fn debian_libpq_prologues() {
        let path = super::super::elf::tests::LIBPQ;
        let (build_id, send_query) = choose_in(path, "PQsendQuery", QUERY);
        let (_, exec) = choose_in(path, "PQexec", QUERY);
        let prepare_req = ProbeRequirements {
            intact: RegisterSet::of(&[ArgRegister::Rdi, ArgRegister::Rsi, ArgRegister::Rdx]),
            stack_unchanged: false,
        };
        let (_, send_prepare) = choose_in(path, "PQsendPrepare", prepare_req);
        assert!(send_query.emulated && exec.emulated && send_prepare.emulated);
        if build_id == DEBIAN_LIBPQ_BUILD_ID {
            assert_eq!(send_query.offset_in_symbol, 5);
            assert!(send_query.instruction.starts_with("jmp"), "{send_query:?}");
            assert_eq!(exec.offset_in_symbol, 0);
            assert_eq!(exec.instruction, "push %rbp");
        }
    }

    #[test]
    fn debian_libssl_prologues() {
        let path = super::super::elf::tests::LIBSSL;
        let (build_id, write) = choose_in(path, "SSL_write", TLS_WRITE);
        let read_req = ProbeRequirements {
            stack_unchanged: true,
            ..TLS_WRITE
        };
        let (_, read) = choose_in(path, "SSL_read", read_req);
        if build_id == DEBIAN_LIBSSL_BUILD_ID {
            // sub $0x18,%rsp ... test %edx,%edx; js: the js at +0x16 sees rdi, rsi, rdx intact.
            assert_eq!(write.offset_in_symbol, 0x16, "{write:?}");
            assert_eq!(write.emulation, Emulation::Branch);
            // SSL_read's return probe needs the entry rsp: +0, single-stepped.
            assert_eq!(read.offset_in_symbol, 0);
            assert!(!read.emulated);
        }
    }
}
