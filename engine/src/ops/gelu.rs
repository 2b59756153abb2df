//! GELU, tanh form, as GPT-2 uses it (math in `kernels::cpu::gelu`).

use crate::{Result, Storage, Tensor};
use kernels::cpu::gelu as k;

/// y = ½x(1 + tanh(√(2/π)(x + 0.044715x³))).
/// Gradient: dy·[½(1 + tanh u) + ½x(1 − tanh²u)·√(2/π)(1 + 3·0.044715x²)].
pub fn gelu(x: &Tensor) -> Result<Tensor> {
    let y = match x.storage() {
        Storage::F32(v) => {
            let mut y = crate::ops::zeros(v.len());
            k::gelu_fwd(v, &mut y);
            Storage::F32(y)
        }
        Storage::F64(v) => {
            let mut y = crate::ops::zeros(v.len());
            k::gelu_fwd_ref(v, &mut y);
            Storage::F64(y)
        }
    };
    let xc = x.clone();
    Ok(Tensor::from_op(
        y,
        x.shape().to_vec(),
        "gelu",
        &[x],
        move |_, g| {
            let dx = match (xc.storage(), g.storage()) {
                (Storage::F32(x), Storage::F32(g)) => {
                    let mut dx = crate::ops::zeros(x.len());
                    k::gelu_bwd(x, g, &mut dx);
                    Storage::F32(dx)
                }
                (Storage::F64(x), Storage::F64(g)) => {
                    let mut dx = crate::ops::zeros(x.len());
                    k::gelu_bwd_ref(x, g, &mut dx);
                    Storage::F64(dx)
                }
                _ => unreachable!("gradient dtype matches its tensor"),
            };
            Ok(vec![Some(Tensor::leaf(dx, xc.shape().to_vec()))])
        },
    ))
}
