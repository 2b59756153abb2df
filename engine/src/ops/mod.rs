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
pub use layernorm::layer_norm;
pub use layout::{broadcast_to, concat, permute, reshape, slice, sum_to_shape, transpose};
pub use linear::linear;
pub use matmul::{matmul, matmul_ex};
pub use reduce::{max, mean, mean_all, sum, sum_all};
pub use softmax::{log_softmax, softmax};
