//! Integration tests of `finercut-tensor`: every kernel against a plain `f64` reference on random inputs.

#![allow(clippy::unwrap_used)] // Tests may unwrap (`docs/STYLE.md`).

mod construct;
mod kernels;
mod reference;
