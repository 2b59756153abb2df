//! Typed, checked launches of every kernel: one method of [`Gpu`] per operation. Each checks
//! the buffer lengths and sizes against what the kernel will touch (returning
//! [`CudaError::BadArgument`] rather than letting a kernel read out of bounds), picks the grid
//! and block the kernel's header comment prescribes, and queues the launch on the `Gpu`'s
//! stream. Nothing here waits for the GPU except the methods that return a host value.

use super::gpu::cfg;
use super::{CudaError, Gpu};
use crate::cpu::adamw::AdamWStep;
use cudarc::driver::{
    CudaSlice, DevicePtr, DevicePtrMut, DeviceRepr, PushKernelArg, ValidAsZeroBits,
};

type Result<T> = std::result::Result<T, CudaError>;

/// Where element (i, j) of matrix t of a batch lives: `t * batch + i * row + j * col`
/// (elements, not bytes). A transposed operand is its strides swapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Strides {
    /// Distance between consecutive matrices of the batch (0 shares one matrix).
    pub batch: usize,
    /// Distance between consecutive rows.
    pub row: usize,
    /// Distance between consecutive columns.
    pub col: usize,
}

impl Strides {
    /// Row-major `rows x cols` matrices packed one after the other.
    pub fn row_major(rows: usize, cols: usize) -> Strides {
        Strides {
            batch: rows * cols,
            row: cols,
            col: 1,
        }
    }
}

/// How a bf16 GEMM operand is stored (see [`Gpu::gemm_bf16`]): for A (logically m x k),
/// `trans == false` means row-major `[m, k]` and `trans == true` means stored as `[k, m]`; for B
/// (logically k x n), `false` means `[k, n]` and `true` means stored as `[n, k]` (a weight
/// matrix of `nn.Linear`). `ld` is the stored row stride, `batch_stride` the distance between
/// matrices of the batch (elements; 0 shares one matrix).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bf16Operand {
    /// Stored transposed (see above).
    pub trans: bool,
    /// Leading dimension: elements between consecutive stored rows.
    pub ld: usize,
    /// Elements between consecutive matrices of the batch.
    pub batch_stride: usize,
}

/// Where attention heads live in rows of tokens, for [`Gpu::rows_to_heads`] and
/// [`Gpu::heads_to_rows`]: `batch` sequences of `seq` tokens, each token a row of `row_len`
/// elements in which `heads` heads of `head_dim` values sit side by side from `offset` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadsLayout {
    /// Sequences (B).
    pub batch: usize,
    /// Heads (H).
    pub heads: usize,
    /// Tokens per sequence (T).
    pub seq: usize,
    /// Values per head (D).
    pub head_dim: usize,
    /// Elements per token row (e.g. 3C for a fused q, k, v projection).
    pub row_len: usize,
    /// Where the heads start in a row (e.g. C for the keys of a fused projection).
    pub offset: usize,
}

impl HeadsLayout {
    /// `rows` must hold `B·T` rows of `row_len` with the heads inside each row, `heads`
    /// exactly `B·H·T·D` elements; every index must fit the kernels' 32-bit arithmetic.
    fn check(&self, what: &str, rows_len: usize, heads_len: usize) -> Result<()> {
        let n = self.batch * self.heads * self.seq * self.head_dim;
        check_len(&format!("{what} heads"), heads_len, n)?;
        check_len(
            &format!("{what} rows"),
            rows_len,
            self.batch * self.seq * self.row_len,
        )?;
        if self.offset + self.heads * self.head_dim > self.row_len {
            return Err(bad(format!(
                "{what}: heads {}x{} from offset {} do not fit rows of {}",
                self.heads, self.head_dim, self.offset, self.row_len
            )));
        }
        for (w, v) in [
            ("heads", self.heads),
            ("seq", self.seq),
            ("head_dim", self.head_dim),
            ("row_len", self.row_len),
        ] {
            check_i32(w, v)?;
        }
        Ok(())
    }
}

/// The rows of an embedding lookup grouped by token, for the deterministic backward
/// ([`Gpu::embedding_bwd`]): a stable counting sort of the ids, made on the host once per batch
/// and uploaded.
#[derive(Debug)]
pub struct EmbeddingGroups {
    order: CudaSlice<i32>,
    starts: CudaSlice<i32>,
    uniq: CudaSlice<i32>,
    rows: usize,
    groups: usize,
}

impl EmbeddingGroups {
    /// Groups `idx` (one token id per row) by token. Errors on an id outside `0..vocab`.
    pub fn new(gpu: &Gpu, idx: &[i32], vocab: usize) -> Result<EmbeddingGroups> {
        let (order, starts, uniq) = group_rows(idx, vocab)?;
        Ok(EmbeddingGroups {
            order: gpu.upload(&order)?,
            starts: gpu.upload(&starts)?,
            uniq: gpu.upload(&uniq)?,
            rows: idx.len(),
            groups: uniq.len(),
        })
    }
}

/// Stable counting sort of row indices by token: returns (order, starts, uniq) where the rows
/// of token `uniq[u]` are `order[starts[u]..starts[u+1]]`, in ascending row order.
fn group_rows(idx: &[i32], vocab: usize) -> Result<(Vec<i32>, Vec<i32>, Vec<i32>)> {
    check_i32("embedding rows", idx.len())?;
    let mut count = vec![0usize; vocab];
    for (r, &id) in idx.iter().enumerate() {
        if id < 0 || id as usize >= vocab {
            return Err(bad(format!(
                "embedding id {id} at row {r} is outside 0..{vocab}"
            )));
        }
        count[id as usize] += 1;
    }
    let mut uniq = Vec::new();
    let mut starts = vec![0i32];
    let mut first = vec![0usize; vocab]; // where each token's rows begin in `order`
    let mut pos = 0usize;
    for (tok, &c) in count.iter().enumerate() {
        if c > 0 {
            uniq.push(tok as i32);
            first[tok] = pos;
            pos += c;
            starts.push(pos as i32);
        }
    }
    let mut order = vec![0i32; idx.len()];
    for (r, &id) in idx.iter().enumerate() {
        let slot = &mut first[id as usize];
        order[*slot] = r as i32;
        *slot += 1;
    }
    Ok((order, starts, uniq))
}

/// A storage type of the kernels that come in two versions: `f32`, or `u16` holding raw bf16
/// bits (see [`super::f32_to_bf16_bits`]). The arithmetic is f32 either way. Sealed: the
/// kernel names are built from [`DeviceFloat::SUFFIX`].
pub trait DeviceFloat: DeviceRepr + ValidAsZeroBits + Copy + sealed::Sealed + 'static {
    /// The kernel-name suffix: `"f32"` or `"bf16"`.
    const SUFFIX: &'static str;
}
impl DeviceFloat for f32 {
    const SUFFIX: &'static str = "f32";
}
impl DeviceFloat for u16 {
    const SUFFIX: &'static str = "bf16";
}
mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
}

/// The name of the `T` version of a kernel family member, e.g. `layernorm_fwd_bf16`.
fn kname<T: DeviceFloat>(base: &str) -> String {
    format!("{base}_{}", T::SUFFIX)
}

fn bad(msg: String) -> CudaError {
    CudaError::BadArgument(msg)
}

fn check_i32(what: &str, v: usize) -> Result<()> {
    if v > i32::MAX as usize {
        return Err(bad(format!(
            "{what} = {v} does not fit the kernel's 32-bit index"
        )));
    }
    Ok(())
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(bad(format!("{what} has {got} elements, expected {want}")));
    }
    Ok(())
}

/// A strided batch of `rows x cols` matrices must fit in `len` elements.
fn check_extent(
    what: &str,
    len: usize,
    batch: usize,
    rows: usize,
    cols: usize,
    s: Strides,
) -> Result<()> {
    if batch == 0 || rows == 0 || cols == 0 {
        return Ok(());
    }
    let last = (batch - 1) * s.batch + (rows - 1) * s.row + (cols - 1) * s.col;
    if last >= len {
        return Err(bad(format!(
            "{what}: a batch of {batch} {rows}x{cols} matrices with strides {s:?} reaches \
             element {last}, the buffer has {len}"
        )));
    }
    Ok(())
}

/// Blocks for a grid-stride element-wise kernel of 256 threads.
fn ew_blocks(n: usize) -> u32 {
    n.div_ceil(256).clamp(1, 4096) as u32
}

/// Blocks of the first pass of a deterministic sum: a function of n only.
fn sum_blocks(n: usize) -> usize {
    n.div_ceil(256).clamp(1, 1024)
}

/// Dynamic shared memory of the bf16 GEMM: TC_STAGES (3) x A and B buffers of 5120 bf16
/// (matmul.cu).
const GEMM_BF16_SMEM: usize = 3 * 2 * 5120 * 2;

/// Kernels whose dynamic shared memory exceeds the default 48 KiB limit, with their size:
/// [`Gpu::new`] raises each one's limit once.
pub(crate) const LARGE_SMEM_KERNELS: &[(&str, usize)] = &[
    ("gemm_bf16_tc_nn", GEMM_BF16_SMEM),
    ("gemm_bf16_tc_nt", GEMM_BF16_SMEM),
    ("gemm_bf16_tc_tn", GEMM_BF16_SMEM),
    ("gemm_bf16_tc_tt", GEMM_BF16_SMEM),
];

/// The largest head dimension the f32 attention kernels take (1..=this).
pub const ATTENTION_MAX_HEAD_DIM: usize = 128;
/// The one head dimension the bf16 tensor-core attention kernels take (every GPT-2 size).
pub const ATTENTION_BF16_HEAD_DIM: usize = 64;

const MAX_GRID_YZ: usize = 65_535;
const MAX_SMEM: usize = 48 * 1024;

impl Gpu {
    // ---------------------------------------------------------------------------------- matmul

    /// f32 batched GEMM (kernel `gemm_f32_tiled`), the contract of
    /// [`crate::cpu::matmul::gemm_batched_ref`]: `C[t] = alpha·A[t]·B[t] + beta·C[t]` with A
    /// m×k, B k×n, C m×n addressed through [`Strides`]. `beta == 0` ignores the old C.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_f32(
        &self,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: &CudaSlice<f32>,
        sa: Strides,
        b: &CudaSlice<f32>,
        sb: Strides,
        beta: f32,
        c: &mut CudaSlice<f32>,
        sc: Strides,
    ) -> Result<()> {
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        check_extent("gemm_f32 A", a.len(), batch, m, k, sa)?;
        check_extent("gemm_f32 B", b.len(), batch, k, n, sb)?;
        check_extent("gemm_f32 C", c.len(), batch, m, n, sc)?;
        for (w, v) in [("m", m), ("k", k), ("n", n)] {
            check_i32(w, v)?;
        }
        if m.div_ceil(64) > MAX_GRID_YZ || batch > MAX_GRID_YZ {
            return Err(bad(format!(
                "gemm_f32: m = {m} or batch = {batch} too large for the grid"
            )));
        }
        let (mi, ki, ni) = (m as i32, k as i32, n as i32);
        let st = |s: Strides| (s.row as i64, s.col as i64, s.batch as i64);
        let (rsa, csa, bsa) = st(sa);
        let (rsb, csb, bsb) = st(sb);
        let (rsc, csc, bsc) = st(sc);
        let f = self.func("gemm_f32_tiled")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(&mi).arg(&ki).arg(&ni).arg(&alpha);
        l.arg(a).arg(&rsa).arg(&csa).arg(&bsa);
        l.arg(b).arg(&rsb).arg(&csb).arg(&bsb);
        l.arg(&beta).arg(c).arg(&rsc).arg(&csc).arg(&bsc);
        let grid = (n.div_ceil(64) as u32, m.div_ceil(64) as u32, batch as u32);
        // SAFETY: the argument list matches the kernel's signature in matmul.cu, and the
        // extents checked above bound every address the kernel forms.
        unsafe { l.launch(cfg(grid, (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// bf16 GEMM on the tensor cores, f32 accumulation and output (kernels `gemm_bf16_tc_*`):
    /// `C[t] = alpha·A[t]·B[t] + beta·C[t]`, A m×k and B k×n stored as [`Bf16Operand`] says
    /// (raw bf16 bits in `u16`), C row-major with leading dimension `ldc`. `beta == 0` ignores
    /// the old C. Needs sm_80+.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16(
        &self,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: &CudaSlice<u16>,
        oa: Bf16Operand,
        b: &CudaSlice<u16>,
        ob: Bf16Operand,
        beta: f32,
        c: &mut CudaSlice<f32>,
        ldc: usize,
        c_batch_stride: usize,
    ) -> Result<()> {
        let shape = (batch, m, k, n);
        self.gemm_bf16_any(shape, alpha, a, oa, b, ob, beta, c, 0, ldc, c_batch_stride)
    }

    /// [`Gpu::gemm_bf16`] with a bf16 C (mixed-precision activations): the f32 result
    /// `alpha·A·B + beta·C` is rounded to bf16 (nearest even) once.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm_bf16_to_bf16(
        &self,
        batch: usize,
        m: usize,
        k: usize,
        n: usize,
        alpha: f32,
        a: &CudaSlice<u16>,
        oa: Bf16Operand,
        b: &CudaSlice<u16>,
        ob: Bf16Operand,
        beta: f32,
        c: &mut CudaSlice<u16>,
        ldc: usize,
        c_batch_stride: usize,
    ) -> Result<()> {
        let shape = (batch, m, k, n);
        self.gemm_bf16_any(shape, alpha, a, oa, b, ob, beta, c, 1, ldc, c_batch_stride)
    }

    #[allow(clippy::too_many_arguments)]
    fn gemm_bf16_any<T>(
        &self,
        (batch, m, k, n): (usize, usize, usize, usize),
        alpha: f32,
        a: &CudaSlice<u16>,
        oa: Bf16Operand,
        b: &CudaSlice<u16>,
        ob: Bf16Operand,
        beta: f32,
        c: &mut CudaSlice<T>,
        c_bf16: i32,
        ldc: usize,
        c_batch_stride: usize,
    ) -> Result<()> {
        if batch == 0 || m == 0 || n == 0 {
            return Ok(());
        }
        for (w, v) in [("m", m), ("k", k), ("n", n)] {
            check_i32(w, v)?;
        }
        // Stored shapes: A is [m, k] or [k, m]; B is [k, n] or [n, k].
        let (ar, ac) = if oa.trans { (k, m) } else { (m, k) };
        let (br, bc) = if ob.trans { (n, k) } else { (k, n) };
        let row = |ld, bs| Strides {
            batch: bs,
            row: ld,
            col: 1,
        };
        if oa.ld < ac || ob.ld < bc || ldc < n {
            return Err(bad(format!(
                "gemm_bf16: leading dimensions (lda {}, ldb {}, ldc {ldc}) shorter than the rows \
                 ({ac}, {bc}, {n})",
                oa.ld, ob.ld
            )));
        }
        check_extent(
            "gemm_bf16 A",
            a.len(),
            batch,
            ar,
            ac,
            row(oa.ld, oa.batch_stride),
        )?;
        check_extent(
            "gemm_bf16 B",
            b.len(),
            batch,
            br,
            bc,
            row(ob.ld, ob.batch_stride),
        )?;
        check_extent(
            "gemm_bf16 C",
            c.len(),
            batch,
            m,
            n,
            row(ldc, c_batch_stride),
        )?;
        if m.div_ceil(128) > MAX_GRID_YZ || batch > MAX_GRID_YZ {
            return Err(bad(format!(
                "gemm_bf16: m = {m} or batch = {batch} too large for the grid"
            )));
        }
        // cp.async copies 16 bytes from 16-byte-aligned addresses: every stored row start must
        // be a multiple of 8 bf16 from the (256-byte-aligned) buffer start.
        let batch_ok =
            batch == 1 || (oa.batch_stride.is_multiple_of(8) && ob.batch_stride.is_multiple_of(8));
        let vec_ok = (oa.ld.is_multiple_of(8) && ob.ld.is_multiple_of(8) && batch_ok) as i32;
        let name = match (oa.trans, ob.trans) {
            (false, false) => "gemm_bf16_tc_nn",
            (false, true) => "gemm_bf16_tc_nt",
            (true, false) => "gemm_bf16_tc_tn",
            (true, true) => "gemm_bf16_tc_tt",
        };
        let (mi, ki, ni) = (m as i32, k as i32, n as i32);
        let (lda, sa) = (oa.ld as i64, oa.batch_stride as i64);
        let (ldb, sb) = (ob.ld as i64, ob.batch_stride as i64);
        let (ldc, sc) = (ldc as i64, c_batch_stride as i64);
        let f = self.func(name)?;
        let mut l = self.stream().launch_builder(f);
        l.arg(&mi).arg(&ki).arg(&ni).arg(&alpha);
        l.arg(a).arg(&lda).arg(&sa);
        l.arg(b).arg(&ldb).arg(&sb);
        l.arg(&beta)
            .arg(c)
            .arg(&ldc)
            .arg(&sc)
            .arg(&c_bf16)
            .arg(&vec_ok);
        let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32, batch as u32);
        // SAFETY: arguments match GEMM_BF16_ENTRY in matmul.cu; extents checked above; the
        // kernel's dynamic shared memory limit was raised in Gpu::new.
        unsafe { l.launch(cfg(grid, (256, 1, 1), GEMM_BF16_SMEM as u32)) }?;
        Ok(())
    }

    // ------------------------------------------------------------------------------- attention

    fn check_attention(&self, what: &str, bh: usize, t: usize, d: usize) -> Result<()> {
        if d == 0 || d > ATTENTION_MAX_HEAD_DIM {
            return Err(bad(format!(
                "{what}: head dimension {d}, the kernels take 1..={ATTENTION_MAX_HEAD_DIM}"
            )));
        }
        if bh > MAX_GRID_YZ {
            return Err(bad(format!("{what}: batch x heads = {bh} > {MAX_GRID_YZ}")));
        }
        check_i32("attention bh*t", bh * t)?;
        Ok(())
    }

    /// Causal flash attention forward (kernel `attention_fwd_f32`), the contract of
    /// [`crate::cpu::attention::causal_attention_fwd_ref`]: q, k, v, out `[bh, t, d]`, lse
    /// `[bh, t]`; d ≤ 128.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_fwd(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        bh: usize,
        t: usize,
        d: usize,
        out: &mut CudaSlice<f32>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.check_attention("attention_fwd", bh, t, d)?;
        for (w, x) in [
            ("q", q.len()),
            ("k", k.len()),
            ("v", v.len()),
            ("out", out.len()),
        ] {
            check_len(w, x, bh * t * d)?;
        }
        check_len("lse", lse.len(), bh * t)?;
        if bh == 0 || t == 0 {
            return Ok(());
        }
        let smem = (16 * d + 2 * 32 * (d + 1)) * 4;
        debug_assert!(smem <= MAX_SMEM);
        let (ti, di) = (t as i32, d as i32);
        let scale = 1.0 / (d as f32).sqrt();
        let f = self.func("attention_fwd_f32")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(q)
            .arg(k)
            .arg(v)
            .arg(out)
            .arg(lse)
            .arg(&ti)
            .arg(&di)
            .arg(&scale);
        let grid = (t.div_ceil(16) as u32, bh as u32, 1);
        // SAFETY: arguments match attention_fwd_f32; lengths checked above.
        unsafe { l.launch(cfg(grid, (128, 1, 1), smem as u32)) }?;
        Ok(())
    }

    /// Causal flash attention forward in bf16 on the tensor cores (kernel
    /// `attention_fwd_bf16_d64`, sm_80+): q, k, v, out `[bh, t, 64]` as raw bf16 bits, lse
    /// `[bh, t]` in f32; scores, softmax and accumulation in f32. Only head dimension 64.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_fwd_bf16(
        &self,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        bh: usize,
        t: usize,
        d: usize,
        out: &mut CudaSlice<u16>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if d != ATTENTION_BF16_HEAD_DIM {
            return Err(bad(format!(
                "attention_fwd_bf16: head dimension {d}, this kernel takes {ATTENTION_BF16_HEAD_DIM} only (use the f32 one)"
            )));
        }
        self.check_attention("attention_fwd_bf16", bh, t, d)?;
        for (w, x) in [
            ("q", q.len()),
            ("k", k.len()),
            ("v", v.len()),
            ("out", out.len()),
        ] {
            check_len(w, x, bh * t * d)?;
        }
        check_len("lse", lse.len(), bh * t)?;
        if bh == 0 || t == 0 {
            return Ok(());
        }
        let ti = t as i32;
        let scale_log2 = (std::f64::consts::LOG2_E / (d as f64).sqrt()) as f32;
        let f = self.func("attention_fwd_bf16_d64")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(q)
            .arg(k)
            .arg(v)
            .arg(out)
            .arg(lse)
            .arg(&ti)
            .arg(&scale_log2);
        let grid = (t.div_ceil(64) as u32, bh as u32, 1);
        // SAFETY: arguments match attention_fwd_bf16_d64; lengths checked above; the kernel
        // uses static shared memory only (46 KiB).
        unsafe { l.launch(cfg(grid, (128, 1, 1), 0)) }?;
        Ok(())
    }

    /// Causal flash attention backward (kernels `attention_bwd_dot_f32`, `attention_bwd_dq_f32`,
    /// `attention_bwd_dkdv_f32`), the contract of
    /// [`crate::cpu::attention::causal_attention_bwd_ref`]: P is recomputed from `lse`;
    /// overwrites dq, dk, dv.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd(
        &self,
        q: &CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        out: &CudaSlice<f32>,
        lse: &CudaSlice<f32>,
        dout: &CudaSlice<f32>,
        bh: usize,
        t: usize,
        d: usize,
        dq: &mut CudaSlice<f32>,
        dk: &mut CudaSlice<f32>,
        dv: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.check_attention("attention_bwd", bh, t, d)?;
        for (w, x) in [
            ("q", q.len()),
            ("k", k.len()),
            ("v", v.len()),
            ("out", out.len()),
            ("dout", dout.len()),
            ("dq", dq.len()),
            ("dk", dk.len()),
            ("dv", dv.len()),
        ] {
            check_len(w, x, bh * t * d)?;
        }
        check_len("lse", lse.len(), bh * t)?;
        if bh == 0 || t == 0 {
            return Ok(());
        }
        let rows = bh * t;
        let (ti, di, ri) = (t as i32, d as i32, rows as i32);
        let scale = 1.0 / (d as f32).sqrt();
        let mut dvec = self.zeros::<f32>(rows)?;

        let f = self.func("attention_bwd_dot_f32")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(dout).arg(out).arg(&mut dvec).arg(&ri).arg(&di);
        // SAFETY: arguments match attention_bwd_dot_f32.
        unsafe { l.launch(cfg((rows.div_ceil(4) as u32, 1, 1), (32, 4, 1), 0)) }?;

        let grid = (t.div_ceil(8) as u32, bh as u32, 1);
        let smem_dq = (2 * 8 * d + 2 * 32 * (d + 1)) * 4;
        let f = self.func("attention_bwd_dq_f32")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(q).arg(k).arg(v).arg(dout).arg(lse).arg(&dvec).arg(dq);
        l.arg(&ti).arg(&di).arg(&scale);
        // SAFETY: arguments match attention_bwd_dq_f32.
        unsafe { l.launch(cfg(grid, (128, 1, 1), smem_dq as u32)) }?;

        let smem_kv = smem_dq + 2 * 32 * 4;
        debug_assert!(smem_kv <= MAX_SMEM);
        let f = self.func("attention_bwd_dkdv_f32")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(q)
            .arg(k)
            .arg(v)
            .arg(dout)
            .arg(lse)
            .arg(&dvec)
            .arg(dk)
            .arg(dv);
        l.arg(&ti).arg(&di).arg(&scale);
        // SAFETY: arguments match attention_bwd_dkdv_f32.
        unsafe { l.launch(cfg(grid, (128, 1, 1), smem_kv as u32)) }?;
        Ok(())
    }

    /// Causal flash attention backward in bf16 on the tensor cores (kernels
    /// `attention_bwd_dot_bf16`, `attention_bwd_dq_bf16_d64`, `attention_bwd_dkdv_bf16_d64`,
    /// sm_80+): q, k, v, out, dout `[bh, t, 64]` as bf16 bits, lse `[bh, t]` from
    /// [`Gpu::attention_fwd_bf16`]; overwrites dq, dk, dv (f32). Only head dimension 64.
    #[allow(clippy::too_many_arguments)]
    pub fn attention_bwd_bf16(
        &self,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        out: &CudaSlice<u16>,
        lse: &CudaSlice<f32>,
        dout: &CudaSlice<u16>,
        bh: usize,
        t: usize,
        d: usize,
        dq: &mut CudaSlice<f32>,
        dk: &mut CudaSlice<f32>,
        dv: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if d != ATTENTION_BF16_HEAD_DIM {
            return Err(bad(format!(
                "attention_bwd_bf16: head dimension {d}, this kernel takes {ATTENTION_BF16_HEAD_DIM} only (use the f32 one)"
            )));
        }
        self.check_attention("attention_bwd_bf16", bh, t, d)?;
        for (w, x) in [
            ("q", q.len()),
            ("k", k.len()),
            ("v", v.len()),
            ("out", out.len()),
            ("dout", dout.len()),
            ("dq", dq.len()),
            ("dk", dk.len()),
            ("dv", dv.len()),
        ] {
            check_len(w, x, bh * t * d)?;
        }
        check_len("lse", lse.len(), bh * t)?;
        if bh == 0 || t == 0 {
            return Ok(());
        }
        let rows = bh * t;
        let (ti, di, ri) = (t as i32, d as i32, rows as i32);
        let scale = 1.0 / (d as f32).sqrt();
        let scale_log2 = (std::f64::consts::LOG2_E / (d as f64).sqrt()) as f32;
        let mut dvec = self.zeros::<f32>(rows)?;

        let f = self.func("attention_bwd_dot_bf16")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(dout).arg(out).arg(&mut dvec).arg(&ri).arg(&di);
        // SAFETY: arguments match attention_bwd_dot_bf16.
        unsafe { l.launch(cfg((rows.div_ceil(4) as u32, 1, 1), (32, 4, 1), 0)) }?;

        let grid = (t.div_ceil(64) as u32, bh as u32, 1);
        let f = self.func("attention_bwd_dq_bf16_d64")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(q).arg(k).arg(v).arg(dout).arg(lse).arg(&dvec).arg(dq);
        l.arg(&ti).arg(&scale_log2).arg(&scale);
        // SAFETY: arguments match attention_bwd_dq_bf16_d64 (static shared memory only).
        unsafe { l.launch(cfg(grid, (128, 1, 1), 0)) }?;

        let f = self.func("attention_bwd_dkdv_bf16_d64")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(q)
            .arg(k)
            .arg(v)
            .arg(dout)
            .arg(lse)
            .arg(&dvec)
            .arg(dk)
            .arg(dv);
        l.arg(&ti).arg(&scale_log2).arg(&scale);
        // SAFETY: arguments match attention_bwd_dkdv_bf16_d64 (static shared memory only).
        unsafe { l.launch(cfg(grid, (128, 1, 1), 0)) }?;
        Ok(())
    }

    // ------------------------------------------------------------------------------- layernorm

    /// Layernorm forward (kernel `layernorm_fwd_{f32,bf16}`), the contract of
    /// [`crate::cpu::layernorm::layernorm_fwd_ref`].
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_fwd<T: DeviceFloat>(
        &self,
        x: &CudaSlice<T>,
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
        y: &mut CudaSlice<T>,
        mean: &mut CudaSlice<f32>,
        rstd: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.check_ln(rows, cols, &[x.len(), y.len()], gamma.len(), beta.len())?;
        check_len("mean", mean.len(), rows)?;
        check_len("rstd", rstd.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let (ri, ci) = (rows as i32, cols as i32);
        let f = self.func(&kname::<T>("layernorm_fwd"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(x).arg(gamma).arg(beta).arg(y).arg(mean).arg(rstd);
        l.arg(&ri).arg(&ci).arg(&eps);
        // SAFETY: arguments match layernorm_fwd_*.
        unsafe { l.launch(cfg((rows.div_ceil(4) as u32, 1, 1), (32, 4, 1), 0)) }?;
        Ok(())
    }

    /// Residual add fused with layernorm (kernel `layernorm_residual_fwd_{f32,bf16}`):
    /// `sum = x + res`, then `y = layernorm(sum)` with mean and rstd saved.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_residual_fwd<T: DeviceFloat>(
        &self,
        x: &CudaSlice<T>,
        res: &CudaSlice<T>,
        gamma: &CudaSlice<f32>,
        beta: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        eps: f32,
        sum: &mut CudaSlice<T>,
        y: &mut CudaSlice<T>,
        mean: &mut CudaSlice<f32>,
        rstd: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.check_ln(
            rows,
            cols,
            &[x.len(), res.len(), sum.len(), y.len()],
            gamma.len(),
            beta.len(),
        )?;
        check_len("mean", mean.len(), rows)?;
        check_len("rstd", rstd.len(), rows)?;
        if rows == 0 {
            return Ok(());
        }
        let (ri, ci) = (rows as i32, cols as i32);
        let f = self.func(&kname::<T>("layernorm_residual_fwd"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(x)
            .arg(res)
            .arg(gamma)
            .arg(beta)
            .arg(sum)
            .arg(y)
            .arg(mean)
            .arg(rstd);
        l.arg(&ri).arg(&ci).arg(&eps);
        // SAFETY: arguments match layernorm_residual_fwd_*.
        unsafe { l.launch(cfg((rows.div_ceil(4) as u32, 1, 1), (32, 4, 1), 0)) }?;
        Ok(())
    }

    /// Layernorm backward (kernels `layernorm_bwd_dx_{f32,bf16}`, `layernorm_bwd_dgamma_dbeta_{f32,bf16}`),
    /// the contract of [`crate::cpu::layernorm::layernorm_bwd_ref`]; overwrites dx, dgamma,
    /// dbeta.
    #[allow(clippy::too_many_arguments)]
    pub fn layernorm_bwd<T: DeviceFloat>(
        &self,
        dy: &CudaSlice<T>,
        x: &CudaSlice<T>,
        gamma: &CudaSlice<f32>,
        mean: &CudaSlice<f32>,
        rstd: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        dx: &mut CudaSlice<T>,
        dgamma: &mut CudaSlice<f32>,
        dbeta: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.check_ln(
            rows,
            cols,
            &[dy.len(), x.len(), dx.len()],
            gamma.len(),
            dgamma.len(),
        )?;
        check_len("dbeta", dbeta.len(), cols)?;
        check_len("mean", mean.len(), rows)?;
        check_len("rstd", rstd.len(), rows)?;
        if cols == 0 {
            return Ok(());
        }
        let (ri, ci) = (rows as i32, cols as i32);
        if rows > 0 {
            let f = self.func(&kname::<T>("layernorm_bwd_dx"))?;
            let mut l = self.stream().launch_builder(f);
            l.arg(dy)
                .arg(x)
                .arg(gamma)
                .arg(mean)
                .arg(rstd)
                .arg(dx)
                .arg(&ri)
                .arg(&ci);
            // SAFETY: arguments match layernorm_bwd_dx_*.
            unsafe { l.launch(cfg((rows.div_ceil(4) as u32, 1, 1), (32, 4, 1), 0)) }?;
        }
        let f = self.func(&kname::<T>("layernorm_bwd_dgamma_dbeta"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(dy)
            .arg(x)
            .arg(mean)
            .arg(rstd)
            .arg(dgamma)
            .arg(dbeta)
            .arg(&ri)
            .arg(&ci);
        // SAFETY: arguments match layernorm_bwd_dgamma_dbeta_*.
        unsafe { l.launch(cfg((cols.div_ceil(32) as u32, 1, 1), (32, 8, 1), 0)) }?;
        Ok(())
    }

    fn check_ln(&self, rows: usize, cols: usize, mats: &[usize], g: usize, b: usize) -> Result<()> {
        check_i32("layernorm rows", rows)?;
        check_i32("layernorm cols", cols)?;
        for &len in mats {
            check_len("layernorm matrix", len, rows * cols)?;
        }
        check_len("gamma", g, cols)?;
        check_len("beta", b, cols)
    }

    // ---------------------------------------------------------------------- row-wise kernels

    /// Launches one of the block-per-row kernels taking (in..., out, cols).
    fn row_kernel<T: DeviceFloat>(
        &self,
        base: &str,
        ins: &[&CudaSlice<T>],
        out: &mut CudaSlice<T>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        check_i32("rows", rows)?;
        check_i32("cols", cols)?;
        for x in ins {
            check_len(base, x.len(), rows * cols)?;
        }
        check_len(base, out.len(), rows * cols)?;
        if rows == 0 || cols == 0 {
            return Ok(());
        }
        let ci = cols as i32;
        let name = kname::<T>(base);
        let f = self.func(&name)?;
        let mut l = self.stream().launch_builder(f);
        for x in ins {
            l.arg(*x);
        }
        l.arg(out).arg(&ci);
        // SAFETY: the softmax kernels take (inputs..., output, cols); lengths checked.
        unsafe { l.launch(cfg((rows as u32, 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// Softmax over the last axis (kernel `softmax_fwd_{f32,bf16}`), as
    /// [`crate::cpu::softmax::softmax_fwd_ref`].
    pub fn softmax_fwd<T: DeviceFloat>(
        &self,
        x: &CudaSlice<T>,
        rows: usize,
        cols: usize,
        y: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.row_kernel("softmax_fwd", &[x], y, rows, cols)
    }

    /// Softmax backward from its output (kernel `softmax_bwd_{f32,bf16}`).
    pub fn softmax_bwd<T: DeviceFloat>(
        &self,
        y: &CudaSlice<T>,
        dy: &CudaSlice<T>,
        rows: usize,
        cols: usize,
        dx: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.row_kernel("softmax_bwd", &[y, dy], dx, rows, cols)
    }

    /// Log-softmax over the last axis (kernel `log_softmax_fwd_{f32,bf16}`).
    pub fn log_softmax_fwd<T: DeviceFloat>(
        &self,
        x: &CudaSlice<T>,
        rows: usize,
        cols: usize,
        y: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.row_kernel("log_softmax_fwd", &[x], y, rows, cols)
    }

    /// Log-softmax backward from its output (kernel `log_softmax_bwd_{f32,bf16}`).
    pub fn log_softmax_bwd<T: DeviceFloat>(
        &self,
        y: &CudaSlice<T>,
        dy: &CudaSlice<T>,
        rows: usize,
        cols: usize,
        dx: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.row_kernel("log_softmax_bwd", &[y, dy], dx, rows, cols)
    }

    /// Cross-entropy forward fused with log-softmax (kernel `cross_entropy_fwd_{f32,bf16}`), as
    /// [`crate::cpu::crossentropy::cross_entropy_fwd_ref`]: per-row losses and lse
    /// ([`Gpu::cross_entropy_scaled_fwd`] with every row's scale 1 and no entropy).
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_fwd<T: DeviceFloat>(
        &self,
        logits: &CudaSlice<T>,
        targets: &CudaSlice<i64>,
        rows: usize,
        vocab: usize,
        ignore_index: i64,
        losses: &mut CudaSlice<f32>,
        lse: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.cross_entropy_scaled_fwd(
            logits,
            targets,
            None,
            rows,
            vocab,
            ignore_index,
            losses,
            lse,
            None,
        )
    }

    /// Cross-entropy backward (kernel `cross_entropy_bwd_{f32,bf16}`), as
    /// [`crate::cpu::crossentropy::cross_entropy_bwd_ref`]; overwrites dlogits
    /// ([`Gpu::cross_entropy_scaled_bwd`] with every row's scale 1).
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_bwd<T: DeviceFloat>(
        &self,
        logits: &CudaSlice<T>,
        targets: &CudaSlice<i64>,
        lse: &CudaSlice<f32>,
        dlosses: &CudaSlice<f32>,
        rows: usize,
        vocab: usize,
        ignore_index: i64,
        dlogits: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.cross_entropy_scaled_bwd(
            logits,
            targets,
            None,
            lse,
            dlosses,
            rows,
            vocab,
            ignore_index,
            dlogits,
        )
    }

    /// Cross-entropy forward of row-scaled logits (kernel `cross_entropy_fwd_{f32,bf16}`):
    /// with y_r = row_scale_r · x_r (row_scale `None`: 1 on every row), `lse_r = log Σ_j exp(y_rj)`, `loss_r = lse_r − y_{r,t_r}`
    /// (= −log softmax(y_r)[t_r]; 0 where t_r = `ignore_index`) and, when `entropy` is given,
    /// `entropy_r = −Σ_j p_rj log p_rj` of p_r = softmax(y_r) (every row, ignored or not).
    /// PPO's per-token log-probs at temperature τ are −loss with row_scale = 1/τ.
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_scaled_fwd<T: DeviceFloat>(
        &self,
        logits: &CudaSlice<T>,
        targets: &CudaSlice<i64>,
        row_scale: Option<&CudaSlice<f32>>,
        rows: usize,
        vocab: usize,
        ignore_index: i64,
        losses: &mut CudaSlice<f32>,
        lse: &mut CudaSlice<f32>,
        entropy: Option<&mut CudaSlice<f32>>,
    ) -> Result<()> {
        check_i32("rows", rows)?;
        check_i32("vocab", vocab)?;
        check_len("logits", logits.len(), rows * vocab)?;
        check_len("targets", targets.len(), rows)?;
        if let Some(r) = row_scale {
            check_len("row_scale", r.len(), rows)?;
        }
        check_len("losses", losses.len(), rows)?;
        check_len("lse", lse.len(), rows)?;
        if let Some(e) = &entropy {
            check_len("entropy", e.len(), rows)?;
        }
        if rows == 0 || vocab == 0 {
            return Ok(());
        }
        let vi = vocab as i32;
        let f = self.func(&kname::<T>("cross_entropy_fwd"))?;
        let stream = self.stream();
        // No row scale: a null pointer, read as 1. No entropy: a null pointer, that sum skipped.
        // (The pointers' records are kept until after the launch.)
        let scale = row_scale.map(|r| r.device_ptr(stream));
        let scale_ptr = scale.as_ref().map_or(0, |(p, _)| *p);
        let entropy = entropy.map(|e| e.device_ptr_mut(stream));
        let entropy_ptr = entropy.as_ref().map_or(0, |(p, _)| *p);
        let mut l = stream.launch_builder(f);
        l.arg(logits)
            .arg(targets)
            .arg(&scale_ptr)
            .arg(losses)
            .arg(lse)
            .arg(&entropy_ptr)
            .arg(&vi)
            .arg(&ignore_index);
        // SAFETY: arguments match cross_entropy_fwd_*; row_scale and entropy are null or have
        // `rows` elements (checked above), and their borrows live until after the launch.
        unsafe { l.launch(cfg((rows as u32, 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// Backward of [`Gpu::cross_entropy_scaled_fwd`] (kernel
    /// `cross_entropy_bwd_{f32,bf16}`): `dx_rj = dl_r·s_r·(softmax(y_r)_j − [j = t_r])`,
    /// 0 on ignored rows; overwrites dlogits. With dl_r a per-token weight c_r this is the
    /// gradient of Σ_r c_r·loss_r (PPO's clipped surrogate; see `rlhf::cuda_ppo`).
    #[allow(clippy::too_many_arguments)]
    pub fn cross_entropy_scaled_bwd<T: DeviceFloat>(
        &self,
        logits: &CudaSlice<T>,
        targets: &CudaSlice<i64>,
        row_scale: Option<&CudaSlice<f32>>,
        lse: &CudaSlice<f32>,
        dlosses: &CudaSlice<f32>,
        rows: usize,
        vocab: usize,
        ignore_index: i64,
        dlogits: &mut CudaSlice<T>,
    ) -> Result<()> {
        check_i32("rows", rows)?;
        check_i32("vocab", vocab)?;
        check_len("logits", logits.len(), rows * vocab)?;
        check_len("dlogits", dlogits.len(), rows * vocab)?;
        check_len("targets", targets.len(), rows)?;
        if let Some(r) = row_scale {
            check_len("row_scale", r.len(), rows)?;
        }
        check_len("lse", lse.len(), rows)?;
        check_len("dlosses", dlosses.len(), rows)?;
        if rows == 0 || vocab == 0 {
            return Ok(());
        }
        let vi = vocab as i32;
        let f = self.func(&kname::<T>("cross_entropy_bwd"))?;
        let stream = self.stream();
        // No row scale: a null pointer, read as 1 (its record kept until after the launch).
        let scale = row_scale.map(|r| r.device_ptr(stream));
        let scale_ptr = scale.as_ref().map_or(0, |(p, _)| *p);
        let mut l = stream.launch_builder(f);
        l.arg(logits)
            .arg(targets)
            .arg(&scale_ptr)
            .arg(lse)
            .arg(dlosses)
            .arg(dlogits)
            .arg(&vi)
            .arg(&ignore_index);
        // SAFETY: arguments match cross_entropy_bwd_*; row_scale is null or has `rows`
        // elements (checked above), and its borrow lives until after the launch.
        unsafe { l.launch(cfg((rows as u32, 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    // --------------------------------------------------------------------------- element-wise

    /// Launches a grid-stride kernel taking (inputs..., [scalar], output, n).
    fn ew_kernel<T: DeviceFloat>(
        &self,
        base: &str,
        ins: &[&CudaSlice<T>],
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        let n = out.len();
        for x in ins {
            check_len(base, x.len(), n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let nl = n as i64;
        let name = kname::<T>(base);
        let f = self.func(&name)?;
        let mut l = self.stream().launch_builder(f);
        for x in ins {
            l.arg(*x);
        }
        l.arg(out).arg(&nl);
        // SAFETY: these kernels take (inputs..., output, n) and touch indices < n.
        unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// GELU (tanh form) forward (kernel `gelu_fwd_{f32,bf16}`), as [`crate::cpu::gelu::gelu_fwd_ref`].
    pub fn gelu_fwd<T: DeviceFloat>(&self, x: &CudaSlice<T>, y: &mut CudaSlice<T>) -> Result<()> {
        self.ew_kernel("gelu_fwd", &[x], y)
    }

    /// GELU backward `dx = dy·gelu'(x)` (kernel `gelu_bwd_{f32,bf16}`).
    pub fn gelu_bwd<T: DeviceFloat>(
        &self,
        x: &CudaSlice<T>,
        dy: &CudaSlice<T>,
        dx: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.ew_kernel("gelu_bwd", &[x, dy], dx)
    }

    /// `out = a + b` (kernel `add_{f32,bf16}`).
    pub fn add<T: DeviceFloat>(
        &self,
        a: &CudaSlice<T>,
        b: &CudaSlice<T>,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.ew_kernel("add", &[a, b], out)
    }

    /// `out = a * b` element-wise (kernel `mul_{f32,bf16}`).
    pub fn mul<T: DeviceFloat>(
        &self,
        a: &CudaSlice<T>,
        b: &CudaSlice<T>,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        self.ew_kernel("mul", &[a, b], out)
    }

    /// `out = s * a` (kernel `scale_{f32,bf16}`).
    pub fn scale<T: DeviceFloat>(
        &self,
        a: &CudaSlice<T>,
        s: f32,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        let n = out.len();
        check_len("scale input", a.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let nl = n as i64;
        let f = self.func(&kname::<T>("scale"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(a).arg(&s).arg(out).arg(&nl);
        // SAFETY: arguments match scale_*.
        unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// `out[r, c] = x[r, c] + bias[c]` for a row-major `[rows, cols]` x (kernel
    /// `add_bias_{f32,bf16}`): a linear layer's bias.
    pub fn add_bias<T: DeviceFloat>(
        &self,
        x: &CudaSlice<T>,
        bias: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        check_i32("cols", cols)?;
        check_len("add_bias x", x.len(), rows * cols)?;
        check_len("add_bias out", out.len(), rows * cols)?;
        check_len("add_bias bias", bias.len(), cols)?;
        let n = rows * cols;
        if n == 0 {
            return Ok(());
        }
        let (nl, ci) = (n as i64, cols as i32);
        let f = self.func(&kname::<T>("add_bias"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(x).arg(bias).arg(out).arg(&nl).arg(&ci);
        // SAFETY: arguments match add_bias_*; lengths checked above.
        unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// Column sums `out[c] = Σ_r x[r, c]` of a row-major `[rows, cols]` x (kernel
    /// `sum_rows_{f32,bf16}`): a bias gradient. Deterministic (fixed order, no atomics).
    pub fn sum_rows<T: DeviceFloat>(
        &self,
        x: &CudaSlice<T>,
        rows: usize,
        cols: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_i32("rows", rows)?;
        check_i32("cols", cols)?;
        check_len("sum_rows x", x.len(), rows * cols)?;
        check_len("sum_rows out", out.len(), cols)?;
        if cols == 0 {
            return Ok(());
        }
        let (ri, ci) = (rows as i32, cols as i32);
        let f = self.func(&kname::<T>("sum_rows"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(x).arg(out).arg(&ri).arg(&ci);
        // SAFETY: arguments match sum_rows_*; lengths checked above.
        unsafe { l.launch(cfg((cols.div_ceil(32) as u32, 1, 1), (32, 8, 1), 0)) }?;
        Ok(())
    }

    /// Sum of all elements, deterministic (kernels `sum_partial_{f32,bf16}`, `sum_final_f32`): the
    /// reduction order depends on `x.len()` only. Waits for the result.
    pub fn sum<T: DeviceFloat>(&self, x: &CudaSlice<T>) -> Result<f32> {
        let n = x.len();
        if n == 0 {
            return Ok(0.0);
        }
        let g = sum_blocks(n);
        let mut partials = self.zeros::<f32>(g)?;
        let mut out = self.zeros::<f32>(1)?;
        let (nl, gi) = (n as i64, g as i32);
        let f = self.func(&kname::<T>("sum_partial"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(x).arg(&nl).arg(&mut partials);
        // SAFETY: arguments match sum_partial_*; partials has one slot per block.
        unsafe { l.launch(cfg((g as u32, 1, 1), (256, 1, 1), 0)) }?;
        let f = self.func("sum_final_f32")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(&partials).arg(&gi).arg(&mut out);
        // SAFETY: arguments match sum_final_f32.
        unsafe { l.launch(cfg((1, 1, 1), (256, 1, 1), 0)) }?;
        Ok(self.download(&out)?[0])
    }

    /// f32 → bf16 bits, round to nearest even (kernel `f32_to_bf16`).
    pub fn to_bf16(&self, x: &CudaSlice<f32>, y: &mut CudaSlice<u16>) -> Result<()> {
        self.convert("f32_to_bf16", x, y)
    }

    /// bf16 bits → f32, exact (kernel `bf16_to_f32`).
    pub fn from_bf16(&self, x: &CudaSlice<u16>, y: &mut CudaSlice<f32>) -> Result<()> {
        self.convert("bf16_to_f32", x, y)
    }

    fn convert<A, B>(&self, name: &str, x: &CudaSlice<A>, y: &mut CudaSlice<B>) -> Result<()> {
        let n = x.len();
        check_len(name, y.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let nl = n as i64;
        let f = self.func(name)?;
        let mut l = self.stream().launch_builder(f);
        l.arg(x).arg(y).arg(&nl);
        // SAFETY: (input, output, n) with matching element types (f32 / u16 = bf16 bits).
        unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    // --------------------------------------------------------------------- in place, layouts

    /// `acc += x` element-wise (kernel `add_{f32,bf16}` with its output aliasing its first
    /// input, which the kernel allows): e.g. a residual stream's gradient gathering a branch's.
    pub fn add_assign<T: DeviceFloat>(
        &self,
        acc: &mut CudaSlice<T>,
        x: &CudaSlice<T>,
    ) -> Result<()> {
        let n = acc.len();
        check_len("add_assign x", x.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let nl = n as i64;
        let f = self.func(&kname::<T>("add"))?;
        let stream = self.stream();
        // The same device pointer as input a and as the output: one &mut borrow, its raw
        // address pushed twice (cudarc's safe arguments cannot alias).
        let (acc_ptr, _record) = acc.device_ptr_mut(stream);
        let mut l = stream.launch_builder(f);
        l.arg(&acc_ptr).arg(x).arg(&acc_ptr).arg(&nl);
        // SAFETY: add_* takes (a, b, out, n); a and out may be the same buffer (each element is
        // read and then written by one thread); both buffers have n elements.
        unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// `x[r, c] += bias[c]` in place on a row-major `[rows, cols]` x (kernel
    /// `add_bias_{f32,bf16}` with its output aliasing its input): a linear layer's bias.
    pub fn add_bias_assign<T: DeviceFloat>(
        &self,
        x: &mut CudaSlice<T>,
        bias: &CudaSlice<f32>,
        rows: usize,
        cols: usize,
    ) -> Result<()> {
        check_i32("cols", cols)?;
        check_len("add_bias_assign x", x.len(), rows * cols)?;
        check_len("add_bias_assign bias", bias.len(), cols)?;
        let n = rows * cols;
        if n == 0 {
            return Ok(());
        }
        let (nl, ci) = (n as i64, cols as i32);
        let f = self.func(&kname::<T>("add_bias"))?;
        let stream = self.stream();
        let (x_ptr, _record) = x.device_ptr_mut(stream);
        let mut l = stream.launch_builder(f);
        l.arg(&x_ptr).arg(bias).arg(&x_ptr).arg(&nl).arg(&ci);
        // SAFETY: add_bias_* takes (x, bias, out, n, cols); out may alias x (element-wise);
        // lengths checked above.
        unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// Gathers attention heads out of token rows (kernel `rows_to_heads_{f32,bf16}`):
    /// `heads[b, h, t, d] = rows[(b·T + t)·row_len + offset + h·D + d]`, heads `[B·H, T, D]`
    /// as the attention kernels take them, rows `[B·T, row_len]`. GPT-2's fused projection
    /// gives q, k, v side by side in rows of `3C` (offsets 0, C, 2C).
    pub fn rows_to_heads<T: DeviceFloat>(
        &self,
        rows: &CudaSlice<T>,
        layout: HeadsLayout,
        heads: &mut CudaSlice<T>,
    ) -> Result<()> {
        layout.check("rows_to_heads", rows.len(), heads.len())?;
        self.layout_kernel(&kname::<T>("rows_to_heads"), rows, heads, layout)
    }

    /// The inverse scatter (kernels `heads_to_rows_{f32,bf16}`, and `heads_to_rows_f32_to_bf16`
    /// for f32 heads into bf16 rows): `rows[(b·T + t)·row_len + offset + h·D + d] =
    /// heads[b, h, t, d]`; elements of `rows` outside `offset .. offset + H·D` of each row are
    /// not touched.
    pub fn heads_to_rows<S: DeviceFloat, T: DeviceFloat>(
        &self,
        heads: &CudaSlice<S>,
        layout: HeadsLayout,
        rows: &mut CudaSlice<T>,
    ) -> Result<()> {
        layout.check("heads_to_rows", rows.len(), heads.len())?;
        let name = if S::SUFFIX == T::SUFFIX {
            format!("heads_to_rows_{}", S::SUFFIX)
        } else {
            format!("heads_to_rows_{}_to_{}", S::SUFFIX, T::SUFFIX)
        };
        self.layout_kernel(&name, heads, rows, layout)
    }

    fn layout_kernel<S: DeviceFloat, T: DeviceFloat>(
        &self,
        name: &str,
        src: &CudaSlice<S>,
        dst: &mut CudaSlice<T>,
        layout: HeadsLayout,
    ) -> Result<()> {
        let n = layout.batch * layout.heads * layout.seq * layout.head_dim;
        if n == 0 {
            return Ok(());
        }
        let f = self.func(name)?;
        let nl = n as i64;
        let (hi, ti, di) = (
            layout.heads as i32,
            layout.seq as i32,
            layout.head_dim as i32,
        );
        let (ldi, offi) = (layout.row_len as i32, layout.offset as i32);
        let mut l = self.stream().launch_builder(f);
        l.arg(src).arg(dst).arg(&nl);
        l.arg(&hi).arg(&ti).arg(&di).arg(&ldi).arg(&offi);
        // SAFETY: arguments match LAYOUT_ENTRY in elementwise.cu; HeadsLayout::check bounded
        // both sides' extents.
        unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    // ------------------------------------------------------------------------------ embedding

    /// Embedding lookup (kernel `embedding_fwd_{f32,bf16}`): `out[r] = table[idx[r]]`, table
    /// `[vocab, dim]`, out `[rows, dim]`. An id outside `0..vocab` gives a row of zeros
    /// (validate ids on the host; [`EmbeddingGroups::new`] does).
    pub fn embedding_fwd<T: DeviceFloat>(
        &self,
        idx: &CudaSlice<i32>,
        table: &CudaSlice<T>,
        vocab: usize,
        dim: usize,
        out: &mut CudaSlice<T>,
    ) -> Result<()> {
        let rows = idx.len();
        check_i32("rows", rows)?;
        check_i32("vocab", vocab)?;
        check_i32("dim", dim)?;
        check_len("table", table.len(), vocab * dim)?;
        check_len("out", out.len(), rows * dim)?;
        if rows == 0 || dim == 0 {
            return Ok(());
        }
        let (vi, di) = (vocab as i32, dim as i32);
        let f = self.func(&kname::<T>("embedding_fwd"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(idx).arg(table).arg(out).arg(&vi).arg(&di);
        // SAFETY: arguments match embedding_fwd_*; the kernel bounds-checks the ids.
        unsafe { l.launch(cfg((rows as u32, 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// Embedding backward (kernel `embedding_bwd_{f32,bf16}`): `dtable[v] (+)= Σ_{r: idx[r]=v} dout[r]`,
    /// summed in ascending r, no atomics. `accumulate == false` zeroes dtable first.
    pub fn embedding_bwd<T: DeviceFloat>(
        &self,
        dout: &CudaSlice<T>,
        groups: &EmbeddingGroups,
        vocab: usize,
        dim: usize,
        accumulate: bool,
        dtable: &mut CudaSlice<f32>,
    ) -> Result<()> {
        check_i32("dim", dim)?;
        check_len("dout", dout.len(), groups.rows * dim)?;
        check_len("dtable", dtable.len(), vocab * dim)?;
        if !accumulate {
            self.stream().memset_zeros(dtable)?;
        }
        if groups.groups == 0 || dim == 0 {
            return Ok(());
        }
        let (di, acc) = (dim as i32, accumulate as i32);
        let f = self.func(&kname::<T>("embedding_bwd"))?;
        let mut l = self.stream().launch_builder(f);
        l.arg(dout)
            .arg(&groups.order)
            .arg(&groups.starts)
            .arg(&groups.uniq);
        l.arg(dtable).arg(&di).arg(&acc);
        // SAFETY: arguments match embedding_bwd_*; EmbeddingGroups::new checked every id
        // against vocab (and dtable has vocab rows).
        unsafe { l.launch(cfg((groups.groups as u32, 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    // ------------------------------------------------------------------------------ optimizer

    /// One AdamW step on f32 master weights (kernel `adamw_f32`), the arithmetic of
    /// [`crate::cpu::adamw::adamw_ref`] in f32 (the scalars computed in f64 on the host, as
    /// the reference does).
    pub fn adamw(
        &self,
        param: &mut CudaSlice<f32>,
        grad: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        h: AdamWStep,
    ) -> Result<()> {
        self.adamw_impl(param, grad, m, v, None, h)
    }

    /// [`Gpu::adamw`] that also writes the updated parameters rounded to bf16 into `copy`
    /// (kernel `adamw_f32_bf16_copy`): the weight copy the bf16 kernels read next step.
    pub fn adamw_with_bf16_copy(
        &self,
        param: &mut CudaSlice<f32>,
        grad: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        copy: &mut CudaSlice<u16>,
        h: AdamWStep,
    ) -> Result<()> {
        self.adamw_impl(param, grad, m, v, Some(copy), h)
    }

    fn adamw_impl(
        &self,
        param: &mut CudaSlice<f32>,
        grad: &CudaSlice<f32>,
        m: &mut CudaSlice<f32>,
        v: &mut CudaSlice<f32>,
        copy: Option<&mut CudaSlice<u16>>,
        h: AdamWStep,
    ) -> Result<()> {
        let n = param.len();
        check_len("grad", grad.len(), n)?;
        check_len("m", m.len(), n)?;
        check_len("v", v.len(), n)?;
        if let Some(c) = &copy {
            check_len("bf16 copy", c.len(), n)?;
        }
        if n == 0 {
            return Ok(());
        }
        let bc1 = 1.0 - h.beta1.powi(h.step as i32);
        let bc2 = 1.0 - h.beta2.powi(h.step as i32);
        let decay = (1.0 - h.lr * h.weight_decay) as f32;
        let (b1, b2) = (h.beta1 as f32, h.beta2 as f32);
        let step_size = (h.lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let eps = h.eps as f32;
        let nl = n as i64;
        let name = if copy.is_some() {
            "adamw_f32_bf16_copy"
        } else {
            "adamw_f32"
        };
        let f = self.func(name)?;
        let mut l = self.stream().launch_builder(f);
        l.arg(param).arg(grad).arg(m).arg(v);
        if let Some(c) = copy {
            l.arg(c);
        }
        l.arg(&nl);
        l.arg(&decay)
            .arg(&b1)
            .arg(&b2)
            .arg(&step_size)
            .arg(&bc2_sqrt)
            .arg(&eps);
        // SAFETY: arguments match adamw_f32 / adamw_f32_bf16_copy (which takes the copy after
        // v); all buffers have n elements.
        unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        Ok(())
    }

    /// Global-norm gradient clipping over several gradient buffers (kernels
    /// `sumsq_partial_f32`, `grad_norm_final_f32`, `clip_scale_f32`), as the engine's
    /// `clip_grad_norm`: norm = √(Σ g²) accumulated in f64; when `max_norm / (norm + 1e-6) < 1`
    /// every gradient is multiplied by it. Deterministic; returns the norm before clipping
    /// (waits for it).
    pub fn clip_grad_norm(&self, grads: &mut [&mut CudaSlice<f32>], max_norm: f64) -> Result<f64> {
        let blocks: Vec<usize> = grads.iter().map(|g| sum_blocks(g.len())).collect();
        let total: usize = blocks.iter().sum();
        check_i32("partial sums", total)?;
        let mut partials = self.zeros::<f64>(total.max(1))?;
        let mut off = 0;
        for (g, &nb) in grads.iter().zip(&blocks) {
            let n = g.len();
            if n > 0 {
                let nl = n as i64;
                let mut slots = partials.slice_mut(off..off + nb);
                let f = self.func("sumsq_partial_f32")?;
                let mut l = self.stream().launch_builder(f);
                l.arg(&**g).arg(&nl).arg(&mut slots);
                // SAFETY: arguments match sumsq_partial_f32; one slot per block.
                unsafe { l.launch(cfg((nb as u32, 1, 1), (256, 1, 1), 0)) }?;
            }
            off += nb;
        }
        let mut norm_factor = self.zeros::<f64>(2)?;
        let ti = total as i32;
        let f = self.func("grad_norm_final_f32")?;
        let mut l = self.stream().launch_builder(f);
        l.arg(&partials)
            .arg(&ti)
            .arg(&max_norm)
            .arg(&mut norm_factor);
        // SAFETY: arguments match grad_norm_final_f32.
        unsafe { l.launch(cfg((1, 1, 1), (256, 1, 1), 0)) }?;
        for g in grads.iter_mut() {
            let n = g.len();
            if n == 0 {
                continue;
            }
            let nl = n as i64;
            let f = self.func("clip_scale_f32")?;
            let mut l = self.stream().launch_builder(f);
            l.arg(&mut **g).arg(&nl).arg(&norm_factor);
            // SAFETY: arguments match clip_scale_f32.
            unsafe { l.launch(cfg((ew_blocks(n), 1, 1), (256, 1, 1), 0)) }?;
        }
        Ok(self.download(&norm_factor)?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_grouped_by_token_in_row_order() {
        let (order, starts, uniq) = group_rows(&[3, 1, 3, 0, 1, 3], 5).unwrap();
        assert_eq!(uniq, vec![0, 1, 3]);
        assert_eq!(starts, vec![0, 1, 3, 6]);
        assert_eq!(order, vec![3, 1, 4, 0, 2, 5]);
        assert!(group_rows(&[0, 5], 5).is_err());
        assert!(group_rows(&[-1], 5).is_err());
    }

    #[test]
    fn extents() {
        let s = Strides::row_major(3, 4);
        assert!(check_extent("x", 24, 2, 3, 4, s).is_ok());
        assert!(check_extent("x", 23, 2, 3, 4, s).is_err());
    }
}
