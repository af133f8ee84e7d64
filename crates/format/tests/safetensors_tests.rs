//! Safetensors: write/read round trips, sharded checkpoints, corrupt files.

use std::collections::BTreeMap;
use std::path::Path;

use finercut_format::{write_safetensors, Bytes, DType, Error, SafetensorsStore, TensorSource};
use proptest::prelude::*;

fn dtype_strategy() -> impl Strategy<Value = DType> {
    prop_oneof![Just(DType::F32), Just(DType::F16), Just(DType::BF16)]
}

fn tensor_strategy() -> impl Strategy<Value = (DType, Vec<usize>, Vec<u8>)> {
    (dtype_strategy(), prop::collection::vec(0usize..5, 0..4)).prop_flat_map(|(dt, shape)| {
        let n = shape.iter().product::<usize>() * dt.size();
        (Just(dt), Just(shape), prop::collection::vec(any::<u8>(), n))
    })
}

fn meta() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("format".to_string(), "pt".to_string()),
        ("note".to_string(), "é ü".to_string()),
    ])
}

fn check_round_trip(tensors: &[(DType, Vec<usize>, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.safetensors");
    let named: Vec<(String, DType, Vec<usize>, &[u8])> = tensors
        .iter()
        .enumerate()
        .map(|(i, (d, s, b))| (format!("layer.{i}.weight"), *d, s.clone(), b.as_slice()))
        .collect();
    write_safetensors(&path, &named, &meta()).unwrap();

    let store = SafetensorsStore::open(&path).unwrap();
    assert_eq!(store.metadata(), meta());
    assert_eq!(
        store.names(),
        named.iter().map(|t| t.0.clone()).collect::<Vec<_>>()
    );
    for (name, dtype, shape, bytes) in &named {
        assert!(store.contains(name));
        let t = store.get(name).unwrap();
        assert_eq!(t.dtype, *dtype);
        assert_eq!(&t.shape, shape);
        assert_eq!(&*t.data, *bytes);
    }

    // The reference parser accepts the file and sees the same tensors.
    let raw = std::fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    for (name, _, shape, bytes) in &named {
        let view = st.tensor(name).unwrap();
        assert_eq!(view.shape(), shape.as_slice());
        assert_eq!(view.data(), *bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn write_read_round_trip(tensors in prop::collection::vec(tensor_strategy(), 0..5)) {
        check_round_trip(&tensors);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = SafetensorsStore::from_bytes("garbage.safetensors", Bytes::from_vec(bytes));
    }

    #[test]
    fn corrupted_headers_never_panic(pos in 0usize..200, byte in any::<u8>()) {
        let mut file = small_file();
        let at = pos % file.len();
        file[at] = byte;
        if let Ok(store) = SafetensorsStore::from_bytes("c.safetensors", Bytes::from_vec(file)) {
            for n in store.names() {
                let _ = store.get(&n);
            }
        }
    }
}

fn small_file() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.safetensors");
    let a: Vec<u8> = (0..24).collect();
    let b: Vec<u8> = (0..8).collect();
    write_safetensors(
        &path,
        &[
            ("a".into(), DType::F32, vec![2, 3], &a[..]),
            ("b".into(), DType::BF16, vec![4], &b[..]),
        ],
        &meta(),
    )
    .unwrap();
    std::fs::read(path).unwrap()
}

#[test]
fn every_truncation_is_an_error_naming_the_file() {
    let full = small_file();
    for len in 0..full.len() {
        let r =
            SafetensorsStore::from_bytes("cut.safetensors", Bytes::from_vec(full[..len].to_vec()));
        let e = r
            .err()
            .unwrap_or_else(|| panic!("truncation to {len} bytes accepted"))
            .to_string();
        assert!(e.contains("cut.safetensors"), "{e}");
    }
    assert!(SafetensorsStore::from_bytes("full.safetensors", Bytes::from_vec(full)).is_ok());
}

#[test]
fn header_length_beyond_file() {
    let mut f = small_file();
    let n = f.len() as u64;
    f[..8].copy_from_slice(&n.to_le_bytes());
    let e = SafetensorsStore::from_bytes("h.safetensors", Bytes::from_vec(f))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("beyond the end of the file"), "{e}");
}

#[test]
fn mismatched_sizes_are_rejected_when_writing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let data = [0u8; 10];
    let e = write_safetensors(
        &path,
        &[("w".into(), DType::F32, vec![3], &data[..])],
        &BTreeMap::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("`w`") && e.contains("10 bytes"), "{e}");
    assert!(!path.exists(), "a failed write left a file behind");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

fn write_shard(path: &Path, tensors: &[(&str, Vec<f32>)]) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let list: Vec<(String, DType, Vec<usize>, &[u8])> = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, v), b)| (n.to_string(), DType::F32, vec![v.len()], b.as_slice()))
        .collect();
    write_safetensors(
        path,
        &list,
        &BTreeMap::from([("format".to_string(), "pt".to_string())]),
    )
    .unwrap();
}

#[test]
fn sharded_index_routes_each_name_to_its_shard() {
    let dir = tempfile::tempdir().unwrap();
    write_shard(
        &dir.path().join("model-00001-of-00002.safetensors"),
        &[("a", vec![1.0, 2.0]), ("b", vec![3.0])],
    );
    write_shard(
        &dir.path().join("model-00002-of-00002.safetensors"),
        &[("c", vec![4.0, 5.0, 6.0])],
    );
    let index = serde_json::json!({
        "metadata": {"total_size": 24},
        "weight_map": {
            "a": "model-00001-of-00002.safetensors",
            "b": "model-00001-of-00002.safetensors",
            "c": "model-00002-of-00002.safetensors"
        }
    });
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        index.to_string(),
    )
    .unwrap();

    for opened in [
        dir.path().to_path_buf(),
        dir.path().join("model.safetensors.index.json"),
    ] {
        let store = SafetensorsStore::open(&opened).unwrap();
        assert_eq!(store.names(), vec!["a", "b", "c"]);
        assert_eq!(store.files().len(), 2);
        assert_eq!(
            store.get("c").unwrap().to_f32_vec().unwrap(),
            vec![4.0, 5.0, 6.0]
        );
        assert_eq!(store.get("b").unwrap().to_f32_vec().unwrap(), vec![3.0]);
        assert_eq!(store.metadata()["total_size"], "24");
        assert!(!store.contains("d"));
        assert!(matches!(store.get("d"), Err(Error::MissingTensor { .. })));
    }

    // An index that sends a tensor to a shard without it is an error naming both.
    let bad = serde_json::json!({"weight_map": {"a": "model-00002-of-00002.safetensors"}});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        bad.to_string(),
    )
    .unwrap();
    let e = SafetensorsStore::open(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("`a`") && e.contains("model-00002-of-00002"),
        "{e}"
    );

    // A missing shard is an I/O error naming the file.
    let missing = serde_json::json!({"weight_map": {"a": "model-00003-of-00003.safetensors"}});
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        missing.to_string(),
    )
    .unwrap();
    let e = SafetensorsStore::open(dir.path())
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("model-00003-of-00003.safetensors"), "{e}");
}

#[test]
fn single_file_directory_and_missing_directory() {
    let dir = tempfile::tempdir().unwrap();
    assert!(SafetensorsStore::open(dir.path()).is_err());
    write_shard(&dir.path().join("model.safetensors"), &[("w", vec![1.5])]);
    let store = SafetensorsStore::open(dir.path()).unwrap();
    assert_eq!(store.get("w").unwrap().to_f32_vec().unwrap(), vec![1.5]);
    // Zero copy: the tensor's bytes live inside the file's map.
    let t = store.get("w").unwrap();
    let file_len = std::fs::metadata(dir.path().join("model.safetensors"))
        .unwrap()
        .len() as usize;
    assert_eq!((**t.data.owner()).as_ref().len(), file_len);
}
