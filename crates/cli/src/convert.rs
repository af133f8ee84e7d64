//! `finercut convert`: GGUF → Hugging Face directory.

use std::path::PathBuf;

use anyhow::Context;
use finercut_format::{convert_gguf_to_hf_replacing, DType, Overwrite};

/// Arguments of `finercut convert`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The GGUF file to convert.
    #[arg(value_name = "MODEL.gguf")]
    pub gguf: PathBuf,
    /// The output directory (written beside its place and renamed into it when complete);
    /// refused if it already holds a checkpoint, unless --force.
    #[arg(value_name = "OUT_DIR")]
    pub out: PathBuf,
    /// Replace a checkpoint already in OUT_DIR: the new one is written beside it and renamed
    /// into its place once complete (other files in OUT_DIR are kept), so none of the old
    /// weights can be loaded in place of the new ones and an interrupted run leaves the old one.
    #[arg(long)]
    pub force: bool,
    /// Data type of the written weights: f32 is bit-identical to the GGUF's dequantisation.
    #[arg(long, value_enum, default_value_t = OutDtype::F32)]
    pub dtype: OutDtype,
}

/// Weight data types `convert` writes.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OutDtype {
    /// 32-bit floats.
    F32,
    /// bfloat16 (half the size; rounds the dequantised weights).
    Bf16,
}

pub fn main(args: Args) -> anyhow::Result<()> {
    let dtype = match args.dtype {
        OutDtype::F32 => DType::F32,
        OutDtype::Bf16 => DType::BF16,
    };
    let overwrite = if args.force {
        Overwrite::Replace
    } else {
        Overwrite::Refuse
    };
    let notes = convert_gguf_to_hf_replacing(&args.gguf, &args.out, dtype, overwrite)
        .with_context(|| {
            format!(
                "cannot convert {} into {}",
                args.gguf.display(),
                args.out.display()
            )
        })?;
    crate::common::warn_notes(&notes);
    eprintln!(
        "wrote {} (model.safetensors, config.json, tokenizer.json)",
        args.out.display()
    );
    Ok(())
}
