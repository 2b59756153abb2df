//! ferrochat's model crate: the GPT-2 architecture on the engine ([`gpt`]), its configuration
//! ([`config`]), HF-compatible checkpoints ([`checkpoint`]), KV-cache inference and sampling
//! ([`generate`]), training on next-token prediction ([`train`]), and the byte-level BPE
//! [`tokenizer`] (train, save/load in GPT-2's `vocab.json` + `merges.txt` format,
//! encode/decode). With the `cuda` feature, [`cuda_gpt`] trains the same GPT on a GPU.

pub mod checkpoint;
pub mod config;
#[cfg(feature = "cuda")]
pub mod cuda_gpt;
pub mod generate;
pub mod gpt;
pub mod metrics;
pub mod pretrain;
pub mod tokenizer;
pub mod train;

pub use config::GptConfig;
pub use gpt::Gpt;

/// The model crate's error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An engine error (a shape, an index, a dtype).
    #[error(transparent)]
    Engine(#[from] engine::Error),
    /// A tokenizer error (its files, an unknown id).
    #[error(transparent)]
    Tokenizer(#[from] tokenizer::TokenizerError),
    /// A file that could not be read or written.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A file whose contents are wrong: the path and what is wrong with it.
    #[error("{path}: {msg}")]
    Format { path: String, msg: String },
    /// An invalid argument (a prompt longer than the context, a token id out of range...).
    #[error("{0}")]
    Invalid(String),
    /// A CUDA failure of the GPU GPT (no driver or GPU, a kernel that did not compile, a
    /// driver error, a launch argument the kernel cannot take).
    #[cfg(feature = "cuda")]
    #[error("CUDA: {0}")]
    Cuda(#[from] kernels::cuda::CudaError),
}

/// The model crate's result type.
pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.display().to_string(),
        source,
    }
}

pub(crate) fn format_err(path: &std::path::Path, msg: impl Into<String>) -> Error {
    Error::Format {
        path: path.display().to_string(),
        msg: msg.into(),
    }
}
