//! Integration tests of `finercut-model`: a tiny random model against a naive `f64` forward, the
//! properties of plans, traces, streams and continuations, and parity with transformers on SmolLM2.

#![allow(clippy::unwrap_used)] // Tests may unwrap (`docs/STYLE.md`).

mod export;
mod families;
mod generate;
mod golden;
mod partial;
mod reference;
mod tiny;
