//! A global allocator that counts: the largest single allocation of the current case (per thread)
//! and of the whole campaign, and refuses absurd requests with a message instead of silently
//! asking the system for them.
//!
//! The fuzz binary and the test binary install it with `#[global_allocator]`; the library only
//! reads the counters.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Requests above this size are refused (the allocation fails and the process aborts, as it would
/// on a machine without the memory) after printing which case made them: no loader may ever ask
/// for that much on a small input, and the system might grant it lazily and hide the bug.
pub const REFUSE_ABOVE: usize = 4 << 30;

static LARGEST_EVER: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static LARGEST_IN_CASE: Cell<usize> = const { Cell::new(0) };
    static CASE: Cell<u64> = const { Cell::new(u64::MAX) };
}

/// The counting allocator: [`System`] plus bookkeeping.
pub struct CountingAlloc;

fn record(size: usize) {
    LARGEST_EVER.fetch_max(size, Ordering::Relaxed);
    // `try_with`: the thread may be tearing down its locals.
    let _ = LARGEST_IN_CASE.try_with(|c| c.set(c.get().max(size)));
    if size > REFUSE_ABOVE {
        let case = CASE.try_with(Cell::get).unwrap_or(u64::MAX);
        // Formatting integers into stderr does not allocate.
        let _ = writeln!(
            std::io::stderr(),
            "finercut-fuzz: case {case} asked for {size} bytes in one allocation; refusing (rerun it with --case {case})"
        );
    }
}

// SAFETY: every method forwards to `System` with the same arguments (or fails without touching
// memory); the bookkeeping neither allocates nor unwinds.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        if layout.size() > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        if layout.size() > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        if new_size > REFUSE_ABOVE {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Starts counting a new case on this thread: resets its largest allocation and names the case in
/// the message printed for a refused request.
pub fn start_case(case: u64) {
    LARGEST_IN_CASE.with(|c| c.set(0));
    CASE.with(|c| c.set(case));
}

/// The largest single allocation on this thread since [`start_case`].
pub fn largest_in_case() -> usize {
    LARGEST_IN_CASE.with(Cell::get)
}

/// The largest single allocation of the process so far (all threads).
pub fn largest_ever() -> usize {
    LARGEST_EVER.load(Ordering::Relaxed)
}
