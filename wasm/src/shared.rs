//! Process-global proxy-wasm state shared by every VM on every worker: shared data (with CAS) and
//! shared queues. Keys are scoped by vm_id, as in Envoy.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use dashmap::DashMap;

use crate::abi::Status;

/// Called when a value is enqueued on a queue: `(queue_id, registering context id)`. Runs on the
/// enqueuing thread; the implementation forwards it to the worker that owns the registering VM.
pub type QueueNotifier = Arc<dyn Fn(u32, u32) + Send + Sync>;

struct Shared {
    data: DashMap<(String, Vec<u8>), (Bytes, u32)>,
    queue_ids: DashMap<(String, Vec<u8>), u32>,
    queues: DashMap<u32, Queue>,
    next_queue: AtomicU32,
}

struct Queue {
    items: Arc<Mutex<VecDeque<Bytes>>>,
    owner: Option<(QueueNotifier, u32)>,
}

fn shared() -> &'static Shared {
    static S: OnceLock<Shared> = OnceLock::new();
    S.get_or_init(|| Shared {
        data: DashMap::new(),
        queue_ids: DashMap::new(),
        queues: DashMap::new(),
        next_queue: AtomicU32::new(1),
    })
}

/// `proxy_get_shared_data`: the value and its CAS version.
pub fn get_data(vm_id: &str, key: &[u8]) -> Option<(Bytes, u32)> {
    shared()
        .data
        .get(&(vm_id.to_string(), key.to_vec()))
        .map(|e| e.value().clone())
}

/// `proxy_set_shared_data`: `cas == 0` always writes; otherwise the write happens only when the
/// current version equals `cas` (a missing key has version 0... and is written only with cas 0).
pub fn set_data(vm_id: &str, key: &[u8], value: Bytes, cas: u32) -> Status {
    let map = &shared().data;
    let mut entry = map
        .entry((vm_id.to_string(), key.to_vec()))
        .or_insert((Bytes::new(), 0));
    let (stored, version) = entry.value_mut();
    if cas != 0 && cas != *version {
        return Status::CasMismatch;
    }
    *stored = value;
    // Version 0 means "no CAS" to the guest, so versions skip it when wrapping.
    *version = version.wrapping_add(1).max(1);
    Status::Ok
}

/// `proxy_register_shared_queue`: create (or take over) the queue `name` of `vm_id`; enqueues
/// notify `notifier` with the registering context.
pub fn register_queue(vm_id: &str, name: &[u8], owner: Option<(QueueNotifier, u32)>) -> u32 {
    let s = shared();
    let id = *s
        .queue_ids
        .entry((vm_id.to_string(), name.to_vec()))
        .or_insert_with(|| s.next_queue.fetch_add(1, Ordering::Relaxed));
    let mut q = s.queues.entry(id).or_insert_with(|| Queue {
        items: Arc::new(Mutex::new(VecDeque::new())),
        owner: None,
    });
    q.owner = owner;
    id
}

/// `proxy_resolve_shared_queue`.
pub fn resolve_queue(vm_id: &str, name: &[u8]) -> Option<u32> {
    shared()
        .queue_ids
        .get(&(vm_id.to_string(), name.to_vec()))
        .map(|e| *e.value())
}

/// Upper bound on items waiting in one queue, so a producer without a consumer cannot eat memory.
pub const MAX_QUEUE_ITEMS: usize = 10_000;

/// `proxy_enqueue_shared_queue`.
pub fn enqueue(queue_id: u32, value: Bytes) -> Status {
    let (items, owner) = match shared().queues.get(&queue_id) {
        Some(q) => (q.items.clone(), q.owner.clone()),
        None => return Status::NotFound,
    };
    {
        let Ok(mut items) = items.lock() else {
            return Status::InternalFailure;
        };
        if items.len() >= MAX_QUEUE_ITEMS {
            return Status::InternalFailure;
        }
        items.push_back(value);
    }
    // Notify outside the map and queue locks: the notifier may run arbitrary forwarding code.
    if let Some((notify, ctx)) = owner {
        notify(queue_id, ctx);
    }
    Status::Ok
}

/// `proxy_dequeue_shared_queue`: `Err(Empty)` when nothing waits, `Err(NotFound)` for no queue.
pub fn dequeue(queue_id: u32) -> Result<Bytes, Status> {
    let items = match shared().queues.get(&queue_id) {
        Some(q) => q.items.clone(),
        None => return Err(Status::NotFound),
    };
    let Ok(mut items) = items.lock() else {
        return Err(Status::InternalFailure);
    };
    items.pop_front().ok_or(Status::Empty)
}
