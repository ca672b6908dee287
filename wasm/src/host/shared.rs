//! Shared data, shared queues and metrics: process-global, so every VM of every worker sees them.

use bytes::Bytes;
use wasmtime::{Caller, Linker};

use crate::abi::{MetricType, Status};
use crate::memory::{finish, give, read, read_string, write_u32, write_u64, HostResult, MemError};
use crate::state::HostState;
use crate::{metrics, shared};

type C<'a> = Caller<'a, HostState>;

fn status(s: Status) -> HostResult {
    Ok(s.code())
}

pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut c: C<'_>, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32, ret_cas: i32| -> HostResult {
            let key = match read(&c, kp, kl) {
                Ok(k) => k,
                Err(s) => return status(s),
            };
            let Some((value, cas)) = shared::get_data(&c.data().info.vm_id, &key) else {
                return status(Status::NotFound);
            };
            if let Err(s) = write_u32(&mut c, ret_cas, cas) {
                return status(s);
            }
            finish(give(&mut c, &value, ret_ptr, ret_size))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |c: C<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> HostResult {
            let (key, value) = match (read(&c, kp, kl), read(&c, vp, vl)) {
                (Ok(k), Ok(v)) => (k, v),
                (Err(s), _) | (_, Err(s)) => return status(s),
            };
            status(shared::set_data(
                &c.data().info.vm_id,
                &key,
                Bytes::from(value),
                cas as u32,
            ))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut c: C<'_>, np: i32, nl: i32, ret: i32| -> HostResult {
            let name = match read(&c, np, nl) {
                Ok(n) => n,
                Err(s) => return status(s),
            };
            let st = c.data();
            let owner = st.queue_notifier.clone().map(|n| (n, st.effective_ctx));
            let id = shared::register_queue(&st.info.vm_id, &name, owner);
            finish(write_u32(&mut c, ret, id).map_err(MemError::from))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut c: C<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> HostResult {
            let (vm_id, name) = match (read_string(&c, vp, vl), read(&c, np, nl)) {
                (Ok(v), Ok(n)) => (v, n),
                (Err(s), _) | (_, Err(s)) => return status(s),
            };
            // An empty vm_id means "my own VM", as in Envoy.
            let vm_id = if vm_id.is_empty() {
                c.data().info.vm_id.clone()
            } else {
                vm_id
            };
            match shared::resolve_queue(&vm_id, &name) {
                Some(id) => finish(write_u32(&mut c, ret, id).map_err(MemError::from)),
                None => status(Status::NotFound),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |c: C<'_>, id: i32, vp: i32, vl: i32| -> HostResult {
            match read(&c, vp, vl) {
                Ok(v) => status(shared::enqueue(id as u32, Bytes::from(v))),
                Err(s) => status(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut c: C<'_>, id: i32, ret_ptr: i32, ret_size: i32| -> HostResult {
            match shared::dequeue(id as u32) {
                Ok(v) => finish(give(&mut c, &v, ret_ptr, ret_size)),
                Err(s) => status(s),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut c: C<'_>, kind: i32, np: i32, nl: i32, ret: i32| -> HostResult {
            let Some(kind) = MetricType::from_i32(kind) else {
                return status(Status::BadArgument);
            };
            let name = match read_string(&c, np, nl) {
                Ok(n) => n,
                Err(s) => return status(s),
            };
            let id = metrics::define(&c.data().info.name, kind, &name);
            finish(write_u32(&mut c, ret, id).map_err(MemError::from))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |_c: C<'_>, id: i32, offset: i64| -> HostResult {
            status(metrics::increment(id as u32, offset))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |_c: C<'_>, id: i32, value: i64| -> HostResult {
            status(metrics::record(id as u32, value as u64))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut c: C<'_>, id: i32, ret: i32| -> HostResult {
            match metrics::value(id as u32) {
                Ok(v) => finish(write_u64(&mut c, ret, v).map_err(MemError::from)),
                Err(s) => status(s),
            }
        },
    )?;
    Ok(())
}
