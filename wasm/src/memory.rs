//! Bounds-checked access to a guest's linear memory and allocation inside the guest. Every pointer
//! and length comes from the plugin: none is trusted.

use wasmtime::Caller;

use crate::abi::Status;
use crate::state::HostState;

/// A host call either answers the guest with a status or traps the callback.
pub(crate) type HostResult = wasmtime::Result<i32>;

/// Outcome of a guest memory operation: a status for the guest, or a trap from a re-entrant
/// allocator call.
pub(crate) enum MemError {
    Status(Status),
    Trap(wasmtime::Error),
}

impl From<Status> for MemError {
    fn from(s: Status) -> Self {
        MemError::Status(s)
    }
}

/// Turn a guest-memory outcome into the host call's result.
pub(crate) fn finish(r: Result<(), MemError>) -> HostResult {
    match r {
        Ok(()) => Ok(Status::Ok.code()),
        Err(MemError::Status(s)) => Ok(s.code()),
        Err(MemError::Trap(e)) => Err(e),
    }
}

fn range(ptr: i32, len: i32) -> Option<std::ops::Range<usize>> {
    let start = ptr as u32 as usize;
    let end = start.checked_add(len as u32 as usize)?;
    Some(start..end)
}

/// The guest's memory and the host state at once, so a host call can read the plugin's bytes
/// in place while it edits the stream (no copy of keys and values). `None` before the VM has a
/// memory.
pub(crate) fn split<'a>(
    caller: &'a mut Caller<'_, HostState>,
) -> Option<(&'a [u8], &'a mut HostState)> {
    let mem = caller.data().memory?;
    let (data, state) = mem.data_and_store_mut(caller);
    Some((&*data, state))
}

/// The `len` bytes at `ptr` of guest memory `mem`, bounds-checked.
pub(crate) fn slice(mem: &[u8], ptr: i32, len: i32) -> Result<&[u8], Status> {
    let r = range(ptr, len).ok_or(Status::InvalidMemoryAccess)?;
    mem.get(r).ok_or(Status::InvalidMemoryAccess)
}

/// Copy `len` bytes at `ptr` out of the guest.
pub(crate) fn read(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<Vec<u8>, Status> {
    let mem = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let r = range(ptr, len).ok_or(Status::InvalidMemoryAccess)?;
    mem.data(caller)
        .get(r)
        .map(<[u8]>::to_vec)
        .ok_or(Status::InvalidMemoryAccess)
}

/// Read a UTF-8 string (invalid UTF-8 is replaced, never trusted).
pub(crate) fn read_string(
    caller: &Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> Result<String, Status> {
    read(caller, ptr, len).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// Write `data` at `ptr`.
pub(crate) fn write(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    data: &[u8],
) -> Result<(), Status> {
    let mem = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let r = range(ptr, data.len() as i32).ok_or(Status::InvalidMemoryAccess)?;
    if data.len() > i32::MAX as usize {
        return Err(Status::InvalidMemoryAccess);
    }
    mem.data_mut(caller)
        .get_mut(r)
        .ok_or(Status::InvalidMemoryAccess)?
        .copy_from_slice(data);
    Ok(())
}

pub(crate) fn write_u32(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    v: u32,
) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

pub(crate) fn write_u64(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    v: u64,
) -> Result<(), Status> {
    write(caller, ptr, &v.to_le_bytes())
}

/// Allocate `data.len()` bytes in the guest (with its `proxy_on_memory_allocate` or `malloc`),
/// copy `data` there and store the pointer and size at `ret_ptr` / `ret_size`.
pub(crate) fn give(
    caller: &mut Caller<'_, HostState>,
    data: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> Result<(), MemError> {
    // Check the return slots first, so a bad pointer does not leak a guest allocation.
    check(caller, ret_ptr, 4)?;
    check(caller, ret_size, 4)?;
    let ptr = if data.is_empty() {
        0
    } else {
        let alloc = caller.data().alloc.clone().ok_or(Status::InternalFailure)?;
        let len = i32::try_from(data.len()).map_err(|_| Status::InvalidMemoryAccess)?;
        let p = alloc.call(&mut *caller, len).map_err(MemError::Trap)?;
        if p == 0 {
            return Err(MemError::Status(Status::InvalidMemoryAccess));
        }
        write(caller, p, data)?;
        p
    };
    write_u32(caller, ret_ptr, ptr as u32)?;
    write_u32(caller, ret_size, data.len() as u32)?;
    Ok(())
}

/// Fail with InvalidMemoryAccess unless `[ptr, ptr+len)` is inside guest memory.
pub(crate) fn check(caller: &Caller<'_, HostState>, ptr: i32, len: i32) -> Result<(), Status> {
    let mem = caller.data().memory.ok_or(Status::InvalidMemoryAccess)?;
    let r = range(ptr, len).ok_or(Status::InvalidMemoryAccess)?;
    if r.end <= mem.data_size(caller) {
        Ok(())
    } else {
        Err(Status::InvalidMemoryAccess)
    }
}
