//! A small cache of large `f32` buffers.
//!
//! Fresh large allocations are expensive here: glibc serves them with `mmap`, and touching the new pages
//! costs a page fault each (about 1 GB/s in a virtual machine, ten times slower than copying). A forward
//! pass allocates and frees the same few activation sizes over and over, so freed buffers of at least
//! [`MIN_ELEMS`] values are kept (up to [`MAX_BYTES`] in all, oldest dropped first) and handed out again
//! for requests they fit without wasting more than half.

use std::sync::Mutex;

/// Buffers smaller than this (in `f32`s, 1 MiB) go straight to the allocator.
const MIN_ELEMS: usize = 1 << 18;
/// Most bytes kept in the cache.
const MAX_BYTES: usize = 1 << 30;

struct Pool {
    free: Vec<Vec<f32>>,
    bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    free: Vec::new(),
    bytes: 0,
});

fn lock() -> std::sync::MutexGuard<'static, Pool> {
    // A panic while holding the lock cannot leave the pool inconsistent (pushes and removes only).
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A cached buffer with capacity for `len` values, or `None`.
fn reuse(len: usize) -> Option<Vec<f32>> {
    if len < MIN_ELEMS {
        return None;
    }
    let mut pool = lock();
    let best = pool
        .free
        .iter()
        .enumerate()
        .filter(|(_, v)| v.capacity() >= len && v.capacity() / 2 <= len)
        .min_by_key(|(_, v)| v.capacity())
        .map(|(i, _)| i)?;
    let v = pool.free.remove(best);
    pool.bytes -= v.capacity() * 4;
    Some(v)
}

/// A buffer of `len` values with unspecified (but initialised) contents, for outputs that are
/// overwritten entirely.
pub(crate) fn take(len: usize) -> Vec<f32> {
    match reuse(len) {
        Some(mut v) => {
            if v.len() >= len {
                v.truncate(len);
            } else {
                v.resize(len, 0.0);
            }
            v
        }
        None => vec![0.0; len],
    }
}

/// A buffer of `len` zeros.
pub(crate) fn take_zeroed(len: usize) -> Vec<f32> {
    match reuse(len) {
        Some(mut v) => {
            v.clear();
            v.resize(len, 0.0);
            v
        }
        None => vec![0.0; len],
    }
}

/// A copy of `src` in a (possibly cached) buffer.
pub(crate) fn copy_of(src: &[f32]) -> Vec<f32> {
    match reuse(src.len()) {
        Some(mut v) => {
            v.clear();
            v.extend_from_slice(src);
            v
        }
        None => src.to_vec(),
    }
}

/// Returns a buffer to the cache (or frees it).
pub(crate) fn give(v: Vec<f32>) {
    let bytes = v.capacity() * 4;
    if v.capacity() < MIN_ELEMS || bytes > MAX_BYTES {
        return;
    }
    let mut pool = lock();
    while pool.bytes + bytes > MAX_BYTES && !pool.free.is_empty() {
        let old = pool.free.remove(0);
        pool.bytes -= old.capacity() * 4;
    }
    pool.bytes += bytes;
    pool.free.push(v);
}

/// Frees every cached buffer.
pub fn release_cached_buffers() {
    let mut pool = lock();
    pool.free.clear();
    pool.bytes = 0;
}
