//! The crate's error type.

/// Errors of slicing a model and of saving the result.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The model's architecture cannot be sliced (post-sublayer norms, a mixture of experts, an
    /// already sliced or pruned checkpoint).
    #[error("SliceGPT cannot slice this model: {0}")]
    Unsupported(String),
    /// Bad settings or calibration data: a target width out of range, an empty calibration set.
    #[error("invalid slicing input: {0}")]
    Input(String),
    /// The eigendecomposition of a covariance matrix failed (non-finite signals, no convergence).
    #[error("eigendecomposition of the covariance at residual point {point} failed: {reason}")]
    Eigen {
        /// The residual point (`0..=2L`) whose covariance it was.
        point: usize,
        /// What went wrong.
        reason: String,
    },
    /// Running the model failed.
    #[error(transparent)]
    Model(#[from] finercut_model::Error),
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] finercut_tensor::Error),
    /// Reading or writing a checkpoint failed.
    #[error(transparent)]
    Format(#[from] finercut_format::Error),
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
