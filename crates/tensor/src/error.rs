//! The crate's error type: every variant names the operation and the shapes, dtypes or devices involved.

use crate::{DType, Device};

/// Errors of tensor construction and operations.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shapes given to an operation do not fit together.
    #[error("{op}: shape mismatch: {detail}")]
    ShapeMismatch {
        /// Operation name.
        op: &'static str,
        /// Which shapes, and what was expected.
        detail: String,
    },
    /// A buffer's length does not match the element count of the requested shape.
    #[error("{op}: shape {shape:?} needs {expected} elements, got {got}")]
    ElementCount {
        /// Operation name.
        op: &'static str,
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape needs.
        expected: usize,
        /// Elements available.
        got: usize,
    },
    /// An operation got a tensor of a dtype it does not handle.
    #[error("{op}: expected dtype {expected}, got {got}")]
    DType {
        /// Operation name.
        op: &'static str,
        /// The dtype the operation needs.
        expected: DType,
        /// The dtype it got.
        got: DType,
    },
    /// Two operands live on different devices.
    #[error("{op}: device mismatch: {lhs:?} vs {rhs:?}")]
    DeviceMismatch {
        /// Operation name.
        op: &'static str,
        /// Device of the first operand.
        lhs: Device,
        /// Device of the second operand.
        rhs: Device,
    },
    /// A byte range lies outside its owner.
    #[error("{op}: bytes {start}..{end} out of range of a {available}-byte buffer")]
    ByteRange {
        /// Operation name.
        op: &'static str,
        /// First byte.
        start: usize,
        /// One past the last byte.
        end: usize,
        /// Bytes in the owner.
        available: usize,
    },
    /// An index (token id, row, position) is out of range.
    #[error("{op}: index {index} out of range 0..{size}")]
    Index {
        /// Operation name.
        op: &'static str,
        /// The offending index.
        index: usize,
        /// The exclusive bound.
        size: usize,
    },
    /// A dimension exceeds what the backend can address (e.g. a 32-bit BLAS integer).
    #[error("{op}: dimension {dim} too large for the backend")]
    TooLarge {
        /// Operation name.
        op: &'static str,
        /// The dimension.
        dim: usize,
    },
    /// A device cannot be used: no backend for it in this build, no driver, or no such card.
    #[error("{device} is not available: {detail}")]
    Unavailable {
        /// The device asked for (`cuda:0`).
        device: String,
        /// Why it is not available.
        detail: String,
    },
    /// A CUDA driver, cuBLAS or NVRTC call failed.
    #[error("{op}: CUDA error: {detail}")]
    Cuda {
        /// Operation name.
        op: &'static str,
        /// The library's message.
        detail: String,
    },
    /// A kernel launch would exceed one of CUDA's limits (grid or block size, shared memory); the
    /// call is refused before anything is launched.
    #[error("{op}: {what} {value} exceeds the CUDA limit of {limit}")]
    LaunchLimit {
        /// Operation name.
        op: &'static str,
        /// Which limit (e.g. `grid z (blocks)`: the sequences of an attention call).
        what: &'static str,
        /// The value the call needs.
        value: usize,
        /// CUDA's limit.
        limit: usize,
    },
    /// The card has no memory left for an allocation.
    #[error(
        "{op}: out of memory on {device} allocating {bytes} bytes ({elems} elements): {detail}"
    )]
    OutOfMemory {
        /// Operation name.
        op: &'static str,
        /// The card (`cuda:0`).
        device: String,
        /// Size of the allocation that failed.
        bytes: usize,
        /// Elements of the allocation.
        elems: usize,
        /// The driver's message.
        detail: String,
    },
    /// Host access (a slice) to a tensor that lives on a device.
    #[error(
        "{op}: the tensor is on {device}; copy it to the host first (`to_device(&Device::Cpu)`)"
    )]
    NotOnHost {
        /// Operation name.
        op: &'static str,
        /// Where the tensor is.
        device: Device,
    },
    /// A parameter of an operation is invalid (e.g. a head count that does not divide).
    #[error("{op}: {detail}")]
    Invalid {
        /// Operation name.
        op: &'static str,
        /// What is wrong.
        detail: String,
    },
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
