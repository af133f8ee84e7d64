//! Helpers shared by the search crate's test binaries.

use std::collections::BTreeMap;

use finercut_format::{RawTensor, TensorSource};

/// Tensors held in memory.
pub struct MemSource(pub BTreeMap<String, RawTensor>);

impl TensorSource for MemSource {
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
    fn get(&self, name: &str) -> finercut_format::Result<RawTensor> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| finercut_format::Error::MissingTensor {
                name: name.to_owned(),
                origin: "memory".to_owned(),
            })
    }
}
