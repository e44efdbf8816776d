//! Fuzz-style properties of checkpoint loading (issue 18), beyond "never panics"
//! (`checkpoint.rs`): headers announcing any shape, offset, dtype or header length, and
//! random bytes, never make loading allocate much more than the file's own size, and finish
//! in bounded time. Modest case counts keep CI fast.

use std::path::Path;
use std::time::Duration;

use fracture_layers::checkpoint::{self, Metadata};
use fracture_layers::*;
use fracture_test_support::alloc::{measure, Counting};
use proptest::prelude::*;
use rand::SeedableRng;
use serde_json::Value;

/// Counts this thread's live heap bytes, so that a property can bound what one call holds.
#[global_allocator]
static ALLOC: Counting = Counting;

fn net() -> Sequential {
    let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    Sequential::new()
        .with("conv", Conv2dConfig::new(1, 4, 3).init(&mut r).unwrap())
        .unwrap()
        .with("bn", BatchNorm2dConfig::new(4).init().unwrap())
        .unwrap()
        .with("gap", GlobalAvgPool::new())
        .unwrap()
        .with("fc", LinearConfig::new(4, 2).init(&mut r).unwrap())
        .unwrap()
}

fn good_file() -> Vec<u8> {
    let meta: Metadata = [("k".to_string(), "v".to_string())].into_iter().collect();
    checkpoint::model_to_bytes(&net(), &meta).unwrap()
}

fn split(bytes: &[u8]) -> (Value, Vec<u8>) {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    (
        serde_json::from_slice(&bytes[8..8 + n]).unwrap(),
        bytes[8 + n..].to_vec(),
    )
}

fn join(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string().into_bytes();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

/// Loads `bytes` as a model and as optimizer state; checks memory and time.
fn check(bytes: &[u8]) -> std::result::Result<(), TestCaseError> {
    let mut model = net();
    let ((), peak, elapsed) = measure(|| {
        let _ = checkpoint::model_from_bytes(bytes, &mut model, Path::new("fuzz"));
        let _ = checkpoint::optimizer_state_from_bytes(bytes, Path::new("fuzz"));
    });
    prop_assert!(
        peak <= 8 * bytes.len() + (1 << 20),
        "loading {} bytes held {peak} bytes at once",
        bytes.len()
    );
    prop_assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    Ok(())
}

fn tensor_names(header: &Value) -> Vec<String> {
    header
        .as_object()
        .unwrap()
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// A tensor entry announcing any shape (up to 2^40 per axis).
    #[test]
    fn any_announced_shape(
        which in any::<prop::sample::Index>(),
        shape in proptest::collection::vec(prop_oneof![0u64..16, any::<u64>(), Just(1u64 << 40)], 0..5),
    ) {
        let (mut header, data) = split(&good_file());
        let names = tensor_names(&header);
        let name = &names[which.index(names.len())];
        header[name.as_str()]["shape"] = Value::from(shape);
        check(&join(&header, &data))?;
    }

    /// A tensor entry announcing any byte range and dtype.
    #[test]
    fn any_announced_offsets_and_dtype(
        which in any::<prop::sample::Index>(),
        start in prop_oneof![0u64..4096, any::<u64>()],
        end in prop_oneof![0u64..4096, any::<u64>()],
        dtype in prop::sample::select(vec!["F32", "F64", "F16", "U8", "I64", "BOOL", "X"]),
    ) {
        let (mut header, data) = split(&good_file());
        let names = tensor_names(&header);
        let name = &names[which.index(names.len())];
        header[name.as_str()]["data_offsets"] = Value::from(vec![start, end]);
        header[name.as_str()]["dtype"] = Value::from(dtype);
        check(&join(&header, &data))?;
    }

    /// The header-length field set to anything.
    #[test]
    fn any_header_length(n in prop_oneof![0u64..10_000, any::<u64>()]) {
        let mut bytes = good_file();
        bytes[..8].copy_from_slice(&n.to_le_bytes());
        check(&bytes)?;
    }

    /// Random bytes.
    #[test]
    fn random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        check(&bytes)?;
    }
}
