//! Libraries loaded with dlopen at run time (libssl, libpq): no -dev package to build
//! against, and every call goes through the very file a uprobe is attached to.

use std::ffi::{c_void, CStr};
use std::path::PathBuf;

use anyhow::{bail, Result};

/// `dlopen(soname, RTLD_NOW | RTLD_LOCAL)`; never closed (the libraries register atexit
/// handlers). `package` names what to install when it is missing.
pub fn open(soname: &CStr, package: &str) -> Result<*mut c_void> {
    // SAFETY: soname is NUL-terminated; loading runs only the library's own initialisers.
    let handle = unsafe { libc::dlopen(soname.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
    if handle.is_null() {
        bail!(
            "cannot load {} (is the {package} package installed?): {}",
            soname.to_string_lossy(),
            error()
        );
    }
    Ok(handle)
}

/// Looks up `name` in `handle` (and the libraries it depends on) as a function pointer of
/// type `F`; `library` names the library in the error.
///
/// # Safety
/// `F` must be an `extern "C" fn` type matching the symbol's real C signature.
pub unsafe fn symbol<F: Copy>(handle: *mut c_void, library: &CStr, name: &CStr) -> Result<F> {
    debug_assert_eq!(size_of::<F>(), size_of::<*mut c_void>());
    // SAFETY: handle came from dlopen; name is NUL-terminated.
    let ptr = unsafe { libc::dlsym(handle, name.as_ptr()) };
    if ptr.is_null() {
        bail!(
            "{} has no symbol {}: {}",
            library.to_string_lossy(),
            name.to_string_lossy(),
            error()
        );
    }
    // SAFETY: the caller vouches that F is the symbol's function pointer type, and a
    // function pointer has the size of a data pointer on Linux.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&ptr) })
}

/// The file the dynamic linker mapped `addr` (a symbol of a loaded library) from.
pub fn mapped_path(addr: *const c_void) -> PathBuf {
    // SAFETY: Dl_info is plain data that dladdr fills in.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: addr is an address inside a loaded object; info is a valid out-pointer.
    if unsafe { libc::dladdr(addr, &mut info) } == 0 || info.dli_fname.is_null() {
        return PathBuf::from("?");
    }
    // SAFETY: dladdr set dli_fname to a NUL-terminated string owned by the loader.
    PathBuf::from(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned(),
    )
}

fn error() -> String {
    // SAFETY: dlerror returns null or a NUL-terminated string valid until the next dl call.
    let msg = unsafe { libc::dlerror() };
    if msg.is_null() {
        "no error reported".into()
    } else {
        // SAFETY: checked non-null above.
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    }
}
