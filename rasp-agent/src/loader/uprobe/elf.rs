//! Reads what a uprobe target needs from an ELF file: the exported functions asked for (name,
//! virtual address, file offset, first bytes of code), the GNU build id and the version
//! definitions. Files come from untrusted containers and can be large, so the file is read
//! range by range (`object::ReadCache`, no mmap a truncation could turn into SIGBUS), each
//! table is size-checked before it is read, and a malformed file is an error, never a panic.

use std::{
    collections::HashSet,
    fmt,
    fs::File,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use object::{
    elf,
    read::elf::{FileHeader, ProgramHeader, SectionHeader, SectionTable, Sym},
    Endianness, ReadCache, ReadRef,
};

use super::prologue::{forward_call, Forwarding};

type Header = elf::FileHeader64<Endianness>;
type Data<'a> = &'a ReadCache<File>;

/// Files larger than this are not inspected (the largest real candidates, statically linked
/// runtimes such as node, are around 100 MiB).
pub const MAX_FILE_BYTES: u64 = 1 << 30;
/// `.dynsym` and its string table: libc's are ~100 KiB.
const MAX_DYNAMIC_TABLE_BYTES: u64 = 16 << 20;
/// `.symtab` and its string table, read only when `.dynsym` has none of the names asked for.
const MAX_STATIC_TABLE_BYTES: u64 = 64 << 20;
/// Note sections, version definitions.
const MAX_SMALL_SECTION_BYTES: u64 = 1 << 20;
/// Note sections looked at for the build id (real files have 2-4).
const MAX_NOTE_SECTIONS: usize = 16;
/// Code kept per function: enough to decode the prologue and to find branches back into it.
pub const MAX_CODE_BYTES: u64 = 4096;
/// Code read at a followed call's target, whose size no symbol gives: its prologue and the
/// start of its body (where branches back into the prologue would be).
const CALLEE_CODE_BYTES: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    #[error("cannot open {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a regular file")]
    NotRegular { path: PathBuf },
    #[error("{path} is {size} bytes, over the {MAX_FILE_BYTES}-byte inspection bound")]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path} is not a 64-bit x86-64 ELF file")]
    NotX86_64 { path: PathBuf },
    #[error("{path}: malformed ELF: {what}")]
    Malformed { path: PathBuf, what: String },
    #[error("{path}: {table} is {size} bytes, over the {limit}-byte bound")]
    TableTooLarge {
        path: PathBuf,
        table: &'static str,
        size: u64,
        limit: u64,
    },
}

/// Which symbol table a function was found in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SymbolTable {
    Dynsym,
    Symtab,
}

/// A defined, global or weak function symbol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSymbol {
    pub name: String,
    /// ELF virtual address (`st_value`).
    pub address: u64,
    /// `st_size` (0 when the toolchain did not record it).
    pub size: u64,
    /// Offset in the file of the first byte, computed as aya 0.14's symbol resolution does
    /// (`address - section.sh_addr + section.sh_offset` of the symbol's own section), so
    /// `UProbeAttachLocation::AbsoluteOffset(file_offset + n)` and
    /// `SymbolOffset(name, n)` name the same byte.
    pub file_offset: u64,
    pub table: SymbolTable,
    /// The first `min(size, MAX_CODE_BYTES)` bytes (at least a prologue window when the
    /// size is unknown), bounded by the end of the section.
    pub code: Vec<u8>,
}

/// A GNU build id (`NT_GNU_BUILD_ID`), shown as hex.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct BuildId(pub Vec<u8>);

impl fmt::Display for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in &self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BuildId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BuildId({self})")
    }
}

/// What was read from one ELF file.
#[derive(Debug, Clone)]
pub struct ElfImage {
    pub build_id: Option<BuildId>,
    /// The version definitions other than the file's own base name (`OPENSSL_3.0.0`),
    /// joined by `,`; `None` when the file defines none.
    pub version: Option<String>,
    /// An executable (`ET_EXEC`, or a PIE: it has `PT_INTERP`) rather than a library.
    pub is_executable: bool,
    /// The functions asked for that the file defines, in the order found.
    pub functions: Vec<FunctionSymbol>,
    /// For each function asked to be followed, the code its first direct call or jump
    /// lands on (`prologue::forward_call` with `Forwarding::Reaches`): an internal
    /// function that is not exported, named `caller>@address`.
    pub callees: Vec<Callee>,
}

/// Code a followed function hands over to.
#[derive(Debug, Clone)]
pub struct Callee {
    pub caller: String,
    pub function: FunctionSymbol,
}

impl ElfImage {
    pub fn function(&self, name: &str) -> Option<&FunctionSymbol> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// The code `caller`'s first direct call lands on, if `caller` was followed.
    pub fn callee_of(&self, caller: &str) -> Option<&FunctionSymbol> {
        self.callees
            .iter()
            .find(|c| c.caller == caller)
            .map(|c| &c.function)
    }
}

/// Reads `path` and returns the defined functions among `wanted` (from `.dynsym`; from
/// `.symtab` only when `.dynsym` has none of them, for statically linked executables that are
/// not stripped), and the callees of those among them named in `follow`. Blocking file I/O:
/// run it on a blocking task, not on the event path.
pub fn read_image(path: &Path, wanted: &[&str], follow: &[&str]) -> Result<ElfImage, ElfError> {
    // Non-blocking: a path swapped for a FIFO must not hang the reader (regular files
    // ignore the flag).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|source| ElfError::Open {
            path: path.to_owned(),
            source,
        })?;
    read_image_from(file, path, wanted, follow)
}

/// As `read_image`, from a file already opened (`path` names it in errors).
pub fn read_image_from(
    file: File,
    path: &Path,
    wanted: &[&str],
    follow: &[&str],
) -> Result<ElfImage, ElfError> {
    let metadata = file.metadata().map_err(|source| ElfError::Open {
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_file() {
        return Err(ElfError::NotRegular {
            path: path.to_owned(),
        });
    }
    let size = metadata.len();
    if size > MAX_FILE_BYTES {
        return Err(ElfError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let cache = ReadCache::new(file);
    let reader = ImageReader {
        path,
        data: &cache,
        size,
    };
    reader.read(wanted, follow)
}

struct ImageReader<'a> {
    path: &'a Path,
    data: Data<'a>,
    size: u64,
}

impl<'a> ImageReader<'a> {
    fn malformed(&self, what: impl fmt::Display) -> ElfError {
        ElfError::Malformed {
            path: self.path.to_owned(),
            what: what.to_string(),
        }
    }

    fn read(&self, wanted: &[&str], follow: &[&str]) -> Result<ElfImage, ElfError> {
        let header = Header::parse(self.data).map_err(|_| ElfError::NotX86_64 {
            path: self.path.to_owned(),
        })?;
        let endian = header.endian().map_err(|e| self.malformed(e))?;
        if header.e_machine.get(endian) != elf::EM_X86_64 {
            return Err(ElfError::NotX86_64 {
                path: self.path.to_owned(),
            });
        }
        let sections = header
            .sections(endian, self.data)
            .map_err(|e| self.malformed(e))?;
        let segments = header
            .program_headers(endian, self.data)
            .map_err(|e| self.malformed(e))?;
        let has_interp = segments
            .iter()
            .any(|segment| segment.p_type(endian) == elf::PT_INTERP);
        let is_executable = header.e_type.get(endian) == elf::ET_EXEC || has_interp;

        let wanted: HashSet<&[u8]> = wanted.iter().map(|name| name.as_bytes()).collect();
        let mut functions = self.functions(
            endian,
            &sections,
            elf::SHT_DYNSYM,
            &wanted,
            SymbolTable::Dynsym,
        )?;
        // `.symtab` only for executables (a statically linked OpenSSL): shared libraries
        // export what can be probed in `.dynsym`, and reading the full symbol table of every
        // unstripped library on the node cost the agent tens of MiB of peak memory.
        if functions.is_empty() && is_executable {
            functions = self.functions(
                endian,
                &sections,
                elf::SHT_SYMTAB,
                &wanted,
                SymbolTable::Symtab,
            )?;
        }
        let mut callees = Vec::new();
        for caller in functions
            .iter()
            .filter(|f| follow.contains(&f.name.as_str()))
        {
            let Ok(target) = forward_call(caller, Forwarding::Reaches) else {
                continue;
            };
            // A target outside the file's code is not followed: the caller keeps its probe.
            if let Some(function) = self.code_at(endian, &sections, target, caller)? {
                callees.push(Callee {
                    caller: caller.name.clone(),
                    function,
                });
            }
        }
        Ok(ElfImage {
            build_id: self.build_id(endian, &sections)?,
            version: self.version(endian, &sections)?,
            is_executable,
            functions,
            callees,
        })
    }

    /// The code at `address` (a call target inside `caller`'s image), as a function with no
    /// symbol: `CALLEE_CODE_BYTES` of it, bounded by its executable section.
    fn code_at(
        &self,
        endian: Endianness,
        sections: &SectionTable<'a, Header, Data<'a>>,
        address: u64,
        caller: &FunctionSymbol,
    ) -> Result<Option<FunctionSymbol>, ElfError> {
        let Some(section) = sections.iter().find(|section| {
            let start = section.sh_addr(endian);
            section.sh_type(endian) == elf::SHT_PROGBITS
                && section.sh_flags(endian) & u64::from(elf::SHF_EXECINSTR) != 0
                && address >= start
                && address - start < section.sh_size(endian)
        }) else {
            return Ok(None);
        };
        let within = address - section.sh_addr(endian);
        let Some(file_offset) = section
            .sh_offset(endian)
            .checked_add(within)
            .filter(|offset| *offset < self.size)
        else {
            return Ok(None);
        };
        let available = (section.sh_size(endian) - within).min(self.size - file_offset);
        let length = CALLEE_CODE_BYTES.min(available);
        let name = format!("{}>@{address:#x}", caller.name);
        let code = self
            .data
            .read_bytes_at(file_offset, length)
            .map_err(|()| self.malformed(format_args!("cannot read the code of {name}")))?
            .to_vec();
        Ok(Some(FunctionSymbol {
            name,
            address,
            size: 0,
            file_offset,
            table: caller.table,
            code,
        }))
    }

    /// Checks a table's size before `object` reads it into the cache.
    fn check_table(
        &self,
        endian: Endianness,
        sections: &SectionTable<'a, Header, Data<'a>>,
        kind: u32,
        table: &'static str,
        limit: u64,
    ) -> Result<bool, ElfError> {
        let Some(section) = sections
            .iter()
            .find(|section| section.sh_type(endian) == kind)
        else {
            return Ok(false);
        };
        let strings = sections
            .section(object::SectionIndex(section.sh_link(endian) as usize))
            .map_err(|e| self.malformed(e))?;
        for (name, size) in [
            (table, section.sh_size(endian)),
            ("its string table", strings.sh_size(endian)),
        ] {
            if size > limit {
                return Err(ElfError::TableTooLarge {
                    path: self.path.to_owned(),
                    table: name,
                    size,
                    limit,
                });
            }
        }
        Ok(true)
    }

    fn functions(
        &self,
        endian: Endianness,
        sections: &SectionTable<'a, Header, Data<'a>>,
        kind: u32,
        wanted: &HashSet<&[u8]>,
        table: SymbolTable,
    ) -> Result<Vec<FunctionSymbol>, ElfError> {
        let (name, limit) = match table {
            SymbolTable::Dynsym => (".dynsym", MAX_DYNAMIC_TABLE_BYTES),
            SymbolTable::Symtab => (".symtab", MAX_STATIC_TABLE_BYTES),
        };
        if !self.check_table(endian, sections, kind, name, limit)? {
            return Ok(Vec::new());
        }
        let symbols = sections
            .symbols(endian, self.data, kind)
            .map_err(|e| self.malformed(e))?;
        let mut found = Vec::new();
        let mut seen: HashSet<&[u8]> = HashSet::new();
        for symbol in symbols.iter() {
            let defined_function = symbol.st_type() == elf::STT_FUNC
                && matches!(symbol.st_bind(), elf::STB_GLOBAL | elf::STB_WEAK)
                && symbol.st_shndx(endian) != elf::SHN_UNDEF
                && symbol.st_shndx(endian) < elf::SHN_LORESERVE;
            if !defined_function {
                continue;
            }
            let Ok(symbol_name) = symbols.symbol_name(endian, symbol) else {
                continue;
            };
            // A symbol defined twice (two versions of one name): the first wins, as in aya.
            if !wanted.contains(symbol_name) || !seen.insert(symbol_name) {
                continue;
            }
            let section = sections
                .section(object::SectionIndex(symbol.st_shndx(endian) as usize))
                .map_err(|e| self.malformed(e))?;
            found.push(self.function(endian, symbol_name, symbol, section, table)?);
        }
        Ok(found)
    }

    fn function(
        &self,
        endian: Endianness,
        name: &[u8],
        symbol: &elf::Sym64<Endianness>,
        section: &elf::SectionHeader64<Endianness>,
        table: SymbolTable,
    ) -> Result<FunctionSymbol, ElfError> {
        let name = String::from_utf8_lossy(name).into_owned();
        let address = symbol.st_value(endian);
        let size = symbol.st_size(endian);
        let section_address = section.sh_addr(endian);
        let section_offset = section.sh_offset(endian);
        let section_size = section.sh_size(endian);
        if section.sh_type(endian) == elf::SHT_NOBITS {
            return Err(self.malformed(format_args!("{name} is in a section with no file bytes")));
        }
        let within = address
            .checked_sub(section_address)
            .filter(|relative| *relative < section_size)
            .ok_or_else(|| self.malformed(format_args!("{name} lies outside its section")))?;
        let file_offset = section_offset
            .checked_add(within)
            .filter(|offset| *offset < self.size)
            .ok_or_else(|| self.malformed(format_args!("{name} lies outside the file")))?;
        let wanted_bytes = if size == 0 {
            crate::loader::uprobe::prologue::WINDOW_BYTES as u64
        } else {
            size.min(MAX_CODE_BYTES)
        };
        let available = (section_size - within).min(self.size - file_offset);
        let length = wanted_bytes.min(available);
        let code = self
            .data
            .read_bytes_at(file_offset, length)
            .map_err(|()| self.malformed(format_args!("cannot read the code of {name}")))?
            .to_vec();
        Ok(FunctionSymbol {
            name,
            address,
            size,
            file_offset,
            table,
            code,
        })
    }

    fn build_id(
        &self,
        endian: Endianness,
        sections: &SectionTable<'a, Header, Data<'a>>,
    ) -> Result<Option<BuildId>, ElfError> {
        // A crafted file can declare thousands of overlapping note sections, each read into
        // the cache separately: look at the first few only.
        let notes = sections
            .iter()
            .filter(|section| section.sh_type(endian) == elf::SHT_NOTE)
            .take(MAX_NOTE_SECTIONS);
        for section in notes {
            if section.sh_type(endian) != elf::SHT_NOTE
                || section.sh_size(endian) > MAX_SMALL_SECTION_BYTES
            {
                continue;
            }
            let Some(mut notes) = section
                .notes(endian, self.data)
                .map_err(|e| self.malformed(e))?
            else {
                continue;
            };
            while let Some(note) = notes.next().map_err(|e| self.malformed(e))? {
                if note.name() == elf::ELF_NOTE_GNU && note.n_type(endian) == elf::NT_GNU_BUILD_ID {
                    return Ok(Some(BuildId(note.desc().to_vec())));
                }
            }
        }
        Ok(None)
    }

    fn version(
        &self,
        endian: Endianness,
        sections: &SectionTable<'a, Header, Data<'a>>,
    ) -> Result<Option<String>, ElfError> {
        let Some(section) = sections
            .iter()
            .find(|section| section.sh_type(endian) == elf::SHT_GNU_VERDEF)
        else {
            return Ok(None);
        };
        if section.sh_size(endian) > MAX_SMALL_SECTION_BYTES {
            return Ok(None);
        }
        let Some((mut definitions, strings_index)) = section
            .gnu_verdef(endian, self.data)
            .map_err(|e| self.malformed(e))?
        else {
            return Ok(None);
        };
        let strings = sections
            .strings(endian, self.data, strings_index)
            .map_err(|e| self.malformed(e))?;
        let mut names = Vec::new();
        // Bounded: a crafted vd_next chain cannot loop (it only moves forward) but can be long.
        for _ in 0..64 {
            let Some((definition, mut aux)) = definitions.next().map_err(|e| self.malformed(e))?
            else {
                break;
            };
            if definition.vd_flags.get(endian) & elf::VER_FLG_BASE != 0 {
                continue;
            }
            if let Some(first) = aux.next().map_err(|e| self.malformed(e))? {
                let name = first.name(endian, strings).map_err(|e| self.malformed(e))?;
                names.push(String::from_utf8_lossy(name).into_owned());
            }
        }
        Ok((!names.is_empty()).then(|| names.join(",")))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::{io::Write, process::Command};

    pub(crate) const LIBPQ: &str = "/usr/lib/x86_64-linux-gnu/libpq.so.5";
    pub(crate) const LIBSSL: &str = "/usr/lib/x86_64-linux-gnu/libssl.so.3";

    fn installed(path: &str) -> &Path {
        let path = Path::new(path);
        assert!(
            path.exists(),
            "{} missing: apt-get install -y libpq5 libssl3",
            path.display()
        );
        path
    }

    #[test]
    fn libpq_exports_query_functions_with_file_offsets() {
        let image = read_image(
            installed(LIBPQ),
            &["PQexec", "PQsendQuery", "PQsendPrepare", "no_such_fn"],
            &[],
        )
        .unwrap();
        assert_eq!(image.functions.len(), 3);
        assert!(image.function("no_such_fn").is_none());
        assert!(!image.is_executable);
        let build_id = image.build_id.as_ref().unwrap();
        assert_eq!(build_id.0.len(), 20);
        for function in &image.functions {
            assert_eq!(function.table, SymbolTable::Dynsym);
            assert!(function.size > 0);
            assert_eq!(
                function.code.len() as u64,
                function.size.min(MAX_CODE_BYTES)
            );
            // The file bytes at file_offset are the function's code: read them independently.
            let bytes = std::fs::read(LIBPQ).unwrap();
            let start = function.file_offset as usize;
            assert_eq!(
                &bytes[start..start + function.code.len()],
                &function.code[..]
            );
        }
    }

    #[test]
    fn libssl_has_openssl_version_definition() {
        let image = read_image(installed(LIBSSL), &["SSL_write", "SSL_read_ex"], &[]).unwrap();
        assert!(image.function("SSL_write").is_some());
        assert!(image.function("SSL_read_ex").is_some());
        let version = image.version.unwrap();
        assert!(version.starts_with("OPENSSL_3"), "{version}");
    }

    #[test]
    fn followed_functions_bring_their_callees_code() {
        let names = ["SSL_read", "SSL_read_ex", "SSL_write"];
        let image = read_image(installed(LIBSSL), &names, &["SSL_read", "SSL_read_ex"]).unwrap();
        assert!(image.callee_of("SSL_write").is_none(), "not followed");
        let bytes = std::fs::read(LIBSSL).unwrap();
        for caller in ["SSL_read", "SSL_read_ex"] {
            let callee = image.callee_of(caller).expect(caller);
            assert!(callee.name.starts_with(caller), "{}", callee.name);
            assert_eq!(callee.size, 0);
            let start = callee.file_offset as usize;
            assert_eq!(&bytes[start..start + callee.code.len()], &callee.code[..]);
        }
        // OpenSSL 3: both reach the one internal read function.
        assert_eq!(
            image.callee_of("SSL_read").unwrap().address,
            image.callee_of("SSL_read_ex").unwrap().address
        );
    }

    #[test]
    fn a_library_without_the_names_yields_none() {
        let image = read_image(Path::new("/bin/sleep"), &["SSL_write"], &[]).unwrap();
        assert!(image.functions.is_empty());
        assert!(image.is_executable);
    }

    fn temp_with(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(bytes).unwrap();
        file
    }

    #[test]
    fn only_regular_files_are_read() {
        let error = read_image(Path::new("/proc/self"), &["SSL_write"], &[]).unwrap_err();
        assert!(matches!(error, ElfError::NotRegular { .. }), "{error}");
        // A FIFO would block a plain open; this one returns at once.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        assert!(Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success());
        let error = read_image(&fifo, &["SSL_write"], &[]).unwrap_err();
        assert!(matches!(error, ElfError::NotRegular { .. }), "{error}");
    }

    #[test]
    fn garbage_and_empty_files_are_errors() {
        for bytes in [
            &b""[..],
            b"hello",
            &[0x7f, b'E', b'L', b'F', 2, 1, 1, 0][..],
        ] {
            let file = temp_with(bytes);
            let error = read_image(file.path(), &["SSL_write"], &[]).unwrap_err();
            assert!(matches!(error, ElfError::NotX86_64 { .. }), "{error}");
        }
    }

    #[test]
    fn truncated_and_corrupted_libraries_never_panic() {
        let real = std::fs::read(installed(LIBSSL)).unwrap();
        // Truncations at many lengths: each is an error or (when only the tail went) a result.
        for cut in [
            64,
            100,
            4096,
            real.len() / 3,
            real.len() / 2,
            real.len() - 1,
        ] {
            let file = temp_with(&real[..cut]);
            let result = read_image(file.path(), &["SSL_write", "SSL_read"], &["SSL_read"]);
            if cut < real.len() / 2 {
                assert!(result.is_err(), "cut at {cut} parsed");
            }
        }
        // Section headers pointing anywhere: overwrite e_shoff and section entries with noise.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for round in 0..200 {
            let mut bytes = real.clone();
            let shoff = u64::from_le_bytes(bytes[0x28..0x30].try_into().unwrap()) as usize;
            for _ in 0..8 {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let at = if round % 2 == 0 {
                    shoff + (state as usize % (bytes.len() - shoff))
                } else {
                    state as usize % 0x40
                };
                bytes[at] = (state >> 32) as u8;
            }
            let file = temp_with(&bytes);
            let _ = read_image(file.path(), &["SSL_write", "SSL_read"], &["SSL_read"]);
        }
    }
}
