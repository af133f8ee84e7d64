//! Benchmark modules and the shared model loader.

pub(crate) mod forward;
pub(crate) mod stream;

use finercut_format::{cache, Checkpoint};
use finercut_model::Model;
use finercut_tensor::Device;

/// SmolLM2-135M from the cache; `None` only when it is absent and `FINERCUT_SKIP_DOWNLOADED_TESTS`
/// is set (otherwise an absent model stops the benchmark with the command that fetches it).
pub(crate) fn smollm2() -> Option<Model> {
    let path = cache::require_downloaded(cache::default_model_path())?;
    let ckpt = Checkpoint::open(&path).expect("open SmolLM2");
    Some(Model::load(&ckpt.config, ckpt.weights.as_ref(), &Device::Cpu).expect("load SmolLM2"))
}

/// `n` sequences of `t` pseudo-random token ids below `vocab`.
pub(crate) fn tokens(n: usize, t: usize, vocab: usize) -> Vec<Vec<u32>> {
    (0..n)
        .map(|i| {
            (0..t)
                .map(|j| ((i * 7919 + j * 104_729 + 13) % vocab) as u32)
                .collect()
        })
        .collect()
}
