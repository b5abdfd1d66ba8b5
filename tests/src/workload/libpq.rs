//! `libpq`: `PQsendQuery` in a loop on a connection object that failed to connect, through
//! the system's libpq.so.5 (dlopened). No server is involved: libpq refuses each call at
//! once ("no connection to the server", return 0), but only after entering `PQsendQuery`,
//! where the agent's uprobe sits. So each op is one uprobe hit carrying the query text (the
//! kernel reads it and sends an `sql_query` record) plus a short libpq error path — the
//! probe's cost without a round trip to a database.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::dl::{self, symbol};
use super::{run_for, Report};

const SONAME: &CStr = c"libpq.so.5";
/// `ConnStatusType::CONNECTION_BAD` (libpq-fe.h).
const CONNECTION_BAD: c_int = 1;
/// A unix-socket directory that does not exist: the connection fails without a network
/// round trip or a timeout.
const NO_SERVER: &CStr = c"host=/nonexistent/rasp-bench dbname=bench user=bench connect_timeout=1";

type PqConnectdb = unsafe extern "C" fn(*const c_char) -> *mut c_void;
type PqStatus = unsafe extern "C" fn(*const c_void) -> c_int;
type PqSendQuery = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type PqFinish = unsafe extern "C" fn(*mut c_void);

/// Calls between clock reads: a refused call is ~1 µs.
const BATCH: u32 = 16;

pub fn run(query: &str, warmup: Duration, duration: Duration) -> Result<Report> {
    let query = CString::new(query).context("the query contains a NUL byte")?;
    let handle = dl::open(SONAME, "libpq5")?;
    // SAFETY: each type alias is the prototype of the symbol named with it (libpq-fe.h).
    let (connectdb, status, send_query, finish, path) = unsafe {
        (
            symbol::<PqConnectdb>(handle, SONAME, c"PQconnectdb")?,
            symbol::<PqStatus>(handle, SONAME, c"PQstatus")?,
            symbol::<PqSendQuery>(handle, SONAME, c"PQsendQuery")?,
            symbol::<PqFinish>(handle, SONAME, c"PQfinish")?,
            dl::mapped_path(symbol::<*const c_void>(handle, SONAME, c"PQsendQuery")?),
        )
    };
    // SAFETY: a NUL-terminated conninfo; the result is checked before use.
    let conn = unsafe { connectdb(NO_SERVER.as_ptr()) };
    if conn.is_null() {
        bail!("PQconnectdb returned no connection object (out of memory)");
    }
    let conn = Conn { conn, finish };
    // SAFETY: conn is a live PGconn.
    if unsafe { status(conn.conn) } != CONNECTION_BAD {
        bail!(
            "PQconnectdb to {NO_SERVER:?} did not fail; this workload needs a refused connection"
        );
    }
    // The agent attaches its uprobes when it sees libpq mapped (or on its periodic scan):
    // calls made before that are not what is measured.
    std::thread::sleep(warmup);
    let send = || {
        // SAFETY: conn is a live PGconn and query a NUL-terminated string.
        if unsafe { send_query(conn.conn, query.as_ptr()) } != 0 {
            return Err(std::io::Error::other(
                "PQsendQuery succeeded on a connection that never connected",
            ));
        }
        Ok(())
    };
    let tally = run_for(duration, BATCH, send).context("PQsendQuery on a refused connection")?;
    Ok(Report::timed(tally).with("library", path.display().to_string()))
}

/// A `PGconn`, finished on drop.
struct Conn {
    conn: *mut c_void,
    finish: PqFinish,
}

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: conn came from PQconnectdb and is finished exactly once.
        unsafe { (self.finish)(self.conn) };
    }
}
