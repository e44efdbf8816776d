//! [`ConvWorkspace`]: scratch memory reused across convolution calls.

use std::sync::Mutex;

/// Reusable scratch memory for [`conv2d_forward`](crate::conv2d_forward) and
/// [`conv2d_backward`](crate::conv2d_backward) (im2col columns, per-chunk partial weight and
/// bias gradients). Keep one per layer (or per thread of control) and pass it on every call, so
/// the hot path does not allocate once the buffers have grown to size. Buffers only grow; drop
/// the workspace to free them.
///
/// ```
/// use fracture_tensor::{conv2d_forward, ConvParams, ConvWorkspace, Tensor4};
/// let mut ws = ConvWorkspace::default();
/// let x = Tensor4::zeros([1, 1, 4, 4]);
/// let w = Tensor4::zeros([2, 1, 3, 3]);
/// for _ in 0..3 {
///     let y = conv2d_forward(&x, &w, None, ConvParams::default(), &mut ws)?;
///     assert_eq!(y.shape(), [1, 2, 2, 2]);
/// }
/// # Ok::<(), fracture_tensor::TensorError>(())
/// ```
#[derive(Default)]
pub struct ConvWorkspace {
    /// One im2col / col2im buffer per rayon worker thread, picked by thread index. The mutex is
    /// never contended (a task holds it only while it runs on that thread and does not yield).
    pub(crate) bufs: Vec<Mutex<Vec<f32>>>,
    /// Partial weight gradients, one per fixed chunk, `[chunk][O * C * KH * KW]`.
    pub(crate) partials: Vec<f32>,
    /// Per-chunk partial bias gradients in f64, `[chunk][O]`.
    pub(crate) db_partials: Vec<f64>,
}

impl std::fmt::Debug for ConvWorkspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let lens: Vec<usize> = self
            .bufs
            .iter()
            .map(|b| b.lock().map_or(0, |b| b.len()))
            .collect();
        f.debug_struct("ConvWorkspace")
            .field("buffer_lens", &lens)
            .field("partials_len", &self.partials.len())
            .finish()
    }
}

impl ConvWorkspace {
    /// Makes sure there are `count` buffers of at least `len` elements (only grows).
    pub(crate) fn prepare(&mut self, count: usize, len: usize) {
        while self.bufs.len() < count {
            self.bufs.push(Mutex::new(Vec::new()));
        }
        for b in &mut self.bufs {
            let b = b.get_mut().unwrap_or_else(|e| e.into_inner());
            if b.len() < len {
                b.resize(len, 0.0);
            }
        }
    }
}

/// Runs `f` with the scratch buffer of the current rayon worker thread.
pub(crate) fn with_buf<R>(bufs: &[Mutex<Vec<f32>>], f: impl FnOnce(&mut [f32]) -> R) -> R {
    let i = rayon::current_thread_index().unwrap_or(0) % bufs.len().max(1);
    let mut guard = bufs[i].lock().unwrap_or_else(|e| e.into_inner());
    f(&mut guard)
}
