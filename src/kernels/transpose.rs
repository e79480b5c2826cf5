//! Out-of-place transpose of a row-major f32 matrix, the layout change the
//! convolution kernels need around their GEMMs (Wᵀ for the input gradient,
//! dWᵀ back to dW). 64x64 cache tiles, parallel over bands of destination
//! rows; inside a tile, 8x8 blocks transposed in AVX registers where the CPU
//! has AVX (checked at run time), scalar copies elsewhere and on the edges.

use rayon::prelude::*;

const TILE: usize = 64;

/// Writes the transpose of `src` (rows, cols), row-major, into `dst`
/// (cols, rows). Panics if either slice is shorter than rows·cols.
pub fn transpose(src: &[f32], rows: usize, cols: usize, dst: &mut [f32]) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(src.len() >= rows * cols && dst.len() >= rows * cols);
    let simd = avx();
    dst[..rows * cols]
        .par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(band, out)| {
            // `out` holds destination rows c0..c1 (source columns).
            let c0 = band * TILE;
            let c1 = (c0 + TILE).min(cols);
            for r0 in (0..rows).step_by(TILE) {
                let r1 = (r0 + TILE).min(rows);
                tile(src, cols, rows, (r0, r1), (c0, c1), out, simd);
            }
        });
}

/// On the calling thread: writes the transpose of the (rows, cols) matrix
/// whose rows start `ld` apart in `src` into `dst` (cols, rows), row-major.
/// For a block of a larger matrix that is multiplied right after, while it
/// is still in cache.
pub fn transpose_block(src: &[f32], rows: usize, cols: usize, ld: usize, dst: &mut [f32]) {
    if rows == 0 || cols == 0 {
        return;
    }
    assert!(ld >= cols && src.len() >= (rows - 1) * ld + cols && dst.len() >= rows * cols);
    let simd = avx();
    for c0 in (0..cols).step_by(TILE) {
        let c1 = (c0 + TILE).min(cols);
        let out = &mut dst[c0 * rows..c1 * rows];
        for r0 in (0..rows).step_by(TILE) {
            let r1 = (r0 + TILE).min(rows);
            tile(src, ld, rows, (r0, r1), (c0, c1), out, simd);
        }
    }
}

/// Transposes source rows r0..r1 x columns c0..c1 (source rows `ld` apart)
/// into `out`, the band of destination rows c0.. (each `rows` long).
fn tile(
    src: &[f32],
    ld: usize,
    rows: usize,
    (r0, r1): (usize, usize),
    (c0, c1): (usize, usize),
    out: &mut [f32],
    simd: bool,
) {
    let (mut r, mut full_r) = (r0, r0);
    if simd {
        full_r = r0 + (r1 - r0) / 8 * 8;
        let full_c = c0 + (c1 - c0) / 8 * 8;
        while r < full_r {
            let mut c = c0;
            while c < full_c {
                // SAFETY: the 8x8 block at (r, c) lies inside `src` (r + 8 <=
                // rows, c + 8 <= the row's columns) and its transpose inside `out` (rows
                // c - c0 .. + 8 of the band, columns r .. r + 8); AVX was
                // detected at run time.
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    block8(
                        src.as_ptr().add(r * ld + c),
                        ld,
                        out.as_mut_ptr().add((c - c0) * rows + r),
                        rows,
                    );
                }
                c += 8;
            }
            // Columns left of the 8-wide blocks, for these 8 rows.
            for c in full_c..c1 {
                for rr in r..r + 8 {
                    out[(c - c0) * rows + rr] = src[rr * ld + c];
                }
            }
            r += 8;
        }
    }
    // Rows left of the 8-high blocks (all rows without AVX).
    for c in c0..c1 {
        let row = &mut out[(c - c0) * rows..][..rows];
        for rr in full_r..r1 {
            row[rr] = src[rr * ld + c];
        }
    }
}

fn avx() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Transposes the 8x8 block at `src` (rows `ss` apart) into `dst` (rows
/// `ds` apart).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
unsafe fn block8(src: *const f32, ss: usize, dst: *mut f32, ds: usize) {
    use std::arch::x86_64::*;
    // SAFETY: the caller guarantees 8 rows of 8 floats at `src` and `dst`.
    unsafe {
        let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(src.add(i * ss)));
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        let o = [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ];
        for (i, v) in o.iter().enumerate() {
            _mm256_storeu_ps(dst.add(i * ds), *v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_on_edges_and_tiles() {
        for (rows, cols) in [
            (1, 1),
            (3, 5),
            (8, 8),
            (9, 17),
            (64, 64),
            (70, 131),
            (200, 9),
        ] {
            let src: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
            let mut dst = vec![f32::NAN; rows * cols];
            transpose(&src, rows, cols, &mut dst);
            for r in 0..rows {
                for c in 0..cols {
                    assert_eq!(
                        dst[c * rows + r],
                        src[r * cols + c],
                        "{rows}x{cols} at ({r},{c})"
                    );
                }
            }
        }
    }
}
