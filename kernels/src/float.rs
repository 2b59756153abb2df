//! The element types kernels compute in: f32 (training) and f64 (gradient checks, references).

/// A floating-point element type the kernels are generic over.
pub trait Float:
    num_traits::Float
    + num_traits::NumAssign
    + Default
    + Send
    + Sync
    + std::fmt::Debug
    + std::fmt::Display
    + std::iter::Sum
    + 'static
{
    /// Converts from f64, rounding to nearest.
    fn from_f64(x: f64) -> Self;
    /// Converts to f64 exactly.
    fn to_f64(self) -> f64;
}

impl Float for f32 {
    fn from_f64(x: f64) -> Self {
        x as f32
    }
    fn to_f64(self) -> f64 {
        self as f64
    }
}

impl Float for f64 {
    fn from_f64(x: f64) -> Self {
        x
    }
    fn to_f64(self) -> f64 {
        self
    }
}
