//! CPU kernels, one file per family. Each file has `*_ref` (plain, generic, the definition of
//! the math) and the fast f32 version the engine calls.

pub mod adamw;
pub mod attention;
pub mod crossentropy;
pub mod gelu;
pub mod layernorm;
pub mod linear;
pub mod matmul;
pub mod softmax;
#[cfg(test)]
mod testutil;
pub(crate) mod vecmath;
