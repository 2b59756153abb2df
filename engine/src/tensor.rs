//! [`Tensor`]: a cheap handle (an `Arc`) to an immutable value — shape, storage — and the op
//! that made it, which is what `backward()` walks.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::autograd::{is_grad_enabled, Node};
use crate::error::{invalid, shape_err};
use crate::{DType, Device, Element, Error, Result, Storage};

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

fn next_id() -> usize {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// The backward function of an op: given the op's output and the gradient flowing into it,
/// the gradient of each input (`None` for inputs that need none).
pub type BackwardFn = dyn Fn(&Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync;

pub(crate) struct Inner {
    pub(crate) id: usize,
    pub(crate) shape: Vec<usize>,
    pub(crate) storage: Arc<Storage>,
    pub(crate) requires_grad: bool,
    pub(crate) node: Option<Node>,
}

/// Dropping the last handle to a graph would, left to the compiler, drop each op's inputs
/// inside the drop of its output: a few stack frames per op, so a long enough chain of ops
/// overflows the stack (a 20,000-op chain did on aarch64). Instead, the inputs that die with this
/// tensor are taken out of their nodes and dropped one at a time from a list: constant stack
/// depth however deep the graph.
impl Drop for Inner {
    fn drop(&mut self) {
        let Some(node) = self.node.take() else {
            return;
        };
        let mut dying = vec![node];
        while let Some(node) = dying.pop() {
            // The backward closure first: it may hold clones of the inputs, and an input is
            // only ours to take apart once no one else holds it.
            drop(node.backward);
            for input in node.inputs {
                if let Some(mut inner) = Arc::into_inner(input.0) {
                    dying.extend(inner.node.take());
                } // `inner`, now without a node, drops here in constant stack.
            }
        }
    }
}

/// An n-dimensional array of f32 or f64, contiguous and row-major, on a [`Device`].
///
/// Cloning a `Tensor` clones a handle, not the data. Values are immutable, except through
/// [`Tensor::update`], which the optimizer uses to change a parameter in place.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Tensor(id={}, shape={:?}, dtype={}{})",
            self.id(),
            self.shape(),
            self.dtype(),
            self.op_name()
                .map(|n| format!(", op={n}"))
                .unwrap_or_default()
        )
    }
}

impl Tensor {
    // ---- construction -------------------------------------------------------------------

    /// A tensor over `storage` with `shape`; errors if the element counts differ.
    pub fn from_storage(storage: Storage, shape: &[usize]) -> Result<Tensor> {
        let n: usize = shape.iter().product();
        if n != storage.len() {
            return shape_err(
                "from_storage",
                format!(
                    "shape {shape:?} has {n} elements but the data has {}",
                    storage.len()
                ),
            );
        }
        Ok(Tensor::leaf(storage, shape.to_vec()))
    }

    /// A tensor from a vector of f32 or f64 values.
    pub fn from_vec<F: Element>(data: Vec<F>, shape: &[usize]) -> Result<Tensor> {
        Tensor::from_storage(F::wrap(data), shape)
    }

    /// A 0-dimensional tensor holding one value.
    pub fn scalar<F: Element>(value: F) -> Tensor {
        Tensor::leaf(F::wrap(vec![value]), vec![])
    }

    /// All zeros.
    pub fn zeros(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::leaf(
            Storage::zeros(dtype, shape.iter().product()),
            shape.to_vec(),
        )
    }

    /// All `value`.
    pub fn full(shape: &[usize], value: f64, dtype: DType) -> Tensor {
        let n = shape.iter().product();
        let storage = match dtype {
            DType::F32 => Storage::F32(vec![value as f32; n]),
            DType::F64 => Storage::F64(vec![value; n]),
        };
        Tensor::leaf(storage, shape.to_vec())
    }

    /// All ones.
    pub fn ones(shape: &[usize], dtype: DType) -> Tensor {
        Tensor::full(shape, 1.0, dtype)
    }

    pub(crate) fn leaf(storage: Storage, shape: Vec<usize>) -> Tensor {
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape,
            storage: Arc::new(storage),
            requires_grad: false,
            node: None,
        }))
    }

    /// The result of an op: `storage` with `shape`, remembering `inputs` and how to get their
    /// gradients, unless gradients are off (a [`no_grad`](crate::no_grad) scope) or no input
    /// needs one.
    pub(crate) fn from_op(
        storage: Storage,
        shape: Vec<usize>,
        op: &'static str,
        inputs: &[&Tensor],
        backward: impl Fn(&Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        debug_assert_eq!(storage.len(), shape.iter().product::<usize>(), "{op}");
        let track = is_grad_enabled() && inputs.iter().any(|t| t.requires_grad_flag());
        Tensor::from_op_shared(Arc::new(storage), shape, op, inputs, track, backward)
    }

    pub(crate) fn from_op_shared(
        storage: Arc<Storage>,
        shape: Vec<usize>,
        op: &'static str,
        inputs: &[&Tensor],
        track: bool,
        backward: impl Fn(&Tensor, &Tensor) -> Result<Vec<Option<Tensor>>> + Send + Sync + 'static,
    ) -> Tensor {
        let node = track.then(|| Node {
            op,
            inputs: inputs.iter().map(|&t| t.clone()).collect(),
            backward: Box::new(backward),
        });
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape,
            storage,
            requires_grad: track,
            node,
        }))
    }

    /// The same values as a leaf that gradients are computed for (a parameter or an input).
    pub fn requires_grad(self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: self.0.id,
            shape: self.0.shape.clone(),
            storage: self.0.storage.clone(),
            requires_grad: true,
            node: None,
        }))
    }

    /// The same values, cut from the graph: a new leaf that needs no gradient.
    pub fn detach(&self) -> Tensor {
        Tensor(Arc::new(Inner {
            id: next_id(),
            shape: self.0.shape.clone(),
            storage: self.0.storage.clone(),
            requires_grad: false,
            node: None,
        }))
    }

    // ---- accessors ----------------------------------------------------------------------

    /// A number unique to this tensor (kept by [`Tensor::update`]); gradients are keyed by it.
    pub fn id(&self) -> usize {
        self.0.id
    }

    /// The dimensions.
    pub fn shape(&self) -> &[usize] {
        &self.0.shape
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.0.storage.len()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.0.storage.dtype()
    }

    /// The device the values live on.
    pub fn device(&self) -> Device {
        Device::Cpu
    }

    /// The underlying buffer.
    pub fn storage(&self) -> &Storage {
        &self.0.storage
    }

    /// Whether gradients flow to or through this tensor.
    pub fn requires_grad_flag(&self) -> bool {
        self.0.requires_grad
    }

    /// Whether this tensor is a leaf (made directly, not by an op that autograd tracks).
    pub fn is_leaf(&self) -> bool {
        self.0.node.is_none()
    }

    /// The name of the op that made this tensor, if autograd tracks it.
    pub fn op_name(&self) -> Option<&'static str> {
        self.0.node.as_ref().map(|n| n.op)
    }

    /// The typed slice of values; errors if the dtype is not `F`.
    pub fn data<F: Element>(&self) -> Result<&[F]> {
        F::slice(&self.0.storage).ok_or(Error::DType {
            op: "data",
            lhs: self.dtype(),
            rhs: F::DTYPE,
        })
    }

    /// The values as f32 (converted if needed).
    pub fn to_vec_f32(&self) -> Vec<f32> {
        self.0.storage.to_vec_f32()
    }

    /// The values as f64 (converted if needed).
    pub fn to_vec_f64(&self) -> Vec<f64> {
        self.0.storage.to_vec_f64()
    }

    /// The single value of a one-element tensor.
    pub fn item(&self) -> Result<f64> {
        if self.numel() != 1 {
            return shape_err(
                "item",
                format!("expected one element, got shape {:?}", self.shape()),
            );
        }
        Ok(self.to_vec_f64()[0])
    }

    /// The same values in `dtype` (differentiable: the gradient is cast back).
    pub fn to_dtype(&self, dtype: DType) -> Tensor {
        if dtype == self.dtype() {
            return self.clone();
        }
        let from = self.dtype();
        Tensor::from_op(
            self.0.storage.to_dtype(dtype),
            self.shape().to_vec(),
            "to_dtype",
            &[self],
            move |_, g| Ok(vec![Some(g.to_dtype(from))]),
        )
    }

    /// Moves the values to `device`. Tensors live on the CPU in every build (the engine's ops
    /// are CPU kernels), so a GPU is an error: the GPU path is `model::cuda_gpt`, which copies
    /// a model's parameters itself.
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        match device {
            Device::Cpu => Ok(self.clone()),
            #[cfg(feature = "cuda")]
            Device::Cuda(_) => Err(Error::Device(format!(
                "tensors live on the CPU; {device} runs only the GPU GPT (model::cuda_gpt)"
            ))),
        }
    }

    /// Changes the values in place, keeping id and shape — how an optimizer updates a
    /// parameter. The closure gets the storage; it must keep its length and dtype. If another
    /// handle still shares the buffer (a live graph), the buffer is copied first, so values
    /// other handles see never change.
    pub fn update(&mut self, f: impl FnOnce(&mut Storage)) -> Result<()> {
        let (dtype, len) = (self.dtype(), self.numel());
        let inner = match Arc::get_mut(&mut self.0) {
            Some(inner) => inner,
            None => {
                *self = Tensor(Arc::new(Inner {
                    id: self.0.id,
                    shape: self.0.shape.clone(),
                    storage: self.0.storage.clone(),
                    requires_grad: self.0.requires_grad,
                    node: None,
                }));
                Arc::get_mut(&mut self.0).expect("fresh Arc is unique")
            }
        };
        let storage = Arc::make_mut(&mut inner.storage);
        f(storage);
        if storage.dtype() != dtype || storage.len() != len {
            return invalid(
                "update",
                "the closure changed the dtype or length of the storage",
            );
        }
        Ok(())
    }
}
