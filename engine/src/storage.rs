//! Element types and the flat buffers that hold a tensor's values.

use kernels::Float;

/// The element type of a tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DType {
    /// 32-bit float: training and inference.
    F32,
    /// 64-bit float: gradient checks and references.
    F64,
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
        })
    }
}

/// A contiguous, row-major buffer of one dtype on the CPU.
#[derive(Clone, Debug, PartialEq)]
pub enum Storage {
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit floats.
    F64(Vec<f64>),
}

impl Storage {
    /// The dtype of the elements.
    pub fn dtype(&self) -> DType {
        match self {
            Storage::F32(_) => DType::F32,
            Storage::F64(_) => DType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Storage::F32(v) => v.len(),
            Storage::F64(v) => v.len(),
        }
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A buffer of `len` zeros.
    pub fn zeros(dtype: DType, len: usize) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(vec![0.0; len]),
            DType::F64 => Storage::F64(vec![0.0; len]),
        }
    }

    /// The values converted to f64.
    pub fn to_vec_f64(&self) -> Vec<f64> {
        match self {
            Storage::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Storage::F64(v) => v.clone(),
        }
    }

    /// The values converted to f32.
    pub fn to_vec_f32(&self) -> Vec<f32> {
        match self {
            Storage::F32(v) => v.clone(),
            Storage::F64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// The same values in another dtype.
    pub fn to_dtype(&self, dtype: DType) -> Storage {
        match dtype {
            DType::F32 => Storage::F32(self.to_vec_f32()),
            DType::F64 => Storage::F64(self.to_vec_f64()),
        }
    }
}

/// A Rust element type that a [`Storage`] can hold: lets generic code get at the slice.
pub trait Element: Float {
    /// The matching dtype.
    const DTYPE: DType;
    /// The slice if `s` holds this type.
    fn slice(s: &Storage) -> Option<&[Self]>;
    /// Wraps a vector into a storage.
    fn wrap(v: Vec<Self>) -> Storage;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn slice(s: &Storage) -> Option<&[f32]> {
        match s {
            Storage::F32(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<f32>) -> Storage {
        Storage::F32(v)
    }
}

impl Element for f64 {
    const DTYPE: DType = DType::F64;
    fn slice(s: &Storage) -> Option<&[f64]> {
        match s {
            Storage::F64(v) => Some(v),
            _ => None,
        }
    }
    fn wrap(v: Vec<f64>) -> Storage {
        Storage::F64(v)
    }
}

/// Applies generic code to a storage of either dtype and wraps the resulting vector back:
/// `map_storage!(s, v => v.iter().map(|&x| x.exp()).collect())`. The body is compiled once per
/// dtype; `v` is the typed slice.
#[macro_export]
macro_rules! map_storage {
    ($s:expr, $v:ident => $body:expr) => {
        match $s {
            $crate::Storage::F32($v) => $crate::Storage::F32($body),
            $crate::Storage::F64($v) => $crate::Storage::F64($body),
        }
    };
}

/// Like [`map_storage!`] for two storages of the same dtype; a mismatch returns
/// `Err(Error::DType)` naming `op`.
#[macro_export]
macro_rules! zip_storage {
    ($op:expr, $a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {
        match ($a, $b) {
            ($crate::Storage::F32($x), $crate::Storage::F32($y)) => Ok($crate::Storage::F32($body)),
            ($crate::Storage::F64($x), $crate::Storage::F64($y)) => Ok($crate::Storage::F64($body)),
            (a, b) => Err($crate::Error::DType {
                op: $op,
                lhs: a.dtype(),
                rhs: b.dtype(),
            }),
        }
    };
}
