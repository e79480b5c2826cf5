//! Dense 2-D convolution (groups 1, dilation 1) as packed GEMMs on the CPU.
//!
//! candle 0.11's own CPU convolution is slow in training: its input gradient
//! runs `conv_transpose2d`, a plain loop, and its weight gradient a generic
//! path. Here all three products are packed GEMMs (the `gemm` crate candle
//! itself uses, on rayon's pool) over whole chunks of the batch:
//!
//! - forward: `Y = W x cols`, with `cols = im2col(x)` of shape
//!   (Cin·K·K, N·Ho·Wo), so the batch shares one GEMM and small late-stage
//!   feature maps still give a big one;
//! - weight gradient: `dW = dY x colsᵀ` (cols recomputed, not kept; a wide
//!   dW is computed as dWᵀ and transposed, which the GEMM runs faster);
//! - input gradient: `dx = col2im(Wᵀ x dY)`, skipped when the input needs no
//!   gradient (an image batch: neither a variable nor depending on one).
//!
//! A chunk's column matrix is bounded (`COLS_LIMIT`); feature maps with many
//! pixels go one image at a time, where the GEMM writes straight into the
//! NCHW output (no transposing copy) and a 1x1 stride-1 unpadded convolution
//! needs no im2col at all. The column and transposing buffers are per-thread
//! scratch kept between calls (sized by the largest layer seen).
//!
//! Any other device (CUDA) or dtype takes candle's ops
//! ([`super::reference_conv2d`]).

use super::transpose::{transpose, transpose_block};
use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor, bail};
use rayon::prelude::*;
use std::cell::Cell;
use std::thread::LocalKey;

/// Output pixels per image from which images go through the GEMMs one at a
/// time (no transposing copies; the GEMM is already wide enough).
const DIRECT_MIN_PIXELS: usize = 256;

/// Upper bound on the column matrix of a chunk of images, in floats (32 MiB),
/// so a large batch does not need an im2col buffer K·K times its input.
const COLS_LIMIT: usize = 1 << 23;

/// Batch pixels (N·Ho·Wo) from which a wide weight gradient (more columns
/// than rows) is computed transposed: the GEMM gains more than the final
/// transpose costs.
const TRANSPOSED_DW_PIXELS: usize = 256;

/// Input gradients whose GEMMs have fewer columns (images·pixels) than this
/// multiply by a row-major copy of Wᵀ instead of a transposed view of W.
const TRANSPOSED_W_COLS: usize = 512;

/// Rows of Wᵀ made and multiplied at a time by the narrow input gradient
/// (Cout x 256 floats: 512 KiB at Cout 512, inside a core's L2).
const WT_BLOCK: usize = 256;

/// Products (m·n·k) below this run on one thread: splitting costs more.
const SPLIT_MIN_WORK: usize = 1 << 20;

/// Parts of a split product are multiples of this many rows or columns
/// (the GEMM's vector width).
const SPLIT_ALIGN: usize = 16;

/// `dst`'s pointer, shared by the tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used to hand disjoint parts of one buffer to rayon's tasks.
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}

impl SendPtr {
    /// The pointer `i` elements on (a method, so closures capture the
    /// whole `Send` wrapper rather than its raw-pointer field).
    ///
    /// # Safety
    /// `i` must lie inside the buffer.
    unsafe fn at(self, i: usize) -> *mut f32 {
        // SAFETY: the caller keeps `i` inside the buffer.
        unsafe { self.0.add(i) }
    }
}

thread_local! {
    /// Reused im2col / column-gradient buffer of the calling thread.
    static COLS: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Reused (C, images·pixels) buffer: GEMM output before it is scattered
    /// into NCHW, or the output gradient gathered from NCHW.
    static MAT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Reused transposed weight gradient (Cin·K·K, Cout).
    static DWT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
    /// Reused transposed weight (Cin·K·K, Cout) of the input gradient.
    static WT: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

/// Runs `f` on the first `len` floats of a thread-local scratch buffer. The
/// buffer is taken out of its slot for the call, so a re-entrant call (a
/// rayon worker picking up another convolution while it waits) gets a fresh
/// one instead of a borrow conflict. Contents are unspecified on entry.
fn with_scratch<R>(
    slot: &'static LocalKey<Cell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    let mut buf = slot.take();
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let out = f(&mut buf[..len]);
    slot.set(buf);
    out
}

/// Shapes of one convolution, fixed at the forward call and shared by the
/// gradient kernels.
#[derive(Debug, Clone, Copy)]
struct Geom {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    k: usize,
    stride: usize,
    /// [top, bottom, left, right].
    pads: [usize; 4],
    ho: usize,
    wo: usize,
}

impl Geom {
    fn new(
        (n, cin, h, w): (usize, usize, usize, usize),
        (cout, wcin, kh, kw): (usize, usize, usize, usize),
        stride: usize,
        pads: [usize; 4],
    ) -> Result<Self> {
        if cin == 0 || cout == 0 {
            bail!("conv2d: empty channel dimension ({cin} in, {cout} out)");
        }
        if wcin != cin {
            bail!("conv2d: input has {cin} channels, the weight expects {wcin}");
        }
        if kh != kw {
            bail!("conv2d: only square kernels are supported, got {kh}x{kw}");
        }
        if stride == 0 {
            bail!("conv2d: stride must be at least 1");
        }
        let [t, b, l, r] = pads;
        let (ph, pw) = (h + t + b, w + l + r);
        if kh == 0 || ph < kh || pw < kw {
            bail!("conv2d: kernel {kh}x{kw} does not fit the padded input {ph}x{pw}");
        }
        Ok(Self {
            n,
            cin,
            h,
            w,
            cout,
            k: kh,
            stride,
            pads,
            ho: (ph - kh) / stride + 1,
            wo: (pw - kw) / stride + 1,
        })
    }

    /// Runs `f`, recorded by the profiler under `op/` and this geometry
    /// (batch x channels x height x width -> out channels, kernel, stride).
    fn timed<R>(&self, op: &str, f: impl FnOnce() -> R) -> R {
        super::profile::timed_named(
            || {
                format!(
                    "{op}/{}x{}x{}x{}->{}k{}s{}",
                    self.n, self.cin, self.h, self.w, self.cout, self.k, self.stride
                )
            },
            f,
        )
    }

    /// Output pixels per image.
    fn pixels(&self) -> usize {
        self.ho * self.wo
    }

    /// Rows of the column matrix: Cin·K·K.
    fn ckk(&self) -> usize {
        self.cin * self.k * self.k
    }

    /// A 1x1 stride-1 unpadded convolution: an image is its own column matrix.
    fn pointwise(&self) -> bool {
        self.k == 1 && self.stride == 1 && self.pads == [0; 4]
    }

    /// Images per GEMM: one for large maps, else as many as the column
    /// buffer bound allows.
    fn chunk(&self) -> usize {
        if self.pixels() >= DIRECT_MIN_PIXELS {
            1
        } else {
            (COLS_LIMIT / (self.ckk() * self.pixels())).clamp(1, self.n.max(1))
        }
    }

    /// The input row read by output row `oh` at kernel row `ki`, if inside.
    fn input_row(&self, oh: usize, ki: usize) -> Option<usize> {
        (oh * self.stride + ki)
            .checked_sub(self.pads[0])
            .filter(|&ih| ih < self.h)
    }

    /// The output columns `lo..hi` whose input column at kernel column `kj`
    /// (`ow·stride + kj - left`) lies inside the image.
    fn valid_cols(&self, kj: usize) -> (usize, usize) {
        valid_range(kj, self.pads[2], self.w, self.wo, self.stride)
    }

    /// The output rows `lo..hi` whose input row at kernel row `ki` lies
    /// inside the image.
    fn valid_rows(&self, ki: usize) -> (usize, usize) {
        valid_range(ki, self.pads[0], self.h, self.ho, self.stride)
    }

    /// Stride 1 with the output as wide as the input ("same" padding): an
    /// output plane is the input plane shifted by a constant offset per
    /// kernel tap, so im2col and col2im move whole planes at once.
    fn shifts_planes(&self) -> bool {
        self.stride == 1 && self.wo == self.w
    }
}

/// The outputs `lo..hi` (of `out`) whose input `o·stride + tap - pad` lies
/// in `0..size`.
fn valid_range(tap: usize, pad: usize, size: usize, out: usize, stride: usize) -> (usize, usize) {
    let lo = if tap >= pad {
        0
    } else {
        (pad - tap).div_ceil(stride)
    };
    let hi = (size + pad).saturating_sub(tap).div_ceil(stride).min(out);
    (lo.min(hi), hi)
}

/// The f32 data of a contiguous CPU operand, checked against its expected size.
fn f32_data<'a>(s: &'a CpuStorage, l: &Layout, len: usize, what: &str) -> Result<&'a [f32]> {
    let data = super::f32_contiguous(s, l, "conv2d", what)?;
    if data.len() != len {
        bail!("conv2d: {what} has {} elements, expected {len}", data.len());
    }
    Ok(data)
}

/// A strided matrix operand of a GEMM.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    /// Row and column strides, in elements.
    rs: usize,
    cs: usize,
}

impl View<'_> {
    fn fits(&self, len: usize) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.rs + (self.cols - 1) * self.cs < len
    }
}

/// `dst = a x b` (or `dst += a x b` when `accumulate`), `dst` row-major with
/// rows `dst_rs` apart, on rayon's pool.
fn matmul(dst: &mut [f32], dst_rs: usize, accumulate: bool, a: View, b: View) -> Result<()> {
    gemm_checked(dst, dst_rs, accumulate, a, b, rayon::current_num_threads())
}

/// `dst = a x b` on the calling thread only (for a task that is one of
/// several running at once).
fn gemm_serial(dst: &mut [f32], dst_rs: usize, a: View, b: View) -> Result<()> {
    gemm_checked(dst, dst_rs, false, a, b, 1)
}

fn gemm_checked(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: View,
    b: View,
    threads: usize,
) -> Result<()> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    let out = View {
        data: dst,
        rows: m,
        cols: n,
        rs: dst_rs,
        cs: 1,
    };
    if b.rows != k || !a.fits(a.data.len()) || !b.fits(b.data.len()) || !out.fits(dst.len()) {
        bail!(
            "conv2d: inconsistent GEMM operands ({m}x{k} by {}x{n})",
            b.rows
        );
    }
    // The gemm crate's own threading gains little on these small products
    // (often nothing on 2 threads), so a product is split here instead:
    // the larger of its output dimensions in one part per thread, each part
    // a single-threaded GEMM on its own rows or columns of `dst`.
    let parts = if threads > 1 && m * n * k >= SPLIT_MIN_WORK {
        threads.min(m.max(n) / SPLIT_ALIGN).max(1)
    } else {
        1
    };
    let split_rows = m >= n;
    let len = if split_rows { m } else { n };
    let step = len.div_ceil(parts).div_ceil(SPLIT_ALIGN) * SPLIT_ALIGN;
    let dst_ptr = SendPtr(dst.as_mut_ptr());
    let run = |start: usize| {
        let end = (start + step).min(len);
        let (rows, cols, a_off, b_off, d_off) = if split_rows {
            (end - start, n, start * a.rs, 0, start * dst_rs)
        } else {
            (m, end - start, 0, start * b.cs, start)
        };
        // SAFETY: every element each operand's strides can reach lies inside
        // its slice (checked above); the parts write disjoint rows or columns
        // of `dst`, which is borrowed mutably and aliases neither operand.
        super::profile::timed("conv/gemm", || unsafe {
            gemm::gemm(
                rows,
                cols,
                k,
                dst_ptr.at(d_off),
                1,
                dst_rs as isize,
                accumulate,
                a.data.as_ptr().add(a_off),
                a.cs as isize,
                a.rs as isize,
                b.data.as_ptr().add(b_off),
                b.cs as isize,
                b.rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        });
    };
    if parts == 1 {
        run(0);
    } else {
        (0..len)
            .step_by(step)
            .collect::<Vec<_>>()
            .into_par_iter()
            .for_each(run);
    }
    Ok(())
}

/// Writes the column matrix of images `n0..n0 + nb` of `x` (NCHW) into
/// `cols` (Cin·K·K rows of nb·Ho·Wo): row (c, ki, kj), column (image, oh,
/// ow) holds `x[image, c, oh·s + ki - top, ow·s + kj - left]`, 0 outside.
fn im2col(x: &[f32], g: &Geom, n0: usize, nb: usize, cols: &mut [f32]) {
    let (p, kk, hw) = (g.pixels(), g.k * g.k, g.h * g.w);
    let (s, left) = (g.stride, g.pads[2]);
    let spans = shifted_spans(g);
    cols.par_chunks_mut(nb * p)
        .enumerate()
        .with_min_len(super::min_len(nb * p))
        .for_each(|(r, row)| {
            let (c, ki, kj) = (r / kk, (r % kk) / g.k, r % g.k);
            let (lo, hi) = g.valid_cols(kj);
            for (i, dst) in row.chunks_exact_mut(p).enumerate() {
                let plane = &x[((n0 + i) * g.cin + c) * hw..][..hw];
                if let Some(spans) = &spans {
                    // One shifted copy of the plane, then the padding zeroed.
                    let Some((start, end, at)) = spans[r % kk] else {
                        dst.fill(0.0);
                        continue;
                    };
                    dst[..start].fill(0.0);
                    dst[end..].fill(0.0);
                    dst[start..end].copy_from_slice(&plane[at..at + end - start]);
                    zero_wrapped(dst, g.wo, lo, hi);
                    continue;
                }
                for (oh, dst) in dst.chunks_exact_mut(g.wo).enumerate() {
                    let Some(ih) = g.input_row(oh, ki) else {
                        dst.fill(0.0);
                        continue;
                    };
                    let src = &plane[ih * g.w..][..g.w];
                    dst[..lo].fill(0.0);
                    dst[hi..].fill(0.0);
                    if s == 1 {
                        let iw = lo + kj - left;
                        dst[lo..hi].copy_from_slice(&src[iw..iw + hi - lo]);
                    } else {
                        let src = src[lo * s + kj - left..].iter().step_by(s);
                        for (d, v) in dst[lo..hi].iter_mut().zip(src) {
                            *d = *v;
                        }
                    }
                }
            }
        });
}

/// A run of one kernel tap of a plane-shifting convolution: output
/// positions `start..end` of a plane read input positions
/// `at..at + end - start`. Inside the run, the columns outside the tap's
/// `valid_cols` wrap onto the neighbouring input row and are padding.
type Span = (usize, usize, usize);

/// The run of each kernel tap (ki·K + kj) of a plane-shifting convolution
/// (`None` for a tap that sees no input), or `None` for any other.
fn shifted_spans(g: &Geom) -> Option<Vec<Option<Span>>> {
    if !g.shifts_planes() {
        return None;
    }
    let span = |t: usize| {
        let (ki, kj) = (t / g.k, t % g.k);
        let (rlo, rhi) = g.valid_rows(ki);
        let (lo, hi) = g.valid_cols(kj);
        (rlo < rhi && lo < hi).then(|| {
            let at = (rlo + ki - g.pads[0]) * g.w + lo + kj - g.pads[2];
            (rlo * g.wo + lo, (rhi - 1) * g.wo + hi, at)
        })
    };
    Some((0..g.k * g.k).map(span).collect())
}

/// Zeroes the columns outside `lo..hi` of each `wo`-wide row of `plane`.
fn zero_wrapped(plane: &mut [f32], wo: usize, lo: usize, hi: usize) {
    if lo == 0 && hi == wo {
        return;
    }
    for row in plane.chunks_exact_mut(wo) {
        for v in &mut row[..lo] {
            *v = 0.0;
        }
        for v in &mut row[hi..] {
            *v = 0.0;
        }
    }
}

/// Adds the column gradient `dcols` (Cin·K·K rows of nb·Ho·Wo) back onto the
/// input gradient of images `n0..n0 + nb`: `dx` holds exactly those images
/// (NCHW, zeroed). The transpose of [`im2col`], one input plane per task so
/// no two tasks write the same element. For a plane-shifting convolution
/// the entries that fall on padding are zeroed in `dcols` first, so each tap
/// adds one contiguous run.
fn col2im(dcols: &mut [f32], g: &Geom, nb: usize, dx: &mut [f32]) {
    let (p, kk, hw) = (g.pixels(), g.k * g.k, g.h * g.w);
    let (s, left) = (g.stride, g.pads[2]);
    let spans = shifted_spans(g);
    if spans.is_some() {
        dcols
            .par_chunks_mut(nb * p)
            .enumerate()
            .with_min_len(super::min_len(nb * p))
            .for_each(|(r, row)| {
                let (lo, hi) = g.valid_cols(r % g.k);
                for plane in row.chunks_exact_mut(p) {
                    zero_wrapped(plane, g.wo, lo, hi);
                }
            });
    }
    let dcols = &*dcols;
    dx.par_chunks_mut(hw)
        .enumerate()
        .with_min_len(super::min_len(hw * kk))
        .for_each(|(q, plane)| {
            let (i, c) = (q / g.cin, q % g.cin);
            for ki in 0..g.k {
                for kj in 0..g.k {
                    let r = c * kk + ki * g.k + kj;
                    let src_rows = &dcols[r * nb * p + i * p..][..p];
                    if let Some(spans) = &spans {
                        if let Some((start, end, at)) = spans[ki * g.k + kj] {
                            let dst = &mut plane[at..at + end - start];
                            for (d, v) in dst.iter_mut().zip(&src_rows[start..end]) {
                                *d += *v;
                            }
                        }
                        continue;
                    }
                    let (lo, hi) = g.valid_cols(kj);
                    for oh in 0..g.ho {
                        let Some(ih) = g.input_row(oh, ki) else {
                            continue;
                        };
                        let src = &src_rows[oh * g.wo + lo..oh * g.wo + hi];
                        let dst = &mut plane[ih * g.w..][..g.w];
                        if s == 1 {
                            let iw = lo + kj - left;
                            for (d, v) in dst[iw..iw + hi - lo].iter_mut().zip(src) {
                                *d += *v;
                            }
                        } else {
                            let dst = dst[lo * s + kj - left..].iter_mut().step_by(s);
                            for (d, v) in dst.zip(src) {
                                *d += *v;
                            }
                        }
                    }
                }
            }
        });
}

/// Copies images `n0..n0 + nb` of `src` (N, R, P) into `dst` (R, nb·P).
fn gather(src: &[f32], rows: usize, p: usize, n0: usize, nb: usize, dst: &mut [f32]) {
    dst.par_chunks_mut(nb * p)
        .enumerate()
        .with_min_len(super::min_len(nb * p))
        .for_each(|(r, row)| {
            for (i, d) in row.chunks_exact_mut(p).enumerate() {
                d.copy_from_slice(&src[((n0 + i) * rows + r) * p..][..p]);
            }
        });
}

/// Copies `src` (R, nb·P) into `dst` (nb, R, P): the inverse of [`gather`].
fn scatter(src: &[f32], rows: usize, p: usize, nb: usize, dst: &mut [f32]) {
    dst.par_chunks_mut(p)
        .enumerate()
        .with_min_len(super::min_len(p))
        .for_each(|(q, d)| {
            let (i, r) = (q / rows, q % rows);
            d.copy_from_slice(&src[r * nb * p + i * p..][..p]);
        });
}

/// Calls `f(n0, nb)` for each chunk of images, in order.
fn for_chunks(g: &Geom, mut f: impl FnMut(usize, usize) -> Result<()>) -> Result<()> {
    let chunk = g.chunk();
    (0..g.n)
        .step_by(chunk)
        .try_for_each(|n0| f(n0, chunk.min(g.n - n0)))
}

/// Whether a convolution that goes one image at a time (large maps) runs
/// its images on different threads, each with a single-threaded GEMM (one
/// task per image instead of a split GEMM per image: no hand-off inside a
/// product, and im2col runs in parallel too).
fn images_in_parallel(g: &Geom) -> bool {
    g.chunk() == 1 && g.n > 1 && rayon::current_num_threads() > 1
}

/// Runs `f` on the column matrix of images `n0..n0 + nb`: the images
/// themselves for a single pointwise image, else im2col into scratch.
fn with_cols<R>(x: &[f32], g: &Geom, n0: usize, nb: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    if g.pointwise() && nb == 1 {
        f(&x[n0 * g.cin * g.pixels()..][..g.cin * g.pixels()])
    } else {
        with_scratch(&COLS, g.ckk() * nb * g.pixels(), |cols| {
            super::profile::timed("conv/im2col", || im2col(x, g, n0, nb, cols));
            f(cols)
        })
    }
}

/// Runs `f` on the output gradient of images `n0..n0 + nb` as a
/// (Cout, nb·P) matrix: a slice of `dy` for one image, else gathered.
fn with_dy<R>(dy: &[f32], g: &Geom, n0: usize, nb: usize, f: impl FnOnce(&[f32]) -> R) -> R {
    let len = g.cout * nb * g.pixels();
    if nb == 1 {
        f(&dy[n0 * len..][..len])
    } else {
        with_scratch(&MAT, len, |m| {
            super::profile::timed("conv/gather", || gather(dy, g.cout, g.pixels(), n0, nb, m));
            f(m)
        })
    }
}

/// A (rows, cols) row-major view of a contiguous buffer.
fn rows(data: &[f32], rows: usize, cols: usize) -> View<'_> {
    View {
        data,
        rows,
        cols,
        rs: cols,
        cs: 1,
    }
}

/// The transpose of a (rows, cols) row-major buffer, as a (cols, rows) view.
fn transposed(data: &[f32], rows: usize, cols: usize) -> View<'_> {
    View {
        data,
        rows: cols,
        cols: rows,
        rs: 1,
        cs: cols,
    }
}

/// y = conv(x, w) for `g`, NCHW.
fn forward(x: &[f32], w: &[f32], g: &Geom) -> Result<Vec<f32>> {
    let p = g.pixels();
    let w = rows(w, g.cout, g.ckk());
    let mut y = vec![0.0f32; g.n * g.cout * p];
    if images_in_parallel(g) {
        y.par_chunks_mut(g.cout * p)
            .enumerate()
            .try_for_each(|(i, out)| {
                with_cols(x, g, i, 1, |cols| {
                    gemm_serial(out, p, w, rows(cols, g.ckk(), p))
                })
            })?;
        return Ok(y);
    }
    for_chunks(g, |n0, nb| {
        with_cols(x, g, n0, nb, |cols| {
            let cols = rows(cols, g.ckk(), nb * p);
            let out = &mut y[n0 * g.cout * p..(n0 + nb) * g.cout * p];
            if nb == 1 {
                matmul(out, p, false, w, cols)
            } else {
                with_scratch(&MAT, g.cout * nb * p, |m| {
                    matmul(m, nb * p, false, w, cols)?;
                    super::profile::timed("conv/scatter", || scatter(m, g.cout, p, nb, out));
                    Ok(())
                })
            }
        })
    })?;
    Ok(y)
}

/// The geometry and weight that give a stride-1 convolution's input
/// gradient as a forward convolution of its output gradient: dx = conv(dy,
/// W'), W'[c, co, i, j] = W[co, c, K-1-i, K-1-j], padding K-1-p per side.
/// None where that does not apply (stride > 1, 1x1 kernels, a padding of
/// K or more) or does not pay (W' as large as the column matrix it saves).
fn grad_input_as_conv(g: &Geom, w: &[f32]) -> Result<Option<(Geom, Vec<f32>)>> {
    let (k, kk) = (g.k, g.k * g.k);
    if k == 1 || g.stride != 1 || g.pads.iter().any(|&p| p >= k) {
        return Ok(None);
    }
    if g.cout * g.ckk() > g.ckk() * g.n * g.pixels() {
        return Ok(None);
    }
    let [t, b, l, r] = g.pads;
    let gt = Geom::new(
        (g.n, g.cout, g.ho, g.wo),
        (g.cin, g.cout, k, k),
        1,
        [k - 1 - t, k - 1 - b, k - 1 - l, k - 1 - r],
    )?;
    debug_assert_eq!((gt.ho, gt.wo), (g.h, g.w));
    let mut wf = vec![0f32; w.len()];
    wf.par_chunks_mut(g.cout * kk)
        .enumerate()
        .for_each(|(c, row)| {
            for (co, taps) in row.chunks_exact_mut(kk).enumerate() {
                let src = &w[(co * g.cin + c) * kk..][..kk];
                for (d, s) in taps.iter_mut().zip(src.iter().rev()) {
                    *d = *s;
                }
            }
        });
    Ok(Some((gt, wf)))
}

/// The convolution: (x, w) -> y, with both gradients below.
struct Conv {
    g: Geom,
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "fer-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            self.g.timed(self.name(), || {
                let g = &self.g;
                let x = f32_data(s1, l1, g.n * g.cin * g.h * g.w, "input")?;
                let w = f32_data(s2, l2, g.cout * g.ckk(), "weight")?;
                let y = forward(x, w, g)?;
                Ok((CpuStorage::F32(y), Shape::from((g.n, g.cout, g.ho, g.wo))))
            })
        })
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let dy = dy.contiguous()?;
        // An input that is neither a variable nor computed from one (an image
        // batch) gets no gradient: its column GEMM and col2im are skipped.
        let dx = if x.track_op() {
            Some(w.apply_op2_no_bwd(&dy, &GradInput { g: self.g })?)
        } else {
            None
        };
        let dw = if w.track_op() {
            Some(x.apply_op2_no_bwd(&dy, &GradWeight { g: self.g })?)
        } else {
            None
        };
        Ok((dx, dw))
    }
}

/// (w, dy) -> dx = col2im(Wᵀ x dY).
struct GradInput {
    g: Geom,
}

impl CustomOp2 for GradInput {
    fn name(&self) -> &'static str {
        "fer-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            self.g.timed(self.name(), || {
                let g = &self.g;
                let (p, ckk, image) = (g.pixels(), g.ckk(), g.cin * g.h * g.w);
                let w = f32_data(s1, l1, g.cout * ckk, "weight")?;
                let dy = f32_data(s2, l2, g.n * g.cout * p, "output gradient")?;
                if let Some((gt, wf)) = grad_input_as_conv(g, w)? {
                    let dx = gt.timed("fer-conv2d-grad-input-as-conv", || forward(dy, &wf, &gt))?;
                    return Ok((CpuStorage::F32(dx), Shape::from((g.n, g.cin, g.h, g.w))));
                }
                let mut dx = vec![0.0f32; g.n * image];
                if images_in_parallel(g) {
                    let wt = transposed(w, g.cout, ckk);
                    dx.par_chunks_mut(image)
                        .enumerate()
                        .try_for_each(|(i, dxi)| {
                            let dyi = rows(&dy[i * g.cout * p..][..g.cout * p], g.cout, p);
                            if g.pointwise() {
                                return gemm_serial(dxi, p, wt, dyi);
                            }
                            with_scratch(&COLS, ckk * p, |dcols| {
                                gemm_serial(dcols, p, wt, dyi)?;
                                super::profile::timed("conv/col2im", || col2im(dcols, g, 1, dxi));
                                Ok(())
                            })
                        })?;
                    return Ok((CpuStorage::F32(dx), Shape::from((g.n, g.cin, g.h, g.w))));
                }
                let mut run = |wt: View| {
                    for_chunks(g, |n0, nb| {
                        with_dy(dy, g, n0, nb, |dyc| {
                            let dyc = rows(dyc, g.cout, nb * p);
                            let dxc = &mut dx[n0 * image..(n0 + nb) * image];
                            if g.pointwise() && nb == 1 {
                                matmul(dxc, p, false, wt, dyc)
                            } else {
                                with_scratch(&COLS, ckk * nb * p, |dcols| {
                                    matmul(dcols, nb * p, false, wt, dyc)?;
                                    super::profile::timed("conv/col2im", || {
                                        col2im(dcols, g, nb, dxc)
                                    });
                                    Ok(())
                                })
                            }
                        })
                    })
                };
                if g.chunk() * p < TRANSPOSED_W_COLS && g.chunk() == g.n {
                    // A narrow product (few pixels) runs 2-3x faster with Wᵀ
                    // stored row-major than read through a transposed view of
                    // W. Wᵀ is made a block of rows at a time, each multiplied
                    // while it is still in cache, one block per task.
                    with_dy(dy, g, 0, g.n, |dyc| {
                        let cols = g.n * p;
                        let dyc = rows(dyc, g.cout, cols);
                        let pointwise = g.pointwise();
                        with_scratch(&COLS, ckk * cols, |dcols| {
                            let out = SendPtr(dcols.as_mut_ptr());
                            let dx_parts = super::SharedMut::new(&mut dx);
                            (0..ckk.div_ceil(WT_BLOCK))
                                .into_par_iter()
                                .try_for_each(|b| {
                                    let (r0, r1) = (b * WT_BLOCK, ((b + 1) * WT_BLOCK).min(ckk));
                                    with_scratch(&WT, (r1 - r0) * g.cout, |wt| {
                                        transpose_block(&w[r0..], g.cout, r1 - r0, ckk, wt);
                                        // SAFETY: block b owns rows r0..r1 of
                                        // `dcols`; no other task touches them.
                                        let dst = unsafe {
                                            std::slice::from_raw_parts_mut(
                                                out.at(r0 * cols),
                                                (r1 - r0) * cols,
                                            )
                                        };
                                        gemm_serial(dst, cols, rows(wt, r1 - r0, g.cout), dyc)?;
                                        if pointwise {
                                            // Row r is input channel r: its
                                            // image planes go straight to dx.
                                            for (r, row) in (r0..r1).zip(dst.chunks_exact(cols)) {
                                                for (i, plane) in row.chunks_exact(p).enumerate() {
                                                    // SAFETY: channel r of each
                                                    // image is this block's alone.
                                                    unsafe {
                                                        dx_parts.slice((i * g.cin + r) * p, p)
                                                    }
                                                    .copy_from_slice(plane);
                                                }
                                            }
                                        }
                                        Ok::<(), candle_core::Error>(())
                                    })
                                })?;
                            if !pointwise {
                                super::profile::timed("conv/col2im", || {
                                    col2im(dcols, g, g.n, &mut dx)
                                });
                            }
                            Ok::<(), candle_core::Error>(())
                        })
                    })?;
                } else {
                    run(transposed(w, g.cout, ckk))?;
                }
                Ok((CpuStorage::F32(dx), Shape::from((g.n, g.cin, g.h, g.w))))
            })
        })
    }
}

/// (x, dy) -> dW = dY x colsᵀ, summed over the batch.
struct GradWeight {
    g: Geom,
}

impl CustomOp2 for GradWeight {
    fn name(&self) -> &'static str {
        "fer-conv2d-grad-weight"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        super::profile::timed(self.name(), || {
            self.g.timed(self.name(), || {
                let g = &self.g;
                let (p, ckk) = (g.pixels(), g.ckk());
                let x = f32_data(s1, l1, g.n * g.cin * g.h * g.w, "input")?;
                let dy = f32_data(s2, l2, g.n * g.cout * p, "output gradient")?;
                let mut dw = vec![0.0f32; g.cout * ckk];
                if images_in_parallel(g) {
                    grad_weight_by_image_groups(x, dy, g, &mut dw)?;
                } else if ckk > g.cout && g.n * p >= TRANSPOSED_DW_PIXELS {
                    // A wide dW (more columns than rows) comes out faster as dWᵀ =
                    // cols x dYᵀ, transposed afterwards (cheap next to the GEMM).
                    with_scratch(&DWT, ckk * g.cout, |dwt| {
                        for_chunks(g, |n0, nb| {
                            with_cols(x, g, n0, nb, |cols| {
                                with_dy(dy, g, n0, nb, |dyc| {
                                    let cols = rows(cols, ckk, nb * p);
                                    let dyt = transposed(dyc, g.cout, nb * p);
                                    matmul(dwt, g.cout, n0 > 0, cols, dyt)
                                })
                            })
                        })?;
                        super::profile::timed_named(
                            || format!("conv/transpose-dwt/{ckk}x{}", g.cout),
                            || transpose(dwt, ckk, g.cout, &mut dw),
                        );
                        Ok::<(), candle_core::Error>(())
                    })?;
                } else {
                    for_chunks(g, |n0, nb| {
                        with_cols(x, g, n0, nb, |cols| {
                            with_dy(dy, g, n0, nb, |dyc| {
                                let colst = transposed(cols, ckk, nb * p);
                                matmul(&mut dw, ckk, n0 > 0, rows(dyc, g.cout, nb * p), colst)
                            })
                        })
                    })?;
                }
                Ok((CpuStorage::F32(dw), Shape::from((g.cout, g.cin, g.k, g.k))))
            })
        })
    }
}

/// dW for large maps, images on different threads: the batch is cut into
/// one contiguous group per thread, each group sums its images' products in
/// image order into its own buffer, and the groups are added in group
/// order, so the result does not depend on how rayon schedules the tasks
/// (for a given thread count). Computed as dWᵀ when dW is wide.
fn grad_weight_by_image_groups(x: &[f32], dy: &[f32], g: &Geom, dw: &mut [f32]) -> Result<()> {
    let (p, ckk) = (g.pixels(), g.ckk());
    let wide = ckk > g.cout;
    let groups = rayon::current_num_threads().min(g.n);
    let per = g.n.div_ceil(groups);
    let parts: Vec<Vec<f32>> = (0..groups)
        .into_par_iter()
        .map(|gi| {
            let mut acc = vec![0f32; g.cout * ckk];
            for i in gi * per..((gi + 1) * per).min(g.n) {
                let first = i == gi * per;
                with_cols(x, g, i, 1, |cols| {
                    let dyi = &dy[i * g.cout * p..][..g.cout * p];
                    if wide {
                        let dyt = transposed(dyi, g.cout, p);
                        gemm_checked(&mut acc, g.cout, !first, rows(cols, ckk, p), dyt, 1)
                    } else {
                        let colst = transposed(cols, ckk, p);
                        gemm_checked(&mut acc, ckk, !first, rows(dyi, g.cout, p), colst, 1)
                    }
                })?;
            }
            Ok(acc)
        })
        .collect::<Result<_>>()?;
    let mut parts = parts.into_iter();
    let mut sum = parts.next().unwrap_or_else(|| vec![0f32; g.cout * ckk]);
    for part in parts {
        for (s, v) in sum.iter_mut().zip(&part) {
            *s += v;
        }
    }
    if wide {
        transpose(&sum, ckk, g.cout, dw);
    } else {
        dw.copy_from_slice(&sum);
    }
    Ok(())
}

/// Dense convolution of `x` (N, Cin, H, W) with `w` (Cout, Cin, K, K):
/// stride `stride`, zero padding `pads` = [top, bottom, left, right].
/// f32 on the CPU runs the GEMM kernels above (with their own backward);
/// anything else candle's ops.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, pads: [usize; 4]) -> Result<Tensor> {
    let fast = x.device().is_cpu()
        && w.device().is_cpu()
        && x.dtype() == DType::F32
        && w.dtype() == DType::F32;
    if !fast {
        return super::reference_conv2d(x, w, stride, pads, 1);
    }
    let g = Geom::new(x.dims4()?, w.dims4()?, stride, pads)?;
    x.contiguous()?.apply_op2(&w.contiguous()?, Conv { g })
}
