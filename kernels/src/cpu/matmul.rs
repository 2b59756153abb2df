//! Matrix multiplication: C = alpha·A·B + beta·C on strided f32/f64 matrices.
//!
//! Layout convention (the same as the `matrixmultiply` crate, so the two can be swapped in
//! benchmarks): element (i, j) of a matrix X lives at `x[i * rsx + j * csx]`. A transposed
//! operand is the same buffer with its strides swapped, so one routine serves A·B, Aᵀ·B,
//! A·Bᵀ and Aᵀ·Bᵀ without copies.
//!
//! The file reads top to bottom: the reference ([`gemm_ref`], [`gemm_batched_ref`]), then the
//! fast f32 GEMM ([`sgemm`], [`sgemm_batched`]) built from packing routines, microkernels
//! (scalar, AVX2+FMA, AVX-512, NEON) and the cache-blocked, threaded driver.

use crate::Float;

/// Reference GEMM: the triple loop, accumulating in the element type. The definition of the
/// math; the fast kernel is checked against it.
///
/// `c[i,j] = alpha * Σ_p a[i,p]·b[p,j] + beta * c[i,j]`, with A m×k, B k×n, C m×n.
/// When `beta == 0` the old contents of C are ignored (may be NaN), as in BLAS.
#[allow(clippy::too_many_arguments)]
pub fn gemm_ref<F: Float>(
    m: usize,
    k: usize,
    n: usize,
    alpha: F,
    a: &[F],
    rsa: usize,
    csa: usize,
    b: &[F],
    rsb: usize,
    csb: usize,
    beta: F,
    c: &mut [F],
    rsc: usize,
    csc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let mut acc = F::zero();
            for p in 0..k {
                acc += a[i * rsa + p * csa] * b[p * rsb + j * csb];
            }
            let dst = &mut c[i * rsc + j * csc];
            *dst = if beta == F::zero() {
                alpha * acc
            } else {
                alpha * acc + beta * *dst
            };
        }
    }
}

/// Reference batched GEMM: `batch` independent [`gemm_ref`] calls. Matrix `t` of A starts at
/// `a[t * a_batch_stride]` (likewise B and C); a batch stride of 0 shares one matrix across
/// the batch (only sensible for A or B).
#[allow(clippy::too_many_arguments)]
pub fn gemm_batched_ref<F: Float>(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    alpha: F,
    a: &[F],
    a_batch_stride: usize,
    rsa: usize,
    csa: usize,
    b: &[F],
    b_batch_stride: usize,
    rsb: usize,
    csb: usize,
    beta: F,
    c: &mut [F],
    c_batch_stride: usize,
    rsc: usize,
    csc: usize,
) {
    for t in 0..batch {
        gemm_ref(
            m,
            k,
            n,
            alpha,
            tail(a, t * a_batch_stride),
            rsa,
            csa,
            tail(b, t * b_batch_stride),
            rsb,
            csb,
            beta,
            tail_mut(c, t * c_batch_stride),
            rsc,
            csc,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The fast f32 GEMM, BLIS style.
//
// C is computed in MR×NR tiles by a microkernel that keeps the whole tile in registers and
// streams two packed operands: an MR-row panel of A and an NR-column panel of B, both laid out
// so that step p of the k loop reads MR (resp. NR) consecutive floats. Around it, three levels
// of cache blocking decide which pieces of A and B get packed and where they live:
//
//   for jc in 0..n step NC         B block KC×NC   packed once, shared by all threads (L3)
//     for pc in 0..k step KC       (the k loop: fixed order, so results are deterministic)
//       for ic in 0..m step MC     A block MC×KC   packed per task, stays in L2
//         for jr in 0..NC step NR  B micro-panel KC×NR stays in L1 while ...
//           for ir in 0..MC step MR  ... every A micro-panel of the block streams past it
//             microkernel: C[ir.., jr..] (+)= A panel · B panel
//
// Threads split the ic loop (and the jr loop when m is too short to feed every thread). Each
// element of C is produced by exactly one task, with the same k order, so the result is
// bitwise identical whatever the thread count.
// ---------------------------------------------------------------------------------------------

use crate::simd::{simd_level, SimdLevel};
use rayon::prelude::*;
use std::cell::RefCell;
use std::sync::OnceLock;
use std::thread::LocalKey;

/// Tile of the AVX2 kernel (also used by the scalar and NEON kernels, so all three share
/// one packed format): 6 rows × 2 ymm of 8 floats = 12 accumulator registers, leaving 4 of
/// the 16 for the two B vectors and the A broadcast.
const AVX2_MR: usize = 6;
/// See [`AVX2_MR`]: 16 columns = two AVX2 vectors (four NEON vectors).
const AVX2_NR: usize = 16;
/// Tile of the AVX-512 kernel: 12 rows × 2 zmm of 16 floats = 24 accumulators of the 32
/// registers, so each k step is 24 FMAs for 2 vector loads and 12 broadcasts.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const AVX512_MR: usize = 12;
/// See [`AVX512_MR`].
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const AVX512_NR: usize = 32;

/// Cache-block sizes of the three outer loops (see the loop nest above).
#[derive(Clone, Copy, Debug)]
struct Blocking {
    /// Depth of one packed block. The B micro-panel (kc×NR floats) must stay in L1d while
    /// the A micro-panels (kc×MR) stream through it.
    kc: usize,
    /// Rows of one packed A block (a multiple of MR): mc×kc floats live in L2 and are read
    /// once per B micro-panel.
    mc: usize,
    /// Columns of one packed B block (a multiple of NR): kc×nc floats, a slice of the shared
    /// L3; with nc ≈ 4k nearly every GEMM of a GPT-sized model packs each k-slice of B once.
    nc: usize,
}

/// Blocking for the 6×16 kernels, sized for a Zen 3 core (32 KiB L1d, 512 KiB L2): B
/// micro-panel 256×16×4 B = 16 KiB in L1, A block 144×256×4 B = 144 KiB in L2, B block
/// 256×4080×4 B ≈ 4 MiB in L3.
const BLOCKING_6X16: Blocking = Blocking {
    kc: 256,
    mc: 144,
    nc: 4080,
};
/// Blocking for the 12×32 AVX-512 kernel (Zen 4/5: 32/48 KiB L1d, 1 MiB L2). kc = 384 measured
/// best on a Zen 5 core (flat within noise from 192 to 512): the B micro-panel 384×32×4 B =
/// 48 KiB lives in L1/L2, the A block 144×384×4 B = 216 KiB in L2, and the C tile is updated
/// half as often as with 192.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
const BLOCKING_12X32: Blocking = Blocking {
    kc: 384,
    mc: 144,
    nc: 4064,
};
/// Below this many flops (2·m·k·n, ≈ 203³, ~80 µs on one core) a GEMM runs on the calling
/// thread: splitting it costs two rayon hand-offs per k block, and on the shared 2-core test
/// machine 128³ and 256×64×256 ran no faster on 2 threads than on 1.
const PAR_MIN_FLOPS: usize = 1 << 24;

/// A packed B block smaller than this many floats (400 KB) is packed by one thread: a second
/// parallel region per k block costs more than it saves there (256³, a 64K-float block,
/// measured 5–20% faster packing B on one thread). Was 1 MiB: then the weight-gradient GEMMs
/// of the demo train step (xᵀ·dy, k = 2048 rows in six 342×384 blocks of 131K floats)
/// packed all of dy on the calling thread while the other waited — 4% of the step's samples.
const PAR_PACK_B_MIN: usize = 100_000;

/// A microkernel for MR×NR tiles: `C[0..MR, 0..NR] = alpha · Apanel·Bpanel + beta · C` over
/// `kc` steps, with C row-major (unit column stride, row stride `rsc`). `beta == 0` means C
/// is not read. Step p of the B panel is the NR floats at `b + p·ldb`: `ldb = NR` for a packed
/// panel, B's row stride for a panel read in place from a row-major B.
///
/// Safety contract: `a` points to `kc·MR` readable floats, `b + p·ldb` to NR readable floats
/// for p < kc, and `c + i·rsc + j` is writable (and readable when `beta != 0`) for i < MR,
/// j < NR.
type Microkernel = unsafe fn(usize, *const f32, *const f32, usize, *mut f32, usize, f32, f32);

// ---------------------------------------------------------------------------------------------
// Packing. Packing copies a block into the exact order the microkernel reads it, which makes
// every stride combination (and so every transpose) cost the same, and pads ragged edges with
// zeros so the microkernel never needs to know about them.
// ---------------------------------------------------------------------------------------------

/// Packs rows `i0..i0+mc`, columns `p0..p0+kc` of A into `ceil(mc/MR)` panels of `kc×MR`
/// floats: panel r holds rows `i0+r·MR ..`, step p of it is `A[row, p0+p]` for its MR rows.
/// Rows past `mc` are zero.
#[allow(clippy::too_many_arguments)]
fn pack_a<const MR: usize>(
    dst: &mut [f32],
    a: &[f32],
    rsa: usize,
    csa: usize,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
) {
    let panels = mc.div_ceil(MR);
    for (r, panel) in dst.chunks_exact_mut(kc * MR).take(panels).enumerate() {
        let row0 = i0 + r * MR;
        let rows = MR.min(mc - r * MR);
        if rows < MR {
            panel.fill(0.0);
        }
        if csa == 1 && rows == MR && MR.is_multiple_of(4) && avx_available() {
            // Row-major A, full panel: 4×8 transposes in registers.
            // SAFETY: AVX is present (checked); the panel holds kc·MR floats and each row
            // `row0 + i` (i < MR) has kc floats from column p0 (the caller's bounds).
            #[cfg(target_arch = "x86_64")]
            unsafe {
                avx::pack_a_rows::<MR>(panel, &a[row0 * rsa + p0..], rsa, kc)
            };
        } else if csa == 1 {
            // Row-major A: read each row contiguously.
            for i in 0..rows {
                let src = &a[(row0 + i) * rsa + p0..][..kc];
                for (p, &v) in src.iter().enumerate() {
                    panel[p * MR + i] = v;
                }
            }
        } else {
            // Column-major (transposed) A or general strides: read down each column.
            for (p, out) in panel.chunks_exact_mut(MR).enumerate() {
                let base = row0 * rsa + (p0 + p) * csa;
                if rsa == 1 && rows == MR {
                    // Column-major A (a transposed operand): each step is a contiguous copy
                    // of a length known at compile time (no memmove call).
                    let src: &[f32; MR] = a[base..base + MR].try_into().expect("MR floats");
                    out.copy_from_slice(src);
                } else {
                    for (i, o) in out[..rows].iter_mut().enumerate() {
                        *o = a[base + i * rsa];
                    }
                }
            }
        }
    }
}

/// Whether the AVX packing path may run (x86-64 with AVX2; never on other targets).
fn avx_available() -> bool {
    cfg!(target_arch = "x86_64") && simd_level() == SimdLevel::Avx2Fma
}

#[cfg(target_arch = "x86_64")]
mod avx {
    use std::arch::x86_64::*;

    /// Packs MR rows (MR a multiple of 4) of a row-major A into one `kc×MR` panel (also a
    /// column-major B into a `kc×NR` panel, its columns as the rows): `a` starts
    /// at the panel's first element, rows `rsa` apart; `panel[p·MR + i] = a[i·rsa + p]`.
    /// Blocks of 4 rows × 8 columns are transposed in registers (two 4×4 transposes, one per
    /// 128-bit lane), so each step writes 4 contiguous floats instead of one.
    ///
    /// # Safety
    /// The CPU has AVX; `panel` holds `kc·MR` floats; `a[i·rsa + p]` is in bounds for
    /// i < MR, p < kc.
    #[target_feature(enable = "avx")]
    pub unsafe fn pack_a_rows<const MR: usize>(
        panel: &mut [f32],
        a: &[f32],
        rsa: usize,
        kc: usize,
    ) {
        assert!(panel.len() >= kc * MR && a.len() >= (MR - 1) * rsa + kc);
        let (src, dst) = (a.as_ptr(), panel.as_mut_ptr());
        let mut p = 0;
        // SAFETY: p + 8 <= kc and i + 3 < MR, so every load is inside row i..i+3 of the
        // asserted source and every store inside steps p..p+8 of the panel.
        unsafe {
            while p + 8 <= kc {
                for i in (0..MR).step_by(4) {
                    let r = |k: usize| _mm256_loadu_ps(src.add((i + k) * rsa + p));
                    let (r0, r1, r2, r3) = (r(0), r(1), r(2), r(3));
                    let t0 = _mm256_unpacklo_ps(r0, r1); // a0[0] a1[0] a0[1] a1[1] | cols 4,5
                    let t1 = _mm256_unpackhi_ps(r0, r1); // a0[2] a1[2] a0[3] a1[3] | cols 6,7
                    let t2 = _mm256_unpacklo_ps(r2, r3);
                    let t3 = _mm256_unpackhi_ps(r2, r3);
                    // Column j (low lane) and column j + 4 (high lane) of the 4 rows.
                    let cols = [
                        _mm256_shuffle_ps::<0x44>(t0, t2),
                        _mm256_shuffle_ps::<0xEE>(t0, t2),
                        _mm256_shuffle_ps::<0x44>(t1, t3),
                        _mm256_shuffle_ps::<0xEE>(t1, t3),
                    ];
                    for (j, c) in cols.into_iter().enumerate() {
                        _mm_storeu_ps(dst.add((p + j) * MR + i), _mm256_castps256_ps128(c));
                        _mm_storeu_ps(dst.add((p + j + 4) * MR + i), _mm256_extractf128_ps::<1>(c));
                    }
                }
                p += 8;
            }
        }
        for p in p..kc {
            for i in 0..MR {
                panel[p * MR + i] = a[i * rsa + p];
            }
        }
    }
}

/// Packs one NR-column panel of B: rows `p0..p0+kc`, columns `j0..j0+min(NR, nc)` (`nc` is
/// the number of columns left in the block from `j0`) into `kc×NR` floats, step p holding
/// `B[p0+p, j0 ..]`. Columns past `nc` are zero. One call per panel, so panels can be packed
/// in parallel.
#[allow(clippy::too_many_arguments)]
fn pack_b_panel<const NR: usize>(
    dst: &mut [f32],
    b: &[f32],
    rsb: usize,
    csb: usize,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
) {
    let cols = NR.min(nc);
    if cols < NR {
        dst.fill(0.0);
    }
    if rsb == 1 && csb != 1 && cols == NR && NR.is_multiple_of(4) && avx_available() {
        // Column-major (transposed) B, full panel: the same register transposes as a
        // row-major A panel (B's columns play A's rows).
        // SAFETY: AVX is present (checked); `dst` holds kc·NR floats and column `j0 + j`
        // (j < NR) has kc floats from row p0 (the caller's bounds).
        #[cfg(target_arch = "x86_64")]
        unsafe {
            avx::pack_a_rows::<NR>(dst, &b[j0 * csb + p0..], csb, kc)
        };
    } else if rsb == 1 && csb != 1 {
        // Column-major (transposed) B: read each column contiguously.
        for j in 0..cols {
            let src = &b[(j0 + j) * csb + p0..][..kc];
            for (p, &v) in src.iter().enumerate() {
                dst[p * NR + j] = v;
            }
        }
    } else {
        for (p, out) in dst.chunks_exact_mut(NR).take(kc).enumerate() {
            let base = (p0 + p) * rsb + j0 * csb;
            if csb == 1 && cols == NR {
                // A full row of the panel: a copy of a length known at compile time (no
                // memmove call per row).
                let src: &[f32; NR] = b[base..base + NR].try_into().expect("NR floats");
                out.copy_from_slice(src);
            } else if csb == 1 {
                out[..cols].copy_from_slice(&b[base..base + cols]);
            } else {
                for (j, o) in out[..cols].iter_mut().enumerate() {
                    *o = b[base + j * csb];
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Microkernels: one MR×NR tile of C from one A panel and one B panel. Same packed format for
// all three, so the driver only picks a function pointer.
// ---------------------------------------------------------------------------------------------

/// Scalar microkernel: the fallback without SIMD, and the plainest statement of what the
/// vector kernels do (the compiler is free to auto-vectorise the inner j loop).
///
/// # Safety
/// See [`Microkernel`].
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_scalar<const MR: usize, const NR: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    beta: f32,
) {
    // SAFETY: the caller guarantees `kc·MR` floats at `a` and NR floats at `b + p·ldb` for
    // every p < kc (so (kc − 1)·ldb + NR in all).
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * MR),
            std::slice::from_raw_parts(b, kc.saturating_sub(1) * ldb + NR),
        )
    };
    let mut ab = [[0.0f32; NR]; MR];
    let b_steps = (0..kc).map(|p| &b[p * ldb..p * ldb + NR]);
    for (ap, bp) in a.chunks_exact(MR).zip(b_steps) {
        for (row, &ai) in ab.iter_mut().zip(ap) {
            for (acc, &bj) in row.iter_mut().zip(bp) {
                *acc += ai * bj;
            }
        }
    }
    for (i, row) in ab.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // SAFETY: the caller guarantees the MR×NR tile at `c` with row stride `rsc` is
            // valid for reads and writes.
            unsafe {
                let dst = c.add(i * rsc + j);
                *dst = if beta == 0.0 {
                    alpha * v
                } else {
                    alpha * v + beta * *dst
                };
            }
        }
    }
}

/// AVX2+FMA microkernel, 6×16: 12 ymm accumulators; each k step loads two B vectors and
/// broadcasts six A values, for 12 FMAs.
///
/// # Safety
/// See [`Microkernel`]; additionally the CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    beta: f32,
) {
    use std::arch::x86_64::*;
    const MR: usize = AVX2_MR;
    const NR: usize = AVX2_NR;
    // SAFETY: all pointer arithmetic and loads below stay within the `kc·MR` floats at `a`,
    // the NR at each `b + p·ldb` and the MR×NR tile at `c`, which the caller guarantees are valid;
    // the intrinsics need AVX2/FMA, which the caller guarantees the CPU has.
    unsafe {
        for i in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + NR - 1) as *const i8);
        }
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(bp);
            let b1 = _mm256_loadu_ps(bp.add(8));
            // The k-th column of the packed A panel, read once: indexing an array (not
            // `ap.add(i)` per row) lets the row loop unroll into registers also in test
            // builds, where each `add` carries a debug check.
            let a_col = ap.cast::<[f32; MR]>().read_unaligned();
            for (row, &a_i) in acc.iter_mut().zip(&a_col) {
                let ai = _mm256_set1_ps(a_i);
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            ap = ap.add(MR);
            bp = bp.add(ldb);
        }
        let va = _mm256_set1_ps(alpha);
        let vb = _mm256_set1_ps(beta);
        for (i, row) in acc.iter().enumerate() {
            let c0 = c.add(i * rsc);
            let c1 = c0.add(8);
            if beta == 0.0 {
                _mm256_storeu_ps(c0, _mm256_mul_ps(va, row[0]));
                _mm256_storeu_ps(c1, _mm256_mul_ps(va, row[1]));
            } else {
                _mm256_storeu_ps(
                    c0,
                    _mm256_fmadd_ps(va, row[0], _mm256_mul_ps(vb, _mm256_loadu_ps(c0))),
                );
                _mm256_storeu_ps(
                    c1,
                    _mm256_fmadd_ps(va, row[1], _mm256_mul_ps(vb, _mm256_loadu_ps(c1))),
                );
            }
        }
    }
}

/// AVX-512 microkernel, 12×32: 24 zmm accumulators; each k step loads two B vectors and
/// broadcasts twelve A values, for 24 FMAs (twice the work per instruction of AVX2).
///
/// # Safety
/// See [`Microkernel`]; additionally the CPU must support AVX-512F.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn kernel_avx512(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    beta: f32,
) {
    use std::arch::x86_64::*;
    const MR: usize = AVX512_MR;
    const NR: usize = AVX512_NR;
    // SAFETY: all pointer arithmetic and loads below stay within the `kc·MR` floats at `a`,
    // the NR at each `b + p·ldb` and the MR×NR tile at `c`, which the caller guarantees are valid;
    // the intrinsics need AVX-512F, which the caller guarantees the CPU has.
    unsafe {
        for i in 0..MR {
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc) as *const i8);
            _mm_prefetch::<_MM_HINT_T0>(c.add(i * rsc + NR - 1) as *const i8);
        }
        let mut acc = [[_mm512_setzero_ps(); 2]; MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(bp);
            let b1 = _mm512_loadu_ps(bp.add(16));
            // See `kernel_avx2`: the A column read once.
            let a_col = ap.cast::<[f32; MR]>().read_unaligned();
            for (row, &a_i) in acc.iter_mut().zip(&a_col) {
                let ai = _mm512_set1_ps(a_i);
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            ap = ap.add(MR);
            bp = bp.add(ldb);
        }
        let va = _mm512_set1_ps(alpha);
        let vb = _mm512_set1_ps(beta);
        for (i, row) in acc.iter().enumerate() {
            let c0 = c.add(i * rsc);
            let c1 = c0.add(16);
            if beta == 0.0 {
                _mm512_storeu_ps(c0, _mm512_mul_ps(va, row[0]));
                _mm512_storeu_ps(c1, _mm512_mul_ps(va, row[1]));
            } else {
                let old0 = _mm512_mul_ps(vb, _mm512_loadu_ps(c0));
                let old1 = _mm512_mul_ps(vb, _mm512_loadu_ps(c1));
                _mm512_storeu_ps(c0, _mm512_fmadd_ps(va, row[0], old0));
                _mm512_storeu_ps(c1, _mm512_fmadd_ps(va, row[1], old1));
            }
        }
    }
}

/// NEON microkernel, 6×16: 24 q-register accumulators (of 32); each k step loads four B
/// vectors and does 24 FMAs by scalar A values.
///
/// # Safety
/// See [`Microkernel`]; additionally the CPU must support NEON.
#[cfg(target_arch = "aarch64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "neon")]
unsafe fn kernel_neon(
    kc: usize,
    a: *const f32,
    b: *const f32,
    ldb: usize,
    c: *mut f32,
    rsc: usize,
    alpha: f32,
    beta: f32,
) {
    use std::arch::aarch64::*;
    const MR: usize = AVX2_MR;
    const NR: usize = AVX2_NR;
    // SAFETY: all pointer arithmetic and loads below stay within the `kc·MR` floats at `a`,
    // the NR at each `b + p·ldb` and the MR×NR tile at `c`, which the caller guarantees are valid;
    // the caller guarantees NEON.
    unsafe {
        // Each row of the tile is NR / 4 = 4 NEON registers of 4 floats.
        const { assert!(NR == 16) };
        let mut acc = [[vdupq_n_f32(0.0); NR / 4]; MR];
        let (mut ap, mut bp) = (a, b);
        for _ in 0..kc {
            let bv = [
                vld1q_f32(bp),
                vld1q_f32(bp.add(4)),
                vld1q_f32(bp.add(8)),
                vld1q_f32(bp.add(12)),
            ];
            // See `kernel_avx2`: the A column read once.
            let a_col = ap.cast::<[f32; MR]>().read_unaligned();
            for (row, &ai) in acc.iter_mut().zip(&a_col) {
                for (r, &bq) in row.iter_mut().zip(bv.iter()) {
                    *r = vfmaq_n_f32(*r, bq, ai);
                }
            }
            ap = ap.add(MR);
            bp = bp.add(ldb);
        }
        for (i, row) in acc.iter().enumerate() {
            for (q, &r) in row.iter().enumerate() {
                let dst = c.add(i * rsc + 4 * q);
                let v = if beta == 0.0 {
                    vmulq_n_f32(r, alpha)
                } else {
                    vfmaq_n_f32(vmulq_n_f32(vld1q_f32(dst), beta), r, alpha)
                };
                vst1q_f32(dst, v);
            }
        }
    }
}

/// Which microkernel family a GEMM runs with. Chosen from [`simd_level`], refined by whether
/// an AVX2 machine also has AVX-512 (then the wider kernel is used unless the environment
/// variable `FERROCHAT_NO_AVX512` is set, to compare or to mimic an AVX2-only CPU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl Isa {
    /// The best kernel family this machine runs (detected once).
    fn detected() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| match simd_level() {
            SimdLevel::Avx2Fma
                if has_avx512() && std::env::var_os("FERROCHAT_NO_AVX512").is_none() =>
            {
                Isa::Avx512
            }
            SimdLevel::Avx2Fma => Isa::Avx2,
            SimdLevel::Neon => Isa::Neon,
            SimdLevel::Scalar => Isa::Scalar,
        })
    }
}

/// The microkernel [`sgemm`] runs with on this machine, e.g. `"AVX-512 12x32"`.
pub fn microkernel() -> &'static str {
    match Isa::detected() {
        Isa::Scalar => "scalar",
        Isa::Avx2 => "AVX2+FMA 6x16",
        Isa::Avx512 => "AVX-512 12x32",
        Isa::Neon => "NEON 6x16",
    }
}

/// Whether the CPU has AVX-512F.
fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

// ---------------------------------------------------------------------------------------------
// Driver.
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// Per-thread packed-A buffer (one MC×KC block), reused across calls.
    static PACK_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// Per-thread packed-B buffer (one KC×NC block), reused across calls.
    static PACK_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on a 64-byte-aligned scratch slice of `len` floats taken from the thread-local
/// `key` (grown as needed, never shrunk), or from a fresh allocation when that buffer is
/// already in use further up this thread's stack (a GEMM called from inside rayon work that
/// this thread picked up while waiting in another GEMM). Contents are unspecified.
fn with_scratch<R>(
    key: &'static LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(&mut [f32]) -> R,
) -> R {
    fn aligned(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
        if v.len() < len + 16 {
            v.resize(len + 16, 0.0);
        }
        let off = v.as_ptr().align_offset(64).min(16);
        &mut v[off..off + len]
    }
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut v) => f(aligned(&mut v, len)),
        Err(_) => f(aligned(&mut Vec::new(), len)),
    })
}

/// A raw pointer into C that may cross threads. Tasks write disjoint tiles of C.
#[derive(Clone, Copy)]
struct CPtr(*mut f32);
// SAFETY: the driver hands each task a disjoint set of C elements (checked by
// `strides_disjoint` before going parallel), so concurrent writes never alias.
unsafe impl Send for CPtr {}
// SAFETY: as above; the pointer is only dereferenced for a task's own tiles.
unsafe impl Sync for CPtr {}

impl CPtr {
    /// The pointer (a method, so closures capture the whole `Send` wrapper, not the field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Whether distinct (i, j) of an m×n matrix with these strides are distinct elements, so that
/// different threads may write different elements without racing.
fn strides_disjoint(m: usize, n: usize, rs: usize, cs: usize) -> bool {
    if m <= 1 || n <= 1 {
        return (m <= 1 || rs > 0) && (n <= 1 || cs > 0);
    }
    // Rows laid out one after another, or columns one after another.
    cs > 0 && rs > (n - 1) * cs || rs > 0 && cs > (m - 1) * rs
}

/// 2·m·k·n, saturating (only compared against thresholds).
fn flops(m: usize, k: usize, n: usize) -> usize {
    (2 * m).saturating_mul(k).saturating_mul(n)
}

/// Smallest slice length holding every element of an m×n matrix with strides (rs, cs).
fn span(m: usize, n: usize, rs: usize, cs: usize) -> usize {
    if m == 0 || n == 0 {
        0
    } else {
        (m - 1) * rs + (n - 1) * cs + 1
    }
}

/// Fast single-precision GEMM (same contract as [`gemm_ref`]): packed operands, cache
/// blocking, a SIMD microkernel chosen at run time by [`simd_level`], and rayon threads for
/// large products (below ≈200³ it runs on the calling thread). The result does not depend on
/// the number of threads.
///
/// Kernels: AVX-512 (12×32 tiles) on x86-64 CPUs that have it, unless the environment
/// variable `FERROCHAT_NO_AVX512` is set; else AVX2+FMA (6×16); NEON (6×16) on aarch64;
/// scalar when `FERROCHAT_SIMD=scalar` or nothing else fits. Each thread that runs a GEMM
/// keeps its packing buffers (up to ≈6 MiB for B, ≈220 KiB for A) for reuse.
///
/// # Panics
/// If a slice is too short for its matrix, i.e. `a.len() < (m-1)·rsa + (k-1)·csa + 1` (and
/// likewise for B (k×n) and C (m×n)) when the matrix is non-empty.
#[allow(clippy::too_many_arguments)]
pub fn sgemm(
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
) {
    sgemm_with(
        Isa::detected(),
        true,
        m,
        k,
        n,
        alpha,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        beta,
        c,
        rsc,
        csc,
    )
}

/// [`sgemm`] with the kernel family and permission to use threads given explicitly (tests
/// force each family with it; the batched GEMM runs it single-threaded inside its own
/// threads). `isa` must be one this CPU supports (see [`Isa::detected`]).
#[allow(clippy::too_many_arguments)]
fn sgemm_with(
    isa: Isa,
    threads: bool,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
) {
    assert!(a.len() >= span(m, k, rsa, csa), "sgemm: A slice too short");
    assert!(b.len() >= span(k, n, rsb, csb), "sgemm: B slice too short");
    assert!(c.len() >= span(m, n, rsc, csc), "sgemm: C slice too short");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        // Empty sum: C = alpha·0 + beta·C, exactly as the reference computes it.
        for i in 0..m {
            for j in 0..n {
                let dst = &mut c[i * rsc + j * csc];
                *dst = if beta == 0.0 {
                    alpha * 0.0
                } else {
                    alpha * 0.0 + beta * *dst
                };
            }
        }
        return;
    }
    if csc != 1 && rsc == 1 {
        // Column-major C: compute Cᵀ = Bᵀ·Aᵀ instead, so that the microkernel writes rows.
        return sgemm_with(
            isa, threads, n, k, m, alpha, b, csb, rsb, a, csa, rsa, beta, c, csc, rsc,
        );
    }
    if m <= GEMV_MAX_M && csc == 1 && (csb == 1 || rsb == 1) {
        return gemv(
            threads, m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc,
        );
    }
    let nthreads = if threads && flops(m, k, n) >= PAR_MIN_FLOPS && strides_disjoint(m, n, rsc, csc)
    {
        rayon::current_num_threads()
    } else {
        1
    };
    let g = Gemm {
        m,
        k,
        n,
        alpha,
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        beta,
        c: CPtr(c.as_mut_ptr()),
        rsc,
        csc,
    };
    // SAFETY (for each arm): the operand slices are long enough (asserted above) and `c`
    // points to a C of the asserted size, borrowed mutably for the whole call; C's elements
    // are distinct whenever nthreads > 1. The SIMD kernels are only chosen for an `isa` the
    // CPU supports (the caller's contract; `Isa::detected` checks the CPU).
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                gemm_blocked::<AVX512_MR, AVX512_NR>(&g, kernel_avx512, BLOCKING_12X32, nthreads)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => gemm_blocked::<AVX2_MR, AVX2_NR>(&g, kernel_avx2, BLOCKING_6X16, nthreads),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => gemm_blocked::<AVX2_MR, AVX2_NR>(&g, kernel_neon, BLOCKING_6X16, nthreads),
            _ => gemm_blocked::<AVX2_MR, AVX2_NR>(
                &g,
                kernel_scalar::<AVX2_MR, AVX2_NR>,
                BLOCKING_6X16,
                nthreads,
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// GEMV path: a few rows of A (token-by-token decoding, a batch of one). Packing B and running
// MR-row tiles would read all of B to fill mostly-zero tiles; instead B is streamed once,
// straight from its own layout, each element of C summed over k in order by one task.
// ---------------------------------------------------------------------------------------------

/// Rows of A at or below which [`sgemm`] takes the GEMV path.
const GEMV_MAX_M: usize = 4;
/// Columns of C per GEMV task when B's rows are contiguous (an m×256 accumulator in L1).
const GEMV_COLS: usize = 256;
/// Columns of C per GEMV task when B's columns are contiguous (one dot product each).
const GEMV_DOTS: usize = 64;
/// Below this many elements of B a GEMV runs on the calling thread.
const GEMV_PAR_MIN: usize = 1 << 16;

/// C = alpha·A·B + beta·C for m ≤ [`GEMV_MAX_M`] rows, unit column stride in C, and B with
/// either contiguous rows (`csb == 1`: C rows accumulate alpha-free sums of B rows, an axpy per
/// step of k) or contiguous columns (`rsb == 1`: a dot product per element of C). Columns of C
/// are split into tasks; every element is summed over k in the same order whatever the thread
/// count. Slice lengths were checked by the caller.
#[allow(clippy::too_many_arguments)]
fn gemv(
    threads: bool,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    rsc: usize,
) {
    // A's rows gathered contiguous (at most 4·k floats).
    let arows: Vec<f32> = (0..m)
        .flat_map(|i| (0..k).map(move |p| a[i * rsa + p * csa]))
        .collect();
    let cp = CPtr(c.as_mut_ptr());
    let rows_along_n = csb == 1;
    let width = if rows_along_n { GEMV_COLS } else { GEMV_DOTS };
    let task = |t: usize| {
        let (j0, j1) = (t * width, n.min((t + 1) * width));
        let mut acc = [[0.0f32; GEMV_COLS]; GEMV_MAX_M];
        if rows_along_n {
            for p in 0..k {
                let brow = &b[p * rsb + j0..p * rsb + j1];
                for (i, acc_i) in acc.iter_mut().enumerate().take(m) {
                    let s = arows[i * k + p];
                    for (x, &y) in acc_i.iter_mut().zip(brow) {
                        *x += s * y;
                    }
                }
            }
        } else {
            for (i, acc_i) in acc.iter_mut().enumerate().take(m) {
                let ai = &arows[i * k..(i + 1) * k];
                for (x, j) in acc_i.iter_mut().zip(j0..j1) {
                    *x = dot(ai, &b[j * csb..j * csb + k]);
                }
            }
        }
        for (i, acc_i) in acc.iter().enumerate().take(m) {
            for (jj, &v) in acc_i[..j1 - j0].iter().enumerate() {
                // SAFETY: (i, j0 + jj) is inside the m×n C (unit column stride) the caller
                // checked; tasks own disjoint column ranges, so no two write one element.
                unsafe {
                    let dst = cp.get().add(i * rsc + j0 + jj);
                    *dst = if beta == 0.0 {
                        alpha * v
                    } else {
                        alpha * v + beta * *dst
                    };
                }
            }
        }
    };
    let tasks = n.div_ceil(width);
    if threads && tasks > 1 && k * n >= GEMV_PAR_MIN && strides_disjoint(m, n, rsc, 1) {
        (0..tasks).into_par_iter().for_each(task);
    } else {
        (0..tasks).for_each(task);
    }
}

/// Σ x·y with 8 independent partial sums (a fixed order the compiler may vectorise).
fn dot(x: &[f32], y: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (xc, yc) = (x.chunks_exact(8), y.chunks_exact(8));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (a, b) in xc.zip(yc) {
        for l in 0..8 {
            acc[l] += a[l] * b[l];
        }
    }
    let mut s: f32 = acc.iter().sum();
    for (&a, &b) in xr.iter().zip(yr) {
        s += a * b;
    }
    s
}

/// One GEMM problem, validated by [`sgemm_with`]: C = alpha·A·B + beta·C with C reached
/// through a raw pointer so that threads can write disjoint tiles of it.
struct Gemm<'a> {
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &'a [f32],
    rsa: usize,
    csa: usize,
    b: &'a [f32],
    rsb: usize,
    csb: usize,
    beta: f32,
    c: CPtr,
    rsc: usize,
    csc: usize,
}

/// The blocked loop nest (see the top of this section) for MR×NR tiles.
///
/// # Safety
/// `g.a` and `g.b` hold their matrices, `g.c` points to an m×n matrix with strides
/// (rsc, csc) valid for reads and writes and not otherwise accessed during the call, whose
/// elements are pairwise distinct if `nthreads > 1`; `kernel` is runnable on this CPU.
unsafe fn gemm_blocked<const MR: usize, const NR: usize>(
    g: &Gemm,
    kernel: Microkernel,
    blk: Blocking,
    nthreads: usize,
) {
    let (m, k, n) = (g.m, g.k, g.n);
    // Equal-sized blocks of at most kc (resp. nc, in whole NR panels), so no short last
    // block wastes a pass (k = 2048 runs as 6×342, not 5×384 + 128). Depends only on the
    // shape, never on the thread count.
    let kc_step = k.div_ceil(k.div_ceil(blk.kc));
    let nc_step = n.div_ceil(n.div_ceil(blk.nc)).next_multiple_of(NR);
    // Few rows (every B panel serves at most two row blocks) and a row-major B: the
    // microkernel reads B's rows in place instead of a packed copy, which would cost as much
    // memory traffic as the product reads (each packed float is used by only m ≤ 2·mc rows).
    let direct_b = g.csb == 1 && m <= 2 * blk.mc;
    with_scratch(&PACK_B, kc_step * nc_step, |bpack| {
        for jc in (0..n).step_by(nc_step) {
            let nc = nc_step.min(n - jc);
            let npanels = nc.div_ceil(NR);
            for pc in (0..k).step_by(kc_step) {
                let kc = kc_step.min(k - pc);
                // Pack the kc×nc block of B, one NR-column panel per chunk — except, when B
                // is read in place, the full panels (only a ragged last one is packed).
                let bp = &mut bpack[..npanels * kc * NR];
                let pack = |(q, dst): (usize, &mut [f32])| {
                    if !direct_b || nc - q * NR < NR {
                        pack_b_panel::<NR>(dst, g.b, g.rsb, g.csb, pc, kc, jc + q * NR, nc - q * NR)
                    }
                };
                if direct_b {
                    bp.chunks_mut(kc * NR)
                        .enumerate()
                        .skip(npanels - 1)
                        .for_each(pack);
                } else if nthreads > 1 && bp.len() >= PAR_PACK_B_MIN {
                    bp.par_chunks_mut(kc * NR).enumerate().for_each(pack);
                } else {
                    bp.chunks_mut(kc * NR).enumerate().for_each(pack);
                }
                let bp = &*bp;
                // After the first k block, C already holds alpha·(partial sum): accumulate.
                let beta = if pc == 0 { g.beta } else { 1.0 };

                // Split m into row blocks of at most mc rows (a multiple of MR), as many as
                // the threads need; if there are fewer blocks than threads, also split the
                // B panels (the jr loop) between them. When m fits in one row block per
                // thread, split the columns instead if that balances the tiles better: rows
                // cut in whole MR panels can divide unevenly (128 rows = 6 + 5 panels of 12),
                // columns of NR panels evenly (768 = 12 + 12 panels of 32). Each C element is
                // still computed whole by one task: the same bits for any split.
                let mut blocks = m.div_ceil(blk.mc);
                let mut jsplits = 1;
                if nthreads > 1 {
                    let mpanels = m.div_ceil(MR);
                    let by_rows = mpanels.div_ceil(nthreads) * npanels;
                    let by_cols = npanels.div_ceil(nthreads) * mpanels;
                    if blocks <= nthreads && by_cols < by_rows {
                        jsplits = nthreads;
                    } else {
                        blocks = blocks.next_multiple_of(nthreads).min(mpanels);
                    }
                }
                let mc = m.div_ceil(blocks).next_multiple_of(MR);
                let blocks = m.div_ceil(mc);
                let jsplits = jsplits.max(nthreads.div_ceil(blocks)).min(npanels);
                let per_split = npanels.div_ceil(jsplits);
                let task = |t: usize| {
                    let (ib, js) = (t / jsplits, t % jsplits);
                    let i0 = ib * mc;
                    let mcb = mc.min(m - i0);
                    let q0 = js * per_split;
                    let q1 = npanels.min(q0 + per_split);
                    if q0 >= q1 {
                        return;
                    }
                    with_scratch(&PACK_A, mcb.div_ceil(MR) * MR * kc, |apack| {
                        pack_a::<MR>(apack, g.a, g.rsa, g.csa, i0, mcb, pc, kc);
                        // SAFETY: this task is the only writer of rows i0..i0+mcb, columns
                        // jc+q0·NR..jc+q1·NR of C; the rest is the caller's contract.
                        unsafe {
                            macro_kernel::<MR, NR>(
                                g,
                                kernel,
                                kc,
                                apack,
                                bp,
                                direct_b.then_some(pc),
                                i0,
                                mcb,
                                jc,
                                q0..q1,
                                beta,
                            )
                        };
                    });
                };
                let ntasks = blocks * jsplits;
                if nthreads > 1 && ntasks > 1 {
                    (0..ntasks).into_par_iter().for_each(task);
                } else {
                    (0..ntasks).for_each(task);
                }
            }
        }
    });
}

/// The two inner loops: for each B micro-panel `q` in `panels` (columns `jc + q·NR ..`), for
/// each A micro-panel of the packed block (rows `i0 ..i0+mcb`), one microkernel call. Full
/// tiles of a unit-column-stride C are written in place; ragged edge tiles (and other C
/// layouts) go through a local MR×NR tile and are written back element by element.
///
/// # Safety
/// As [`gemm_blocked`]; the caller is the only one accessing the C tiles touched here.
#[allow(clippy::too_many_arguments)]
unsafe fn macro_kernel<const MR: usize, const NR: usize>(
    g: &Gemm,
    kernel: Microkernel,
    kc: usize,
    apack: &[f32],
    bpack: &[f32],
    direct_b: Option<usize>,
    i0: usize,
    mcb: usize,
    jc: usize,
    panels: std::ops::Range<usize>,
    beta: f32,
) {
    let (rsc, csc, alpha) = (g.rsc, g.csc, g.alpha);
    for q in panels {
        let j = jc + q * NR;
        let nr = NR.min(g.n - j);
        // The panel's first step and the distance between steps: B itself (rows k = pc ..,
        // columns j .. j + NR) when it is read in place and the panel is full, else the
        // packed copy.
        let (bpanel, ldb) = match direct_b {
            Some(pc) if nr == NR => (&g.b[pc * g.rsb + j..], g.rsb),
            _ => (&bpack[q * kc * NR..][..kc * NR], NR),
        };
        for (r, apanel) in apack
            .chunks_exact(kc * MR)
            .take(mcb.div_ceil(MR))
            .enumerate()
        {
            let i = i0 + r * MR;
            let mr = MR.min(g.m - i);
            // SAFETY: apanel holds kc·MR floats, bpanel NR floats at each p·ldb, p < kc (a
            // packed panel, or kc rows of NR columns of B inside its checked span, the panel
            // being full). (i, j) is inside C (i < m,
            // j < n), so the tile pointer is in bounds, and so is every element written: the
            // whole MR×NR tile for a full tile, else only the mr×nr valid part. The kernel is
            // runnable on this CPU and we have exclusive access to these tiles (caller).
            unsafe {
                let ct = g.c.get().add(i * rsc + j * csc);
                if mr == MR && nr == NR && csc == 1 {
                    kernel(
                        kc,
                        apanel.as_ptr(),
                        bpanel.as_ptr(),
                        ldb,
                        ct,
                        rsc,
                        alpha,
                        beta,
                    );
                } else {
                    let mut tile = [[0.0f32; NR]; MR];
                    kernel(
                        kc,
                        apanel.as_ptr(),
                        bpanel.as_ptr(),
                        ldb,
                        tile.as_mut_ptr().cast(),
                        NR,
                        1.0,
                        0.0,
                    );
                    for (ii, row) in tile.iter().enumerate().take(mr) {
                        for (jj, &v) in row.iter().enumerate().take(nr) {
                            let dst = ct.add(ii * rsc + jj * csc);
                            *dst = if beta == 0.0 {
                                alpha * v
                            } else {
                                alpha * v + beta * *dst
                            };
                        }
                    }
                }
            }
        }
    }
}

/// `x[off..]`, or empty when `off` is past the end (an empty matrix needs no elements).
fn tail<T>(x: &[T], off: usize) -> &[T] {
    &x[off.min(x.len())..]
}

/// `x[off..]`, or empty when `off` is past the end.
fn tail_mut<T>(x: &mut [T], off: usize) -> &mut [T] {
    let off = off.min(x.len());
    &mut x[off..]
}

/// Batched single-precision GEMM: for t in 0..batch, `C_t = alpha·A_t·B_t + beta·C_t`, where
/// `A_t` starts at `a[t·a_batch_stride]` with strides (rsa, csa), and likewise B and C. A
/// batch stride of 0 shares one A (or B) across the batch. Small matrices (below the
/// threading threshold of [`sgemm`]), or at least 4 per thread, run one per rayon task, each
/// single-threaded; a few large ones run one after another, each using all threads.
///
/// # Panics
/// If a slice is too short for the last matrix of its batch (see [`sgemm`]).
#[allow(clippy::too_many_arguments)]
pub fn sgemm_batched(
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
    alpha: f32,
    a: &[f32],
    a_batch_stride: usize,
    rsa: usize,
    csa: usize,
    b: &[f32],
    b_batch_stride: usize,
    rsb: usize,
    csb: usize,
    beta: f32,
    c: &mut [f32],
    c_batch_stride: usize,
    rsc: usize,
    csc: usize,
) {
    if batch == 0 {
        return;
    }
    let isa = Isa::detected();
    let c_span = span(m, n, rsc, csc);
    // One GEMM per task beats splitting each GEMM (no synchronisation, no shared packing)
    // whenever there is enough of them to keep every thread busy to the end, or each one is
    // too small to split anyway.
    let small = flops(m, k, n) < PAR_MIN_FLOPS;
    let many = batch >= 4 * rayon::current_num_threads();
    if batch > 1
        && (small || many)
        && c_span > 0
        && c_batch_stride >= c_span
        && strides_disjoint(m, n, rsc, csc)
    {
        assert!(
            c.len() >= (batch - 1) * c_batch_stride + c_span,
            "sgemm_batched: C slice too short"
        );
        c.par_chunks_mut(c_batch_stride)
            .take(batch)
            .enumerate()
            .for_each(|(t, ct)| {
                sgemm_with(
                    isa,
                    false,
                    m,
                    k,
                    n,
                    alpha,
                    tail(a, t * a_batch_stride),
                    rsa,
                    csa,
                    tail(b, t * b_batch_stride),
                    rsb,
                    csb,
                    beta,
                    ct,
                    rsc,
                    csc,
                )
            });
    } else {
        for t in 0..batch {
            sgemm_with(
                isa,
                true,
                m,
                k,
                n,
                alpha,
                tail(a, t * a_batch_stride),
                rsa,
                csa,
                tail(b, t * b_batch_stride),
                rsb,
                csb,
                beta,
                tail_mut(c, t * c_batch_stride),
                rsc,
                csc,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic pseudo-random values in [-1, 1) (a 64-bit LCG; no rand dependency).
    fn random_vec(len: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..len)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The kernel families to test on this machine: always scalar, plus every SIMD family
    /// the CPU runs (AVX2 and AVX-512 on a CPU with both; NEON on aarch64).
    fn levels() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        match simd_level() {
            SimdLevel::Avx2Fma => {
                v.push(Isa::Avx2);
                if has_avx512() {
                    v.push(Isa::Avx512);
                }
            }
            SimdLevel::Neon => v.push(Isa::Neon),
            SimdLevel::Scalar => {}
        }
        v
    }

    /// One GEMM problem with explicit layouts.
    #[derive(Clone, Debug)]
    struct Case {
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        beta: f32,
        rsa: usize,
        csa: usize,
        rsb: usize,
        csb: usize,
        rsc: usize,
        csc: usize,
    }

    impl Case {
        /// Dense operands; `ta`/`tb` store A/B column-major (the transposed-operand case).
        fn dense(m: usize, k: usize, n: usize, ta: bool, tb: bool) -> Case {
            let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
            let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
            Case {
                m,
                k,
                n,
                alpha: 1.0,
                beta: 0.0,
                rsa,
                csa,
                rsb,
                csb,
                rsc: n,
                csc: 1,
            }
        }
    }

    /// Runs `case` through `sgemm_with(level, threads)` and through the f64 reference on the
    /// same inputs, with C pre-filled by `c_fill` (NaN when beta == 0 checks that C is
    /// ignored), and checks every element of C against the reference within
    /// 1e-5·(|alpha|·Σ|a||b| + |beta·c|), and every element outside C is untouched.
    /// Returns the result buffer (for bitwise comparisons).
    fn check(case: &Case, level: Isa, threads: bool, c_fill: Option<f32>, seed: u64) -> Vec<f32> {
        let Case {
            m,
            k,
            n,
            alpha,
            beta,
            rsa,
            csa,
            rsb,
            csb,
            rsc,
            csc,
        } = *case;
        let a = random_vec(span(m, k, rsa, csa), seed);
        let b = random_vec(span(k, n, rsb, csb), seed + 1);
        let clen = span(m, n, rsc, csc) + 3;
        let c0 = match c_fill {
            Some(v) => vec![v; clen],
            None => random_vec(clen, seed + 2),
        };
        let mut c = c0.clone();
        sgemm_with(
            level, threads, m, k, n, alpha, &a, rsa, csa, &b, rsb, csb, beta, &mut c, rsc, csc,
        );

        let f = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let fabs = |x: &[f32]| x.iter().map(|&v| (v as f64).abs()).collect::<Vec<f64>>();
        let mut want = f(&c0);
        gemm_ref(
            m,
            k,
            n,
            alpha as f64,
            &f(&a),
            rsa,
            csa,
            &f(&b),
            rsb,
            csb,
            beta as f64,
            &mut want,
            rsc,
            csc,
        );
        let mut bound = fabs(&c0);
        let (aa, ab) = ((alpha as f64).abs(), (beta as f64).abs());
        gemm_ref(
            m,
            k,
            n,
            aa,
            &fabs(&a),
            rsa,
            csa,
            &fabs(&b),
            rsb,
            csb,
            ab,
            &mut bound,
            rsc,
            csc,
        );

        let mut inside = vec![false; clen];
        for i in 0..m {
            for j in 0..n {
                let idx = i * rsc + j * csc;
                inside[idx] = true;
                let (got, exp) = (c[idx] as f64, want[idx]);
                let tol = 1e-5 * bound[idx] + 1e-30;
                assert!(
                    (got - exp).abs() <= tol,
                    "{case:?} {level:?}: C[{i},{j}] = {got}, want {exp} (tol {tol})"
                );
            }
        }
        for (idx, (&got, &orig)) in c.iter().zip(&c0).enumerate() {
            if !inside[idx] {
                assert!(
                    got.to_bits() == orig.to_bits(),
                    "{case:?}: wrote outside C at {idx}"
                );
            }
        }
        c
    }

    const AWKWARD: [usize; 6] = [1, 3, 7, 33, 65, 127];

    #[test]
    fn awkward_shapes_match_reference() {
        for level in levels() {
            for &m in &AWKWARD {
                for &k in &AWKWARD {
                    for &n in &AWKWARD {
                        check(
                            &Case::dense(m, k, n, false, false),
                            level,
                            true,
                            Some(f32::NAN),
                            (m * k * n) as u64,
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gemv_path_matches_reference() {
        // m ≤ GEMV_MAX_M with B row-major (axpy form) and transposed (dot form), A either
        // way; n spans several GEMV tasks and k·n is large enough to thread.
        for m in 1..=GEMV_MAX_M {
            for (k, n) in [(1, 1), (7, 300), (129, 517), (300, 1030)] {
                for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
                    let case = Case::dense(m, k, n, ta, tb);
                    check(
                        &case,
                        Isa::detected(),
                        true,
                        Some(f32::NAN),
                        (m * k + n) as u64,
                    );
                    let mut acc = case;
                    acc.alpha = 0.5;
                    acc.beta = -1.5;
                    check(&acc, Isa::detected(), true, None, (m + k * n) as u64);
                }
            }
        }
    }

    #[test]
    fn gemv_path_is_thread_count_independent() {
        let (m, k, n) = (3, 500, 2000);
        let a = random_vec(m * k, 1);
        let b = random_vec(k * n, 2);
        let run = |threads: usize, tb: bool| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            let mut c = vec![0.0f32; m * n];
            let (rsb, csb) = if tb { (1, k) } else { (n, 1) };
            pool.install(|| sgemm(m, k, n, 1.0, &a, k, 1, &b, rsb, csb, 0.0, &mut c, n, 1));
            c.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        for tb in [false, true] {
            assert_eq!(run(1, tb), run(2, tb));
        }
    }

    #[test]
    fn one_long_dimension() {
        // 1000 in each position; the last two are large enough to take the threaded path.
        for (m, k, n) in [
            (1000, 65, 33),
            (33, 1000, 65),
            (65, 33, 1000),
            (1000, 100, 100),
            (100, 90, 1000),
        ] {
            for level in levels() {
                check(
                    &Case::dense(m, k, n, false, false),
                    level,
                    true,
                    Some(f32::NAN),
                    7,
                );
            }
        }
    }

    #[test]
    fn several_blocks_in_every_dimension() {
        // n > nc (two column blocks of B), k > kc (accumulation across k blocks), m > mc.
        for level in levels() {
            for (ta, tb) in [(false, false), (true, true)] {
                let case = Case {
                    beta: 0.5,
                    ..Case::dense(7, 300, 4200, ta, tb)
                };
                check(&case, level, true, None, 41);
            }
            check(
                &Case::dense(300, 700, 20, false, true),
                level,
                true,
                Some(f32::NAN),
                43,
            );
        }
    }

    #[test]
    fn all_transpose_combinations() {
        for level in levels() {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                for (m, k, n) in [(33, 65, 127), (127, 300, 65), (7, 1, 3), (200, 129, 161)] {
                    check(
                        &Case::dense(m, k, n, ta, tb),
                        level,
                        true,
                        Some(f32::NAN),
                        11,
                    );
                }
            }
        }
    }

    #[test]
    fn alpha_and_beta_accumulate() {
        for level in levels() {
            // k > KC so the k-block accumulation (beta switching to 1) is exercised too.
            for (m, k, n) in [(65, 33, 127), (130, 600, 70)] {
                for (alpha, beta) in [
                    (1.0, 1.0),
                    (-0.5, 1.0),
                    (2.0, 0.25),
                    (0.75, -3.0),
                    (0.0, 1.5),
                ] {
                    let case = Case {
                        alpha,
                        beta,
                        ..Case::dense(m, k, n, false, false)
                    };
                    check(&case, level, true, None, 13);
                }
            }
        }
    }

    #[test]
    fn beta_zero_ignores_nan_in_c() {
        for level in levels() {
            for (m, k, n) in [(6, 16, 16), (65, 600, 33), (300, 200, 500)] {
                let case = Case {
                    alpha: -1.5,
                    ..Case::dense(m, k, n, false, false)
                };
                let c = check(&case, level, true, Some(f32::NAN), 17);
                assert!(c[..m * n].iter().all(|v| v.is_finite()));
            }
        }
    }

    #[test]
    fn strided_sub_matrix_of_c() {
        for level in levels() {
            for (m, k, n) in [(33, 65, 127), (300, 200, 150)] {
                // Row-major C inside a wider buffer, column-major C, and C with no unit stride.
                for (rsc, csc) in [(n + 5, 1), (1, m + 3), (2 * n + 1, 2)] {
                    let case = Case {
                        rsc,
                        csc,
                        beta: 0.5,
                        ..Case::dense(m, k, n, false, false)
                    };
                    check(&case, level, true, None, 19);
                }
            }
        }
    }

    #[test]
    fn general_strides_on_a_and_b() {
        for level in levels() {
            let case = Case {
                rsa: 3 * 40,
                csa: 3,
                rsb: 2,
                csb: 2 * 50 + 1,
                ..Case::dense(35, 40, 45, false, false)
            };
            check(&case, level, true, Some(f32::NAN), 23);
        }
    }

    #[test]
    fn empty_dimensions() {
        for level in levels() {
            // k == 0: C = beta·C (and exactly 0 when beta == 0, even over NaN).
            let mut c = vec![f32::NAN; 6];
            sgemm_with(
                level,
                true,
                2,
                0,
                3,
                1.0,
                &[],
                0,
                1,
                &[],
                3,
                1,
                0.0,
                &mut c,
                3,
                1,
            );
            assert_eq!(c, vec![0.0; 6]);
            let mut c = vec![2.0; 6];
            sgemm_with(
                level,
                true,
                2,
                0,
                3,
                1.0,
                &[],
                0,
                1,
                &[],
                3,
                1,
                0.5,
                &mut c,
                3,
                1,
            );
            assert_eq!(c, vec![1.0; 6]);
            // m == 0 or n == 0: nothing to write.
            let mut c = vec![5.0; 4];
            sgemm_with(
                level,
                true,
                0,
                4,
                3,
                1.0,
                &[],
                4,
                1,
                &[1.0; 12],
                3,
                1,
                0.0,
                &mut c,
                3,
                1,
            );
            sgemm_with(
                level,
                true,
                2,
                4,
                0,
                1.0,
                &[1.0; 8],
                4,
                1,
                &[],
                0,
                1,
                0.0,
                &mut c,
                0,
                1,
            );
            assert_eq!(c, vec![5.0; 4]);
        }
    }

    #[test]
    fn public_sgemm_matches_reference() {
        let (m, k, n) = (70, 90, 110);
        let a = random_vec(m * k, 1);
        let b = random_vec(k * n, 2);
        let mut got = vec![f32::NAN; m * n];
        sgemm(m, k, n, 1.0, &a, k, 1, &b, n, 1, 0.0, &mut got, n, 1);
        let mut want = vec![0.0; m * n];
        gemm_ref(m, k, n, 1.0, &a, k, 1, &b, n, 1, 0.0, &mut want, n, 1);
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-4, "{g} vs {w}");
        }
    }

    #[test]
    fn deterministic_and_thread_count_independent() {
        for level in levels() {
            let case = Case {
                beta: 0.5,
                ..Case::dense(500, 700, 300, true, false)
            };
            let first = check(&case, level, true, None, 29);
            let again = check(&case, level, true, None, 29);
            let single = check(&case, level, false, None, 29);
            assert!(first
                .iter()
                .zip(&again)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
            assert!(first
                .iter()
                .zip(&single)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    /// Runs `sgemm_batched` and `gemm_batched_ref` (f64) on the same inputs and compares.
    #[allow(clippy::too_many_arguments)]
    fn check_batched(
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        sa: usize,
        sb: usize,
        ta: bool,
        beta: f32,
    ) {
        let (rsa, csa) = if ta { (1, m) } else { (k, 1) };
        let a = random_vec(sa * (batch - 1) + m * k, 31);
        let b = random_vec(sb * (batch - 1) + k * n, 32);
        let sc = m * n + 2;
        let c0 = random_vec(sc * batch, 33);
        let mut c = c0.clone();
        sgemm_batched(
            batch, m, k, n, 0.5, &a, sa, rsa, csa, &b, sb, n, 1, beta, &mut c, sc, n, 1,
        );
        let f = |x: &[f32]| x.iter().map(|&v| v as f64).collect::<Vec<f64>>();
        let fabs = |x: &[f32]| x.iter().map(|&v| (v as f64).abs()).collect::<Vec<f64>>();
        let mut want = f(&c0);
        gemm_batched_ref(
            batch,
            m,
            k,
            n,
            0.5,
            &f(&a),
            sa,
            rsa,
            csa,
            &f(&b),
            sb,
            n,
            1,
            beta as f64,
            &mut want,
            sc,
            n,
            1,
        );
        let mut bound = fabs(&c0);
        let bb = (beta as f64).abs();
        gemm_batched_ref(
            batch,
            m,
            k,
            n,
            0.5,
            &fabs(&a),
            sa,
            rsa,
            csa,
            &fabs(&b),
            sb,
            n,
            1,
            bb,
            &mut bound,
            sc,
            n,
            1,
        );
        for idx in 0..c.len() {
            let in_c = idx % sc < m * n;
            if in_c {
                let tol = 1e-5 * bound[idx] + 1e-30;
                assert!(
                    (c[idx] as f64 - want[idx]).abs() <= tol,
                    "batched C[{idx}] = {}, want {}",
                    c[idx],
                    want[idx]
                );
            } else {
                assert_eq!(
                    c[idx].to_bits(),
                    c0[idx].to_bits(),
                    "batched wrote outside C at {idx}"
                );
            }
        }
    }

    #[test]
    fn batched_small_shared_b() {
        // Small matrices: parallel over the batch; B shared (stride 0).
        check_batched(12, 33, 20, 17, 33 * 20, 0, false, 0.0);
        check_batched(5, 7, 65, 9, 7 * 65, 0, true, 1.0);
    }

    #[test]
    fn batched_large_and_shared_a() {
        // Large matrices: one after another, each threaded; A shared (stride 0).
        check_batched(3, 200, 230, 190, 0, 230 * 190, false, 0.5);
        check_batched(2, 129, 457, 145, 129 * 457, 457 * 145, true, 0.0);
    }

    #[test]
    fn batched_many_large() {
        // Large enough to be threaded on its own, but numerous: parallel over the batch.
        check_batched(9, 200, 150, 300, 200 * 150, 0, false, 0.0);
    }

    #[test]
    fn batched_empty() {
        let mut c = vec![1.0f32; 4];
        sgemm_batched(
            0,
            2,
            2,
            2,
            1.0,
            &[],
            4,
            2,
            1,
            &[],
            4,
            2,
            1,
            0.0,
            &mut c,
            4,
            2,
            1,
        );
        sgemm_batched(
            3,
            2,
            0,
            2,
            1.0,
            &[],
            0,
            0,
            1,
            &[],
            0,
            2,
            1,
            0.0,
            &mut c[..],
            0,
            2,
            1,
        );
        assert_eq!(c, vec![0.0; 4]);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_shapes_and_strides(
            m in 1usize..90, k in 1usize..300, n in 1usize..90,
            ta: bool, tb: bool, tc: bool,
            pad_a in 0usize..4, pad_b in 0usize..4, pad_c in 0usize..4,
            alpha in -2.0f32..2.0, beta_kind in 0usize..3, scalar: bool, seed in 0u64..1000,
        ) {
            let (rsa, csa) = if ta { (1, m + pad_a) } else { (k + pad_a, 1) };
            let (rsb, csb) = if tb { (1, k + pad_b) } else { (n + pad_b, 1) };
            let (rsc, csc) = if tc { (1, m + pad_c) } else { (n + pad_c, 1) };
            let beta = [0.0, 1.0, -0.7][beta_kind];
            let case = Case { m, k, n, alpha, beta, rsa, csa, rsb, csb, rsc, csc };
            let level = if scalar { Isa::Scalar } else { Isa::detected() };
            check(&case, level, true, if beta == 0.0 { Some(f32::NAN) } else { None }, seed);
        }
    }
}
