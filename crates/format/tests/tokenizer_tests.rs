//! Tokenizers built from GGUF metadata (a tiny byte-level BPE), saved and reloaded.

use finercut_format::gguf::Value;
use finercut_format::{Bytes, GgufFile, Tokenizer};

use crate::common::{bytes_to_unicode, i32s, strings, GgufBuilder};

const SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];
const MERGES: [&str; 6] = ["Ġ t", "h e", "Ġt he", "1 2", "l l", "e ll"];

/// A tiny GPT-2 style vocabulary: three control tokens, the 256 byte symbols, the merge results
/// and one user-defined token.
fn tiny_gguf(pre: &str, add_bos: bool) -> GgufFile {
    let mut tokens: Vec<String> = SPECIALS.iter().map(|s| s.to_string()).collect();
    tokens.extend(bytes_to_unicode().iter().map(|c| c.to_string()));
    for m in MERGES {
        tokens.push(m.replace(' ', ""));
    }
    tokens.push("<tool>".into());
    let mut types = vec![1i32; tokens.len()];
    types[..3].fill(3);
    *types.last_mut().unwrap() = 4;
    let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut b = GgufBuilder::new();
    b.meta("general.architecture", Value::String("llama".into()))
        .meta("tokenizer.ggml.model", Value::String("gpt2".into()))
        .meta("tokenizer.ggml.pre", Value::String(pre.into()))
        .meta("tokenizer.ggml.tokens", strings(&token_refs))
        .meta("tokenizer.ggml.token_type", i32s(&types))
        .meta("tokenizer.ggml.merges", strings(&MERGES))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(2))
        .meta("tokenizer.ggml.unknown_token_id", Value::U32(0))
        .meta("tokenizer.ggml.padding_token_id", Value::U32(2))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(add_bos))
        .meta(
            "tokenizer.chat_template",
            Value::String("{{ messages }}".into()),
        );
    GgufFile::from_bytes("tiny.gguf", Bytes::from_vec(b.build())).unwrap()
}

fn ids(t: &Tokenizer, toks: &[&str]) -> Vec<u32> {
    toks.iter()
        .map(|s| t.token_to_id(s).unwrap_or_else(|| panic!("no token {s}")))
        .collect()
}

#[test]
fn bpe_merges_and_the_digit_split_of_smollm() {
    let plain = Tokenizer::from_gguf(&tiny_gguf("gpt2", false)).unwrap();
    let smollm = Tokenizer::from_gguf(&tiny_gguf("smollm", false)).unwrap();
    // GPT-2 pre-tokenisation keeps " 12" together, so "1 2" merges; smollm isolates digits first.
    assert_eq!(
        plain.encode("the 12", false).unwrap(),
        ids(&plain, &["t", "he", "Ġ", "12"])
    );
    assert_eq!(
        smollm.encode("the 12", false).unwrap(),
        ids(&smollm, &["t", "he", "Ġ", "1", "2"])
    );
    // Merges apply by rank: "h e" (rank 1) before "l l" (rank 4), so "e ll" never fires here.
    assert_eq!(
        smollm.encode(" the hell", false).unwrap(),
        ids(&smollm, &["Ġthe", "Ġ", "he", "ll"])
    );
    assert_eq!(smollm.encode("ell", false).unwrap(), ids(&smollm, &["ell"]));
    // "\r\n 1": smollm keeps the space with the line break.
    assert_eq!(
        smollm.encode("\r\n 1", false).unwrap(),
        ids(&smollm, &["č", "Ċ", "Ġ", "1"])
    );
}

#[test]
fn control_and_user_tokens_are_matched_whole() {
    let t = Tokenizer::from_gguf(&tiny_gguf("smollm", false)).unwrap();
    let got = t
        .encode("<|im_start|>hell<|im_end|> <tool>", false)
        .unwrap();
    let mut want = vec![1];
    want.extend(ids(&t, &["he", "ll"]));
    want.push(2);
    want.extend(ids(&t, &["Ġ", "<tool>"]));
    assert_eq!(got, want);
    assert_eq!(t.decode(&got).unwrap(), "<|im_start|>hell<|im_end|> <tool>");
    assert_eq!(
        (t.bos_id(), t.eos_id(), t.pad_id(), t.unk_id()),
        (Some(1), Some(2), Some(2), Some(0))
    );
    assert!(!t.add_bos());
    assert_eq!(
        t.encode("hell", true).unwrap(),
        t.encode("hell", false).unwrap(),
        "no BOS when add_bos_token = false"
    );
}

#[test]
fn bos_is_added_when_the_gguf_says_so() {
    let t = Tokenizer::from_gguf(&tiny_gguf("smollm", true)).unwrap();
    assert!(t.add_bos());
    let with = t.encode("hell", true).unwrap();
    assert_eq!(with[0], 1);
    assert_eq!(&with[1..], t.encode("hell", false).unwrap().as_slice());
}

#[test]
fn decode_inverts_encode_on_any_text() {
    let t = Tokenizer::from_gguf(&tiny_gguf("smollm", false)).unwrap();
    for text in ["héllo ☃ 12\r\n\tthe end", "", "½ ١٢٣", "<|endoftext|>x"] {
        assert_eq!(t.decode(&t.encode(text, false).unwrap()).unwrap(), text);
    }
}

#[test]
fn saved_tokenizer_json_reloads_identically() {
    let dir = tempfile::tempdir().unwrap();
    for (pre, add_bos) in [
        ("smollm", false),
        ("gpt2", true),
        ("llama-bpe", true),
        ("qwen2", false),
    ] {
        let t = Tokenizer::from_gguf(&tiny_gguf(pre, add_bos)).unwrap();
        let path = dir.path().join(format!("{pre}-tokenizer.json"));
        t.save(&path).unwrap();
        let back = Tokenizer::from_file(&path).unwrap();
        for text in [
            "<|im_start|>the 12 hello\r\n 1<|im_end|>",
            "  spaced  out ½",
            "<tool>the",
        ] {
            assert_eq!(
                back.encode(text, false).unwrap(),
                t.encode(text, false).unwrap(),
                "{pre}: {text}"
            );
            assert_eq!(
                back.encode(text, true).unwrap(),
                t.encode(text, true).unwrap(),
                "{pre}: {text}"
            );
        }
        assert_eq!(back.add_bos(), add_bos, "{pre}");
    }
    // With a tokenizer_config.json next to it, the special tokens and template come back too.
    let t = Tokenizer::from_gguf(&tiny_gguf("smollm", false)).unwrap();
    let sub = dir.path().join("hf");
    std::fs::create_dir_all(&sub).unwrap();
    t.save(&sub.join("tokenizer.json")).unwrap();
    std::fs::write(
        sub.join("tokenizer_config.json"),
        t.hf_tokenizer_config(2048).to_string(),
    )
    .unwrap();
    let back = Tokenizer::from_file(&sub.join("tokenizer.json")).unwrap();
    assert_eq!(
        (back.bos_id(), back.eos_id(), back.pad_id(), back.unk_id()),
        (Some(1), Some(2), Some(2), Some(0))
    );
    assert_eq!(back.chat_template(), Some("{{ messages }}"));
    assert!(!back.add_bos());
}

#[test]
fn unsupported_tokenizers_are_named() {
    let mut b = GgufBuilder::new();
    b.meta("tokenizer.ggml.model", Value::String("bert".into()));
    let f = GgufFile::from_bytes("bert.gguf", Bytes::from_vec(b.build())).unwrap();
    let e = Tokenizer::from_gguf(&f).err().unwrap().to_string();
    assert!(e.contains("bert.gguf") && e.contains("`bert`"), "{e}");
    let e = Tokenizer::from_gguf(&tiny_gguf("jais", false))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("`jais`") && e.contains("smollm"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`), checked against the ids that
// transformers 5.24's GGUF tokenizer builders (`gemma_tokenizer`, `sentencepiece_tokenizer`, plus
// the BOS/EOS/UNK/PAD special tokens from the tokenizer config) give for the same vocabulary.

const SPM_TEXTS: [&str; 11] = [
    "hello world",
    " the hello",
    "hello  world",
    "hello   world\n\nab ba",
    "é12 3",
    "<start_of_turn>user\nhello<end_of_turn>",
    "  leading",
    "x<unk>y",
    "tab\there",
    "abab ba",
    "   ",
];
#[rustfmt::skip]
const GEMMA_IDS: &[&[u32]] = &[&[268, 274, 279, 280, 281], &[269, 275], &[268, 274, 263, 279, 280, 281], &[268, 274, 289, 279, 280, 281, 292, 295, 263, 297], &[287, 286, 263, 285], &[5, 124, 122, 266, 277, 291, 268, 274, 6], &[289, 270, 266, 293, 278, 112, 117, 110], &[127, 3, 128], &[264, 295, 16, 268, 277, 266], &[295, 295, 263, 297], &[290]];
#[rustfmt::skip]
const LLAMA_IDS: &[&[u32]] = &[&[275, 279, 280, 281], &[269, 275], &[275, 289, 276, 280, 281], &[275, 290, 276, 280, 281, 292, 295, 263, 297], &[288, 286, 263, 285], &[5, 124, 122, 266, 277, 291, 268, 274, 6], &[289, 270, 266, 293, 278, 112, 117, 110], &[263, 127, 3, 128], &[267, 295, 16, 268, 277, 266], &[296, 295, 263, 297], &[290]];

/// Control tokens, the 256 byte tokens, then pieces; Gemma's scores deliberately disagree with
/// the piece order (transformers orders Gemma merges by position, other vocabularies by score).
fn spm_gguf(arch: &str) -> GgufFile {
    let mut tokens: Vec<String> = [
        "<pad>",
        "<eos>",
        "<bos>",
        "<unk>",
        "<mask>",
        "<start_of_turn>",
        "<end_of_turn>",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut types = vec![3, 3, 3, 2, 3, 3, 3];
    tokens.extend((0..256).map(|i| format!("<0x{i:02X}>")));
    types.extend([6; 256]);
    let pieces = [
        "▁", "t", "h", "e", "▁t", "he", "▁the", "l", "o", "ll", "▁he", "llo", "▁hello", "w", "r",
        "d", "▁w", "or", "ld", "▁world", "1", "2", "3", "12", "é", "▁é", "  ", "   ", "\n", "\n\n",
        "a", "b", "ab", "▁ab", "ba",
    ];
    tokens.extend(pieces.iter().map(|s| s.to_string()));
    types.extend(pieces.iter().map(|p| {
        if p.trim().is_empty() && p.contains(' ') {
            4
        } else {
            1
        }
    }));
    let mut scores = vec![0.0f32; 263];
    if arch.starts_with("gemma") {
        scores.extend((0..pieces.len()).map(|i| ((i * 7) % 11) as f32));
    } else {
        scores.extend((0..pieces.len()).map(|i| -(i as f32)));
    }
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let mut b = GgufBuilder::new();
    b.meta("general.architecture", Value::String(arch.into()))
        .meta("tokenizer.ggml.model", Value::String("llama".into()))
        .meta("tokenizer.ggml.tokens", strings(&refs))
        .meta(
            "tokenizer.ggml.scores",
            Value::Array(6, scores.into_iter().map(Value::F32).collect()),
        )
        .meta("tokenizer.ggml.token_type", i32s(&types))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(2))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(1))
        .meta("tokenizer.ggml.unknown_token_id", Value::U32(3))
        .meta("tokenizer.ggml.padding_token_id", Value::U32(0))
        .meta("tokenizer.ggml.add_bos_token", Value::Bool(true));
    GgufFile::from_bytes(format!("{arch}.gguf"), Bytes::from_vec(b.build())).unwrap()
}

#[test]
fn sentencepiece_vocabularies_match_transformers() {
    let dir = tempfile::tempdir().unwrap();
    for (arch, want) in [("gemma3", GEMMA_IDS), ("llama", LLAMA_IDS)] {
        let t = Tokenizer::from_gguf(&spm_gguf(arch)).unwrap();
        assert!(t.add_bos());
        let path = dir.path().join(format!("{arch}.json"));
        t.save(&path).unwrap();
        let back = Tokenizer::from_file(&path).unwrap();
        for (text, want) in SPM_TEXTS.iter().zip(want) {
            let got = t.encode(text, false).unwrap();
            assert_eq!(&got, want, "{arch}: {text:?}");
            assert_eq!(
                back.encode(text, false).unwrap(),
                got,
                "{arch} reloaded: {text:?}"
            );
            assert_eq!(t.encode(text, true).unwrap()[0], 2, "BOS first");
        }
        // Decoding gives the text back (llama's decoder strips the prefix space it added).
        let round = t
            .decode(&t.encode("hello   world\n\nab ba", false).unwrap())
            .unwrap();
        assert_eq!(round, "hello   world\n\nab ba", "{arch}");
    }
}

/// Found by `cargo xtask fuzz`: tokenizers 0.22 panics (`expect("Helper")`) on a syntax error or
/// invalid UTF-8 inside the `decoder` section of tokenizer.json; loading it must be an error.
#[test]
fn a_broken_decoder_section_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    let model = r#""model":{"type":"WordLevel","vocab":{"a":0,"b":1},"unk_token":"a"}"#;
    let head = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],"normalizer":null,"pre_tokenizer":null,"post_processor":null,"#;
    for decoder in [
        &br#""decoder":{"type":"ByteLevel",},"#[..],
        &b"\"decoder\":{\"type\":\"Byte\xf6Level\"},"[..],
    ] {
        let mut json = head.as_bytes().to_vec();
        json.extend_from_slice(decoder);
        json.extend_from_slice(model.as_bytes());
        json.push(b'}');
        std::fs::write(&path, &json).unwrap();
        let e = Tokenizer::from_file(&path).err().unwrap().to_string();
        assert!(e.contains("tokenizer.json") && e.contains("JSON"), "{e}");
    }
    // The same file with a valid decoder loads.
    let json = format!(r#"{head}"decoder":null,{model}}}"#);
    std::fs::write(&path, json).unwrap();
    Tokenizer::from_file(&path).unwrap();
}
