//! Integration tests of `finercut-format`.

#![allow(clippy::unwrap_used)]

mod checkpoint_tests;
mod common;
mod config_tests;
mod gguf_tests;
mod real_model;
mod safetensors_tests;
mod tokenizer_tests;
