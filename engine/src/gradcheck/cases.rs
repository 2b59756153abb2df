//! One gradient-check case per op: the inputs (random values, shapes from a few small dims)
//! and the function to check. The property tests draw the dims and seed at random (and
//! shrink failures); `ferrochat gradcheck` runs each case once with fixed dims.

use crate::{ops, DType, Result, Rng, Tensor};

/// A function of tensors to check.
pub type CaseFn = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// The names of every case, one or more per op, and a two-layer transformer block.
pub const CASES: &[&str] = &[
    "matmul",
    "matmul_batched_broadcast",
    "matmul_transposed",
    "add",
    "sub",
    "mul",
    "div",
    "neg",
    "add_scalar",
    "mul_scalar",
    "exp",
    "log",
    "sqrt",
    "powf",
    "tanh",
    "sigmoid",
    "logsigmoid",
    "relu",
    "gelu",
    "clamp",
    "minimum",
    "maximum",
    "where",
    "sum",
    "mean",
    "max",
    "sum_all",
    "mean_all",
    "softmax",
    "softmax_axis0",
    "log_softmax",
    "index_select",
    "embedding",
    "gather",
    "layer_norm",
    "add_layer_norm",
    "causal_attention",
    "causal_self_attention",
    "linear",
    "cross_entropy",
    "concat",
    "slice",
    "reshape",
    "transpose",
    "permute",
    "broadcast_to",
    "dropout",
    "transformer_block_x2",
];

fn normal(rng: &mut Rng, shape: &[usize]) -> Tensor {
    rng.normal_tensor(shape, 0.0, 1.0, DType::F64)
}

fn positive(rng: &mut Rng, shape: &[usize]) -> Tensor {
    rng.uniform_tensor(shape, 0.5, 2.0, DType::F64)
}

/// Normal values at least `gap` away from every point in `kinks`, so a kink (relu at 0, clamp
/// at its bounds) is never inside the finite-difference stencil.
fn away_from(rng: &mut Rng, shape: &[usize], kinks: &[f64], gap: f64) -> Tensor {
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n)
        .map(|_| loop {
            let z = rng.normal();
            if kinks.iter().all(|k| (z - k).abs() >= gap) {
                break z;
            }
        })
        .collect();
    Tensor::from_vec(v, shape).expect("sizes match")
}

/// Values all at least 0.05 apart (a shuffled grid with a little jitter), so that max,
/// minimum and maximum never face a near-tie inside the finite-difference stencil.
fn distinct(rng: &mut Rng, shape: &[usize]) -> Tensor {
    let n: usize = shape.iter().product();
    let mut v: Vec<f64> = (0..n)
        .map(|i| (i as f64 - n as f64 / 2.0) * 0.1 + 0.02 * rng.uniform())
        .collect();
    rng.shuffle(&mut v);
    Tensor::from_vec(v, shape).expect("sizes match")
}

/// Two tensors whose values, taken together, are all [`distinct`].
fn distinct_pair(rng: &mut Rng, sa: &[usize], sb: &[usize]) -> (Tensor, Tensor) {
    let (na, nb) = (sa.iter().product::<usize>(), sb.iter().product::<usize>());
    let all = distinct(rng, &[na + nb]).to_vec_f64();
    let x = Tensor::from_vec(all[..na].to_vec(), sa).expect("sizes match");
    let y = Tensor::from_vec(all[na..].to_vec(), sb).expect("sizes match");
    (x, y)
}

/// Builds case `name` from three small dims `d` (each ≥ 1) and `rng`: the inputs and the
/// function. `None` for an unknown name.
pub fn case(name: &str, d: [usize; 3], rng: &mut Rng) -> Option<(Vec<Tensor>, CaseFn)> {
    let [a, b, c] = d;
    let unary = |x: Tensor, f: fn(&Tensor) -> Result<Tensor>| -> (Vec<Tensor>, CaseFn) {
        (vec![x], Box::new(move |xs: &[Tensor]| f(&xs[0])))
    };
    let binary = |x: Tensor,
                  y: Tensor,
                  f: fn(&Tensor, &Tensor) -> Result<Tensor>|
     -> (Vec<Tensor>, CaseFn) {
        (vec![x, y], Box::new(move |xs: &[Tensor]| f(&xs[0], &xs[1])))
    };
    Some(match name {
        "matmul" => binary(normal(rng, &[a, b]), normal(rng, &[b, c]), ops::matmul),
        "matmul_batched_broadcast" => binary(
            normal(rng, &[2, a, b]),
            normal(rng, &[1, b, c]),
            ops::matmul,
        ),
        "matmul_transposed" => (
            vec![normal(rng, &[2, b, a]), normal(rng, &[2, c, b])],
            Box::new(|xs: &[Tensor]| ops::matmul_ex(&xs[0], &xs[1], true, true)),
        ),
        "add" => binary(normal(rng, &[a, b, c]), normal(rng, &[1, c]), ops::add),
        "sub" => binary(normal(rng, &[a, b]), normal(rng, &[b]), ops::sub),
        "mul" => binary(normal(rng, &[a, 1, c]), normal(rng, &[b, 1]), ops::mul),
        "div" => binary(normal(rng, &[a, b]), positive(rng, &[a, 1]), ops::div),
        "neg" => unary(normal(rng, &[a, b]), ops::neg),
        "add_scalar" => unary(normal(rng, &[a, b]), |x| ops::add_scalar(x, 0.75)),
        "mul_scalar" => unary(normal(rng, &[a, b]), |x| ops::mul_scalar(x, -1.5)),
        "exp" => unary(normal(rng, &[a, b]), ops::exp),
        "log" => unary(positive(rng, &[a, b]), ops::log),
        "sqrt" => unary(positive(rng, &[a, b]), ops::sqrt),
        "powf" => unary(positive(rng, &[a, b]), |x| ops::powf(x, 2.5)),
        "tanh" => unary(normal(rng, &[a, b, c]), ops::tanh),
        "sigmoid" => unary(normal(rng, &[a, b]), ops::sigmoid),
        "logsigmoid" => unary(
            rng.normal_tensor(&[a, b], 0.0, 4.0, DType::F64),
            ops::logsigmoid,
        ),
        "relu" => unary(away_from(rng, &[a, b], &[0.0], 0.1), ops::relu),
        "gelu" => unary(
            rng.normal_tensor(&[a, b, c], 0.0, 2.0, DType::F64),
            ops::gelu,
        ),
        "clamp" => unary(away_from(rng, &[a, b], &[-0.5, 0.5], 0.1), |x| {
            ops::clamp(x, -0.5, 0.5)
        }),
        "minimum" => {
            let (x, y) = distinct_pair(rng, &[a, b], &[b]);
            binary(x, y, ops::minimum)
        }
        "maximum" => {
            let (x, y) = distinct_pair(rng, &[a, 1], &[a, b]);
            binary(x, y, ops::maximum)
        }
        "where" => {
            let cond = Tensor::from_vec((0..b).map(|i| (i % 2) as f64).collect(), &[b])
                .expect("sizes match");
            (
                vec![normal(rng, &[a, b]), normal(rng, &[a, 1])],
                Box::new(move |xs: &[Tensor]| ops::where_(&cond, &xs[0], &xs[1])),
            )
        }
        "sum" => unary(normal(rng, &[a, b, c]), |x| ops::sum(x, 1, false)),
        "mean" => unary(normal(rng, &[a, b, c]), |x| ops::mean(x, -1, true)),
        "max" => unary(distinct(rng, &[a, b, c]), |x| ops::max(x, 1, false)),
        "sum_all" => unary(normal(rng, &[a, b]), ops::sum_all),
        "mean_all" => unary(normal(rng, &[a, b]), ops::mean_all),
        "softmax" => unary(normal(rng, &[a, b, c]), |x| ops::softmax(x, -1)),
        "softmax_axis0" => unary(normal(rng, &[a, b]), |x| ops::softmax(x, 0)),
        "log_softmax" => unary(normal(rng, &[a, b, c]), |x| ops::log_softmax(x, -1)),
        "index_select" => {
            let idx: Vec<usize> = (0..c + 1).map(|_| rng.below(b as u64) as usize).collect();
            (
                vec![normal(rng, &[a, b, 2])],
                Box::new(move |xs: &[Tensor]| ops::index_select(&xs[0], 1, &idx)),
            )
        }
        "embedding" => {
            let ids: Vec<usize> = (0..a * c).map(|_| rng.below(b as u64) as usize).collect();
            (
                vec![normal(rng, &[b, 3])],
                Box::new(move |xs: &[Tensor]| ops::embedding(&xs[0], &ids, &[a, c])),
            )
        }
        "gather" => {
            let idx: Vec<usize> = (0..a * c).map(|_| rng.below(b as u64) as usize).collect();
            (
                vec![normal(rng, &[a, b])],
                Box::new(move |xs: &[Tensor]| ops::gather(&xs[0], 1, &idx, &[a, c])),
            )
        }
        "layer_norm" => {
            // A row of one element has zero variance (its gradient is ~0/ε), and a row of
            // nearly equal values is ill-conditioned (f32 loses the difference): rows of at
            // least two values 0.05 apart.
            let cols = b + 1;
            (
                vec![
                    distinct(rng, &[a, c, cols]),
                    normal(rng, &[cols]),
                    normal(rng, &[cols]),
                ],
                Box::new(|xs: &[Tensor]| ops::layer_norm(&xs[0], &xs[1], &xs[2], 1e-5)),
            )
        }
        "add_layer_norm" => {
            // As layer_norm, with a small residual so the sum's rows keep their spread; both
            // outputs (the sum and its norm) feed the checked value.
            let cols = b + 1;
            (
                vec![
                    distinct(rng, &[a, c, cols]),
                    rng.uniform_tensor(&[a, c, cols], -0.01, 0.01, DType::F64),
                    normal(rng, &[cols]),
                    normal(rng, &[cols]),
                ],
                Box::new(|xs: &[Tensor]| {
                    let (sum, normed) = ops::add_layer_norm(&xs[0], &xs[1], &xs[2], &xs[3], 1e-5)?;
                    ops::add(&normed, &ops::mul_scalar(&sum, 0.5)?)
                }),
            )
        }
        "causal_attention" => (
            vec![
                normal(rng, &[a, b, c]),
                normal(rng, &[a, b, c]),
                normal(rng, &[a, b, c]),
            ],
            Box::new(|xs: &[Tensor]| ops::causal_attention(&xs[0], &xs[1], &xs[2])),
        ),
        "causal_self_attention" => unary(normal(rng, &[a, b, 3 * 2 * c]), |x| {
            ops::causal_self_attention(x, 2)
        }),
        "linear" => (
            vec![
                normal(rng, &[a, b, c]),
                normal(rng, &[c, a + 1]),
                normal(rng, &[a + 1]),
            ],
            Box::new(|xs: &[Tensor]| ops::linear(&xs[0], &xs[1], &xs[2])),
        ),
        "cross_entropy" => {
            let vocab = c + 1;
            let mut targets: Vec<i64> =
                (0..a * b).map(|_| rng.below(vocab as u64) as i64).collect();
            if targets.len() > 1 {
                targets[0] = ops::IGNORE_INDEX;
            }
            (
                vec![rng.normal_tensor(&[a, b, vocab], 0.0, 2.0, DType::F64)],
                Box::new(move |xs: &[Tensor]| {
                    ops::cross_entropy(&xs[0], &targets, ops::IGNORE_INDEX)
                }),
            )
        }
        "concat" => binary(normal(rng, &[a, b]), normal(rng, &[a, c]), |x, y| {
            ops::concat(&[x.clone(), y.clone(), x.clone()], 1)
        }),
        "slice" => unary(normal(rng, &[a, b + 2, c]), |x| {
            ops::slice(x, 1, 1, x.shape()[1] - 1)
        }),
        "reshape" => unary(normal(rng, &[a, b, c]), |x| {
            let n = x.numel();
            ops::tanh(&ops::reshape(x, &[n])?)
        }),
        "transpose" => unary(normal(rng, &[a, b, c]), |x| ops::transpose(x, 0, -1)),
        "permute" => unary(normal(rng, &[a, b, c]), |x| ops::permute(x, &[1, 2, 0])),
        "broadcast_to" => unary(normal(rng, &[b, 1]), |x| {
            let s = [2, x.shape()[0], 3];
            ops::broadcast_to(x, &s)
        }),
        "dropout" => unary(normal(rng, &[a, b, c]), |x| {
            // A fresh generator per call: the same mask on every evaluation.
            ops::dropout(x, 0.3, true, &mut Rng::new(7))
        }),
        "transformer_block_x2" => {
            let t = a.min(4);
            let (heads, width) = (2, 4);
            // Rows of well-spread values (distinct, ×10): both blocks' layer norms then see rows
            // far from constant, where finite differences stay accurate. With plain normal
            // inputs, about one draw in a thousand gave a near-constant row (gradients of ~500,
            // a 3e-6 finite-difference error).
            let shape = [b.min(2), t, width];
            let spread: Vec<f64> = distinct(rng, &shape).to_vec_f64();
            let x = Tensor::from_vec(spread.iter().map(|v| 10.0 * v).collect(), &shape);
            let mut inputs = vec![x.expect("sizes match")];
            for _ in 0..2 {
                inputs.extend(block_params(rng, width));
            }
            (
                inputs,
                Box::new(move |xs: &[Tensor]| {
                    let mut h = xs[0].clone();
                    for layer in xs[1..].chunks(12) {
                        h = transformer_block(&h, layer, heads)?;
                    }
                    Ok(h)
                }),
            )
        }
        _ => return None,
    })
}

/// Parameters of one pre-LN GPT-2 block of width `c`, in the order [`transformer_block`]
/// takes them: ln1 (γ, β), attention (W_qkv, b_qkv, W_proj, b_proj), ln2 (γ, β),
/// MLP (W_fc, b_fc, W_out, b_out).
fn block_params(rng: &mut Rng, c: usize) -> Vec<Tensor> {
    let mut w = |shape: &[usize], std: f64| rng.normal_tensor(shape, 0.0, std, DType::F64);
    vec![
        w(&[c], 0.2),
        w(&[c], 0.2),
        w(&[c, 3 * c], 0.5),
        w(&[3 * c], 0.1),
        w(&[c, c], 0.5),
        w(&[c], 0.1),
        w(&[c], 0.2),
        w(&[c], 0.2),
        w(&[c, 4 * c], 0.5),
        w(&[4 * c], 0.1),
        w(&[4 * c, c], 0.5),
        w(&[c], 0.1),
    ]
}

/// One GPT-2 block built from the engine's ops: x + attn(ln1(x)), then + mlp(ln2(·)).
/// `x` is `[B, T, C]`; `p` as `block_params` makes them (γ offset by 1 so the norms start near
/// identity).
pub fn transformer_block(x: &Tensor, p: &[Tensor], heads: usize) -> Result<Tensor> {
    let (bsz, t, c) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let hd = c / heads;
    let ln =
        |x: &Tensor, g: &Tensor, b: &Tensor| ops::layer_norm(x, &ops::add_scalar(g, 1.0)?, b, 1e-5);
    let h = ln(x, &p[0], &p[1])?;
    let qkv = ops::add(&ops::matmul(&h, &p[2])?, &p[3])?; // [B, T, 3C]
    let split = |i: usize| -> Result<Tensor> {
        let part = ops::slice(&qkv, -1, i * c, (i + 1) * c)?;
        ops::transpose(&ops::reshape(&part, &[bsz, t, heads, hd])?, 1, 2) // [B, H, T, hd]
    };
    let y = ops::causal_attention(&split(0)?, &split(1)?, &split(2)?)?;
    let y = ops::reshape(&ops::transpose(&y, 1, 2)?, &[bsz, t, c])?;
    let x = ops::add(x, &ops::add(&ops::matmul(&y, &p[4])?, &p[5])?)?;
    let h = ln(&x, &p[6], &p[7])?;
    let h = ops::gelu(&ops::add(&ops::matmul(&h, &p[8])?, &p[9])?)?;
    ops::add(&x, &ops::add(&ops::matmul(&h, &p[10])?, &p[11])?)
}
