//! The crate's error type, and [`Context`] to say which file or step an error is about.

/// Everything that can go wrong in a pipeline step. Each message names the file, model or setting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of an underlying step with what was being done when it happened.
    #[error("{context}: {source}")]
    Context {
        /// What was being done (names the file or the step).
        context: String,
        /// The underlying error.
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// A setting or an input file is unusable; the message says which and why.
    #[error("{0}")]
    Invalid(String),
    /// Reading a checkpoint or a tokenizer failed.
    #[error(transparent)]
    Format(#[from] finercut_format::Error),
    /// Building or running the model failed.
    #[error(transparent)]
    Model(#[from] finercut_model::Error),
    /// A search failed.
    #[error(transparent)]
    Search(#[from] finercut_search::Error),
    /// An evaluation failed.
    #[error(transparent)]
    Eval(#[from] finercut_eval::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds what was being done to an error, as `anyhow::Context` does, into an [`Error::Context`].
pub trait Context<T> {
    /// Wraps the error with a message built only on failure.
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
    /// Wraps the error with a fixed message.
    fn context(self, context: impl Into<String>) -> Result<T>;
}

impl<T, E> Context<T> for std::result::Result<T, E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| Error::Context {
            context: f().into(),
            source: Box::new(e),
        })
    }

    fn context(self, context: impl Into<String>) -> Result<T> {
        self.with_context(|| context)
    }
}

/// Returns early with an [`Error::Invalid`] built like `format!`.
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::Invalid(format!($($arg)*)))
    };
}
pub(crate) use bail;

/// An [`Error::Invalid`] built like `format!`.
macro_rules! invalid {
    ($($arg:tt)*) => {
        $crate::Error::Invalid(format!($($arg)*))
    };
}
pub(crate) use invalid;
