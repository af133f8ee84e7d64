//! The crate's error type.

/// Everything that can go wrong while reproducing a table or a figure. Each message names the
/// model, the file or the setting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Loading a model, running a search or an evaluation, or writing a result failed.
    #[error(transparent)]
    Pipeline(#[from] finercut_pipeline::Error),
    /// A search result could not give the plan asked for.
    #[error(transparent)]
    Search(#[from] finercut_search::Error),
    /// An evaluation failed.
    #[error(transparent)]
    Eval(#[from] finercut_eval::Error),
    /// Reading or hashing a checkpoint failed.
    #[error(transparent)]
    Format(#[from] finercut_format::Error),
    /// The model failed.
    #[error(transparent)]
    Model(#[from] finercut_model::Error),
    /// SliceGPT failed.
    #[error(transparent)]
    Slice(#[from] finercut_slice::Error),
    /// The ranks sharing the work could not exchange it, or another rank failed.
    #[error(transparent)]
    Dist(#[from] finercut_dist::Error),
    /// This rank failed while others shared its work (the others end with [`Error::Dist`]).
    #[error("rank {rank} of {size}: {source}")]
    OnRank {
        /// This rank.
        rank: usize,
        /// The number of ranks.
        size: usize,
        /// Its error.
        source: Box<Error>,
    },
    /// A figure could not be drawn.
    #[error("cannot draw the figure: {0}")]
    Draw(String),
    /// A setting, a model name or the data of a figure is unusable; the message says which and why.
    #[error("{0}")]
    Invalid(String),
}

impl<E: std::error::Error + Send + Sync> From<plotters::drawing::DrawingAreaErrorKind<E>>
    for Error
{
    fn from(e: plotters::drawing::DrawingAreaErrorKind<E>) -> Self {
        Error::Draw(e.to_string())
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Returns early with an [`Error::Invalid`] built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;
