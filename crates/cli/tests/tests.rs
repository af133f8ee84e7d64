//! End-to-end tests of the `finercut` binary.
