//! Dropout (inverted: scaled at training time, identity at eval).

use crate::error::invalid;
use crate::{ops, Result, Rng, Storage, Tensor};

/// In training, zeroes each element with probability `p` and scales the rest by 1/(1−p), so
/// the expected value is unchanged; at eval (`training == false`) or `p == 0` it is the
/// identity. The mask is drawn from `rng`.  Gradient: dy∘mask/(1−p).
pub fn dropout(x: &Tensor, p: f64, training: bool, rng: &mut Rng) -> Result<Tensor> {
    if !(0.0..1.0).contains(&p) {
        return invalid("dropout", format!("probability {p} is outside [0, 1)"));
    }
    if !training || p == 0.0 {
        return Ok(x.clone());
    }
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f64> = (0..x.numel())
        .map(|_| if rng.uniform() < p { 0.0 } else { keep })
        .collect();
    let mask = match x.dtype() {
        crate::DType::F32 => Storage::F32(mask.iter().map(|&m| m as f32).collect()),
        crate::DType::F64 => Storage::F64(mask),
    };
    ops::mul(x, &Tensor::leaf(mask, x.shape().to_vec()))
}
