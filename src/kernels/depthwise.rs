//! Depthwise 2-D convolution (one K x K filter per channel).
//!
//! candle 0.11 runs a grouped convolution as one convolution per group,
//! which for EfficientNet's depthwise layers (groups = channels) is two
//! orders of magnitude slower than PyTorch. On the CPU with f32 inputs this
//! module runs the convolution, and both of its gradients, as candle
//! `CustomOp2`s over rayon's current pool, one (n, c) plane per task.
//!
//! Forward and weight gradient work on a per-task scratch copy of one x
//! plane with its zero border, split by column phase: padded column `col`
//! of padded row `r` lives at `(r * s + col % s) * wq + col / s` (`s` the
//! stride, `wq` the width of one phase). With that layout each tap of an
//! output row reads one contiguous run at a fixed offset, for stride 1 and
//! stride 2 alike, so the inner loops are 8-wide register sums over slices
//! with no border tests. The input gradient is computed the same way from a
//! zero-bordered copy of the gy plane, one phase of the gradient at a time
//! (a stride-2 gradient is four small dense correlations). Scratch borders
//! are zeroed once per task and never written, so each plane costs one
//! copy; nothing allocates per plane and the whole input is never padded.
//!
//! The kernels are compiled twice, plain and with AVX2 + FMA, and the build
//! the CPU supports is picked at run time.

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;

/// Depthwise convolution of `x` (N, C, H, W) with `w` (C, 1, K, K), padded
/// by `pads` = [top, bottom, left, right] (asymmetric allowed). The fast
/// kernels run for non-empty f32 tensors on the CPU; any other device or
/// dtype (or an empty input) uses candle's grouped convolution.
pub fn depthwise_conv2d(x: &Tensor, w: &Tensor, stride: usize, pads: [usize; 4]) -> Result<Tensor> {
    let fast = x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32
        && x.elem_count() > 0;
    if !fast {
        let c = x.dim(1)?;
        return super::reference_conv2d(x, w, stride, pads, c);
    }
    let geom = Geom::new(x.dims(), w.dims(), stride, pads)?;
    let x = x.contiguous()?;
    let w = w.contiguous()?;
    x.apply_op2(&w, DepthwiseFwd { geom })
}

/// Sizes of one depthwise convolution and of its scratch planes.
#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    top: usize,
    left: usize,
    ho: usize,
    wo: usize,
    /// Padded rows the output reads: (ho - 1) * stride + k.
    hp: usize,
    /// Padded columns the output reads: (wo - 1) * stride + k.
    wp: usize,
    /// Width of one column phase in the x scratch: ceil(wp / stride).
    wq: usize,
    /// Reach of a tap in the output, (k - 1) / stride: the zero border of
    /// the gy scratch.
    reach: usize,
}

impl Geom {
    fn new(x: &[usize], w: &[usize], stride: usize, pads: [usize; 4]) -> Result<Self> {
        let &[n, c, h, wd] = x else {
            bail!("depthwise_conv2d: input x should be (N, C, H, W), got shape {x:?}")
        };
        let &[wc, one, k, k2] = w else {
            bail!("depthwise_conv2d: weight should be (C, 1, K, K), got shape {w:?}")
        };
        if wc != c || one != 1 || k != k2 || k == 0 {
            bail!(
                "depthwise_conv2d: weight should be (C = {c}, 1, K, K) for input {x:?}, got {w:?}"
            )
        }
        if stride == 0 {
            bail!("depthwise_conv2d: stride must be at least 1, got 0")
        }
        let [top, bottom, left, right] = pads;
        let (hpad, wpad) = (h + top + bottom, wd + left + right);
        if hpad < k || wpad < k {
            bail!(
                "depthwise_conv2d: padded input {hpad}x{wpad} (input {x:?}, pads {pads:?}) is smaller than the {k}x{k} kernel"
            )
        }
        let ho = (hpad - k) / stride + 1;
        let wo = (wpad - k) / stride + 1;
        let wp = (wo - 1) * stride + k;
        Ok(Self {
            n,
            c,
            h,
            w: wd,
            k,
            stride,
            top,
            left,
            ho,
            wo,
            hp: (ho - 1) * stride + k,
            wp,
            wq: wp.div_ceil(stride),
            reach: (k - 1) / stride,
        })
    }

    fn x_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.h, self.w]
    }

    fn w_dims(&self) -> [usize; 4] {
        [self.c, 1, self.k, self.k]
    }

    fn y_dims(&self) -> [usize; 4] {
        [self.n, self.c, self.ho, self.wo]
    }

    /// Length of the x scratch, plus `LANES` floats of slack for the
    /// full-width last group of a row.
    fn x_scratch_len(&self) -> usize {
        self.hp * self.stride * self.wq + LANES
    }

    /// Row width of the gy scratch: gy's rows with `reach` zeros each side.
    fn gy_width(&self) -> usize {
        self.wo + 2 * self.reach
    }

    /// Length of the gy scratch, with the same slack.
    fn gy_scratch_len(&self) -> usize {
        (self.ho + 2 * self.reach) * self.gy_width() + LANES
    }

    /// x-scratch offset of tap (ky, kx) from the start of an output row's
    /// window, taps in the weight's row-major order.
    fn tap_offsets(&self) -> Vec<usize> {
        let (s, wq) = (self.stride, self.wq);
        (0..self.k * self.k)
            .map(|t| {
                let (ky, kx) = (t / self.k, t % self.k);
                (ky * s + kx % s) * wq + kx / s
            })
            .collect()
    }

    /// x-scratch offset of output row `oy`'s window.
    fn row_base(&self, oy: usize) -> usize {
        oy * self.stride * self.stride * self.wq
    }

    /// Input rows the output reads (the first ones: rows past them are
    /// bottom rows a stride > 1 drops).
    fn rows_read(&self) -> usize {
        self.h.min(self.hp.saturating_sub(self.top))
    }

    /// Input columns the output reads (the first ones, likewise).
    fn cols_read(&self) -> usize {
        self.w.min(self.wp.saturating_sub(self.left))
    }

    /// The input gradient by phase: padded position (r, col) with
    /// r % s = a and col % s = b only gets gy from taps (a + s u, b + s v),
    /// at gy[r / s - u][col / s - v], so each phase is a small dense
    /// correlation of the zero-bordered gy. One entry per row phase a that
    /// has gradient rows, each with the taps of every column phase b (none
    /// when a or b is past the kernel, a stride wider than it).
    fn grad_x_phases(&self) -> Vec<RowPhase> {
        let (s, k, e, gw) = (self.stride, self.k, self.reach, self.gy_width());
        let rows = runs(self.top, self.rows_read(), s);
        rows.iter()
            .enumerate()
            .filter(|(_, rows)| rows.count > 0)
            .map(|(a, &rows)| {
                let cols = (0..s)
                    .map(|b| {
                        let mut taps = Vec::new();
                        let mut offs = Vec::new();
                        for u in (0..).take_while(|u| a + s * u < k) {
                            for v in (0..).take_while(|v| b + s * v < k) {
                                taps.push((a + s * u) * k + b + s * v);
                                offs.push((e - u) * gw + e - v);
                            }
                        }
                        (taps, offs)
                    })
                    .collect();
                RowPhase { rows, cols }
            })
            .collect()
    }
}

/// The input positions along one axis (every `stride`-th, from `i0`) that
/// land in one phase of the padded axis, and where.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// First input index of the run.
    i0: usize,
    /// Its index within the phase: (i0 + border) / stride.
    j0: usize,
    /// Input indices in the run.
    count: usize,
}

/// For each phase p < s, the inputs i < `read` with (i + border) % s = p.
fn runs(border: usize, read: usize, s: usize) -> Vec<Run> {
    (0..s)
        .map(|p| {
            // The first padded index >= border with the right phase.
            let first = if p >= border % s {
                (border / s) * s + p
            } else {
                (border / s + 1) * s + p
            };
            let i0 = first - border;
            let count = if i0 < read {
                (read - i0).div_ceil(s)
            } else {
                0
            };
            Run {
                i0,
                j0: first / s,
                count,
            }
        })
        .collect()
}

/// One row phase of the input gradient (see [`Geom::grad_x_phases`]).
#[derive(Debug)]
struct RowPhase {
    /// The gradient rows (i0 + s i) and their gy-scratch rows (j0 + i).
    rows: Run,
    /// For each column phase: the taps' indices into the channel's K x K
    /// weights and their gy-scratch offsets from the phase position.
    cols: Vec<(Vec<usize>, Vec<usize>)>,
}

/// What every plane of one call shares: the sizes, the tap offsets, the
/// column runs, the input-gradient phases and which build of the kernels
/// the CPU can run.
struct Plan {
    g: Geom,
    offs: Vec<usize>,
    cols: Vec<Run>,
    phases: Vec<RowPhase>,
    simd: bool,
}

impl Plan {
    fn new(g: Geom) -> Self {
        Self {
            g,
            offs: g.tap_offsets(),
            cols: runs(g.left, g.cols_read(), g.stride),
            phases: g.grad_x_phases(),
            simd: has_avx2_fma(),
        }
    }

    /// One y plane from one x plane.
    fn fwd(&self, x: &[f32], wk: &[f32], scratch: &mut [f32], y: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: `simd` is set only when the CPU reports AVX2 and FMA.
            return unsafe { avx2::fwd(self, x, wk, scratch, y) };
        }
        fwd_plane::<Plain>(self, x, wk, scratch, y)
    }

    /// One gx plane from one gy plane (`gx` starts at zero).
    fn grad_x(&self, gy: &[f32], wk: &[f32], scratch: &mut Scratch, gx: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: as in `fwd`.
            return unsafe { avx2::grad_x(self, gy, wk, scratch, gx) };
        }
        grad_x_plane::<Plain>(self, gy, wk, scratch, gx)
    }

    /// acc[t] += lane-wise products of one gy plane with tap t's windows
    /// of the matching x plane.
    fn grad_w(&self, x: &[f32], gy: &[f32], scratch: &mut [f32], acc: &mut [[f32; LANES]]) {
        #[cfg(target_arch = "x86_64")]
        if self.simd {
            // SAFETY: as in `fwd`.
            return unsafe { avx2::grad_w(self, x, gy, scratch, acc) };
        }
        grad_w_plane::<Plain>(self, x, gy, scratch, acc)
    }
}

/// Per-task buffers of the input gradient: the zero-bordered gy plane, one
/// phase's weights and one gradient row split by column phase.
struct Scratch {
    gy: Vec<f32>,
    wk: Vec<f32>,
    row: Vec<f32>,
}

/// Whether the AVX2 + FMA build of the kernels can run here (decided at
/// run time, so a build without `target-cpu=native` still gets it).
fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The kernels compiled with AVX2 + FMA (8-wide fused multiply-adds).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{Fused, LANES, Plan, Scratch, fwd_plane, grad_w_plane, grad_x_plane};

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn fwd(p: &Plan, x: &[f32], wk: &[f32], scratch: &mut [f32], y: &mut [f32]) {
        fwd_plane::<Fused>(p, x, wk, scratch, y)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn grad_x(p: &Plan, gy: &[f32], wk: &[f32], scratch: &mut Scratch, gx: &mut [f32]) {
        grad_x_plane::<Fused>(p, gy, wk, scratch, gx)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn grad_w(
        p: &Plan,
        x: &[f32],
        gy: &[f32],
        scratch: &mut [f32],
        acc: &mut [[f32; LANES]],
    ) {
        grad_w_plane::<Fused>(p, x, gy, scratch, acc)
    }
}

/// `a * b + c`, as two roundings or one fused multiply-add.
trait MulAdd {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// Separate multiply and add (every CPU).
struct Plain;

impl MulAdd for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// Fused multiply-add: only inside the FMA build, where it is one
/// instruction (elsewhere `f32::mul_add` is a slow library call).
#[cfg(target_arch = "x86_64")]
struct Fused;

#[cfg(target_arch = "x86_64")]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// Runs `$body` with the slices `$wk` and `$offs` rebound to local copies
/// of fixed length when their length is one of `$n` (the tap counts of 3x3
/// and 5x5 kernels, whole or split by stride-2 phase): the compiler then
/// unrolls the tap loops and keeps weights and offsets in registers (a
/// store to the output could alias the `Plan`'s heap copy, but not a
/// local). Any other length runs the same body with a loop.
macro_rules! with_fixed_taps {
    ($wk:ident, $offs:ident, [$($n:literal),*], $body:expr) => {
        $(if let (Ok(w), Ok(o)) = (<&[f32; $n]>::try_from($wk), <&[usize; $n]>::try_from($offs)) {
            let (w, o) = (*w, *o);
            let ($wk, $offs) = (&w[..], &o[..]);
            $body
        } else)* {
            $body
        }
    };
}

/// Lanes of one group of outputs: one AVX register.
const LANES: usize = 8;

/// sum over taps t of wk[t] * buf[at + offs[t] + i], for i < LANES.
#[inline(always)]
fn taps_dot<M: MulAdd>(buf: &[f32], at: usize, wk: &[f32], offs: &[usize]) -> [f32; LANES] {
    let mut acc = [0f32; LANES];
    for (&wt, &off) in wk.iter().zip(offs) {
        let src = &buf[at + off..at + off + LANES];
        for (a, &v) in acc.iter_mut().zip(src) {
            *a = M::mul_add(wt, v, *a);
        }
    }
    acc
}

/// dst = src (of equal length), in fixed groups of `LANES` the compiler
/// inlines: rows are short, and a library `memcpy` call per row costs more
/// than the copy.
#[inline(always)]
fn copy_short(dst: &mut [f32], src: &[f32]) {
    let mut d = dst.chunks_exact_mut(LANES);
    let mut s = src.chunks_exact(LANES);
    for (d, s) in (&mut d).zip(&mut s) {
        d.copy_from_slice(s);
    }
    for (d, &s) in d.into_remainder().iter_mut().zip(s.remainder()) {
        *d = s;
    }
}

/// Splits one input row into its column phases: phase p's run goes to
/// `phases[p * pitch + j0 ..]`. Stride 2 (the common strided case) is
/// written as pairs so the compiler vectorises the deinterleave.
#[inline(always)]
fn split_row(cols: &[Run], src: &[f32], phases: &mut [f32], pitch: usize) {
    match cols {
        [r] => copy_short(
            &mut phases[r.j0..r.j0 + r.count],
            &src[r.i0..r.i0 + r.count],
        ),
        [r0, r1] => {
            let (lo, hi) = phases.split_at_mut(pitch);
            // The phase whose run starts at column 0 takes the even columns.
            let ((pe, re), (po, ro)) = if r0.i0 == 0 {
                ((lo, r0), (hi, r1))
            } else {
                ((hi, r1), (lo, r0))
            };
            let even = &mut pe[re.j0..re.j0 + re.count];
            let odd = &mut po[ro.j0..ro.j0 + ro.count];
            for ((pair, e), o) in src.chunks_exact(2).zip(even.iter_mut()).zip(odd.iter_mut()) {
                *e = pair[0];
                *o = pair[1];
            }
            if re.count > ro.count {
                even[ro.count] = src[2 * ro.count];
            }
        }
        _ => {
            let s = cols.len();
            for (p, r) in cols.iter().enumerate() {
                let dst = &mut phases[p * pitch + r.j0..p * pitch + r.j0 + r.count];
                for (d, &v) in dst.iter_mut().zip(src[r.i0..].iter().step_by(s)) {
                    *d = v;
                }
            }
        }
    }
}

/// The inverse of [`split_row`]: merges the column phases back into one
/// row. Columns in no run are left as they are.
#[inline(always)]
fn merge_row(cols: &[Run], phases: &[f32], pitch: usize, dst: &mut [f32]) {
    match cols {
        [r] => copy_short(
            &mut dst[r.i0..r.i0 + r.count],
            &phases[r.j0..r.j0 + r.count],
        ),
        [r0, r1] => {
            let (lo, hi) = phases.split_at(pitch);
            let ((pe, re), (po, ro)) = if r0.i0 == 0 {
                ((lo, r0), (hi, r1))
            } else {
                ((hi, r1), (lo, r0))
            };
            let even = &pe[re.j0..re.j0 + re.count];
            let odd = &po[ro.j0..ro.j0 + ro.count];
            // Groups of LANES pairs as fixed-size arrays, which the compiler
            // turns into vector shuffles, then the last pairs one by one.
            let (dc, _) = dst.as_chunks_mut::<{ 2 * LANES }>();
            let (ec, _) = even.as_chunks::<LANES>();
            let (oc, _) = odd.as_chunks::<LANES>();
            let mut done = 0;
            for ((d, e), o) in dc.iter_mut().zip(ec).zip(oc) {
                // Local copies: a store to `dst` cannot change them.
                let (e, o) = (*e, *o);
                for j in 0..LANES {
                    d[2 * j] = e[j];
                    d[2 * j + 1] = o[j];
                }
                done += LANES;
            }
            for (j, (&e, &o)) in even[done..].iter().zip(&odd[done..]).enumerate() {
                dst[2 * (done + j)] = e;
                dst[2 * (done + j) + 1] = o;
            }
            if re.count > ro.count {
                dst[2 * ro.count] = even[ro.count];
            }
        }
        _ => {
            let s = cols.len();
            for (p, r) in cols.iter().enumerate() {
                let src = &phases[p * pitch + r.j0..p * pitch + r.j0 + r.count];
                for (d, &v) in dst[r.i0..].iter_mut().step_by(s).zip(src) {
                    *d = v;
                }
            }
        }
    }
}

/// Copies one x plane (h x w) into the interior of the x scratch.
#[inline(always)]
fn pack(p: &Plan, plane: &[f32], scratch: &mut [f32]) {
    let g = &p.g;
    let pitch = g.stride * g.wq;
    for (iy, src) in plane.chunks_exact(g.w).take(g.rows_read()).enumerate() {
        let r = iy + g.top;
        split_row(&p.cols, src, &mut scratch[r * pitch..(r + 1) * pitch], g.wq);
    }
}

/// y[oy, :] = sum over the taps t of w[t] * window(oy, t), for one plane,
/// eight outputs at a time in registers. The last, partial group is
/// computed full width (into the scratch's slack) and only its valid part
/// stored.
#[inline(always)]
fn fwd_plane<M: MulAdd>(p: &Plan, x: &[f32], wk: &[f32], scratch: &mut [f32], y: &mut [f32]) {
    pack(p, x, scratch);
    let g = &p.g;
    let offs = &p.offs[..];
    with_fixed_taps!(wk, offs, [9, 25], {
        for (oy, orow) in y.chunks_mut(g.wo).enumerate() {
            let base = g.row_base(oy);
            let mut groups = orow.chunks_exact_mut(LANES);
            for (ci, oc) in (&mut groups).enumerate() {
                oc.copy_from_slice(&taps_dot::<M>(scratch, base + ci * LANES, wk, offs));
            }
            let tail = groups.into_remainder();
            if !tail.is_empty() {
                let acc = taps_dot::<M>(scratch, base + g.wo - tail.len(), wk, offs);
                copy_short(tail, &acc[..tail.len()]);
            }
        }
    })
}

/// One gx plane, phase by phase (see [`Geom::grad_x_phases`]): each
/// gradient value is a register sum over its phase's taps. A gradient row
/// is computed into the phase-split row buffer and merged into `gx` once;
/// cells no tap reaches keep the zero `gx` starts with.
#[inline(always)]
fn grad_x_plane<M: MulAdd>(
    p: &Plan,
    gy: &[f32],
    wk: &[f32],
    scratch: &mut Scratch,
    gx: &mut [f32],
) {
    let g = &p.g;
    let (s, e, gw) = (g.stride, g.reach, g.gy_width());
    let pitch = g.wq + LANES;
    for (oy, src) in gy.chunks_exact(g.wo).enumerate() {
        let start = (oy + e) * gw + e;
        copy_short(&mut scratch.gy[start..start + g.wo], src);
    }
    let Scratch {
        gy: buf,
        wk: wsub,
        row,
    } = scratch;
    for ph in &p.phases {
        // This row phase's weights, column phase after column phase.
        wsub.clear();
        for (taps, _) in &ph.cols {
            wsub.extend(taps.iter().map(|&t| wk[t]));
        }
        for i in 0..ph.rows.count {
            let at_row = (ph.rows.j0 + i) * gw;
            let mut first = 0;
            for (b, (cols, (taps, offs))) in p.cols.iter().zip(&ph.cols).enumerate() {
                let ws = &wsub[first..first + taps.len()];
                first += taps.len();
                let offs = &offs[..];
                with_fixed_taps!(ws, offs, [1, 2, 4, 6, 9, 25], {
                    for c in (0..cols.count).step_by(LANES) {
                        let acc = taps_dot::<M>(buf, at_row + cols.j0 + c, ws, offs);
                        let at = b * pitch + cols.j0 + c;
                        row[at..at + LANES].copy_from_slice(&acc);
                    }
                })
            }
            let iy = ph.rows.i0 + i * s;
            merge_row(&p.cols, row, pitch, &mut gx[iy * g.w..(iy + 1) * g.w]);
        }
    }
}

/// acc[t] += dot(gy[oy, :], window(oy, t)) over the output rows oy,
/// lane-wise, for one (x, gy) plane pair: each group of eight gy values is
/// loaded once and multiplied into every tap's lanes.
#[inline(always)]
fn grad_w_plane<M: MulAdd>(
    p: &Plan,
    x: &[f32],
    gy: &[f32],
    scratch: &mut [f32],
    acc: &mut [[f32; LANES]],
) {
    pack(p, x, scratch);
    let g = &p.g;
    let offs = &p.offs[..];
    for (oy, grow) in gy.chunks_exact(g.wo).enumerate() {
        let base = g.row_base(oy);
        let chunks = grow.chunks_exact(LANES);
        let tail = chunks.remainder();
        for (ci, gc) in chunks.enumerate() {
            let at = base + ci * LANES;
            for (lanes, &off) in acc.iter_mut().zip(offs) {
                let src = &scratch[at + off..at + off + LANES];
                for ((l, &a), &b) in lanes.iter_mut().zip(gc).zip(src) {
                    *l = M::mul_add(a, b, *l);
                }
            }
        }
        if !tail.is_empty() {
            let at = base + g.wo - tail.len();
            for (lanes, &off) in acc.iter_mut().zip(offs) {
                let src = &scratch[at + off..at + off + tail.len()];
                for ((l, &a), &b) in lanes.iter_mut().zip(tail).zip(src) {
                    *l = M::mul_add(a, b, *l);
                }
            }
        }
    }
}

/// The contiguous f32 data of one operand, checked against its expected shape.
fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, what: &str, dims: &[usize]) -> Result<&'a [f32]> {
    if l.dims() != dims {
        bail!(
            "depthwise_conv2d: {what} should have shape {dims:?}, got {:?}",
            l.dims()
        )
    }
    super::f32_contiguous(s, l, "depthwise_conv2d", what)
}

/// The forward convolution, (x, w) -> y; its backward runs the two
/// gradient kernels below.
struct DepthwiseFwd {
    geom: Geom,
}

impl CustomOp2 for DepthwiseFwd {
    fn name(&self) -> &'static str {
        "depthwise-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let g = &self.geom;
            let x = f32_data(s1, l1, "input x", &g.x_dims())?;
            let w = f32_data(s2, l2, "weight", &g.w_dims())?;
            let plan = Plan::new(*g);
            let (kk, in_plane, out_plane) = (g.k * g.k, g.h * g.w, g.ho * g.wo);
            let mut y = vec![0f32; g.n * g.c * out_plane];
            y.par_chunks_mut(out_plane)
                .enumerate()
                .with_min_len(super::min_len(out_plane * kk))
                .for_each_init(
                    || vec![0f32; g.x_scratch_len()],
                    |scratch, (i, out)| {
                        let ch = i % g.c;
                        let x = &x[i * in_plane..(i + 1) * in_plane];
                        plan.fwd(x, &w[ch * kk..(ch + 1) * kk], scratch, out);
                    },
                );
            Ok((CpuStorage::F32(y), Shape::from_dims(&g.y_dims())))
        })
    }

    /// Gradients by the fast kernels (not themselves differentiable, so no
    /// second derivatives); an argument that carries no gradient gets none.
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        let geom = self.geom;
        let gx = if x.track_op() {
            Some(gy.apply_op2_no_bwd(w, &DepthwiseGradX { geom })?)
        } else {
            None
        };
        let gw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&gy, &DepthwiseGradW { geom })?)
        } else {
            None
        };
        Ok((gx, gw))
    }
}

/// (gy, w) -> gradient wrt x: the transposed depthwise convolution.
struct DepthwiseGradX {
    geom: Geom,
}

impl CustomOp2 for DepthwiseGradX {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-x"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let g = &self.geom;
            let gy = f32_data(s1, l1, "output gradient", &g.y_dims())?;
            let w = f32_data(s2, l2, "weight", &g.w_dims())?;
            let plan = Plan::new(*g);
            let (kk, in_plane, out_plane) = (g.k * g.k, g.h * g.w, g.ho * g.wo);
            let mut gx = vec![0f32; g.n * g.c * in_plane];
            gx.par_chunks_mut(in_plane)
                .enumerate()
                .with_min_len(super::min_len(in_plane * kk))
                .for_each_init(
                    || Scratch {
                        gy: vec![0f32; g.gy_scratch_len()],
                        wk: Vec::with_capacity(kk),
                        row: vec![0f32; g.stride * (g.wq + LANES)],
                    },
                    |scratch, (i, plane)| {
                        let ch = i % g.c;
                        let gy = &gy[i * out_plane..(i + 1) * out_plane];
                        plan.grad_x(gy, &w[ch * kk..(ch + 1) * kk], scratch, plane);
                    },
                );
            Ok((CpuStorage::F32(gx), Shape::from_dims(&g.x_dims())))
        })
    }
}

/// (x, gy) -> gradient wrt w: per channel, the correlation of x with gy
/// summed over the batch.
struct DepthwiseGradW {
    geom: Geom,
}

impl CustomOp2 for DepthwiseGradW {
    fn name(&self) -> &'static str {
        "depthwise-conv2d-grad-w"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            let g = &self.geom;
            let x = f32_data(s1, l1, "input x", &g.x_dims())?;
            let gy = f32_data(s2, l2, "output gradient", &g.y_dims())?;
            let plan = Plan::new(*g);
            let (kk, in_plane, out_plane) = (g.k * g.k, g.h * g.w, g.ho * g.wo);
            // Per-plane sums, planes in memory order (so each task streams x
            // and gy), then the sum over the batch in batch order: the result
            // does not depend on how rayon splits the work.
            let mut part = vec![0f32; g.n * g.c * kk];
            part.par_chunks_mut(kk)
                .enumerate()
                .with_min_len(super::min_len(out_plane * kk))
                .for_each_init(
                    || (vec![0f32; g.x_scratch_len()], vec![[0f32; LANES]; kk]),
                    |(scratch, acc), (i, out)| {
                        acc.iter_mut().for_each(|l| *l = [0.0; LANES]);
                        let x = &x[i * in_plane..(i + 1) * in_plane];
                        let gy = &gy[i * out_plane..(i + 1) * out_plane];
                        plan.grad_w(x, gy, scratch, acc);
                        for (o, lanes) in out.iter_mut().zip(acc.iter()) {
                            *o = lanes.iter().sum();
                        }
                    },
                );
            let mut gw = vec![0f32; g.c * kk];
            for batch in part.chunks_exact(g.c * kk) {
                for (o, &v) in gw.iter_mut().zip(batch) {
                    *o += v;
                }
            }
            Ok((CpuStorage::F32(gw), Shape::from_dims(&g.w_dims())))
        })
    }
}
