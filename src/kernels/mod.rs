//! The numerical kernels the layers call. Each entry point takes a fast CPU
//! path (a candle `CustomOp` with its own backward) where one exists and
//! candle's plain ops everywhere else (CUDA included), so a `cuda` build
//! always has a correct path. Every fast kernel is tested against the plain
//! ops on random inputs (tests/kernels_*.rs).

pub mod batchnorm;
pub mod conv;
pub mod depthwise;
pub mod eltwise;
pub mod pool;
pub mod profile;
pub mod transpose;

pub use batchnorm::Act;
use candle_core::{Result, Tensor, Var};
use std::sync::OnceLock;

/// False when `FER_LAB_PLAIN_KERNELS=1`: every layer then runs candle's
/// plain ops, to check (or time) the fast path against them end to end.
pub fn fast() -> bool {
    static FAST: OnceLock<bool> = OnceLock::new();
    *FAST.get_or_init(|| !std::env::var("FER_LAB_PLAIN_KERNELS").is_ok_and(|v| v.trim() == "1"))
}

/// Work (in elements touched) below which a parallel task is not worth
/// rayon's hand-off: small late-stage layers would otherwise be cut into
/// thousands of tasks of a few dozen floats each.
const GRAIN: usize = 1 << 12;

/// The fewest items per rayon task when each item touches `item` elements.
pub(crate) fn min_len(item: usize) -> usize {
    (GRAIN / item.max(1)).max(1)
}

/// A mutable f32 buffer shared by parallel tasks that each write their own
/// disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedMut<'a> {
    ptr: *mut f32,
    len: usize,
    /// Keeps the buffer mutably borrowed while this lives.
    _buf: std::marker::PhantomData<&'a mut [f32]>,
}

// SAFETY: only hands out disjoint parts (the callers' obligation, see
// `slice`); the borrow keeps the buffer alive and unaliased meanwhile.
unsafe impl Send for SharedMut<'_> {}
unsafe impl Sync for SharedMut<'_> {}

impl<'a> SharedMut<'a> {
    pub(crate) fn new(buf: &'a mut [f32]) -> Self {
        Self {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            _buf: std::marker::PhantomData,
        }
    }

    /// `len` elements from `start`.
    ///
    /// # Safety
    /// No two live slices may overlap.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn slice(&self, start: usize, len: usize) -> &mut [f32] {
        assert!(
            start + len <= self.len,
            "SharedMut: {start}+{len} past {}",
            self.len
        );
        // SAFETY: in bounds (checked); disjointness is the caller's.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// The f32 elements of a contiguous CPU operand of a kernel (`op` and
/// `what` name it in errors).
pub(crate) fn f32_contiguous<'a>(
    s: &'a candle_core::CpuStorage,
    l: &candle_core::Layout,
    op: &str,
    what: &str,
) -> Result<&'a [f32]> {
    use candle_core::backend::BackendStorage;
    let candle_core::CpuStorage::F32(v) = s else {
        candle_core::bail!("{op}: {what} should be f32, got {:?}", s.dtype());
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("{op}: {what} should be contiguous"),
    }
}

/// Pads (N, C, H, W) with zeros: [top, bottom, left, right].
pub fn pad4(x: &Tensor, pads: [usize; 4]) -> Result<Tensor> {
    let [t, b, l, r] = pads;
    let x = if t + b > 0 {
        x.pad_with_zeros(2, t, b)?
    } else {
        x.clone()
    };
    if l + r > 0 {
        x.pad_with_zeros(3, l, r)
    } else {
        Ok(x)
    }
}

/// Dense convolution (groups 1), weight (Cout, Cin, K, K).
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pads: [usize; 4]) -> Result<Tensor> {
    if fast() {
        let (_, _, h, wd) = x.dims4()?;
        let (_, _, k, kw) = w.dims4()?;
        let [t, b, l, r] = pads;
        if h == 1
            && wd == 1
            && k > 1
            && kw == k
            && t < k
            && l < k
            && t + b + 1 == k
            && l + r + 1 == k
        {
            // A 1x1 map whose output is 1x1 (DenseNet's last block at small
            // inputs): every kernel tap but (top, left) reads padding, so
            // this is a pointwise convolution with that tap's weights (its
            // gradient lands in that tap; the others get zeros).
            let tap = w.narrow(2, t, 1)?.narrow(3, l, 1)?.contiguous()?;
            return conv::conv2d(x, &tap, 1, [0; 4]);
        }
        conv::conv2d(x, w, stride, pads)
    } else {
        reference_conv2d(x, w, stride, pads, 1)
    }
}

/// act(x + b[c]): a convolution's bias, then ReLU when `relu`.
pub fn bias_act(x: &Tensor, b: &Tensor, relu: bool) -> Result<Tensor> {
    if fast() {
        eltwise::bias_act(x, b, relu)
    } else {
        let y = x.broadcast_add(&b.reshape((1, b.elem_count(), 1, 1))?)?;
        if relu { y.relu() } else { Ok(y) }
    }
}

/// relu(a + b) (a residual block's end).
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if fast() {
        eltwise::add_relu(a, b)
    } else {
        (a + b)?.relu()
    }
}

/// Depthwise convolution (groups = C, one filter per channel), weight (C, 1, K, K).
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize, pads: [usize; 4]) -> Result<Tensor> {
    if fast() {
        depthwise::depthwise_conv2d(x, w, stride, pads)
    } else {
        reference_conv2d(x, w, stride, pads, x.dim(1)?)
    }
}

/// Any other grouped convolution: candle's ops (one conv per group).
pub fn grouped_conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pads: [usize; 4],
    groups: usize,
) -> Result<Tensor> {
    reference_conv2d(x, w, stride, pads, groups)
}

/// candle's own convolution, with asymmetric padding done by an explicit pad.
pub fn reference_conv2d(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    pads: [usize; 4],
    groups: usize,
) -> Result<Tensor> {
    let [t, b, l, r] = pads;
    if t == b && b == l && l == r {
        x.conv2d(w, t, stride, 1, groups)
    } else {
        pad4(x, pads)?.conv2d(w, 0, stride, 1, groups)
    }
}

/// The tensors of one batch-norm layer.
pub struct BnParams<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub running_mean: &'a Var,
    pub running_var: &'a Var,
    pub eps: f64,
    pub momentum: f64,
}

/// Batch norm with batch statistics, then `act`; moves the running statistics.
pub fn batch_norm_train(x: &Tensor, p: &BnParams, act: Act) -> Result<Tensor> {
    if fast() {
        batchnorm::batch_norm_train(x, p, act)
    } else {
        batchnorm::reference_train(x, p, act)
    }
}

/// Batch norm with the running statistics, then `act`.
pub fn batch_norm_eval(x: &Tensor, p: &BnParams, act: Act) -> Result<Tensor> {
    if fast() {
        batchnorm::batch_norm_eval(x, p, act)
    } else {
        batchnorm::reference_eval(x, p, act)
    }
}
