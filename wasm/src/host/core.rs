//! Logging, time, timers, properties, contexts and foreign functions.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tracing::level_filters::LevelFilter;
use wasmtime::{Caller, Linker};

use crate::abi::Status;
use crate::memory::{
    finish, give, read, read_string, slice, split, write_u32, write_u64, HostResult, MemError,
};
use crate::property::{split_path, Path, Prop};
use crate::state::HostState;

type C<'a> = Caller<'a, HostState>;

pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_log", log)?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut c: C<'_>, ret: i32| -> HostResult {
            let level = match LevelFilter::current() {
                LevelFilter::TRACE => 0,
                LevelFilter::DEBUG => 1,
                LevelFilter::INFO => 2,
                LevelFilter::WARN => 3,
                LevelFilter::ERROR => 4,
                _ => 5,
            };
            finish(write_u32(&mut c, ret, level).map_err(MemError::from))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut c: C<'_>, ret: i32| -> HostResult {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            finish(write_u64(&mut c, ret, now).map_err(MemError::from))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut c: C<'_>, ms: i32| -> HostResult {
            let st = c.data_mut();
            let ctx = st.effective_ctx;
            st.tick_requests
                .push((ctx, Duration::from_millis(u64::from(ms as u32))));
            Ok(Status::Ok.code())
        },
    )?;
    l.func_wrap("env", "proxy_get_property", get_property)?;
    l.func_wrap("env", "proxy_set_property", set_property)?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut c: C<'_>, ctx: i32| -> HostResult {
            c.data_mut().effective_ctx = ctx as u32;
            Ok(Status::Ok.code())
        },
    )?;
    l.func_wrap("env", "proxy_done", |mut c: C<'_>| -> HostResult {
        // Only a context being finished (in or after its `proxy_on_done`) can be released.
        let st = c.data_mut();
        let ctx = st.effective_ctx;
        match &mut st.done_running {
            // Inside its own `proxy_on_done`: the host deletes it when that returns.
            Some((running, released)) if *running == ctx => {
                if std::mem::replace(released, true) {
                    return Ok(Status::NotFound.code());
                }
                return Ok(Status::Ok.code());
            }
            _ => {}
        }
        if !st.finishing.remove(&ctx) {
            return Ok(Status::NotFound.code());
        }
        st.done_released.push(ctx);
        Ok(Status::Ok.code())
    })?;
    l.func_wrap("env", "proxy_call_foreign_function", foreign)?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut c: C<'_>, ret_code: i32, ret_ptr: i32, ret_size: i32| -> HostResult {
            // As Envoy: always Ok; outside of a failed gRPC call the status is OK (0) with an
            // empty message (the Rust SDK panics on any other result).
            let (code, msg) = c.data().grpc_status.clone().unwrap_or_default();
            if let Err(s) = write_u32(&mut c, ret_code, code) {
                return Ok(s.code());
            }
            finish(give(&mut c, &msg, ret_ptr, ret_size))
        },
    )?;
    Ok(())
}

fn log(mut c: C<'_>, level: i32, ptr: i32, len: i32) -> HostResult {
    let msg = match read_string(&c, ptr, len) {
        Ok(m) => m,
        Err(s) => return Ok(s.code()),
    };
    let st = c.data_mut();
    let plugin = &*st.info.name;
    match level {
        0 => tracing::trace!(plugin, "{msg}"),
        1 => tracing::debug!(plugin, "{msg}"),
        2 => tracing::info!(plugin, "{msg}"),
        3 => tracing::warn!(plugin, "{msg}"),
        _ => tracing::error!(plugin, "{msg}"),
    }
    Ok(Status::Ok.code())
}

/// The value of a property path, VM-level names first, then the stream's.
fn lookup(st: &mut HostState, path: &[&str]) -> Option<Prop> {
    // Only a plugin that set properties of its own pays for joining the path.
    if !st.own_properties.is_empty() {
        if let Some(v) = st.own_properties.get(&path.join(".")) {
            return Some(Prop::Bytes(v.clone()));
        }
    }
    let info = &st.info;
    let vm_level = match path {
        ["plugin_name"] => Some(Prop::Str(info.name.to_string())),
        ["plugin_root_id"] => Some(Prop::Str(info.root_id.clone())),
        ["plugin_vm_id"] => Some(Prop::Str(info.vm_id.clone())),
        ["node", "id"] => Some(Prop::Str(info.node_id.clone())),
        ["node", "cluster"] => Some(Prop::Str(info.node_cluster.clone())),
        // An edge gateway only handles inbound traffic (Envoy's INBOUND = 1).
        ["listener_direction"] => Some(Prop::Int(1)),
        _ => None,
    };
    if vm_level.is_some() {
        return vm_level;
    }
    let stream = st.stream()?;
    if let Some(v) = stream.property(path) {
        return Some(v);
    }
    // `request.headers` + key: index the map.
    if path.len() == 3 {
        return stream.property(&path[..2])?.index(path[2]);
    }
    None
}

fn get_property(
    mut c: C<'_>,
    path_ptr: i32,
    path_len: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let Some((mem, st)) = split(&mut c) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let raw = match slice(mem, path_ptr, path_len) {
        Ok(r) => r,
        Err(s) => return Ok(s.code()),
    };
    // The path's segments are read in place when they are UTF-8 (always, in practice); other
    // bytes take the lossy, allocating way.
    let value = match Path::parse(raw) {
        Some(path) => lookup(st, path.segments()),
        None => {
            let owned = split_path(raw);
            let refs: Vec<&str> = owned.iter().map(String::as_str).collect();
            lookup(st, &refs)
        }
    };
    let Some(value) = value else {
        return Ok(Status::NotFound.code());
    };
    finish(value.with_bytes(|b| give(&mut c, b, ret_ptr, ret_size)))
}

fn set_property(
    mut c: C<'_>,
    path_ptr: i32,
    path_len: i32,
    val_ptr: i32,
    val_len: i32,
) -> HostResult {
    let (raw, value) = match (read(&c, path_ptr, path_len), read(&c, val_ptr, val_len)) {
        (Ok(r), Ok(v)) => (r, v),
        (Err(s), _) | (_, Err(s)) => return Ok(s.code()),
    };
    let path = split_path(&raw).join(".");
    // Host attributes are read-only; plugins may keep their own names (filter state in Envoy).
    let builtin = [
        "request",
        "response",
        "source",
        "destination",
        "connection",
        "upstream",
        "node",
    ];
    if builtin
        .iter()
        .any(|b| path == *b || path.starts_with(&format!("{b}.")))
        || path.starts_with("plugin_")
    {
        return Ok(Status::BadArgument.code());
    }
    c.data_mut().own_properties.insert(path, Bytes::from(value));
    Ok(Status::Ok.code())
}

#[allow(clippy::too_many_arguments)]
fn foreign(
    mut c: C<'_>,
    name_ptr: i32,
    name_len: i32,
    args_ptr: i32,
    args_len: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let (name, args) = match (
        read_string(&c, name_ptr, name_len),
        read(&c, args_ptr, args_len),
    ) {
        (Ok(n), Ok(a)) => (n, a),
        (Err(s), _) | (_, Err(s)) => return Ok(s.code()),
    };
    let Some(f) = c.data().foreign.clone() else {
        return Ok(Status::NotFound.code());
    };
    let plugin = c.data().info.name.clone();
    match f.call(&plugin, &name, &args) {
        Ok(out) => finish(give(&mut c, &out, ret_ptr, ret_size)),
        Err(s) => Ok(s.code()),
    }
}
