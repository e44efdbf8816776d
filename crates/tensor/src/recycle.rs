//! A process-wide pool of large `f32` buffers that dropped [`Tensor4`](crate::Tensor4)s hand
//! back and new tensors take from.
//!
//! Why: a training step allocates and frees the same multi-megabyte activations and gradients
//! every step. The system allocator serves such sizes with fresh `mmap`s, and touching a fresh
//! mapping costs one page fault per 4 KiB: measured 75-100 ms of CPU per 67 MB buffer on the
//! 2-vCPU test machine, more than the convolution that fills it. Recycling the buffers turns
//! that into a plain (cached) write.
//!
//! Only buffers of at least [`MIN_POOLED_BYTES`] are pooled, and the pool never holds more than
//! [`pool_limit_bytes`] (default [`DEFAULT_POOL_LIMIT_BYTES`]); beyond that, buffers go back to
//! the system. A buffer is reused only for a request of exactly its capacity, so memory is never
//! wasted on oversized buffers. Values never leak into results: [`take`] is only used where the
//! caller overwrites every element, and zeroed tensors are filled with zeros.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Buffers smaller than this (bytes) are not pooled: the system allocator handles them well.
pub const MIN_POOLED_BYTES: usize = 256 * 1024;

/// Default upper bound (bytes) of what the pool holds: 2 GiB, the working set of a batch-32
/// EfficientNet-Lite0 training step at 224 px (with 768 MiB that step faulted about 2.1 GB of
/// fresh pages and ran at a third of its speed).
pub const DEFAULT_POOL_LIMIT_BYTES: usize = 2048 * 1024 * 1024;

static LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_POOL_LIMIT_BYTES);

#[derive(Default)]
struct Pool {
    /// Free buffers by capacity (in elements).
    free: HashMap<usize, Vec<Vec<f32>>>,
    bytes: usize,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

fn with_pool<R>(f: impl FnOnce(&mut Pool) -> R) -> R {
    let mut g = POOL.lock().unwrap_or_else(|e| e.into_inner());
    f(g.get_or_insert_with(Pool::default))
}

/// A vector of exactly `len` elements whose values are unspecified (left by an earlier tensor):
/// the caller must write every element before reading it.
pub(crate) fn take(len: usize) -> Vec<f32> {
    if len * 4 >= MIN_POOLED_BYTES {
        let got = with_pool(|p| {
            let v = p.free.get_mut(&len)?.pop()?;
            p.bytes -= v.capacity() * 4;
            Some(v)
        });
        if let Some(mut v) = got {
            // Capacity == len, so this never reallocates; it only sets the length.
            v.resize(len, 0.0);
            return v;
        }
    }
    vec![0.0; len]
}

/// A vector of `len` zeros, recycled when possible.
pub(crate) fn zeroed(len: usize) -> Vec<f32> {
    let mut v = take(len);
    v.fill(0.0);
    v
}

/// Hands a buffer back; kept if large enough and the pool has room, else freed.
pub(crate) fn give(v: Vec<f32>) {
    let bytes = v.capacity() * 4;
    if bytes < MIN_POOLED_BYTES {
        return;
    }
    let limit = LIMIT.load(Ordering::Relaxed);
    with_pool(|p| {
        if p.bytes + bytes <= limit {
            p.bytes += bytes;
            p.free.entry(v.capacity()).or_default().push(v);
        }
    });
}

/// Bytes currently held by the buffer pool (free buffers waiting for reuse).
///
/// ```
/// // After a release, the pool is empty.
/// fracture_tensor::release_pooled_buffers();
/// assert!(fracture_tensor::pooled_bytes() < 1 << 40);
/// ```
pub fn pooled_bytes() -> usize {
    with_pool(|p| p.bytes)
}

/// The pool's upper bound in bytes.
///
/// ```
/// assert!(fracture_tensor::pool_limit_bytes() > 0 || fracture_tensor::pooled_bytes() == 0);
/// ```
pub fn pool_limit_bytes() -> usize {
    LIMIT.load(Ordering::Relaxed)
}

/// Sets the pool's upper bound in bytes (0 disables pooling) and frees what exceeds it.
///
/// ```
/// let old = fracture_tensor::pool_limit_bytes();
/// fracture_tensor::set_pool_limit_bytes(0);
/// assert_eq!(fracture_tensor::pooled_bytes(), 0);
/// fracture_tensor::set_pool_limit_bytes(old);
/// ```
pub fn set_pool_limit_bytes(limit: usize) {
    LIMIT.store(limit, Ordering::Relaxed);
    with_pool(|p| {
        if p.bytes > limit {
            p.free.clear();
            p.bytes = 0;
        }
    });
}

/// Frees every buffer the pool holds (e.g. after training, before a long idle phase).
///
/// ```
/// fracture_tensor::release_pooled_buffers();
/// assert_eq!(fracture_tensor::pooled_bytes(), 0);
/// ```
pub fn release_pooled_buffers() {
    with_pool(|p| {
        p.free.clear();
        p.bytes = 0;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_is_zero_after_reuse_and_lengths_are_exact() {
        let n = MIN_POOLED_BYTES; // elements: 4x the threshold in bytes
        let mut v = take(n);
        v.fill(7.0);
        give(v);
        let z = zeroed(n);
        assert_eq!(z.len(), n);
        assert!(z.iter().all(|&x| x == 0.0));
        let t = take(3);
        assert_eq!(t.len(), 3);
    }
}
