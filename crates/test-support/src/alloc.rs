//! A global allocator that counts, per thread, the bytes live on the heap and their peak, so
//! that a property can bound what one call allocates (other test threads do not disturb the
//! count).
//!
//! A library cannot install a global allocator for the binary that links it: the test file
//! does, and then measures with [`measure`].
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: fracture_test_support::alloc::Counting = fracture_test_support::alloc::Counting;
//!
//! let (value, peak_bytes, elapsed) = fracture_test_support::alloc::measure(|| parse(&bytes));
//! ```

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{Duration, Instant};

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

/// Forwards to the system allocator and counts this thread's live bytes and their peak.
/// Install it with `#[global_allocator]` in the test binary; without that, [`measure`] reports
/// a peak of 0.
pub struct Counting;

fn add(n: usize) {
    // `try_with`: the thread-local may already be gone while a thread is torn down.
    let _ = LIVE.try_with(|l| {
        let v = l.get() + n;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

fn sub(n: usize) {
    let _ = LIVE.try_with(|l| l.set(l.get().saturating_sub(n)));
}

// SAFETY: every method forwards to the system allocator with the caller's arguments unchanged,
// so `System` upholds the `GlobalAlloc` contract; the counting only touches thread-local
// `Cell`s, which have no destructors and never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        // SAFETY: the caller's `layout` is passed on as `GlobalAlloc::alloc` requires.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        sub(layout.size());
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        add(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        add(new_size);
        sub(layout.size());
        // SAFETY: `ptr` was allocated by `System` with `layout`; `new_size` comes from the
        // caller, who guarantees it is valid for `layout`'s alignment.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Runs `f` and returns its result with the peak of the bytes this thread had live at once
/// (above what was live before) and the time it took. Needs [`Counting`] installed as the
/// global allocator.
pub fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, Duration) {
    let base = LIVE.with(|l| l.get());
    PEAK.with(|p| p.set(base));
    let t = Instant::now();
    let out = f();
    let elapsed = t.elapsed();
    let peak = PEAK.with(|p| p.get()).saturating_sub(base);
    (out, peak, elapsed)
}
