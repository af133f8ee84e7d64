//! Integration tests of `finercut-eval`.
#![allow(clippy::unwrap_used)]

mod mock;
mod model;
mod prompts;
mod scoring;
