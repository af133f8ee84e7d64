//! The crate's error type.
//!
//! Every variant names what it is about: the file, the tensor, the setting or the metadata key.
//! Paths are attached at the I/O boundary, as candle's `with_path` does.

use std::path::{Path, PathBuf};

/// Errors of `finercut-format`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system error while reading or writing `path`.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A file that `cargo xtask fetch` downloads is absent (see [`crate::cache::check_downloaded`]).
    #[error(
        "{} not found: run `cargo xtask fetch` to download it (or set {}=1 to skip the tests that need it)",
        path.display(),
        crate::cache::SKIP_DOWNLOADED_TESTS
    )]
    MissingDownload {
        /// The file or directory that should be there.
        path: PathBuf,
    },

    /// A file whose contents do not follow its format (truncated, inconsistent, malformed).
    #[error("{}: {msg}", path.display())]
    Malformed {
        /// The file concerned.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },

    /// A tensor whose description or data is inconsistent or cannot be used.
    #[error("{}: tensor `{tensor}`: {msg}", path.display())]
    BadTensor {
        /// The file that holds the tensor.
        path: PathBuf,
        /// The tensor's name.
        tensor: String,
        /// What is wrong with it.
        msg: String,
    },

    /// A tensor asked for by name that the source does not hold.
    #[error("tensor `{name}` not found in {origin}")]
    MissingTensor {
        /// The (Hugging Face) tensor name asked for.
        name: String,
        /// The file or directory searched.
        origin: String,
    },

    /// A model configuration that is missing a setting, has an invalid value or is inconsistent.
    #[error("{origin}: {msg}")]
    Config {
        /// Where the configuration came from (a config.json path or a GGUF file).
        origin: String,
        /// What is wrong with it.
        msg: String,
    },

    /// A tokenizer that cannot be built, loaded, saved or run.
    #[error("tokenizer from {origin}: {msg}")]
    Tokenizer {
        /// Where the tokenizer came from.
        origin: String,
        /// What went wrong.
        msg: String,
    },

    /// A valid input that uses a feature this crate does not implement.
    #[error("{origin}: unsupported: {msg}")]
    Unsupported {
        /// The file or setting concerned.
        origin: String,
        /// The unsupported feature.
        msg: String,
    },
}

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.as_ref().to_path_buf(),
            source,
        }
    }

    /// An [`Error::Malformed`] for `path`.
    pub fn malformed(path: impl AsRef<Path>, msg: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.as_ref().to_path_buf(),
            msg: msg.into(),
        }
    }

    /// An [`Error::BadTensor`] for `tensor` in `path`.
    pub fn bad_tensor(path: impl AsRef<Path>, tensor: &str, msg: impl Into<String>) -> Self {
        Error::BadTensor {
            path: path.as_ref().to_path_buf(),
            tensor: tensor.to_string(),
            msg: msg.into(),
        }
    }

    /// An [`Error::Config`] for `origin`.
    pub fn config(origin: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config {
            origin: origin.into(),
            msg: msg.into(),
        }
    }

    /// An [`Error::Tokenizer`] for `origin`.
    pub fn tokenizer(origin: impl Into<String>, msg: impl std::fmt::Display) -> Self {
        Error::Tokenizer {
            origin: origin.into(),
            msg: msg.to_string(),
        }
    }

    /// An [`Error::Unsupported`] for `origin`.
    pub fn unsupported(origin: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Unsupported {
            origin: origin.into(),
            msg: msg.into(),
        }
    }
}

/// Attaches a path to `std::io::Result`s.
pub(crate) trait IoResultExt<T> {
    /// Turns the error into an [`Error::Io`] naming `path`.
    fn with_path(self, path: &Path) -> Result<T>;
}

impl<T> IoResultExt<T> for std::io::Result<T> {
    fn with_path(self, path: &Path) -> Result<T> {
        self.map_err(|e| Error::io(path, e))
    }
}
