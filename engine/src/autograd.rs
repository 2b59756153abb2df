//! Reverse-mode automatic differentiation.
//!
//! Every op that autograd tracks records a `Node`: its inputs and a backward closure.
//! [`Tensor::backward`] sorts the graph topologically from the loss, then walks it from the
//! loss back to the leaves, asking each node for its inputs' gradients and summing the
//! gradients of tensors used more than once. The backward closures themselves run with
//! gradients off, so they can be written with the same ops as the forward.

use std::cell::Cell;
use std::collections::HashMap;

use crate::tensor::BackwardFn;
use crate::{Error, Result, Tensor};

pub(crate) struct Node {
    pub(crate) op: &'static str,
    pub(crate) inputs: Vec<Tensor>,
    pub(crate) backward: Box<BackwardFn>,
}

thread_local! {
    static GRAD_ENABLED: Cell<bool> = const { Cell::new(true) };
}

/// Whether ops on this thread record the graph (false inside [`no_grad`]).
pub fn is_grad_enabled() -> bool {
    GRAD_ENABLED.with(|g| g.get())
}

/// Runs `f` with gradient tracking off on this thread (inference, rollouts, optimizer steps),
/// restoring the previous state afterwards, even if `f` panics.
pub fn no_grad<T>(f: impl FnOnce() -> T) -> T {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            GRAD_ENABLED.with(|g| g.set(self.0));
        }
    }
    let _restore = Restore(GRAD_ENABLED.with(|g| g.replace(false)));
    f()
}

/// The gradients from one backward pass, keyed by tensor id: one for every leaf that
/// requires a gradient and that the loss depends on.
#[derive(Default, Debug)]
pub struct Gradients {
    map: HashMap<usize, Tensor>,
}

impl Gradients {
    /// The gradient of `t`, if the loss depends on it.
    pub fn get(&self, t: &Tensor) -> Option<&Tensor> {
        self.map.get(&t.id())
    }

    /// The gradient for tensor id `id`.
    pub fn get_id(&self, id: usize) -> Option<&Tensor> {
        self.map.get(&id)
    }

    /// Removes and returns the gradient of `t`.
    pub fn remove(&mut self, t: &Tensor) -> Option<Tensor> {
        self.map.remove(&t.id())
    }

    /// Inserts or replaces the gradient for `t` (e.g. after clipping).
    pub fn insert(&mut self, t: &Tensor, grad: Tensor) {
        self.map.insert(t.id(), grad);
    }

    /// Number of gradients held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no gradient is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Adds `other`'s gradients into these (gradient accumulation over micro-batches).
    pub fn accumulate(&mut self, other: Gradients) -> Result<()> {
        for (id, g) in other.map {
            let sum = match self.map.remove(&id) {
                Some(prev) => no_grad(|| crate::ops::add(&prev, &g))?,
                None => g,
            };
            self.map.insert(id, sum);
        }
        Ok(())
    }
}

impl Tensor {
    /// Computes the gradient of this scalar with respect to every leaf that requires one.
    ///
    /// Errors if the tensor has more than one element ([`Error::NotScalar`]).
    pub fn backward(&self) -> Result<Gradients> {
        if self.numel() != 1 {
            return Err(Error::NotScalar(self.shape().to_vec()));
        }
        let seed = Tensor::ones(self.shape(), self.dtype());
        self.backward_with(seed)
    }

    /// Backward from a non-scalar output with an explicit upstream gradient `grad`
    /// (a vector–Jacobian product), which must have this tensor's shape and dtype.
    pub fn backward_with(&self, grad: Tensor) -> Result<Gradients> {
        if grad.shape() != self.shape() || grad.dtype() != self.dtype() {
            return Err(Error::Shape {
                op: "backward",
                msg: format!(
                    "upstream gradient {:?} {} does not match output {:?} {}",
                    grad.shape(),
                    grad.dtype(),
                    self.shape(),
                    self.dtype()
                ),
            });
        }
        let order = topological_order(self);
        let mut pending: HashMap<usize, Tensor> = HashMap::new();
        pending.insert(self.id(), grad);
        let mut leaves = Gradients::default();
        no_grad(|| {
            for t in order.iter().rev() {
                let Some(g) = pending.remove(&t.id()) else {
                    continue;
                };
                let Some(node) = &t.0.node else {
                    leaves.map.insert(t.id(), g);
                    continue;
                };
                let input_grads = (node.backward)(t, &g)?;
                for (input, ig) in node.inputs.iter().zip(input_grads) {
                    let Some(ig) = ig else { continue };
                    if !input.requires_grad_flag() {
                        continue;
                    }
                    if ig.shape() != input.shape() {
                        return Err(Error::Shape {
                            op: node.op,
                            msg: format!(
                                "backward produced a gradient of shape {:?} for an input of shape {:?}",
                                ig.shape(),
                                input.shape()
                            ),
                        });
                    }
                    let sum = match pending.remove(&input.id()) {
                        Some(prev) => crate::ops::add(&prev, &ig)?,
                        None => ig,
                    };
                    pending.insert(input.id(), sum);
                }
            }
            Ok(())
        })?;
        Ok(leaves)
    }
}

/// Tensors reachable from `root` through tracked inputs, each after all of its inputs.
/// Iterative (no recursion), so deep graphs cannot overflow the stack.
fn topological_order(root: &Tensor) -> Vec<Tensor> {
    let mut order = Vec::new();
    let mut visited = std::collections::HashSet::new();
    // (tensor, whether its inputs have been pushed already)
    let mut stack = vec![(root.clone(), false)];
    while let Some((t, expanded)) = stack.pop() {
        if expanded {
            order.push(t);
            continue;
        }
        if !visited.insert(t.id()) {
            continue;
        }
        stack.push((t.clone(), true));
        if let Some(node) = &t.0.node {
            for input in &node.inputs {
                if input.requires_grad_flag() && !visited.contains(&input.id()) {
                    stack.push((input.clone(), false));
                }
            }
        }
    }
    order
}
