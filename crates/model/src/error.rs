//! The crate's error type.

/// Errors of model loading and evaluation.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weight the architecture needs is not in the checkpoint.
    #[error("missing weight `{name}`")]
    MissingWeight {
        /// Full Hugging Face name.
        name: String,
    },
    /// A weight has the wrong shape.
    #[error("weight `{name}` has shape {actual:?}, expected {expected:?}")]
    WeightShape {
        /// Full Hugging Face name.
        name: String,
        /// Shape the configuration implies.
        expected: Vec<usize>,
        /// Shape in the checkpoint.
        actual: Vec<usize>,
    },
    /// The configuration describes a model this crate cannot run (yet).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// The configuration is inconsistent.
    #[error("invalid model config: {0}")]
    Config(String),
    /// Bad input: ragged or empty token batches, unknown token ids, bad shapes.
    #[error("invalid input: {0}")]
    Input(String),
    /// A sequence would grow past the model's maximum context.
    #[error("{needed} tokens exceed the model's maximum context of {max}")]
    Context {
        /// Tokens the sequence would hold.
        needed: usize,
        /// `max_position_embeddings` of the configuration.
        max: usize,
    },
    /// A sublayer index (in a plan, a candidate or `from`) is out of range.
    #[error("sublayer index {index} out of range: the model has {count} sublayers")]
    SublayerIndex {
        /// The offending index.
        index: usize,
        /// Number of sublayers (2L).
        count: usize,
    },
    /// A plan keeps a sublayer that the checkpoint does not contain (a pruned export).
    #[error("sublayer {0} is not in this pruned checkpoint; every plan must remove it")]
    Absent(crate::SublayerId),
    /// A part of the model ([`crate::LoadOptions::sublayers`]) was asked for what another part
    /// holds.
    #[error("{what} is not loaded in this part of the model (sublayers {}..{})", part.start, part.end)]
    NotLoaded {
        /// What was asked for: the embeddings, a sublayer, the LM head.
        what: String,
        /// The sublayers this part holds.
        part: std::ops::Range<usize>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Tensor(#[from] finercut_tensor::Error),
    /// Reading a weight failed.
    #[error(transparent)]
    Format(#[from] finercut_format::Error),
    /// The sink given to [`crate::Model::stream_candidates`] returned an error.
    #[error("stream sink failed: {0}")]
    Sink(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// Wraps an error raised inside a stream sink.
    pub fn sink(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Error {
        Error::Sink(e.into())
    }
}

/// Result with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
