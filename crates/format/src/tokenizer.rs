//! Tokenizers: Hugging Face `tokenizer.json`, and the same tokenizer rebuilt from GGUF metadata.
//!
//! Both go through the `tokenizers` crate, so a tokenizer built from a GGUF file can be saved as
//! a `tokenizer.json` that Hugging Face loads.
//!
//! **GGUF (`tokenizer.ggml.model = "gpt2"`)**: a byte-level BPE over `tokenizer.ggml.tokens` and
//! `tokenizer.ggml.merges`; tokens of type 3 (control) and 2 (unknown) become special added
//! tokens and type 4 (user-defined) plain added tokens, so all are matched whole in the text
//! before pre-tokenisation, as llama.cpp does. The BOS token is prepended when
//! `tokenizer.ggml.add_bos_token` says so.
//!
//! **GGUF (`tokenizer.ggml.model = "llama"`, SentencePiece)**: rebuilt as transformers 5 does
//! (`integrations/gguf/gguf_tokenizer_mapping.py`): a BPE with byte fallback whose merges are
//! derived from the vocabulary (every split of a token into two tokens), ordered by
//! `tokenizer.ggml.scores`, or for Gemma by the merged token's position in the file; Gemma runs of
//! spaces are respelled as `▁`s; the pipelines are those of `GemmaTokenizer` and `LlamaTokenizer`.
//! BOS is added unless the file says otherwise.
//!
//! **Byte-level pre-tokenisation follows `tokenizer.ggml.pre`** as llama.cpp (`llama-vocab.cpp`)
//! does; transformers' GGUF loader knows only some `pre` values and splits SmolLM2's text with
//! the plain GPT-2 regex. For `smollm`, llama.cpp first isolates every `\p{N}` character and then
//! applies the GPT-2 regex (here `Digits(individual_digits)` then `ByteLevel`). The two
//! tokenisations agree except where whitespace precedes a digit after a line break (`"\r\n 1"`:
//! `čĊĠ`,`1` here, `čĊ`,`Ġ`,`1` in transformers) or on non-ASCII numerals such as `½`; on
//! WikiText-2 test the first difference is at token 66,531, and this crate reproduces the golden
//! `smollm` tokenisation (304,830 ids, same SHA-256) exactly (`data/golden/README.md`; tested).

use std::path::Path;

use serde_json::{json, Value as Json};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::byte_level::ByteLevel;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::replace::Replace;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PostProcessorWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::error::IoResultExt;
use crate::gguf::GgufFile;
use crate::io::write_atomically;
use crate::{Error, Result};

/// The pre-tokeniser regex of Llama 3 (`tokenizer.ggml.pre = "llama-bpe"`).
const LLAMA3_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// The pre-tokeniser regex of Qwen2 (`tokenizer.ggml.pre = "qwen2"`).
const QWEN2_REGEX: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// `tokenizer.ggml.pre` values understood for byte-level BPE.
pub const SUPPORTED_GGUF_PRE: &[&str] = &[
    "default",
    "gpt2",
    "smollm",
    "starcoder",
    "refact",
    "llama-bpe",
    "llama3",
    "qwen2",
];

/// A text tokenizer with its special-token settings.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    origin: String,
    bos: Option<u32>,
    eos: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    chat_template: Option<String>,
}

fn token_of(v: &Json) -> Option<&str> {
    v.as_str()
        .or_else(|| v.get("content").and_then(Json::as_str))
}

impl Tokenizer {
    /// Loads a Hugging Face `tokenizer.json`. Special tokens and the chat template come from a
    /// `tokenizer_config.json` next to it, when there is one.
    pub fn from_file(path: &Path) -> Result<Self> {
        let origin = path.display().to_string();
        let bytes = std::fs::read(path).with_path(path)?;
        // Parse the JSON first and build the tokenizer from the tree: tokenizers 0.22 panics
        // (`expect("Helper")` in `decoders/mod.rs`) instead of returning an error when it meets a
        // syntax error inside the `decoder` section while parsing text.
        let json: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| Error::tokenizer(&origin, format!("not valid JSON: {e}")))?;
        let inner: tokenizers::Tokenizer =
            serde_json::from_value(json).map_err(|e| Error::tokenizer(&origin, e))?;
        let mut t = Tokenizer {
            inner,
            origin,
            bos: None,
            eos: None,
            unk: None,
            pad: None,
            add_bos: false,
            chat_template: None,
        };
        let cfg_path = path.with_file_name("tokenizer_config.json");
        if cfg_path.is_file() {
            let text = std::fs::read_to_string(&cfg_path).with_path(&cfg_path)?;
            let cfg: Json = serde_json::from_str(&text)
                .map_err(|e| Error::malformed(&cfg_path, format!("invalid JSON: {e}")))?;
            let id = |k: &str| {
                cfg.get(k)
                    .and_then(token_of)
                    .and_then(|s| t.inner.token_to_id(s))
            };
            t.bos = id("bos_token");
            t.eos = id("eos_token");
            t.unk = id("unk_token");
            t.pad = id("pad_token");
            t.chat_template = cfg
                .get("chat_template")
                .and_then(Json::as_str)
                .map(str::to_string);
        }
        t.detect_add_bos()?;
        Ok(t)
    }

    /// Whether `encode(…, true)` prepends a token: decided by running the post-processor.
    fn detect_add_bos(&mut self) -> Result<()> {
        let probe = self.encode("", true)?;
        self.add_bos = match (probe.first(), self.bos) {
            (Some(&first), Some(bos)) => first == bos,
            (Some(&first), None) => {
                self.bos = Some(first);
                true
            }
            (None, _) => false,
        };
        Ok(())
    }

    /// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata:
    /// byte-level BPE (`tokenizer.ggml.model = "gpt2"`) or SentencePiece (`"llama"`; see
    /// [`Tokenizer`]'s module docs for how each is rebuilt).
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let origin = file.path().display().to_string();
        let model = file.get_str("tokenizer.ggml.model")?.ok_or_else(|| {
            Error::tokenizer(&origin, "metadata `tokenizer.ggml.model` is missing")
        })?;
        if model != "gpt2" && model != "llama" {
            return Err(Error::unsupported(
                &origin,
                format!(
                    "tokenizer.ggml.model `{model}` (supported: gpt2 (byte-level BPE), llama (SentencePiece))"
                ),
            ));
        }
        let strings = |key: &str| -> Result<Vec<String>> {
            let arr = file
                .get_array(key)?
                .ok_or_else(|| Error::tokenizer(&origin, format!("metadata `{key}` is missing")))?;
            arr.iter()
                .map(|v| v.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    Error::tokenizer(
                        &origin,
                        format!("metadata `{key}` is not an array of strings"),
                    )
                })
        };
        let tokens = strings("tokenizer.ggml.tokens")?;
        let types: Vec<i64> = match file.get_array("tokenizer.ggml.token_type")? {
            Some(arr) => arr
                .iter()
                .map(|v| v.as_i64())
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| {
                    Error::tokenizer(
                        &origin,
                        "metadata `tokenizer.ggml.token_type` is not an array of integers",
                    )
                })?,
            None => vec![1; tokens.len()],
        };
        if types.len() != tokens.len() {
            return Err(Error::tokenizer(
                &origin,
                format!("{} token types for {} tokens", types.len(), tokens.len()),
            ));
        }
        let id = |k: &str| -> Result<Option<u32>> {
            Ok(file
                .get_u64(k)?
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| (v as usize) < tokens.len()))
        };
        let bos = id("tokenizer.ggml.bos_token_id")?;
        let eos = id("tokenizer.ggml.eos_token_id")?;
        let unk = id("tokenizer.ggml.unknown_token_id")?;
        let pad = id("tokenizer.ggml.padding_token_id")?;

        let (mut inner, add_bos_default, byte_level) = if model == "gpt2" {
            let merges = strings("tokenizer.ggml.merges")?;
            let pre = file.get_str("tokenizer.ggml.pre")?.unwrap_or("default");
            let llama3 = matches!(pre, "llama-bpe" | "llama3");
            (
                byte_level_bpe(&origin, &tokens, &merges, pre)?,
                llama3,
                true,
            )
        } else {
            let arch = file.get_str("general.architecture")?.unwrap_or("llama");
            let unk_token = unk.map_or("<unk>", |u| tokens[u as usize].as_str());
            let inner = if crate::family::gguf_tokenizer_quirks(arch).gguf_gemma_sentencepiece {
                gemma_sentencepiece(&origin, &tokens, unk_token)?
            } else {
                let scores: Vec<f64> = match file.get_array("tokenizer.ggml.scores")? {
                    Some(arr) => arr.iter().map(|v| v.as_f64().unwrap_or(0.0)).collect(),
                    None => vec![0.0; tokens.len()],
                };
                llama_sentencepiece(&origin, &tokens, &scores)?
            };
            // llama.cpp adds BOS to a SentencePiece vocabulary that does not say otherwise.
            (inner, true, false)
        };
        let add_bos = file
            .get_bool("tokenizer.ggml.add_bos_token")?
            .unwrap_or(add_bos_default)
            && bos.is_some();
        let add_eos = file
            .get_bool("tokenizer.ggml.add_eos_token")?
            .unwrap_or(false)
            && eos.is_some();

        // Control and unknown tokens (and the BOS/EOS/UNK/PAD tokens) are special added tokens,
        // user-defined ones plain added tokens: all are matched whole before pre-tokenisation, as
        // llama.cpp and transformers do. For SentencePiece, a
        // user-defined token the vocabulary spells differently (Gemma's runs of spaces) is left out,
        // as transformers does.
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|&(i, (_, &t))| {
                t == 3 || t == 2 || [bos, eos, unk, pad].contains(&Some(i as u32))
            })
            .map(|(_, (tok, _))| AddedToken::from(tok.clone(), true).normalized(false))
            .collect();
        let user: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(tok, &t)| t == 4 && (byte_level || inner.token_to_id(tok).is_some()))
            .map(|(tok, _)| AddedToken::from(tok.clone(), false).normalized(false))
            .collect();
        inner.add_special_tokens(&specials);
        inner.add_tokens(&user);

        let post = post_processor(
            &tokens,
            if add_bos { bos } else { None },
            if add_eos { eos } else { None },
        )
        .map_err(|e| Error::tokenizer(&origin, e))?;
        inner.with_post_processor(Some(post));

        Ok(Tokenizer {
            inner,
            origin,
            bos,
            eos,
            unk,
            pad,
            add_bos,
            chat_template: file.get_str("tokenizer.chat_template")?.map(str::to_string),
        })
    }

    /// Token ids of `text`; with `add_special`, the post-processor's tokens (BOS) are added.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        self.inner
            .encode_fast(text, add_special)
            .map(|e| e.get_ids().to_vec())
            .map_err(|e| Error::tokenizer(&self.origin, e))
    }

    /// The text of `ids` (special tokens included).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::tokenizer(&self.origin, e))
    }

    /// Beginning-of-sequence token.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence token.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Padding token.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Unknown token.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// Whether `encode(text, true)` starts with the BOS token.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The chat template (Jinja), if any.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// One more than the largest id this tokenizer can produce (vocabulary and added tokens):
    /// the number of embedding rows it needs. At least [`Tokenizer::vocab_size`] when the ids
    /// have gaps.
    pub fn id_bound(&self) -> usize {
        self.inner
            .get_vocab(true)
            .values()
            .max()
            .map_or(0, |&m| m as usize + 1)
    }

    /// Checks that every id this tokenizer can produce is a row of an embedding of `rows` rows;
    /// the error names the tokenizer's file, its vocabulary size and `embedding`.
    pub fn check_fits_embedding(&self, rows: usize, embedding: &str) -> Result<()> {
        let bound = self.id_bound();
        if bound > rows {
            return Err(Error::tokenizer(
                &self.origin,
                format!(
                    "its vocabulary of {} tokens (ids up to {}) does not fit the model's embedding \
                     of {rows} rows ({embedding}); the tokenizer belongs to another model",
                    self.vocab_size(),
                    bound - 1
                ),
            ));
        }
        Ok(())
    }

    /// The id of a token string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The string of a token id.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Fills in special tokens this tokenizer does not know from elsewhere (config.json).
    pub fn set_special_ids_if_missing(&mut self, bos: Option<u32>, eos: Option<u32>) {
        self.bos = self.bos.or(bos);
        self.eos = self.eos.or(eos);
    }

    /// The `tokenizers` tokenizer inside.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }

    /// Writes a Hugging Face `tokenizer.json` (atomically).
    pub fn save(&self, path: &Path) -> Result<()> {
        let text = self
            .inner
            .to_string(false)
            .map_err(|e| Error::tokenizer(&self.origin, e))?;
        write_atomically(path, |w| {
            std::io::Write::write_all(w, text.as_bytes()).with_path(path)
        })
    }

    /// A `tokenizer_config.json` for [`Tokenizer::save`]'s file: the fast tokenizer class, the
    /// special tokens, `add_bos_token` and the chat template.
    pub fn hf_tokenizer_config(&self, model_max_length: usize) -> Json {
        let tok = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .map_or(Json::Null, Json::String)
        };
        let mut j = json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": tok(self.bos),
            "eos_token": tok(self.eos),
            "unk_token": tok(self.unk),
            "pad_token": tok(self.pad),
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "clean_up_tokenization_spaces": false,
            "model_max_length": model_max_length,
        });
        if let (Some(t), Some(obj)) = (&self.chat_template, j.as_object_mut()) {
            obj.insert("chat_template".into(), Json::String(t.clone()));
        }
        j
    }
}

/// Byte-level BPE with the pre-tokenisation `tokenizer.ggml.pre` names (llama.cpp's).
fn byte_level_bpe(
    origin: &str,
    tokens: &[String],
    merges: &[String],
    pre: &str,
) -> Result<tokenizers::Tokenizer> {
    let llama3 = matches!(pre, "llama-bpe" | "llama3");
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (i, tok) in tokens.iter().enumerate() {
        // Keep the first id of a duplicated token, as llama.cpp's token-to-id map does.
        vocab.entry(tok.clone()).or_insert(i as u32);
    }
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| {
                    Error::tokenizer(
                        origin,
                        format!("merge `{m}` is not two tokens separated by a space"),
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(llama3)
        .build()
        .map_err(|e| Error::tokenizer(origin, e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);

    let byte_level = ByteLevel::new(false, true, true);
    let split = |re: &str| -> Result<PreTokenizerWrapper> {
        let pattern = SplitPattern::Regex(re.to_string());
        Ok(Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| Error::tokenizer(origin, e))?
            .into())
    };
    let pre_tokenizer: PreTokenizerWrapper = match pre {
        "default" | "gpt2" => byte_level.into(),
        "smollm" | "starcoder" | "refact" => {
            Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into()
        }
        "llama-bpe" | "llama3" => Sequence::new(vec![
            split(LLAMA3_REGEX)?,
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        "qwen2" => Sequence::new(vec![
            split(QWEN2_REGEX)?,
            ByteLevel::new(false, true, false).into(),
        ])
        .into(),
        other => {
            return Err(Error::unsupported(
                origin,
                format!(
                    "tokenizer.ggml.pre `{other}` (supported: {})",
                    SUPPORTED_GGUF_PRE.join(", ")
                ),
            ))
        }
    };
    inner.with_pre_tokenizer(Some(pre_tokenizer));
    inner.with_decoder(Some(ByteLevel::default()));
    Ok(inner)
}

/// Python's `str.isspace` for one character.
fn py_space(c: char) -> bool {
    c.is_whitespace() || ('\x1c'..='\x1f').contains(&c)
}

/// BPE merges implied by a SentencePiece vocabulary (transformers' `generate_merges`): every split
/// of a token into two tokens of the vocabulary, best `score` first, then longer left piece first.
/// `vocab` maps each token to its last id and `scores[i]` scores token `i`; the first occurrence of
/// a token fixes its place among equal scores.
fn sentencepiece_merges(
    tokens: &[String],
    vocab: &tokenizers::models::bpe::Vocab,
    score_of: impl Fn(&str) -> f64,
) -> Vec<(String, String)> {
    struct Candidate<'a> {
        score: f64,
        left_len: usize,
        right_len: usize,
        order: usize,
        ids: (u32, u32),
        left: &'a str,
        right: &'a str,
    }
    let mut seen = std::collections::HashSet::with_capacity(tokens.len());
    let mut merges = Vec::new();
    for (order, tok) in tokens.iter().enumerate() {
        if !seen.insert(tok.as_str()) {
            continue;
        }
        let score = score_of(tok);
        let n = tok.chars().count();
        for (k, (at, _)) in tok.char_indices().enumerate().skip(1) {
            let (left, right) = tok.split_at(at);
            if let (Some(&il), Some(&ir)) = (vocab.get(left), vocab.get(right)) {
                merges.push(Candidate {
                    score,
                    left_len: k,
                    right_len: n - k,
                    order,
                    ids: (il, ir),
                    left,
                    right,
                });
            }
        }
    }
    merges.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_len.cmp(&a.left_len))
            .then(b.right_len.cmp(&a.right_len))
            .then(a.order.cmp(&b.order))
            .then(a.ids.cmp(&b.ids))
    });
    merges
        .into_iter()
        .map(|m| (m.left.to_string(), m.right.to_string()))
        .collect()
}

/// Gemma's SentencePiece vocabulary as transformers 5 rebuilds it from GGUF (`gemma_tokenizer`):
/// runs of real spaces are respelled as `▁`s, merges are ordered by the position of the merged
/// token in the file (Gemma's scores do not follow its merge order), and the pipeline is
/// `GemmaTokenizer`'s: spaces normalised to `▁`, BPE with byte fallback, no prefix space.
fn gemma_sentencepiece(
    origin: &str,
    tokens: &[String],
    unk_token: &str,
) -> Result<tokenizers::Tokenizer> {
    let respelled: Vec<String> = tokens
        .iter()
        .map(|t| {
            if t.contains(' ') && t.chars().all(py_space) {
                "\u{2581}".repeat(t.chars().count())
            } else {
                t.clone()
            }
        })
        .collect();
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    for (i, t) in respelled.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
    }
    let merges = sentencepiece_merges(&respelled, &vocab, |t| -f64::from(vocab[t]));
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .unk_token(unk_token.to_string())
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| Error::tokenizer(origin, e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    let replace = |a: &str, b: &str| {
        Replace::new(a.to_string(), b.to_string()).map_err(|e| Error::tokenizer(origin, e))
    };
    inner.with_normalizer(Some(replace(" ", "\u{2581}")?));
    inner.with_pre_tokenizer(Some(
        Split::new(
            SplitPattern::String(" ".into()),
            SplitDelimiterBehavior::MergedWithPrevious,
            false,
        )
        .map_err(|e| Error::tokenizer(origin, e))?,
    ));
    inner.with_decoder(Some(DecoderSequence::new(vec![
        replace("\u{2581}", " ")?.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ])));
    Ok(inner)
}

/// A SentencePiece (`llama`) vocabulary as transformers 5 rebuilds it from GGUF: merges ordered by
/// `tokenizer.ggml.scores`, and `LlamaTokenizer`'s pipeline (a `▁` prepended to the first word,
/// spaces as `▁`, BPE with byte fallback).
fn llama_sentencepiece(
    origin: &str,
    tokens: &[String],
    scores: &[f64],
) -> Result<tokenizers::Tokenizer> {
    let mut vocab = tokenizers::models::bpe::Vocab::default();
    let mut score = std::collections::HashMap::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        vocab.insert(t.clone(), i as u32);
        score.insert(t.as_str(), scores.get(i).copied().unwrap_or(0.0));
    }
    let merges = sentencepiece_merges(tokens, &vocab, |t| score[t]);
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true)
        .build()
        .map_err(|e| Error::tokenizer(origin, e))?;
    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(Metaspace::new(
        '\u{2581}',
        PrependScheme::First,
        false,
    )));
    let replace = Replace::new("\u{2581}".to_string(), " ".to_string())
        .map_err(|e| Error::tokenizer(origin, e))?;
    inner.with_decoder(Some(DecoderSequence::new(vec![
        replace.into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
        Strip::new(' ', 1, 0).into(),
    ])));
    Ok(inner)
}

/// A post-processor that adds `bos` before and `eos` after the text (a ByteLevel one when
/// neither is added). Built through serde so that token strings containing `:` or spaces work.
fn post_processor(
    tokens: &[String],
    bos: Option<u32>,
    eos: Option<u32>,
) -> serde_json::Result<PostProcessorWrapper> {
    if bos.is_none() && eos.is_none() {
        return Ok(tokenizers::processors::byte_level::ByteLevel::new(false, true, true).into());
    }
    let special = |id: u32| {
        let t = &tokens[id as usize];
        (
            json!({"SpecialToken": {"id": t, "type_id": 0}}),
            (t.clone(), json!({"id": t, "ids": [id], "tokens": [t]})),
        )
    };
    let mut single = Vec::new();
    let mut pair = Vec::new();
    let mut specials = serde_json::Map::new();
    if let Some(b) = bos {
        let (piece, (k, v)) = special(b);
        single.push(piece.clone());
        pair.push(piece);
        specials.insert(k, v);
    }
    single.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    pair.push(json!({"Sequence": {"id": "A", "type_id": 0}}));
    if let Some(e) = eos {
        let (piece, (k, v)) = special(e);
        single.push(piece.clone());
        pair.push(piece);
        specials.insert(k, v);
    }
    if let Some(b) = bos {
        pair.push(special(b).0);
    }
    pair.push(json!({"Sequence": {"id": "B", "type_id": 1}}));
    if let Some(e) = eos {
        pair.push(special(e).0);
    }
    serde_json::from_value(json!({
        "type": "TemplateProcessing",
        "single": single,
        "pair": pair,
        "special_tokens": specials,
    }))
}
