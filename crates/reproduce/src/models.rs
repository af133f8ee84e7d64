//! The models a reproduction covers: the real models `cargo xtask fetch` downloads, any checkpoint
//! given by path, and the tiny random models of the smoke profile.

use std::path::{Path, PathBuf};

use finercut_format::cache;
use finercut_pipeline::{write_tiny_model, TinySpec};

use crate::error::{bail, Result};
use crate::ProfileKind;

/// A real model the project can fetch.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// Name given to `--models`, and the model's directory under each output.
    pub key: &'static str,
    /// Name in tables and figures.
    pub display: &'static str,
    /// The `cargo xtask fetch` target that downloads it.
    pub fetch: &'static str,
    /// Whether the default profile covers it.
    pub in_default: bool,
    path: fn() -> PathBuf,
}

/// The models `--models` accepts by name, in the order tables list them.
pub const KNOWN_MODELS: [KnownModel; 3] = [
    KnownModel {
        key: "smollm2-135m",
        display: "SmolLM2-135M-Instruct (Q4_1 GGUF)",
        fetch: "smollm2",
        in_default: true,
        path: cache::default_model_path,
    },
    KnownModel {
        key: "gemma3-270m",
        display: "Gemma-3-270M (Q4_K_M GGUF)",
        fetch: "gemma3",
        in_default: true,
        path: cache::gemma3_model_path,
    },
    KnownModel {
        key: "qwen2.5-coder-0.5b",
        display: "Qwen2.5-Coder-0.5B-Instruct (Q4_K_M GGUF)",
        fetch: "qwen2.5-0.5b",
        in_default: false,
        path: cache::qwen25_model_path,
    },
];

/// One model of a reproduction.
#[derive(Debug, Clone)]
pub struct ModelChoice {
    /// Its directory under each output.
    pub key: String,
    /// Its name in tables and figures.
    pub display: String,
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    Known(KnownModel),
    Path(PathBuf),
    /// A tiny random Llama written into this directory with this seed (the smoke profile).
    Tiny(PathBuf, u64),
}

impl ModelChoice {
    /// The models of `names` (keys of [`KNOWN_MODELS`], `all`, or checkpoint paths), or the
    /// profile's own when `names` is empty: the smoke profile's two tiny random models (under
    /// `out`), the default profile's models, or every known model for the full profile.
    pub fn resolve(names: &[String], profile: ProfileKind, out: &Path) -> Result<Vec<ModelChoice>> {
        if profile == ProfileKind::Smoke {
            if !names.is_empty() {
                bail!("--smoke runs its own tiny random models; it takes no --models");
            }
            return Ok((0..2)
                .map(|i| ModelChoice {
                    key: format!("tiny-{}", i + 1),
                    display: format!("tiny random Llama {} (smoke)", i + 1),
                    source: Source::Tiny(out.join(format!("smoke-model-{}", i + 1)), 7 + i),
                })
                .collect());
        }
        let known = |m: &KnownModel| ModelChoice {
            key: m.key.to_owned(),
            display: m.display.to_owned(),
            source: Source::Known(*m),
        };
        if names.is_empty() {
            return Ok(KNOWN_MODELS
                .iter()
                .filter(|m| profile == ProfileKind::Full || m.in_default)
                .map(known)
                .collect());
        }
        let mut out: Vec<ModelChoice> = Vec::new();
        for name in names {
            let choices: Vec<ModelChoice> = if name == "all" {
                KNOWN_MODELS.iter().map(known).collect()
            } else if let Some(m) = KNOWN_MODELS.iter().find(|m| m.key == name) {
                vec![known(m)]
            } else {
                let path = PathBuf::from(name);
                if !path.exists() {
                    bail!(
                        "--models: {name:?} is neither a known model ({}, all) nor an existing \
                         checkpoint path",
                        KNOWN_MODELS
                            .iter()
                            .map(|m| m.key)
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
                let file = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| name.clone());
                let key: String = file
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                vec![ModelChoice {
                    key,
                    display: file,
                    source: Source::Path(path),
                }]
            };
            for c in choices {
                if out.iter().any(|o| o.key == c.key) {
                    bail!("--models names {} twice", c.key);
                }
                out.push(c);
            }
        }
        Ok(out)
    }

    /// The checkpoint's path, checking that a known model has been fetched (and writing a tiny model).
    pub fn prepare(&self) -> Result<PathBuf> {
        match &self.source {
            Source::Known(m) => {
                let path = (m.path)();
                if !path.exists() {
                    bail!(
                        "{} is not in the cache ({}): run `cargo xtask fetch {}`",
                        m.display,
                        path.display(),
                        m.fetch
                    );
                }
                Ok(path)
            }
            Source::Path(p) => Ok(p.clone()),
            Source::Tiny(dir, seed) => {
                // Six blocks: 25% of 12 sublayers is 3, odd as for SmolLM2's 60, so the block
                // methods' rounding down to whole blocks is exercised.
                write_tiny_model(
                    dir,
                    &TinySpec {
                        blocks: 6,
                        seed: *seed,
                        ..TinySpec::default()
                    },
                )?;
                Ok(dir.clone())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_full_profiles_choose_their_models() {
        let out = Path::new("unused");
        let d = ModelChoice::resolve(&[], ProfileKind::Default, out).expect("default");
        let keys: Vec<&str> = d.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["smollm2-135m", "gemma3-270m"]);
        let f = ModelChoice::resolve(&[], ProfileKind::Full, out).expect("full");
        assert_eq!(f.len(), KNOWN_MODELS.len());
        let s = ModelChoice::resolve(&[], ProfileKind::Smoke, out).expect("smoke");
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn models_are_chosen_by_name_and_bad_names_are_refused() {
        let out = Path::new("unused");
        let q = ModelChoice::resolve(&["qwen2.5-coder-0.5b".into()], ProfileKind::Default, out)
            .expect("by name");
        assert_eq!(q[0].key, "qwen2.5-coder-0.5b");
        let err = ModelChoice::resolve(&["llama-9000".into()], ProfileKind::Default, out)
            .expect_err("unknown");
        assert!(err.to_string().contains("smollm2-135m"), "{err}");
        let twice = ModelChoice::resolve(
            &["gemma3-270m".into(), "all".into()],
            ProfileKind::Default,
            out,
        );
        assert!(twice.is_err());
        assert!(
            ModelChoice::resolve(&["all".into()], ProfileKind::Smoke, out).is_err(),
            "smoke takes no --models"
        );
    }
}
