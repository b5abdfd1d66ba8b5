//! The system's libssl.so.3, loaded with dlopen at run time: no libssl-dev to build
//! against, and every SSL_write goes through the very library a uprobe on
//! `libssl.so.3:SSL_write` is attached to. Only the handful of calls a TLS client needs
//! are declared here, with the signatures of OpenSSL 3's `ssl.h`/`err.h`.

use std::ffi::{c_char, c_int, c_ulong, c_void, CStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::ptr::NonNull;

use anyhow::{bail, Result};

use super::dl::{self, symbol};

const SONAME: &CStr = c"libssl.so.3";
/// `SSL_ERROR_*` codes that mean "look at the error queue / errno" (ssl.h).
const SSL_ERROR_SYSCALL: c_int = 5;
const SSL_ERROR_ZERO_RETURN: c_int = 6;

type OpensslInitSsl = unsafe extern "C" fn(u64, *const c_void) -> c_int;
type TlsClientMethod = unsafe extern "C" fn() -> *const c_void;
type SslCtxNew = unsafe extern "C" fn(*const c_void) -> *mut c_void;
type SslCtxFree = unsafe extern "C" fn(*mut c_void);
type SslNew = unsafe extern "C" fn(*mut c_void) -> *mut c_void;
type SslSetFd = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
type SslConnect = unsafe extern "C" fn(*mut c_void) -> c_int;
type SslWrite = unsafe extern "C" fn(*mut c_void, *const c_void, c_int) -> c_int;
type SslShutdown = unsafe extern "C" fn(*mut c_void) -> c_int;
type SslFree = unsafe extern "C" fn(*mut c_void);
type SslGetError = unsafe extern "C" fn(*const c_void, c_int) -> c_int;
type ErrGetError = unsafe extern "C" fn() -> c_ulong;
type ErrErrorStringN = unsafe extern "C" fn(c_ulong, *mut c_char, usize);

/// The loaded library and the entry points this workload calls. It stays loaded until
/// the process exits (never dlclosed: OpenSSL registers atexit handlers).
pub struct LibSsl {
    tls_client_method: TlsClientMethod,
    ssl_ctx_new: SslCtxNew,
    ssl_ctx_free: SslCtxFree,
    ssl_new: SslNew,
    ssl_set_fd: SslSetFd,
    ssl_connect: SslConnect,
    ssl_write: SslWrite,
    ssl_shutdown: SslShutdown,
    ssl_free: SslFree,
    ssl_get_error: SslGetError,
    err_get_error: ErrGetError,
    err_error_string_n: ErrErrorStringN,
    /// The file the dynamic linker actually mapped, for the result line.
    pub path: PathBuf,
}

impl LibSsl {
    /// dlopens libssl.so.3 and resolves every entry point, then initialises OpenSSL.
    pub fn load() -> Result<Self> {
        let handle = dl::open(SONAME, "libssl3")?;
        // SAFETY (every symbol call): each type alias above is the C prototype from
        // OpenSSL 3's headers for the symbol named next to it.
        let lib = unsafe {
            LibSsl {
                tls_client_method: symbol(handle, SONAME, c"TLS_client_method")?,
                ssl_ctx_new: symbol(handle, SONAME, c"SSL_CTX_new")?,
                ssl_ctx_free: symbol(handle, SONAME, c"SSL_CTX_free")?,
                ssl_new: symbol(handle, SONAME, c"SSL_new")?,
                ssl_set_fd: symbol(handle, SONAME, c"SSL_set_fd")?,
                ssl_connect: symbol(handle, SONAME, c"SSL_connect")?,
                ssl_write: symbol(handle, SONAME, c"SSL_write")?,
                ssl_shutdown: symbol(handle, SONAME, c"SSL_shutdown")?,
                ssl_free: symbol(handle, SONAME, c"SSL_free")?,
                ssl_get_error: symbol(handle, SONAME, c"SSL_get_error")?,
                err_get_error: symbol(handle, SONAME, c"ERR_get_error")?,
                err_error_string_n: symbol(handle, SONAME, c"ERR_error_string_n")?,
                path: dl::mapped_path(symbol::<*mut c_void>(handle, SONAME, c"SSL_write")?),
            }
        };
        // SAFETY: OPENSSL_init_ssl(0, NULL) asks for the default initialisation.
        let init: OpensslInitSsl = unsafe { symbol(handle, SONAME, c"OPENSSL_init_ssl")? };
        if unsafe { init(0, std::ptr::null()) } != 1 {
            bail!("OPENSSL_init_ssl failed: {}", lib.error_queue());
        }
        Ok(lib)
    }

    /// A client context with OpenSSL's defaults: TLS 1.2–1.3, no certificate verification
    /// (the local server's certificate is self-signed) and no client-side session cache,
    /// so every connection made from it is a full handshake.
    pub fn client_context(&self) -> Result<SslContext<'_>> {
        // SAFETY: plain constructors; a null result is checked.
        let ctx = unsafe { (self.ssl_ctx_new)((self.tls_client_method)()) };
        match NonNull::new(ctx) {
            Some(ctx) => Ok(SslContext { lib: self, ctx }),
            None => bail!("SSL_CTX_new failed: {}", self.error_queue()),
        }
    }

    /// Drains OpenSSL's thread-local error queue into one message.
    fn error_queue(&self) -> String {
        let mut messages = Vec::new();
        loop {
            // SAFETY: reads and pops this thread's error queue.
            let code = unsafe { (self.err_get_error)() };
            if code == 0 {
                break;
            }
            let mut buf = [0 as c_char; 256];
            // SAFETY: buf is writable for its full length, which is passed with it.
            unsafe { (self.err_error_string_n)(code, buf.as_mut_ptr(), buf.len()) };
            // SAFETY: ERR_error_string_n always NUL-terminates within the given length.
            let text = unsafe { CStr::from_ptr(buf.as_ptr()) };
            messages.push(text.to_string_lossy().into_owned());
        }
        if messages.is_empty() {
            "no OpenSSL error queued".into()
        } else {
            messages.join("; ")
        }
    }
}

/// An `SSL_CTX`, freed on drop.
pub struct SslContext<'lib> {
    lib: &'lib LibSsl,
    ctx: NonNull<c_void>,
}

impl SslContext<'_> {
    /// Runs a full client handshake over `sock`, which the session then owns.
    pub fn connect(&self, sock: OwnedFd) -> io::Result<SslSession<'_>> {
        let lib = self.lib;
        // SAFETY: ctx is a live SSL_CTX; a null result is checked.
        let ssl = NonNull::new(unsafe { (lib.ssl_new)(self.ctx.as_ptr()) })
            .ok_or_else(|| io::Error::other(format!("SSL_new: {}", lib.error_queue())))?;
        let session = SslSession { lib, ssl, sock };
        // SAFETY: ssl is live; the fd stays open as long as the session (it owns it).
        if unsafe { (lib.ssl_set_fd)(ssl.as_ptr(), session.sock.as_raw_fd()) } != 1 {
            return Err(io::Error::other(format!(
                "SSL_set_fd: {}",
                lib.error_queue()
            )));
        }
        // SAFETY: ssl is live with a blocking socket attached.
        let ret = unsafe { (lib.ssl_connect)(ssl.as_ptr()) };
        if ret != 1 {
            return Err(session.failure("SSL_connect", ret));
        }
        Ok(session)
    }
}

impl Drop for SslContext<'_> {
    fn drop(&mut self) {
        // SAFETY: ctx is live and freed once; sessions borrow self, so none outlives it.
        unsafe { (self.lib.ssl_ctx_free)(self.ctx.as_ptr()) }
    }
}

/// An established client session over a socket it owns; freed (and the socket closed)
/// on drop.
pub struct SslSession<'ctx> {
    lib: &'ctx LibSsl,
    ssl: NonNull<c_void>,
    sock: OwnedFd,
}

impl SslSession<'_> {
    /// One SSL_write of all of `buf` (blocking, partial writes off: all or an error).
    pub fn write(&mut self, buf: &[u8]) -> io::Result<()> {
        let len = c_int::try_from(buf.len())
            .map_err(|_| io::Error::other("SSL_write of more than 2 GiB"))?;
        // SAFETY: ssl is live; buf is readable for len bytes.
        let ret = unsafe { (self.lib.ssl_write)(self.ssl.as_ptr(), buf.as_ptr().cast(), len) };
        if ret == len {
            Ok(())
        } else {
            Err(self.failure("SSL_write", ret))
        }
    }

    /// Sends close_notify without waiting for the server's: the op being measured is the
    /// handshake, and the socket is closed right after.
    pub fn shutdown(&mut self) -> io::Result<()> {
        // SAFETY: ssl is live.
        let ret = unsafe { (self.lib.ssl_shutdown)(self.ssl.as_ptr()) };
        if ret >= 0 {
            Ok(())
        } else {
            Err(self.failure("SSL_shutdown", ret))
        }
    }

    /// An error for a failed call, with OpenSSL's reason (and errno where that is it).
    fn failure(&self, call: &str, ret: c_int) -> io::Error {
        let os = io::Error::last_os_error();
        // SAFETY: ssl is live; ret is what the failed call returned.
        let code = unsafe { (self.lib.ssl_get_error)(self.ssl.as_ptr(), ret) };
        let queue = self.lib.error_queue();
        let detail = match code {
            SSL_ERROR_ZERO_RETURN => "the server closed the TLS session".to_string(),
            SSL_ERROR_SYSCALL => format!("socket error: {os}; {queue}"),
            _ => format!("SSL_get_error {code}; {queue}"),
        };
        io::Error::other(format!("{call} returned {ret}: {detail}"))
    }
}

impl Drop for SslSession<'_> {
    fn drop(&mut self) {
        // SAFETY: ssl is live and freed once; the socket closes after it (field order).
        unsafe { (self.lib.ssl_free)(self.ssl.as_ptr()) }
    }
}
