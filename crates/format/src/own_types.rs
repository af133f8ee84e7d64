//! `model_type`s that only finercut reads: the config.json of a checkpoint that a stock loader
//! would misread is marked so that it refuses the checkpoint instead.
//!
//! A `finercut export --format dropped` checkpoint lacks the tensors of its removed sublayers, and
//! a SliceGPT checkpoint has residual shortcut matrices (`*_shortcut_Q`) and RMSNorms that divide
//! by the original width. Under the source's `model_type` (`llama`, …) Hugging Face transformers
//! would load the first with the missing tensors randomly initialised (with only a warning) and
//! the second without its shortcuts, and compute something else without an error. Its Auto classes
//! choose the configuration and model classes by `model_type` (`CONFIG_MAPPING`), so these
//! checkpoints are written with a `model_type` it does not know ([`DROPPED_MODEL_TYPE`],
//! [`SLICED_MODEL_TYPE`]) and an `architectures` class that exists nowhere; vLLM and llama.cpp's
//! converter, which key on `architectures`, refuse them too. The source's `model_type` and
//! `architectures` are kept in the checkpoint's own section (`finercut` or `slicegpt`), and
//! [`unmark`] puts them back before the configuration is parsed.
//!
//! Loading by class name (`LlamaForCausalLM.from_pretrained(dir)`) reads no `model_type`:
//! transformers only warns that the config's type differs from the class's, and would load the
//! checkpoint as above. So the weights are not where stock loaders look for them either: they
//! are written to [`OwnLayout::weights_file`] (`finercut-dropped.safetensors`,
//! `finercut-slicegpt.safetensors`), not `model.safetensors`, and every Hugging Face loader
//! stops with "no file named model.safetensors" (llama.cpp's converter, which collects
//! `model*.safetensors`, finds no tensors). The safetensors header's `__metadata__` `format`
//! names the layout too ([`FORMAT_KEY`]; stock checkpoints say [`STOCK_FORMAT`]), which
//! transformers 4.x checks when it reads a file (it accepts `pt`, `tf`, `flax` and `mlx` only;
//! 5.x no longer reads it), and which finercut checks against config.json ([`check_weights_format`]), so a file moved into
//! a directory with an unmarked config is refused rather than misread.

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use crate::{Error, Result};

/// The `model_type` of a `finercut export --format dropped` checkpoint.
pub const DROPPED_MODEL_TYPE: &str = "finercut-dropped";

/// The `model_type` of a SliceGPT checkpoint written by `finercut slice`.
pub const SLICED_MODEL_TYPE: &str = "finercut-slicegpt";

/// The `__metadata__` key of a safetensors file that names the framework or layout it is for.
pub const FORMAT_KEY: &str = "format";

/// The `format` that transformers' `save_pretrained` writes, and finercut for stock layouts.
pub const STOCK_FORMAT: &str = "pt";

/// A checkpoint layout that only finercut computes correctly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnLayout {
    /// Removed sublayers' tensors dropped; the `finercut` section lists them.
    Dropped,
    /// SliceGPT: shortcut matrices and sliced widths; the `slicegpt` section describes them.
    Sliced,
}

impl OwnLayout {
    /// The `model_type` written for this layout.
    pub fn model_type(self) -> &'static str {
        match self {
            OwnLayout::Dropped => DROPPED_MODEL_TYPE,
            OwnLayout::Sliced => SLICED_MODEL_TYPE,
        }
    }

    /// The config.json section that keeps the source's `model_type` and `architectures`.
    pub fn section(self) -> &'static str {
        match self {
            OwnLayout::Dropped => "finercut",
            OwnLayout::Sliced => "slicegpt",
        }
    }

    /// The `architectures` class written for this layout: no library defines it.
    pub fn class(self) -> &'static str {
        match self {
            OwnLayout::Dropped => "FinercutDroppedForCausalLM",
            OwnLayout::Sliced => "FinercutSliceGptForCausalLM",
        }
    }

    /// The file the weights are written to, in place of `model.safetensors`, which stock
    /// loaders look for (by Auto class or by class name alike).
    pub fn weights_file(self) -> &'static str {
        match self {
            OwnLayout::Dropped => "finercut-dropped.safetensors",
            OwnLayout::Sliced => "finercut-slicegpt.safetensors",
        }
    }

    /// The safetensors `__metadata__` `format` of the weights: the layout's `model_type`.
    pub fn format(self) -> &'static str {
        self.model_type()
    }

    /// The `__metadata__` written with the weights: `{"format": <`[`OwnLayout::format`]`>}`.
    pub fn weights_metadata(self) -> BTreeMap<String, String> {
        BTreeMap::from([(FORMAT_KEY.to_string(), self.format().to_string())])
    }

    /// Every layout, in a fixed order.
    pub const ALL: [OwnLayout; 2] = [OwnLayout::Dropped, OwnLayout::Sliced];

    fn from_model_type(model_type: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.model_type() == model_type)
    }
}

/// The `__metadata__` written with a stock layout's weights: `{"format": "pt"}`.
pub fn stock_weights_metadata() -> BTreeMap<String, String> {
    BTreeMap::from([(FORMAT_KEY.to_string(), STOCK_FORMAT.to_string())])
}

/// The layout a safetensors `__metadata__` names in its `format`, if it is one of finercut's own.
pub fn layout_of_metadata(metadata: &BTreeMap<String, String>) -> Option<OwnLayout> {
    let format = metadata.get(FORMAT_KEY)?;
    OwnLayout::ALL.into_iter().find(|l| l.format() == format)
}

/// The layout a config.json's top-level `model_type` marks (`None` for a stock config or text
/// that is not a JSON object; the config parser reports the latter).
pub fn layout_of_config_text(text: &str) -> Option<OwnLayout> {
    let json: Json = serde_json::from_str(text).ok()?;
    json.get("model_type")
        .and_then(Json::as_str)
        .and_then(OwnLayout::from_model_type)
}

/// Checks that weights whose `__metadata__` is `metadata` belong with a config.json marked as
/// `config_layout`: weights written for one of finercut's own layouts need a config marked as
/// that layout (otherwise the model would be built as the source's, without the layout's
/// handling). A marked config with stock weights (`format` `pt`, as finercut wrote these layouts
/// before their weights got their own `format` and file name) is accepted. `weights` and
/// `config` name the files in errors.
pub fn check_weights_format(
    config_layout: Option<OwnLayout>,
    metadata: &BTreeMap<String, String>,
    weights: &str,
    config: &str,
) -> Result<()> {
    let Some(weights_layout) = layout_of_metadata(metadata) else {
        return Ok(());
    };
    if config_layout == Some(weights_layout) {
        return Ok(());
    }
    let config_says = match config_layout {
        Some(l) => format!("`model_type` `{}`", l.model_type()),
        None => "a stock `model_type`".to_string(),
    };
    Err(Error::config(
        config,
        format!(
            "has {config_says}, but the weights in {weights} are a `{}` checkpoint's \
             (`__metadata__` `format`); put back the config.json written with them",
            weights_layout.format()
        ),
    ))
}

/// Marks `config` (a config.json object that already holds `layout`'s section) as `layout`: the
/// source's `model_type` and `architectures` move into the section, and the top-level keys name
/// `layout`'s own type and class. `origin` names the file in errors.
pub fn mark(config: &mut Json, layout: OwnLayout, origin: &str) -> Result<()> {
    let bad = |msg: String| Error::config(origin, msg);
    let obj = config
        .as_object_mut()
        .ok_or_else(|| bad("config is not a JSON object".into()))?;
    let model_type = obj
        .get("model_type")
        .cloned()
        .ok_or_else(|| bad("`model_type` is missing".into()))?;
    if model_type
        .as_str()
        .and_then(OwnLayout::from_model_type)
        .is_some()
    {
        return Err(bad(format!(
            "is already marked as `{}`",
            model_type.as_str().unwrap_or_default()
        )));
    }
    let architectures = obj.get("architectures").cloned().unwrap_or(Json::Null);
    let section = obj
        .get_mut(layout.section())
        .and_then(Json::as_object_mut)
        .ok_or_else(|| bad(format!("has no `{}` section to mark", layout.section())))?;
    section.insert("model_type".into(), model_type);
    section.insert("architectures".into(), architectures);
    obj.insert("model_type".into(), json!(layout.model_type()));
    obj.insert("architectures".into(), json!([layout.class()]));
    Ok(())
}

/// Undoes [`mark`]: a config marked with one of finercut's own `model_type`s gets the source's
/// `model_type` and `architectures` back from its section, and the layout is returned; any other
/// config is left as it is (`None`). A marked config whose section lacks the source's
/// `model_type` is an error naming `origin`.
pub fn unmark(config: &mut Json, origin: &str) -> Result<Option<OwnLayout>> {
    let Some(layout) = config
        .get("model_type")
        .and_then(Json::as_str)
        .and_then(OwnLayout::from_model_type)
    else {
        return Ok(None);
    };
    let section = layout.section();
    let source = config.get(section).and_then(|s| s.get("model_type"));
    let Some(model_type) = source.filter(|t| t.is_string()).cloned() else {
        return Err(Error::config(
            origin,
            format!(
                "`model_type` is `{}` but `{section}.model_type` (the source's model_type) is missing",
                layout.model_type()
            ),
        ));
    };
    let architectures = config
        .get(section)
        .and_then(|s| s.get("architectures"))
        .cloned()
        .unwrap_or(Json::Null);
    if let Some(obj) = config.as_object_mut() {
        obj.insert("model_type".into(), model_type);
        if architectures.is_null() {
            obj.remove("architectures");
        } else {
            obj.insert("architectures".into(), architectures);
        }
    }
    Ok(Some(layout))
}

/// config.json text with [`unmark`] applied, or `None` when it is not marked (then the text is
/// read as it is). Text that is not JSON is left to the caller's parser to report.
pub fn unmarked_text(text: &str, origin: &str) -> Result<Option<String>> {
    if ![DROPPED_MODEL_TYPE, SLICED_MODEL_TYPE]
        .iter()
        .any(|t| text.contains(t))
    {
        return Ok(None);
    }
    let Ok(mut json) = serde_json::from_str::<Json>(text) else {
        return Ok(None);
    };
    Ok(unmark(&mut json, origin)?.map(|_| json.to_string()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn mark_and_unmark_round_trip() {
        let plain = json!({"model_type": "llama", "architectures": ["LlamaForCausalLM"],
                           "finercut": {"removed_sublayers": [1]}, "slicegpt": {"original_hidden_size": 8}});
        for layout in [OwnLayout::Dropped, OwnLayout::Sliced] {
            let mut j = plain.clone();
            mark(&mut j, layout, "c.json").unwrap();
            assert_eq!(j["model_type"], layout.model_type());
            assert_eq!(j["architectures"], json!([layout.class()]));
            assert_eq!(j[layout.section()]["model_type"], "llama");
            let e = mark(&mut j, layout, "c.json").unwrap_err().to_string();
            assert!(e.contains("already marked") && e.contains("c.json"), "{e}");
            assert_eq!(unmark(&mut j, "c.json").unwrap(), Some(layout));
            assert_eq!(j["model_type"], "llama");
            assert_eq!(j["architectures"], json!(["LlamaForCausalLM"]));
        }
        let mut j = plain.clone();
        assert_eq!(unmark(&mut j, "c.json").unwrap(), None);
        assert_eq!(j, plain);
        assert_eq!(unmarked_text(&plain.to_string(), "c.json").unwrap(), None);
        let mut marked = plain.clone();
        mark(&mut marked, OwnLayout::Sliced, "c.json").unwrap();
        let text = unmarked_text(&marked.to_string(), "c.json")
            .unwrap()
            .unwrap();
        let back: Json = serde_json::from_str(&text).unwrap();
        assert_eq!(back["model_type"], "llama");
    }

    #[test]
    fn weights_format_names_the_layout_and_must_match_the_config() {
        for layout in OwnLayout::ALL {
            let meta = layout.weights_metadata();
            assert_eq!(
                meta.get("format").map(String::as_str),
                Some(layout.model_type())
            );
            assert_eq!(layout_of_metadata(&meta), Some(layout));
            assert!(layout.weights_file().ends_with(".safetensors"));
            assert!(!layout.weights_file().starts_with("model"));
            check_weights_format(Some(layout), &meta, "w.safetensors", "c.json").unwrap();
            let e = check_weights_format(None, &meta, "w.safetensors", "c.json")
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("c.json") && e.contains("w.safetensors") && e.contains(layout.format()),
                "{e}"
            );
            // Stock weights under a marked config: what earlier versions wrote.
            check_weights_format(Some(layout), &stock_weights_metadata(), "w", "c").unwrap();
        }
        let e = check_weights_format(
            Some(OwnLayout::Sliced),
            &OwnLayout::Dropped.weights_metadata(),
            "w",
            "c",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("finercut-slicegpt") && e.contains("finercut-dropped"),
            "{e}"
        );
        assert_eq!(layout_of_metadata(&stock_weights_metadata()), None);
        assert_eq!(layout_of_metadata(&BTreeMap::new()), None);
        check_weights_format(None, &BTreeMap::new(), "w", "c").unwrap();
        assert_eq!(
            layout_of_config_text(r#"{"model_type": "finercut-dropped"}"#),
            Some(OwnLayout::Dropped)
        );
        assert_eq!(layout_of_config_text(r#"{"model_type": "llama"}"#), None);
        assert_eq!(layout_of_config_text("not json"), None);
    }

    #[test]
    fn marking_needs_the_section_and_unmarking_the_source_type() {
        let mut j = json!({"model_type": "llama"});
        let e = mark(&mut j, OwnLayout::Sliced, "c.json").unwrap_err();
        assert!(e.to_string().contains("`slicegpt` section"), "{e}");
        let mut j = json!({"model_type": "finercut-dropped", "finercut": {}});
        let e = unmark(&mut j, "c.json").unwrap_err().to_string();
        assert!(
            e.contains("finercut.model_type") && e.contains("c.json"),
            "{e}"
        );
        // No `architectures` in the source: none after unmarking.
        let mut j = json!({"model_type": "qwen2", "finercut": {}});
        mark(&mut j, OwnLayout::Dropped, "c.json").unwrap();
        unmark(&mut j, "c.json").unwrap();
        assert_eq!(
            j,
            json!({"model_type": "qwen2", "finercut": {"model_type": "qwen2", "architectures": null}})
        );
    }
}
