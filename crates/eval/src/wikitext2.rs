//! The WikiText-2 raw test split, built into the library.
//!
//! `crates/eval/data/wikitext-2-raw/wiki.test.raw`, inside this crate and packaged with it (1.3 MB;
//! source, licence and checksum in `crates/eval/data/wikitext-2-raw/README.md`), is compiled in with `include_str!`, so the default perplexity text
//! and calibration text exist wherever the binary runs, and no path of the machine that built it is
//! needed at run time.
//! The text keeps its CRLF line endings: the tokenisation, and so every window and calibration slice,
//! depends on them.

/// The whole WikiText-2 raw test file, bytes as they are (CRLF line endings).
pub const WIKITEXT2_TEST: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/data/wikitext-2-raw/wiki.test.raw"
));

/// SHA-256 of [`WIKITEXT2_TEST`], as recorded in `data/checksums.json`.
pub const WIKITEXT2_TEST_SHA256: &str =
    "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c";

/// How reports and error messages name the built-in text.
pub const WIKITEXT2_TEST_ORIGIN: &str =
    "built-in WikiText-2 raw test (crates/eval/data/wikitext-2-raw/wiki.test.raw)";

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn built_in_text_is_the_vendored_file_with_its_crlfs() {
        let digest = Sha256::digest(WIKITEXT2_TEST.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, WIKITEXT2_TEST_SHA256);
        assert_eq!(WIKITEXT2_TEST.len(), 1_290_547);
        assert_eq!(WIKITEXT2_TEST.chars().count(), 1_288_513);
        assert_eq!(WIKITEXT2_TEST.matches("\r\n").count(), 2891);
        assert_eq!(WIKITEXT2_TEST.matches('\n').count(), 2891, "no bare LF");
        assert!(WIKITEXT2_TEST.starts_with(" = Robert Boulter = \r\n"));
    }
}
