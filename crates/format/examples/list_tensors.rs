//! Lists the tensors of a checkpoint: `cargo run -p finercut-format --example list_tensors [PATH]`,
//! where PATH is a safetensors file or directory, or a GGUF file. Without PATH it writes a small
//! safetensors file under the system's temporary directory and lists that.

use std::collections::BTreeMap;
use std::path::PathBuf;

use finercut_format::{write_safetensors, DType, GgufStore, SafetensorsStore, TensorSource};

fn main() -> finercut_format::Result<()> {
    let path = match std::env::args_os().nth(1) {
        Some(p) => PathBuf::from(p),
        None => {
            let path =
                std::env::temp_dir().join(format!("finercut-{}.safetensors", std::process::id()));
            let w: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let b: Vec<u8> = [0.5f32, -0.5]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let tensors = [
                ("layer.weight".to_string(), DType::F32, vec![2, 2], &w[..]),
                ("layer.bias".to_string(), DType::F32, vec![2], &b[..]),
            ];
            let meta = BTreeMap::from([("format".to_string(), "pt".to_string())]);
            write_safetensors(&path, &tensors, &meta)?;
            path
        }
    };
    let source: Box<dyn TensorSource> = if path.extension().is_some_and(|e| e == "gguf") {
        Box::new(GgufStore::open(&path)?)
    } else {
        Box::new(SafetensorsStore::open(&path)?)
    };
    let mut names = source.names();
    names.sort();
    println!("{}: {} tensors", path.display(), names.len());
    for name in names {
        let t = source.get(&name)?;
        println!("  {name}: {:?} {:?}", t.dtype, t.shape);
    }
    Ok(())
}
