//! Typed errors that cross every front door (CLI exit messages, JS exceptions).

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O error: {0}")]
    Io(String),
    #[error("corrupt model file: {0}")]
    Corrupt(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The model needs more than the GPU adapter allows.
    #[error("model exceeds the GPU's limits: {0}")]
    Limits(String),
    #[error("no usable GPU: {0}")]
    NoGpu(String),
    #[error("the GPU device was lost: {0}")]
    DeviceLost(String),
    #[error("GPU error: {0}")]
    Gpu(String),
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("chat template error: {0}")]
    Template(String),
    #[error("context window full: {0}")]
    ContextFull(String),
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("cancelled")]
    Cancelled,
    /// Internal to the GGUF reader: the header continues past the bytes read so far.
    #[error("internal: header needs more bytes")]
    NeedMore,
}

impl Error {
    /// Stable machine-readable code, used by the wasm API and the extension's UI.
    pub fn code(&self) -> &'static str {
        match self {
            Error::Io(_) => "io",
            Error::Corrupt(_) => "corrupt_model",
            Error::Unsupported(_) => "unsupported",
            Error::Limits(_) => "gpu_limits",
            Error::NoGpu(_) => "no_gpu",
            Error::DeviceLost(_) => "device_lost",
            Error::Gpu(_) => "gpu",
            Error::Tokenizer(_) => "tokenizer",
            Error::Template(_) => "template",
            Error::ContextFull(_) => "context_full",
            Error::Invalid(_) => "invalid_argument",
            Error::Cancelled => "cancelled",
            Error::NeedMore => "internal",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
