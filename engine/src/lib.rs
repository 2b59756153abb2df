//! ferrochat's tensor engine: [`Tensor`], reverse-mode autograd, the ops (each with its forward
//! and backward side by side), AdamW and LR schedules, a seeded RNG, and [`gradcheck`](gradcheck::gradcheck)
//! which compares autograd with central finite differences in f64.
//!
//! ```
//! use engine::{ops, Tensor};
//! let w = Tensor::from_vec(vec![1.0f32, 2.0, 3.0], &[3]).unwrap().requires_grad();
//! let loss = ops::sum_all(&ops::mul(&w, &w).unwrap()).unwrap(); // Σ w²
//! let grads = loss.backward().unwrap();
//! assert_eq!(grads.get(&w).unwrap().to_vec_f64(), vec![2.0, 4.0, 6.0]); // 2w
//! ```

#![warn(missing_docs)]

pub mod autograd;
pub mod device;
pub mod error;
pub mod gradcheck;
pub mod ops;
pub mod optim;
pub mod rng;
pub mod shape;
pub mod storage;
pub mod tensor;

pub use autograd::{is_grad_enabled, no_grad, Gradients};
pub use device::Device;
pub use error::{Error, Result};
pub use rng::Rng;
pub use storage::{DType, Element, Storage};
pub use tensor::Tensor;
