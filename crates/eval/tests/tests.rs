//! Integration tests of `finercut-eval`.
#![allow(clippy::unwrap_used)]

mod families;
mod gsm8k;
mod mock;
mod model;
mod prompts;
mod scoring;
