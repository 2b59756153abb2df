//! The engine's typed error. Every user-reachable failure (a shape that does not fit, an axis
//! or index out of range, a dtype mismatch, a device that is not there) is an `Err` whose
//! message names the op and the shapes; the engine does not panic on user input.

/// An engine error.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum Error {
    /// Shapes that do not fit the op, e.g. `matmul: [2, 3] x [4, 5]: inner dims 3 and 4 differ`.
    #[error("{op}: {msg}")]
    Shape {
        /// The op.
        op: &'static str,
        /// What does not fit.
        msg: String,
    },
    /// Two operands of different dtypes.
    #[error("{op}: dtype mismatch: {lhs} and {rhs}")]
    DType {
        /// The op.
        op: &'static str,
        /// The first operand's dtype.
        lhs: crate::DType,
        /// The other operand's dtype.
        rhs: crate::DType,
    },
    /// An axis or an index outside its range.
    #[error("{op}: {msg}")]
    Index {
        /// The op.
        op: &'static str,
        /// Which axis or index, and its range.
        msg: String,
    },
    /// `backward()` called on a tensor that is not a scalar.
    #[error("backward: the output must be a scalar (one element), got shape {0:?}")]
    NotScalar(Vec<usize>),
    /// A device that is not available in this build or on this machine.
    #[error("device: {0}")]
    Device(String),
    /// Any other invalid argument (a probability outside [0, 1), a negative length, ...).
    #[error("{op}: {msg}")]
    Invalid {
        /// The op.
        op: &'static str,
        /// What is wrong with the argument.
        msg: String,
    },
}

/// The engine's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn shape_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Shape {
        op,
        msg: msg.into(),
    })
}

pub(crate) fn index_err<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Index {
        op,
        msg: msg.into(),
    })
}

pub(crate) fn invalid<T>(op: &'static str, msg: impl Into<String>) -> Result<T> {
    Err(Error::Invalid {
        op,
        msg: msg.into(),
    })
}
