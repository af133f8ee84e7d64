//! Hugging Face `datasets` saves: Arrow IPC **streaming** files read into JSON rows.
//!
//! `Dataset.save_to_disk` writes `data-*.arrow` (the stream format, not the file format), `state.json`
//! (the data files in order) and `dataset_info.json`.
//! Rows become `serde_json` objects so that the prompt builders read Arrow saves and oe-eval request
//! files through one representation; nested columns (ARC's `choices: {text: [..], label: [..]}`) become
//! nested JSON.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::Array;
use arrow_ipc::reader::StreamReader;
use arrow_schema::DataType;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// One dataset row.
pub type Row = Map<String, Value>;

/// The `data-*.arrow` files of a saved split, in order: as listed by `state.json`, else sorted by name.
pub fn data_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let state = dir.join("state.json");
    if state.is_file() {
        let text = std::fs::read_to_string(&state).map_err(|e| Error::io(&state, e))?;
        let value: Value = serde_json::from_str(&text).map_err(|e| Error::Json {
            path: state.clone(),
            line: 0,
            message: e.to_string(),
        })?;
        if let Some(files) = value.get("_data_files").and_then(Value::as_array) {
            let listed: Vec<PathBuf> = files
                .iter()
                .filter_map(|f| f.get("filename").and_then(Value::as_str))
                .map(|name| dir.join(name))
                .collect();
            if !listed.is_empty() {
                return Ok(listed);
            }
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut found = Vec::new();
    for entry in entries {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let is_data = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("data-") && n.ends_with(".arrow"));
        if is_data {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Reads every row of a saved split directory.
pub fn read_split(dir: &Path) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    for file in data_files(dir)? {
        rows.extend(read_stream(&file)?);
    }
    Ok(rows)
}

/// Reads every row of one Arrow IPC stream file.
pub fn read_stream(path: &Path) -> Result<Vec<Row>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    let arrow_err = |e: arrow_schema::ArrowError| Error::Arrow {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let reader = StreamReader::try_new(BufReader::new(file), None).map_err(arrow_err)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(arrow_err)?;
        let schema = batch.schema();
        for row in 0..batch.num_rows() {
            let mut object = Map::new();
            for (field, column) in schema.fields().iter().zip(batch.columns()) {
                let value = value_at(column.as_ref(), row).map_err(|message| Error::Arrow {
                    path: path.to_path_buf(),
                    message: format!("column '{}': {message}", field.name()),
                })?;
                object.insert(field.name().clone(), value);
            }
            rows.push(object);
        }
    }
    Ok(rows)
}

/// Converts one cell to JSON.
fn value_at(array: &dyn Array, row: usize) -> std::result::Result<Value, String> {
    if array.is_null(row) {
        return Ok(Value::Null);
    }
    Ok(match array.data_type() {
        DataType::Null => Value::Null,
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::LargeUtf8 => Value::String(array.as_string::<i64>().value(row).to_owned()),
        DataType::Utf8View => Value::String(array.as_string_view().value(row).to_owned()),
        DataType::List(_) => list(array.as_list::<i32>().value(row).as_ref())?,
        DataType::LargeList(_) => list(array.as_list::<i64>().value(row).as_ref())?,
        DataType::FixedSizeList(_, _) => list(array.as_fixed_size_list().value(row).as_ref())?,
        DataType::Struct(fields) => {
            let s = array.as_struct();
            let mut object = Map::new();
            for (field, column) in fields.iter().zip(s.columns()) {
                object.insert(field.name().clone(), value_at(column.as_ref(), row)?);
            }
            Value::Object(object)
        }
        other => return Err(format!("unsupported Arrow type {other}")),
    })
}

fn float(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

fn list(values: &dyn Array) -> std::result::Result<Value, String> {
    (0..values.len())
        .map(|i| value_at(values, i))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map(Value::Array)
}
