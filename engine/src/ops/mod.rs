//! The ops. Each op computes its forward, then records how to get its inputs' gradients; the
//! two sit side by side in one function, and each op's doc gives its math.
//!
//! Shape conventions follow PyTorch: binary ops broadcast, `axis` may be negative (−1 is the
//! last), matmul batches over leading dims.

mod attention;
mod crossentropy;
mod dropout;
mod elementwise;
mod gelu;
mod index;
mod layernorm;
mod layout;
mod linear;
mod matmul;
mod reduce;
mod softmax;

pub use attention::{causal_attention, causal_self_attention};
pub use crossentropy::{cross_entropy, IGNORE_INDEX};
pub use dropout::dropout;
pub use elementwise::{
    add, add_scalar, clamp, div, exp, log, logsigmoid, maximum, minimum, mul, mul_scalar, neg,
    powf, relu, sigmoid, sqrt, sub, tanh, where_,
};
pub use gelu::gelu;
pub use index::{embedding, gather, index_select};
pub use layernorm::{add_layer_norm, layer_norm};
pub use layout::{broadcast_to, concat, permute, reshape, slice, sum_to_shape, transpose};
pub use linear::linear;
pub use matmul::{matmul, matmul_ex};
pub use reduce::{max, mean, mean_all, sum, sum_all};
pub use softmax::{log_softmax, softmax};

/// A buffer of `n` zeros for an op's output, written by all threads when it is large: the
/// first touch of a fresh buffer (page faults, cache misses) is then split between the
/// threads instead of falling on the calling one while the others wait.
pub(crate) fn zeros<F: Copy + Default + Send + Sync>(n: usize) -> Vec<F> {
    use rayon::prelude::*;
    /// Elements per parallel task, and the size from which it is worth threading.
    const CHUNK: usize = 1 << 15;
    if n < 2 * CHUNK {
        return vec![F::default(); n];
    }
    let mut v = Vec::with_capacity(n);
    v.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .for_each(|c| {
            c.iter_mut().for_each(|x| {
                x.write(F::default());
            })
        });
    // SAFETY: the loop above wrote all of the first n elements (the chunks cover them), and
    // the capacity is at least n.
    unsafe { v.set_len(n) };
    v
}
