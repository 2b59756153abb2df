//! Autograd behaviour, optimizer maths and error reporting.

use engine::optim::{clip_grad_norm, AdamW, AdamWConfig, LrSchedule};
use engine::{no_grad, ops, DType, Error, Rng, Tensor};

fn t(v: &[f64], shape: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), shape).unwrap()
}

#[test]
fn gradient_accumulates_over_reuse() {
    // y = x·x + 3x  →  dy/dx = 2x + 3
    let x = t(&[1.0, -2.0, 0.5], &[3]).requires_grad();
    let y = ops::sum_all(
        &ops::add(
            &ops::mul(&x, &x).unwrap(),
            &ops::mul_scalar(&x, 3.0).unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    let g = y.backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec_f64(), vec![5.0, -1.0, 4.0]);
}

#[test]
fn only_leaves_that_require_grad_get_gradients() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad();
    let c = t(&[3.0, 4.0], &[2]);
    let h = ops::mul(&x, &c).unwrap();
    let g = ops::sum_all(&h).unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec_f64(), vec![3.0, 4.0]);
    assert!(g.get(&c).is_none());
    assert!(g.get(&h).is_none(), "intermediate gradients are freed");
    assert_eq!(g.len(), 1);
}

#[test]
fn no_grad_records_nothing() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad();
    let y = no_grad(|| ops::exp(&x).unwrap());
    assert!(y.is_leaf());
    assert!(!y.requires_grad_flag());
    assert!(
        engine::is_grad_enabled(),
        "no_grad restores the previous state"
    );
}

#[test]
fn backward_of_a_non_scalar_is_an_error() {
    let x = t(&[1.0, 2.0], &[2]).requires_grad();
    let y = ops::exp(&x).unwrap();
    assert_eq!(y.backward().unwrap_err(), Error::NotScalar(vec![2]));
    // ...but an explicit upstream gradient works (vector-Jacobian product).
    let g = y.backward_with(t(&[1.0, 0.0], &[2])).unwrap();
    let e1 = 1f64.exp();
    assert_eq!(g.get(&x).unwrap().to_vec_f64(), vec![e1, 0.0]);
}

#[test]
fn deep_chains_do_not_overflow_the_stack() {
    let x = t(&[0.5], &[1]).requires_grad();
    let mut y = x.clone();
    // Deep enough that one stack frame per op, in the backward walk or in dropping the graph,
    // would overflow a test thread's 2 MiB stack on any target.
    for _ in 0..200_000 {
        y = ops::mul_scalar(&y, 1.0).unwrap();
    }
    let g = ops::sum_all(&y).unwrap().backward().unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec_f64(), vec![1.0]);
}

#[test]
fn shape_errors_name_the_op_and_shapes() {
    let a = Tensor::zeros(&[2, 3], DType::F32);
    let b = Tensor::zeros(&[4, 5], DType::F32);
    let e = ops::matmul(&a, &b).unwrap_err().to_string();
    assert!(
        e.starts_with("matmul:") && e.contains("[2, 3]") && e.contains("[4, 5]"),
        "{e}"
    );
    let e = ops::add(&a, &b).unwrap_err().to_string();
    assert!(
        e.starts_with("add:") && e.contains("[2, 3]") && e.contains("[4, 5]"),
        "{e}"
    );
    let e = ops::reshape(&a, &[7]).unwrap_err().to_string();
    assert!(
        e.starts_with("reshape:") && e.contains("[2, 3]") && e.contains("[7]"),
        "{e}"
    );
    let e = ops::matmul(&Tensor::zeros(&[3], DType::F32), &a)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rank"), "{e}");
    let e = ops::layer_norm(
        &a,
        &Tensor::zeros(&[2], DType::F32),
        &Tensor::zeros(&[3], DType::F32),
        1e-5,
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("layer_norm:"), "{e}");
    let e = ops::causal_attention(&a, &b, &a).unwrap_err().to_string();
    assert!(e.starts_with("causal_attention:"), "{e}");
    let e = ops::concat(&[a.clone(), b.clone()], 0)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("concat:"), "{e}");
}

#[test]
fn axis_and_index_errors() {
    let a = Tensor::zeros(&[2, 3], DType::F32);
    assert!(ops::sum(&a, 2, false)
        .unwrap_err()
        .to_string()
        .contains("axis 2"));
    assert!(ops::softmax(&a, -3).is_err());
    assert!(ops::transpose(&a, 0, 5).is_err());
    assert!(ops::permute(&a, &[0, 0]).is_err());
    assert!(ops::slice(&a, 1, 2, 5)
        .unwrap_err()
        .to_string()
        .contains("2..5"));
    let e = ops::embedding(&a, &[0, 2], &[2]).unwrap_err().to_string();
    assert!(
        e.contains("token id 2") && e.contains("vocabulary of 2"),
        "{e}"
    );
    let e = ops::cross_entropy(&a, &[0, 3], ops::IGNORE_INDEX)
        .unwrap_err()
        .to_string();
    assert!(e.contains("target 3"), "{e}");
    assert!(
        ops::cross_entropy(&a, &[0], ops::IGNORE_INDEX).is_err(),
        "wrong number of targets"
    );
    assert!(ops::index_select(&a, 0, &[9]).is_err());
    assert!(
        ops::gather(&a, 1, &[0, 1], &[1, 3]).is_err(),
        "index count does not fill its shape"
    );
    assert!(ops::dropout(&a, 1.0, true, &mut Rng::new(0)).is_err());
    assert!(ops::clamp(&a, 1.0, 0.0).is_err());
    assert!(Tensor::from_vec(vec![1.0f32; 5], &[2, 3]).is_err());
    assert!(Tensor::zeros(&[2], DType::F32).item().is_err());
}

#[test]
fn dtype_mismatch_is_an_error() {
    let a = Tensor::zeros(&[2], DType::F32);
    let b = Tensor::zeros(&[2], DType::F64);
    let e = ops::mul(&a, &b).unwrap_err();
    assert!(matches!(e, Error::DType { op: "mul", .. }), "{e}");
}

#[test]
fn asking_for_cuda_without_it_is_an_error_not_a_panic() {
    assert!(engine::Device::cuda(0)
        .unwrap_err()
        .to_string()
        .contains("CUDA"));
}

#[test]
fn adamw_matches_the_pytorch_formula() {
    // One parameter, two steps, against the update written out by hand.
    let mut p = t(&[1.0, -2.0], &[1, 2]).requires_grad();
    let cfg = AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    };
    let mut opt = AdamW::new(cfg);
    let (lr, b1, b2, eps, wd) = (0.01, 0.9, 0.999, 1e-8, 0.1);
    let (mut m, mut v, mut expect) = ([0.0f64; 2], [0.0f64; 2], [1.0f64, -2.0]);
    for step in 1..=2 {
        // loss = Σ p³ → g = 3p²
        let loss = ops::sum_all(&ops::powf(&p, 3.0).unwrap()).unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&mut [&mut p], &grads, lr).unwrap();
        for i in 0..2 {
            let g = 3.0 * expect[i] * expect[i];
            expect[i] *= 1.0 - lr * wd;
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let (bc1, bc2) = (1.0 - b1.powi(step), 1.0 - b2.powi(step));
            expect[i] -= lr / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + eps);
        }
    }
    let got = p.to_vec_f64();
    for i in 0..2 {
        assert!((got[i] - expect[i]).abs() < 1e-12, "{got:?} vs {expect:?}");
    }
    assert_eq!(opt.step, 2);
}

#[test]
fn adamw_does_not_decay_biases_by_default() {
    let mut bias = t(&[1.0, 1.0], &[2]).requires_grad();
    let zero_grad_loss = ops::mul_scalar(&ops::sum_all(&bias).unwrap(), 0.0).unwrap();
    let grads = zero_grad_loss.backward().unwrap();
    AdamW::new(AdamWConfig::default())
        .step(&mut [&mut bias], &grads, 0.1)
        .unwrap();
    assert_eq!(bias.to_vec_f64(), vec![1.0, 1.0]);
}

#[test]
fn update_copies_a_buffer_that_a_live_graph_still_reads() {
    let mut p = t(&[1.0, 2.0], &[2]).requires_grad();
    let seen_by_graph = p.clone();
    p.update(|s| {
        if let engine::Storage::F64(v) = s {
            v[0] = 10.0;
        }
    })
    .unwrap();
    assert_eq!(p.to_vec_f64(), vec![10.0, 2.0]);
    assert_eq!(seen_by_graph.to_vec_f64(), vec![1.0, 2.0]);
    assert_eq!(p.id(), seen_by_graph.id());
}

#[test]
fn clipping_scales_to_the_max_norm() {
    let x = t(&[3.0, 4.0], &[2]).requires_grad();
    let mut g = ops::sum_all(&ops::mul(&x, &t(&[3.0, 4.0], &[2])).unwrap())
        .unwrap()
        .backward()
        .unwrap();
    let norm = clip_grad_norm(&mut g, &[&x], 1.0).unwrap();
    assert!((norm - 5.0).abs() < 1e-12);
    let clipped = g.get(&x).unwrap().to_vec_f64();
    let n = (clipped[0].powi(2) + clipped[1].powi(2)).sqrt();
    assert!((n - 1.0).abs() < 1e-6, "{n}");
    // Under the limit: unchanged.
    let before = g.get(&x).unwrap().to_vec_f64();
    clip_grad_norm(&mut g, &[&x], 10.0).unwrap();
    assert_eq!(g.get(&x).unwrap().to_vec_f64(), before);
}

#[test]
fn lr_schedule_warms_up_then_decays_to_the_floor() {
    let s = LrSchedule {
        max_lr: 1.0,
        min_lr: 0.1,
        warmup: 10,
        total: 110,
    };
    assert!((s.lr(0) - 0.1).abs() < 1e-12);
    assert!((s.lr(9) - 1.0).abs() < 1e-12);
    assert!((s.lr(10) - 1.0).abs() < 1e-12);
    assert!((s.lr(60) - 0.55).abs() < 1e-12, "half way down the cosine");
    assert!((s.lr(110) - 0.1).abs() < 1e-12);
    assert!((s.lr(1000) - 0.1).abs() < 1e-12);
    let mut prev = f64::INFINITY;
    for step in 10..110 {
        assert!(s.lr(step) <= prev);
        prev = s.lr(step);
    }
}

#[test]
fn rng_is_deterministic_and_well_spread() {
    let a: Vec<u64> = (0..5)
        .map({
            let mut r = Rng::new(42);
            move |_| r.next_u64()
        })
        .collect();
    let b: Vec<u64> = (0..5)
        .map({
            let mut r = Rng::new(42);
            move |_| r.next_u64()
        })
        .collect();
    assert_eq!(a, b);
    let mut r = Rng::new(1);
    let xs: Vec<f64> = (0..100_000).map(|_| r.normal()).collect();
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / xs.len() as f64;
    assert!(
        mean.abs() < 0.02 && (var - 1.0).abs() < 0.02,
        "mean {mean} var {var}"
    );
    assert_ne!(
        Rng::new(1).fork(1).next_u64(),
        Rng::new(1).fork(2).next_u64()
    );
}

#[test]
fn same_seed_same_losses_bit_for_bit() {
    // A small training loop on a transformer block, twice: identical losses.
    let run = || -> Vec<f32> {
        let mut rng = Rng::new(3);
        let (inputs, f) =
            engine::gradcheck::cases::case("transformer_block_x2", [4, 2, 1], &mut rng).unwrap();
        let mut params: Vec<Tensor> = inputs[1..]
            .iter()
            .map(|p| p.to_dtype(DType::F32).requires_grad())
            .collect();
        let x = inputs[0].to_dtype(DType::F32);
        let mut opt = AdamW::new(AdamWConfig::default());
        let mut losses = vec![];
        for _ in 0..5 {
            let mut all = vec![x.clone()];
            all.extend(params.iter().cloned());
            let y = f(&all).unwrap();
            let loss = ops::mean_all(&ops::mul(&y, &y).unwrap()).unwrap();
            losses.push(loss.item().unwrap() as f32);
            let grads = loss.backward().unwrap();
            let mut refs: Vec<&mut Tensor> = params.iter_mut().collect();
            opt.step(&mut refs, &grads, 1e-2).unwrap();
        }
        losses
    };
    let (a, b) = (run(), run());
    assert_eq!(
        a.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|x| x.to_bits()).collect::<Vec<_>>()
    );
    assert!(a[4] < a[0], "the loss goes down: {a:?}");
}

/// The largest |a − b| over two same-length f32 tensors.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.shape(), b.shape());
    let (a, b) = (a.to_vec_f32(), b.to_vec_f32());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn linear_equals_matmul_plus_bias_with_gradients() {
    // f32 on the fast kernels, shapes big enough to thread (800 rows of 53: the bias rows are
    // written in parallel chunks of 64 rows, the last one short).
    let mut rng = Rng::new(3);
    let x = rng
        .normal_tensor(&[2, 400, 37], 0.0, 1.0, DType::F32)
        .requires_grad();
    let w = rng
        .normal_tensor(&[37, 53], 0.0, 0.2, DType::F32)
        .requires_grad();
    let b = rng
        .normal_tensor(&[53], 0.0, 1.0, DType::F32)
        .requires_grad();
    let dy = rng.normal_tensor(&[2, 400, 53], 0.0, 1.0, DType::F32);
    let fused = ops::linear(&x, &w, &b).unwrap();
    let composed = ops::add(&ops::matmul(&x, &w).unwrap(), &b).unwrap();
    assert!(max_abs_diff(&fused, &composed) < 1e-5);
    let loss = |y: &Tensor| ops::sum_all(&ops::mul(y, &dy).unwrap()).unwrap();
    let (gf, gc) = (
        loss(&fused).backward().unwrap(),
        loss(&composed).backward().unwrap(),
    );
    for p in [&x, &w, &b] {
        let (a, c) = (gf.get(p).unwrap(), gc.get(p).unwrap());
        let scale = c.to_vec_f32().iter().fold(1.0f32, |m, v| m.max(v.abs()));
        assert!(max_abs_diff(a, c) <= 1e-5 * scale, "{:?}", p.shape());
    }
}

#[test]
fn causal_self_attention_equals_split_heads_attention_merge() {
    let (bsz, t, heads, d) = (2, 19, 3, 8);
    let c = heads * d;
    let mut rng = Rng::new(4);
    let qkv = rng
        .normal_tensor(&[bsz, t, 3 * c], 0.0, 1.0, DType::F32)
        .requires_grad();
    let dy = rng.normal_tensor(&[bsz, t, c], 0.0, 1.0, DType::F32);
    let fused = ops::causal_self_attention(&qkv, heads).unwrap();
    let split = |i: usize| {
        let part = ops::slice(&qkv, -1, i * c, (i + 1) * c).unwrap();
        ops::transpose(&ops::reshape(&part, &[bsz, t, heads, d]).unwrap(), 1, 2).unwrap()
    };
    let y = ops::causal_attention(&split(0), &split(1), &split(2)).unwrap();
    let composed = ops::reshape(&ops::transpose(&y, 1, 2).unwrap(), &[bsz, t, c]).unwrap();
    // The same kernel on the same values: the same bits.
    assert_eq!(fused.to_vec_f32(), composed.to_vec_f32());
    let loss = |y: &Tensor| ops::sum_all(&ops::mul(y, &dy).unwrap()).unwrap();
    let gf = loss(&fused).backward().unwrap();
    let gc = loss(&composed).backward().unwrap();
    assert_eq!(
        gf.get(&qkv).unwrap().to_vec_f32(),
        gc.get(&qkv).unwrap().to_vec_f32()
    );
}

#[test]
fn causal_self_attention_rejects_a_width_not_split_by_the_heads() {
    let qkv = Tensor::zeros(&[1, 4, 3 * 10], DType::F32);
    let err = ops::causal_self_attention(&qkv, 4).unwrap_err().to_string();
    assert!(err.contains("causal_self_attention"), "{err}");
    let err = ops::linear(
        &qkv,
        &Tensor::zeros(&[7, 2], DType::F32),
        &Tensor::zeros(&[2], DType::F32),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("linear"), "{err}");
}

#[test]
fn add_layer_norm_gives_the_bits_of_add_then_layer_norm_forward_and_backward() {
    // f32, above the kernels' threading threshold (80 rows of 512: 40,960 elements).
    let mut rng = Rng::new(5);
    let shape = [2, 40, 512];
    let f32t = |rng: &mut Rng, s: &[usize]| rng.normal_tensor(s, 0.0, 1.0, DType::F32);
    let leaves = |rng: &mut Rng| {
        [
            f32t(rng, &shape).requires_grad(),
            f32t(rng, &shape).requires_grad(),
            f32t(rng, &[512]).requires_grad(),
            f32t(rng, &[512]).requires_grad(),
        ]
    };
    let (w_sum, w_norm) = (f32t(&mut rng, &shape), f32t(&mut rng, &shape));
    let fused = leaves(&mut rng.clone());
    let apart = leaves(&mut rng.clone());
    let outputs = |p: &[Tensor; 4], fuse: bool| {
        if fuse {
            ops::add_layer_norm(&p[0], &p[1], &p[2], &p[3], 1e-5).unwrap()
        } else {
            let s = ops::add(&p[0], &p[1]).unwrap();
            let y = ops::layer_norm(&s, &p[2], &p[3], 1e-5).unwrap();
            (s, y)
        }
    };
    let ((s1, y1), (s2, y2)) = (outputs(&fused, true), outputs(&apart, false));
    assert_eq!(s1.to_vec_f32(), s2.to_vec_f32());
    assert_eq!(y1.to_vec_f32(), y2.to_vec_f32());
    // Both outputs feed the loss, so the sum's gradient has two parts, as in a GPT block.
    let loss = |s: &Tensor, y: &Tensor| {
        let a = ops::mul(s, &w_sum).unwrap();
        let b = ops::mul(y, &w_norm).unwrap();
        ops::sum_all(&ops::add(&a, &b).unwrap()).unwrap()
    };
    let (g1, g2) = (
        loss(&s1, &y1).backward().unwrap(),
        loss(&s2, &y2).backward().unwrap(),
    );
    for (a, b) in fused.iter().zip(&apart) {
        assert_eq!(
            g1.get(a).unwrap().to_vec_f32(),
            g2.get(b).unwrap().to_vec_f32()
        );
    }
}
