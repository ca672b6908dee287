//! Hand-written WASI preview1 shims: what the SDKs' standard libraries call, with no filesystem,
//! no network and no host environment beyond the plugin's `allowed_env`. stdout/stderr go to the
//! log with the plugin's name.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rand::RngCore;
use wasmtime::{Caller, Linker};

use crate::memory::{read, write, write_u32, write_u64};
use crate::state::HostState;

type C<'a> = Caller<'a, HostState>;
type R = wasmtime::Result<i32>;

const ERRNO_SUCCESS: i32 = 0;
const ERRNO_BADF: i32 = 8;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
/// Returned by every WASI function the host does not provide.
pub(crate) const ERRNO_NOSYS: i32 = 52;
const ERRNO_NOTSUP: i32 = 58;
const ERRNO_SPIPE: i32 = 70;

/// Largest write to stdout/stderr logged as one line.
const MAX_LOG_WRITE: usize = 64 * 1024;

fn fault<T>(r: Result<T, crate::abi::Status>) -> Result<T, i32> {
    r.map_err(|_| ERRNO_FAULT)
}

fn errno(r: Result<(), i32>) -> R {
    Ok(r.err().unwrap_or(ERRNO_SUCCESS))
}

/// The process error raised by `proc_exit`: it ends the callback like a trap.
#[derive(Debug, thiserror::Error)]
#[error("plugin called proc_exit({0})")]
pub(crate) struct ProcExit(pub i32);

pub(super) fn define(l: &mut Linker<HostState>, m: &str) -> wasmtime::Result<()> {
    l.func_wrap(m, "fd_write", fd_write)?;
    l.func_wrap(
        m,
        "fd_read",
        |mut c: C<'_>, fd: i32, _iovs: i32, _n: i32, nread: i32| -> R {
            if fd != 0 {
                return Ok(ERRNO_BADF);
            }
            // stdin is always at its end.
            errno(fault(write_u32(&mut c, nread, 0)))
        },
    )?;
    l.func_wrap(m, "fd_close", |_c: C<'_>, fd: i32| -> R {
        Ok(if (0..=2).contains(&fd) {
            ERRNO_SUCCESS
        } else {
            ERRNO_BADF
        })
    })?;
    l.func_wrap(
        m,
        "fd_seek",
        |_c: C<'_>, fd: i32, _off: i64, _whence: i32, _ret: i32| -> R {
            Ok(if (0..=2).contains(&fd) {
                ERRNO_SPIPE
            } else {
                ERRNO_BADF
            })
        },
    )?;
    l.func_wrap(m, "fd_fdstat_get", |mut c: C<'_>, fd: i32, ret: i32| -> R {
        if !(0..=2).contains(&fd) {
            return Ok(ERRNO_BADF);
        }
        // fdstat: filetype u8 (2 = character device), flags u16, rights base u64, inheriting u64.
        let mut stat = [0u8; 24];
        stat[0] = 2;
        stat[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        errno(fault(write(&mut c, ret, &stat)))
    })?;
    l.func_wrap(m, "fd_prestat_get", |_c: C<'_>, _fd: i32, _ret: i32| -> R {
        // No preopened directories: the first probe ends the enumeration.
        Ok(ERRNO_BADF)
    })?;
    l.func_wrap(
        m,
        "fd_prestat_dir_name",
        |_c: C<'_>, _fd: i32, _p: i32, _l: i32| -> R { Ok(ERRNO_BADF) },
    )?;
    l.func_wrap(
        m,
        "environ_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| -> R {
            let env = c.data().info.env.clone();
            let bytes: usize = env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
            errno(
                fault(write_u32(&mut c, count, env.len() as u32))
                    .and_then(|()| fault(write_u32(&mut c, size, bytes as u32))),
            )
        },
    )?;
    l.func_wrap(m, "environ_get", |mut c: C<'_>, ptrs: i32, buf: i32| -> R {
        let env = c.data().info.env.clone();
        let mut at = buf as u32;
        for (i, (k, v)) in env.iter().enumerate() {
            let entry = format!("{k}={v}\0");
            if let Err(e) = fault(write_u32(&mut c, ptrs.wrapping_add(4 * i as i32), at))
                .and_then(|()| fault(write(&mut c, at as i32, entry.as_bytes())))
            {
                return Ok(e);
            }
            at = at.wrapping_add(entry.len() as u32);
        }
        Ok(ERRNO_SUCCESS)
    })?;
    l.func_wrap(
        m,
        "args_sizes_get",
        |mut c: C<'_>, count: i32, size: i32| -> R {
            errno(
                fault(write_u32(&mut c, count, 0)).and_then(|()| fault(write_u32(&mut c, size, 0))),
            )
        },
    )?;
    l.func_wrap(m, "args_get", |_c: C<'_>, _p: i32, _b: i32| -> R {
        Ok(ERRNO_SUCCESS)
    })?;
    l.func_wrap(
        m,
        "clock_time_get",
        |mut c: C<'_>, id: i32, _prec: i64, ret: i32| -> R {
            let nanos = match id {
                0 => SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64),
                1..=3 => monotonic_nanos(),
                _ => return Ok(ERRNO_INVAL),
            };
            errno(fault(write_u64(&mut c, ret, nanos)))
        },
    )?;
    l.func_wrap(
        m,
        "clock_res_get",
        |mut c: C<'_>, _id: i32, ret: i32| -> R { errno(fault(write_u64(&mut c, ret, 1))) },
    )?;
    l.func_wrap(m, "random_get", |mut c: C<'_>, buf: i32, len: i32| -> R {
        let len = len as u32 as usize;
        if len > 1 << 20 {
            return Ok(ERRNO_INVAL);
        }
        let mut bytes = vec![0u8; len];
        rand::thread_rng().fill_bytes(&mut bytes);
        errno(fault(write(&mut c, buf, &bytes)))
    })?;
    l.func_wrap(
        m,
        "proc_exit",
        |mut c: C<'_>, code: i32| -> wasmtime::Result<()> {
            c.data_mut().exit_code = Some(code);
            Err(wasmtime::Error::new(ProcExit(code)))
        },
    )?;
    l.func_wrap(m, "sched_yield", |_c: C<'_>| -> R { Ok(ERRNO_SUCCESS) })?;
    l.func_wrap(
        m,
        "poll_oneoff",
        |mut c: C<'_>, _in: i32, _out: i32, _n: i32, nevents: i32| -> R {
            // Sleeping inside a callback would stall the worker: report no events.
            match fault(write_u32(&mut c, nevents, 0)) {
                Ok(()) => Ok(ERRNO_NOTSUP),
                Err(e) => Ok(e),
            }
        },
    )?;
    Ok(())
}

fn monotonic_nanos() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

fn fd_write(mut c: C<'_>, fd: i32, iovs: i32, iovs_len: i32, nwritten: i32) -> R {
    if fd != 1 && fd != 2 {
        return Ok(ERRNO_BADF);
    }
    let count = iovs_len as u32 as usize;
    if count > 1024 {
        return Ok(ERRNO_INVAL);
    }
    let table = match read(&c, iovs, (count * 8) as i32) {
        Ok(t) => t,
        Err(_) => return Ok(ERRNO_FAULT),
    };
    let mut out = Vec::new();
    let mut total: u32 = 0;
    for iov in table.chunks_exact(8) {
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let data = match read(&c, ptr, len) {
            Ok(d) => d,
            Err(_) => return Ok(ERRNO_FAULT),
        };
        total = total.wrapping_add(data.len() as u32);
        if out.len() < MAX_LOG_WRITE {
            out.extend_from_slice(&data);
        }
    }
    let text = String::from_utf8_lossy(&out);
    let text = text.trim_end();
    if !text.is_empty() {
        let plugin = &*c.data().info.name;
        if fd == 1 {
            tracing::info!(plugin, stream = "stdout", "{text}");
        } else {
            tracing::warn!(plugin, stream = "stderr", "{text}");
        }
    }
    errno(fault(write_u32(&mut c, nwritten, total)))
}
