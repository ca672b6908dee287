//! Header maps (`proxy_*_header_map_*`) and buffers (`proxy_get/set_buffer_bytes`).

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use wasmtime::{Caller, Linker};

use crate::abi::{BufferType, MapType, Status};
use crate::memory::{finish, give, read, slice, split, write_u32, HostResult, MemError};
use crate::pairs;
use crate::state::HostState;

type C<'a> = Caller<'a, HostState>;

pub(super) fn define(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap("env", "proxy_get_header_map_pairs", get_pairs)?;
    l.func_wrap("env", "proxy_set_header_map_pairs", set_pairs)?;
    l.func_wrap("env", "proxy_get_header_map_value", get_value)?;
    l.func_wrap("env", "proxy_get_header_map_size", get_size)?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |c: C<'_>, m: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> HostResult {
            modify(c, m, kp, kl, Some((vp, vl)), Edit::Add)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |c: C<'_>, m: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> HostResult {
            modify(c, m, kp, kl, Some((vp, vl)), Edit::Replace)
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |c: C<'_>, m: i32, kp: i32, kl: i32| -> HostResult {
            modify(c, m, kp, kl, None, Edit::Remove)
        },
    )?;
    l.func_wrap("env", "proxy_get_buffer_bytes", get_buffer)?;
    l.func_wrap("env", "proxy_set_buffer_bytes", set_buffer)?;
    l.func_wrap("env", "proxy_get_buffer_status", buffer_status)?;
    l.func_wrap("env", "proxy_get_configuration", get_configuration)?;
    Ok(())
}

/// The serialized form of a map, `None` when it does not exist in this callback.
fn serialized(st: &mut HostState, map: MapType) -> Option<Vec<u8>> {
    if map.is_stream_map() {
        let stream = st.stream()?;
        let pseudo = stream.pseudo_headers(map);
        let headers = &*stream.headers(map)?;
        return Some(pairs::encode_iter(|| {
            pseudo
                .iter()
                .map(|(k, v)| (k.as_bytes(), v.as_bytes()))
                .chain(
                    headers
                        .iter()
                        .map(|(k, v)| (k.as_str().as_bytes(), v.as_bytes())),
                )
        }));
    }
    let resp = st.callout_response.as_ref()?;
    let list = match map {
        MapType::HttpCallResponseHeaders | MapType::GrpcInitialMetadata => &resp.headers,
        _ => &resp.trailers,
    };
    Some(pairs::encode_iter(|| {
        list.iter().map(|(k, v)| (k.as_slice(), v.as_slice()))
    }))
}

fn get_pairs(mut c: C<'_>, map: i32, ret_ptr: i32, ret_size: i32) -> HostResult {
    let Some(map) = MapType::from_i32(map) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(data) = serialized(c.data_mut(), map) else {
        return Ok(Status::NotFound.code());
    };
    finish(give(&mut c, &data, ret_ptr, ret_size))
}

fn get_size(mut c: C<'_>, map: i32, ret: i32) -> HostResult {
    let Some(map) = MapType::from_i32(map) else {
        return Ok(Status::BadArgument.code());
    };
    let Some(data) = serialized(c.data_mut(), map) else {
        return Ok(Status::NotFound.code());
    };
    finish(write_u32(&mut c, ret, data.len() as u32).map_err(MemError::from))
}

/// A header value found for the plugin: shared with the map (a reference count), or owned.
enum Found {
    Shared(HeaderValue),
    Owned(Vec<u8>),
}

impl Found {
    fn as_bytes(&self) -> &[u8] {
        match self {
            Found::Shared(v) => v.as_bytes(),
            Found::Owned(v) => v,
        }
    }
}

fn get_value(mut c: C<'_>, map: i32, kp: i32, kl: i32, ret_ptr: i32, ret_size: i32) -> HostResult {
    let Some(map) = MapType::from_i32(map) else {
        return Ok(Status::BadArgument.code());
    };
    let Some((mem, st)) = split(&mut c) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    // The key is read in place: no copy, no lower-casing (lookups ignore case).
    let key = match slice(mem, kp, kl) {
        Ok(k) => k,
        Err(s) => return Ok(s.code()),
    };
    let value: Option<Found> = if map.is_stream_map() {
        match st.stream() {
            None => return Ok(Status::NotFound.code()),
            Some(stream) if key.first() == Some(&b':') => stream
                .pseudo_headers(map)
                .into_iter()
                .find(|(k, _)| k.as_bytes().eq_ignore_ascii_case(key))
                .map(|(_, v)| Found::Owned(v.into_bytes())),
            // `HeaderMap::get` with a `&str` parses the name on the stack (any case); a name
            // that is not valid UTF-8 or not a valid header name is simply not there.
            Some(stream) => stream.headers(map).and_then(|h| {
                let name = std::str::from_utf8(key).ok()?;
                h.get(name).cloned().map(Found::Shared)
            }),
        }
    } else {
        st.callout_response.as_ref().and_then(|r| {
            let list = match map {
                MapType::HttpCallResponseHeaders | MapType::GrpcInitialMetadata => &r.headers,
                _ => &r.trailers,
            };
            list.iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(key))
                .map(|(_, v)| Found::Owned(v.clone()))
        })
    };
    match value {
        Some(v) => finish(give(&mut c, v.as_bytes(), ret_ptr, ret_size)),
        None => Ok(Status::NotFound.code()),
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Edit {
    Add,
    Replace,
    Remove,
}

fn modify(
    mut c: C<'_>,
    map: i32,
    kp: i32,
    kl: i32,
    value: Option<(i32, i32)>,
    edit: Edit,
) -> HostResult {
    let Some(map) = MapType::from_i32(map) else {
        return Ok(Status::BadArgument.code());
    };
    let Some((mem, st)) = split(&mut c) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    // Key and value are read in place; names and values come from the VM's small cache when
    // the plugin set the same ones before, so the common case allocates nothing.
    let key = match slice(mem, kp, kl) {
        Ok(k) => k,
        Err(s) => return Ok(s.code()),
    };
    let value = match value.map(|(p, l)| slice(mem, p, l)).transpose() {
        Ok(v) => v.unwrap_or_default(),
        Err(s) => return Ok(s.code()),
    };
    if !map.is_stream_map() {
        // Callout responses are read-only to the plugin.
        return Ok(Status::BadArgument.code());
    }
    let (stream, cache) = st.stream_and_cache();
    let Some(stream) = stream else {
        return Ok(Status::NotFound.code());
    };
    if key.first() == Some(&b':') {
        if edit == Edit::Remove {
            return Ok(Status::BadArgument.code());
        }
        let name = String::from_utf8_lossy(&key.to_ascii_lowercase()).into_owned();
        return Ok(stream.set_pseudo_header(map, &name, value).code());
    }
    if !stream.has_headers(map) {
        return Ok(Status::NotFound.code());
    }
    let value = (edit != Edit::Remove).then_some(value);
    let Some((name, new_value)) = cache.field(key, value) else {
        return Ok(Status::BadArgument.code());
    };
    if stream.edit_header(map, &name, new_value.as_deref(), edit == Edit::Replace) {
        Ok(Status::Ok.code())
    } else {
        Ok(Status::NotFound.code())
    }
}

fn set_pairs(mut c: C<'_>, map: i32, ptr: i32, len: i32) -> HostResult {
    let Some(map) = MapType::from_i32(map) else {
        return Ok(Status::BadArgument.code());
    };
    let raw = match read(&c, ptr, len) {
        Ok(r) => r,
        Err(s) => return Ok(s.code()),
    };
    let Ok(list) = pairs::decode(&raw) else {
        return Ok(Status::ParseFailure.code());
    };
    if !map.is_stream_map() {
        return Ok(Status::BadArgument.code());
    }
    let Some(stream) = c.data_mut().stream() else {
        return Ok(Status::NotFound.code());
    };
    for (k, v) in &list {
        if k.first() == Some(&b':') {
            let name = String::from_utf8_lossy(k).into_owned();
            let _ = stream.set_pseudo_header(map, &name, v);
        }
    }
    let Some(headers) = stream.headers(map) else {
        return Ok(Status::NotFound.code());
    };
    *headers = pairs::to_header_map(&list);
    Ok(Status::Ok.code())
}

/// The buffer's current bytes (a cheap clone of `Bytes`), `None` when it does not exist here.
fn buffer(st: &mut HostState, kind: BufferType) -> Option<Bytes> {
    match kind {
        BufferType::HttpRequestBody | BufferType::HttpResponseBody => {
            st.stream()?.body(kind).map(|b| b.clone())
        }
        BufferType::VmConfiguration => Some(st.info.vm_config.clone()),
        BufferType::PluginConfiguration => Some(st.plugin_config.clone()),
        BufferType::HttpCallResponseBody | BufferType::GrpcReceiveBuffer => {
            st.callout_response.as_ref().map(|r| r.body.clone())
        }
        _ => None,
    }
}

fn get_buffer(
    mut c: C<'_>,
    kind: i32,
    start: i32,
    max: i32,
    ret_ptr: i32,
    ret_size: i32,
) -> HostResult {
    let Some(kind) = BufferType::from_i32(kind) else {
        return Ok(Status::BadArgument.code());
    };
    if !super::body_visible(&mut c, kind) {
        return Ok(Status::NotFound.code());
    }
    let Some(data) = buffer(c.data_mut(), kind) else {
        return Ok(Status::NotFound.code());
    };
    let start = start as u32 as usize;
    let end = start.saturating_add(max as u32 as usize).min(data.len());
    let slice = if start >= data.len() {
        &[][..]
    } else {
        &data[start..end]
    };
    finish(give(&mut c, slice, ret_ptr, ret_size))
}

/// ABI 0.1.0: the size of a buffer (`return_unused` is set to 0).
fn buffer_status(mut c: C<'_>, kind: i32, ret_size: i32, ret_flags: i32) -> HostResult {
    let Some(kind) = BufferType::from_i32(kind) else {
        return Ok(Status::BadArgument.code());
    };
    if !super::body_visible(&mut c, kind) {
        return Ok(Status::NotFound.code());
    }
    let Some(data) = buffer(c.data_mut(), kind) else {
        return Ok(Status::NotFound.code());
    };
    if let Err(s) = write_u32(&mut c, ret_size, data.len() as u32) {
        return Ok(s.code());
    }
    finish(write_u32(&mut c, ret_flags, 0).map_err(MemError::from))
}

/// ABI 0.1.0: the VM configuration in `on_vm_start`, the plugin configuration in
/// `on_configure` (0.2.x reads both with `proxy_get_buffer_bytes`).
fn get_configuration(mut c: C<'_>, ret_ptr: i32, ret_size: i32) -> HostResult {
    let st = c.data();
    let data = if st.configuring {
        st.plugin_config.clone()
    } else {
        st.info.vm_config.clone()
    };
    finish(give(&mut c, &data, ret_ptr, ret_size))
}

/// Replace `[start, start+size)` of a body with the given bytes: `start == 0, size == 0`
/// prepends, `start >= len` appends, `start == 0, size >= len` replaces the whole chunk.
fn set_buffer(mut c: C<'_>, kind: i32, start: i32, size: i32, ptr: i32, len: i32) -> HostResult {
    let Some(kind) = BufferType::from_i32(kind) else {
        return Ok(Status::BadArgument.code());
    };
    if !super::body_visible(&mut c, kind) {
        return Ok(Status::NotFound.code());
    }
    let Some((mem, st)) = split(&mut c) else {
        return Ok(Status::InvalidMemoryAccess.code());
    };
    let data = match slice(mem, ptr, len) {
        Ok(d) => d,
        Err(s) => return Ok(s.code()),
    };
    if !matches!(
        kind,
        BufferType::HttpRequestBody | BufferType::HttpResponseBody
    ) {
        return Ok(Status::BadArgument.code());
    }
    let Some(body) = st.stream().and_then(|s| s.body(kind)) else {
        return Ok(Status::NotFound.code());
    };
    let start = (start as u32 as usize).min(body.len());
    let end = start.saturating_add(size as u32 as usize).min(body.len());
    // One copy of the plugin's bytes, straight from its memory into the new chunk.
    let mut out = BytesMut::with_capacity(body.len() - (end - start) + data.len());
    out.extend_from_slice(&body[..start]);
    out.extend_from_slice(data);
    out.extend_from_slice(&body[end..]);
    *body = out.freeze();
    Ok(Status::Ok.code())
}
