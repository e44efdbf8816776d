//! Fuzz-style properties of model files (issue 18): a model file with mutated metadata
//! values, flipped or cut bytes, or arbitrary metadata text never makes opening it panic,
//! never yields metadata that fails [`ClassifierMeta::validate`] or decode limits above the
//! built-in ones, and opens in bounded time and memory. Modest case counts keep CI fast.

use std::path::Path;
use std::time::Duration;

use fracture_nn::data::{DecodeLimits, Normalization};
use fracture_nn::{Classifier, ClassifierMeta, ModelConfig};
use fracture_test_support::alloc::{measure, Counting};
use proptest::prelude::*;
use serde_json::Value;

/// Counts this thread's live heap bytes, so that a property can bound what one call holds.
#[global_allocator]
static ALLOC: Counting = Counting;

/// A valid small model file's bytes.
fn good_file() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let model = ModelConfig::phantom(32).with_arch(fracture_nn::model::PlainNet::new(&[4, 8]));
        let meta = ClassifierMeta::new(
            model,
            Normalization {
                mean: 0.4,
                std: 0.2,
            },
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.safetensors");
        Classifier::new(meta, 1).unwrap().save(&path).unwrap();
        std::fs::read(path).unwrap()
    })
}

/// Splits a safetensors file into its JSON header and the tensor bytes.
fn split(bytes: &[u8]) -> (Value, &[u8]) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        &bytes[8 + n..],
    )
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Every leaf of a JSON value, as a path of keys and indices.
fn leaves(v: &Value, path: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                path.push(Value::String(k.clone()));
                leaves(x, path, out);
                path.pop();
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, x) in a.iter().enumerate() {
                path.push(Value::from(i));
                leaves(x, path, out);
                path.pop();
            }
        }
        _ => out.push(path.clone()),
    }
}

fn at<'a>(v: &'a mut Value, path: &[Value]) -> &'a mut Value {
    path.iter().fold(v, |v, k| match k {
        Value::String(s) => &mut v[s.as_str()],
        Value::Number(i) => &mut v[i.as_u64().unwrap() as usize],
        _ => unreachable!(),
    })
}

fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        (-3i64..300).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(vec![-1.0, 0.0, 0.5, 1.0, 1.5, 1e300, -1e-300]).prop_map(Value::from),
        "[a-z_]{0,12}".prop_map(Value::from),
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        proptest::collection::vec(0u64..5000, 0..5).prop_map(Value::from),
    ]
}

/// Opens the file like every command does and checks the promises.
fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.safetensors");
    std::fs::write(&path, bytes).unwrap();
    let (result, peak, elapsed) = measure(|| open(&path));
    if let Ok(meta) = result {
        prop_assert!(meta.validate().is_ok());
        let d = DecodeLimits::default();
        let l = meta.preprocess.limits;
        prop_assert!(l.max_width <= d.max_width && l.max_height <= d.max_height);
        prop_assert!(l.max_alloc <= d.max_alloc);
    }
    // The architecture bound of ClassifierMeta::validate (64 M weights, parameters and
    // gradients in f32) caps what building the network may take.
    prop_assert!(peak <= 1 << 30, "opening held {peak} bytes at once");
    prop_assert!(elapsed < Duration::from_secs(20), "took {elapsed:?}");
    Ok(())
}

fn open(path: &Path) -> Result<ClassifierMeta, fracture_nn::Error> {
    let meta = Classifier::read_meta(path)?;
    Classifier::load(path).map(|c| c.meta).map(|m| {
        assert_eq!(m, meta);
        m
    })
}

#[test]
fn the_good_file_opens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    std::fs::write(&path, good_file()).unwrap();
    Classifier::load(&path).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// One to three metadata values replaced by anything.
    #[test]
    fn mutated_metadata_values(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), any_json()), 1..4),
    ) {
        let (mut header, data) = split(good_file());
        let meta_text = header["__metadata__"]["fracture_nn"].as_str().unwrap().to_string();
        let mut meta: Value = serde_json::from_str(&meta_text).unwrap();
        let mut all = Vec::new();
        leaves(&meta, &mut Vec::new(), &mut all);
        for (i, v) in picks {
            *at(&mut meta, &all[i.index(all.len())]) = v;
        }
        header["__metadata__"]["fracture_nn"] = Value::String(meta.to_string());
        check(&join(&header, data))?;
    }

    /// Arbitrary text as the classifier metadata.
    #[test]
    fn arbitrary_metadata_text(text in ".{0,200}") {
        let (mut header, data) = split(good_file());
        header["__metadata__"]["fracture_nn"] = Value::String(text);
        check(&join(&header, data))?;
    }

    /// Flipped bytes anywhere (header length, JSON, tensor data), then an optional cut.
    #[test]
    fn flipped_and_truncated_files(
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = good_file().to_vec();
        for (pos, v) in flips {
            let i = pos % bytes.len();
            bytes[i] = v;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        check(&bytes)?;
    }
}
