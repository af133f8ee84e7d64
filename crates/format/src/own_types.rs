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

use serde_json::{json, Value as Json};

use crate::{Error, Result};

/// The `model_type` of a `finercut export --format dropped` checkpoint.
pub const DROPPED_MODEL_TYPE: &str = "finercut-dropped";

/// The `model_type` of a SliceGPT checkpoint written by `finercut slice`.
pub const SLICED_MODEL_TYPE: &str = "finercut-slicegpt";

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

    fn from_model_type(model_type: &str) -> Option<Self> {
        [OwnLayout::Dropped, OwnLayout::Sliced]
            .into_iter()
            .find(|l| l.model_type() == model_type)
    }
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
