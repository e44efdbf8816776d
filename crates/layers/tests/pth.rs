//! The PyTorch checkpoint reader (`fracture_layers::pth`) against files written by `torch.save`
//! in `../shared/golden/pth` (zip and legacy formats, a nested training checkpoint, a pickle
//! that would run a shell command) and the real EfficientNet-Lite0 weights in
//! `../shared/pretrained`, plus wheels built here, clear errors for non-checkpoints, and
//! property tests that damaged or random bytes never panic and finish quickly.
//!
//! Without `../shared` the tests that need it print "skipped"; with `CI` set they fail instead.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fracture_layers::pth::{
    load, load_bytes, load_bytes_with, LoadOptions, PthDType, PthData, PthError, PthFormat,
    StateDict,
};
use fracture_layers::LayersError;
use fracture_test_support::shared_path;
use proptest::prelude::*;

const GOLDEN: [&str; 3] = [
    "state_dict_zip.pth",
    "state_dict_legacy.pth",
    "nested_checkpoint.pth",
];

/// `../shared/golden/pth`, or `None` (and a "skipped" note) when `../shared` is absent;
/// panics instead under CI.
fn golden_dir() -> Option<PathBuf> {
    shared_path("golden/pth")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// expected.json: tensor name -> (dtype, shape, values).
fn expected(dir: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<f64>)> {
    let v: serde_json::Value = serde_json::from_slice(&read(&dir.join("expected.json"))).unwrap();
    v.as_object()
        .expect("expected.json is an object")
        .iter()
        .map(|(name, t)| {
            let dtype = t["dtype"].as_str().unwrap().to_string();
            let shape = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let values = t["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            (name.clone(), (dtype, shape, values))
        })
        .collect()
}

fn check_against_expected(file: &str, sd: &StateDict, dir: &Path) {
    let exp = expected(dir);
    assert_eq!(sd.len(), exp.len(), "{file}: tensor count");
    for (name, (dtype, shape, values)) in &exp {
        let t = sd
            .get(name)
            .unwrap_or_else(|| panic!("{file}: missing {name}"));
        assert_eq!(t.dtype.name(), dtype, "{file}: {name} dtype");
        assert_eq!(&t.shape, shape, "{file}: {name} shape");
        // The JSON holds each value's shortest f64 repr; serde_json's default parser may be
        // one f64 ulp off, so float tensors compare bit-exactly after rounding to f32.
        match &t.data {
            PthData::F32(v) => {
                let want: Vec<u32> = values.iter().map(|&x| (x as f32).to_bits()).collect();
                let got: Vec<u32> = v.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "{file}: {name} values");
            }
            PthData::I64(v) => {
                let want: Vec<i64> = values.iter().map(|&x| x as i64).collect();
                assert_eq!(v, &want, "{file}: {name} values");
            }
            PthData::F64(_) => panic!("{file}: {name}: no float64 tensor in the golden files"),
        }
    }
}

#[test]
fn golden_checkpoints_match_torch_exactly() {
    let Some(dir) = golden_dir() else { return };
    for file in GOLDEN {
        let sd = load(&dir.join(file)).unwrap_or_else(|e| panic!("{e}"));
        check_against_expected(file, &sd, &dir);
        let want_format = if file.contains("legacy") {
            PthFormat::Legacy
        } else {
            PthFormat::Zip
        };
        assert_eq!(sd.format, want_format, "{file}");
        assert_eq!(sd.entry, None);
        // nested_checkpoint.pth is {"model": state_dict, "epoch": 3, "optimizer": {"lr": 0.1}}.
        let want_key = file.starts_with("nested").then(|| "model".to_string());
        assert_eq!(sd.key, want_key, "{file}");
        // Same result from bytes; names keep the checkpoint's order.
        let from_bytes = load_bytes(&read(&dir.join(file))).unwrap();
        assert_eq!(from_bytes, sd);
        assert_eq!(
            sd.names().collect::<Vec<_>>(),
            [
                "conv.weight",
                "bn.running_var",
                "bn.num_batches_tracked",
                "half",
                "view.transposed",
                "view.offset",
                "scalar",
                "bf16",
                "empty"
            ]
        );
    }
    let sd = load(&dir.join("state_dict_zip.pth")).unwrap();
    assert_eq!(
        sd.get("bn.num_batches_tracked").unwrap().as_i64(),
        Some(&[17][..])
    );
    assert_eq!(sd.get("half").unwrap().dtype, PthDType::F16);
    assert_eq!(sd.get("bf16").unwrap().dtype, PthDType::BF16);
}

#[test]
fn nested_checkpoint_key_can_be_named() {
    let Some(dir) = golden_dir() else { return };
    let bytes = read(&dir.join("nested_checkpoint.pth"));
    let sd = load_bytes_with(&bytes, &LoadOptions::default().with_key("model")).unwrap();
    assert_eq!((sd.len(), sd.key.as_deref()), (9, Some("model")));
    for (key, want) in [
        ("optimizer", "no tensor values (keys: [\"lr\"])"),
        ("epoch", "is an integer"),
        ("nope", "key \"nope\" was asked for"),
    ] {
        let e = load_bytes_with(&bytes, &LoadOptions::default().with_key(key)).unwrap_err();
        assert!(matches!(e, PthError::NotStateDict { .. }), "{e}");
        assert!(e.to_string().contains(want), "{key}: {e}");
    }
}

#[test]
fn malicious_pickle_is_refused_without_running_anything() {
    let Some(dir) = golden_dir() else { return };
    let path = dir.join("malicious_reduce.pth");
    // The payload is `posix.system("echo this pickle runs a command")` under the key "evil";
    // the reader refuses at the GLOBAL opcode, before the argument is even read.
    let e = load(&path).unwrap_err();
    match &e {
        PthError::ForbiddenGlobal {
            file, module, name, ..
        } => {
            assert_eq!((module.as_str(), name.as_str()), ("posix", "system"));
            assert!(file.ends_with("malicious_reduce.pth"), "{file}");
        }
        other => panic!("expected ForbiddenGlobal, got {other}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("posix.system") && msg.contains("nothing was run"),
        "{msg}"
    );
    // Through LayersError too.
    let le: LayersError = e.into();
    assert!(le.to_string().contains("posix.system"));

    // Other classic payloads, in the legacy layout, are refused the same way.
    let header = legacy_header();
    for (module, name) in [
        ("os", "system"),
        ("builtins", "eval"),
        ("subprocess", "Popen"),
    ] {
        let mut b = header.clone();
        b.extend(b"\x80\x02c");
        b.extend(format!("{module}\n{name}\n").as_bytes());
        b.extend(b"X\x02\x00\x00\x00id\x85R.");
        let e = load_bytes(&b).unwrap_err();
        assert!(
            matches!(&e, PthError::ForbiddenGlobal { module: m, name: nm, .. } if m == module && nm == name),
            "{e}"
        );
    }
}

/// The three header pickles of a legacy file (magic, protocol 1001, little-endian system info).
fn legacy_header() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.");
    b.extend(b"\x80\x02M\xe9\x03.");
    b.extend(b"\x80\x02}X\x0d\x00\x00\x00little_endian\x88s.");
    b
}

#[test]
fn efficientnet_lite0_pretrained_weights_load() {
    let Some(path) = shared_path("pretrained/efficientnet-lite0-57934424.pth") else {
        return;
    };
    let t0 = Instant::now();
    let sd = load(&path).unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "efficientnet-lite0: {} tensors, {:?} format, read in {:?}",
        sd.len(),
        sd.format,
        t0.elapsed()
    );
    // The README's "4,694,073 parameters" is the element count of the whole state dict
    // (running statistics and num_batches_tracked included); the trainable weights, i.e. the
    // float tensors other than running_mean/running_var, hold 4,652,008 (EfficientNet-Lite0's
    // published 4.65 M).
    let all: usize = sd.iter().map(|(_, t)| t.numel()).sum();
    assert_eq!(all, 4_694_073);
    let params: usize = sd
        .iter()
        .filter(|(n, _)| {
            !n.ends_with("running_mean")
                && !n.ends_with("running_var")
                && !n.ends_with("num_batches_tracked")
        })
        .map(|(n, t)| {
            assert_eq!(t.dtype, PthDType::F32, "{n}");
            t.numel()
        })
        .sum();
    assert_eq!(params, 4_652_008);
    assert_eq!(sd.len(), 296);
    assert_eq!(sd.get("_conv_stem.weight").unwrap().shape, [32, 3, 3, 3]);
    assert_eq!(sd.get("_fc.weight").unwrap().shape, [1000, 1280]);
    let nbt: Vec<_> = sd
        .iter()
        .filter(|(n, _)| n.ends_with("num_batches_tracked"))
        .collect();
    assert!(!nbt.is_empty());
    for (n, t) in nbt {
        assert_eq!((t.dtype, t.shape.len()), (PthDType::I64, 0), "{n}");
    }
    for (n, t) in sd.iter() {
        assert!(t.to_f32().iter().all(|x| x.is_finite()), "{n}");
    }
}

/// A wheel-like zip (deflated) holding `inner` at `pkg/models/<name>` among other files.
fn wheel(name: &str, inner: &[u8]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, data) in [
        ("pkg/__init__.py", &b"VERSION = '0.1.0'\n"[..]),
        (&format!("pkg/models/{name}")[..], inner),
        ("pkg-0.1.0.dist-info/METADATA", b"Name: pkg\n"),
    ] {
        w.start_file(path, opts).unwrap();
        w.write_all(data).unwrap();
    }
    w.finish().unwrap().into_inner()
}

#[test]
fn checkpoint_inside_a_wheel_loads() {
    let Some(dir) = golden_dir() else { return };
    for file in ["state_dict_zip.pth", "state_dict_legacy.pth"] {
        let direct = load(&dir.join(file)).unwrap();
        let whl = wheel(file, &read(&dir.join(file)));
        let sd = load_bytes(&whl).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(sd.entry.as_deref(), Some(&format!("pkg/models/{file}")[..]));
        assert_eq!(sd.tensors, direct.tensors, "{file}");
        assert_eq!(sd.format, direct.format);
    }
    // From a file too; an error inside names both the wheel and the entry.
    let tmp = tempfile::tempdir().unwrap();
    let whl_path = tmp.path().join("efficientnet_lite0-0.1.0-py3-none-any.whl");
    let mut evil = read(&dir.join("malicious_reduce.pth"));
    std::fs::write(&whl_path, wheel("evil.pth", &evil)).unwrap();
    let msg = load(&whl_path).unwrap_err().to_string();
    assert!(
        msg.contains("efficientnet_lite0-0.1.0-py3-none-any.whl (entry pkg/models/evil.pth)"),
        "{msg}"
    );
    // A truncated inner checkpoint is an error, not a panic.
    evil.truncate(evil.len() / 2);
    assert!(load_bytes(&wheel("evil.pth", &evil)).is_err());
}

#[test]
fn non_checkpoints_get_clear_errors() {
    let e = load_bytes(b"").unwrap_err();
    assert!(
        e.to_string()
            .contains("<bytes>: not a PyTorch checkpoint: the input is empty"),
        "{e}"
    );

    let tmp = tempfile::tempdir().unwrap();
    let txt = tmp.path().join("notes.pth");
    std::fs::write(&txt, "these are not weights\n").unwrap();
    let e = load(&txt).unwrap_err().to_string();
    assert!(
        e.contains("notes.pth") && e.contains("starts with the text"),
        "{e}"
    );

    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("README.md", zip::write::SimpleFileOptions::default())
        .unwrap();
    w.write_all(b"# nothing here\n").unwrap();
    let z = w.finish().unwrap().into_inner();
    let e = load_bytes(&z).unwrap_err();
    assert!(matches!(e, PthError::NotCheckpoint { .. }), "{e}");
    assert!(
        e.to_string().contains("neither a torch.save archive")
            && e.to_string().contains("README.md"),
        "{e}"
    );

    let e = load(&tmp.path().join("absent.pth")).unwrap_err();
    assert!(
        matches!(e, PthError::Io { .. }) && e.to_string().contains("absent.pth"),
        "{e}"
    );

    // A plain pickle that is not from torch.save.
    let e = load_bytes(b"\x80\x02}q\x00.").unwrap_err().to_string();
    assert!(e.contains("not one written by torch.save"), "{e}");
}

#[test]
fn checks_views_and_byte_order() {
    let Some(dir) = golden_dir() else { return };
    // Big-endian byteorder entry.
    let src = read(&dir.join("state_dict_zip.pth"));
    let rebuilt = rezip(&src, |name, data| {
        if name.ends_with("/byteorder") {
            b"big".to_vec()
        } else {
            data
        }
    });
    let e = load_bytes(&rebuilt).unwrap_err();
    assert!(matches!(e, PthError::BigEndian { .. }), "{e}");
    // A storage one element short: the view no longer fits.
    let short = rezip(&src, |name, mut data| {
        if name.ends_with("data/4") {
            data.truncate(data.len() - 4);
        }
        data
    });
    let e = load_bytes(&short).unwrap_err().to_string();
    assert!(
        e.contains("view.transposed") && e.contains("reaches past the end"),
        "{e}"
    );
    // A missing storage entry.
    let missing = rezip(&src, |name, data| {
        if name.ends_with("data/0") {
            Vec::new()
        } else {
            data
        }
    });
    assert!(load_bytes(&missing).is_err());
}

/// Rewrites every entry of a zip (stored, uncompressed) through `f`.
fn rezip(src: &[u8], f: impl Fn(&str, Vec<u8>) -> Vec<u8>) -> Vec<u8> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(src)).unwrap();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..z.len() {
        let mut e = z.by_index(i).unwrap();
        let name = e.name().unwrap().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        w.start_file(&name, opts).unwrap();
        w.write_all(&f(&name, data)).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Runs the reader on arbitrary bytes; it must return (no panic) within a second or two.
fn survives(bytes: &[u8]) {
    let t0 = Instant::now();
    let _ = load_bytes(bytes);
    let dt = t0.elapsed();
    assert!(
        dt < Duration::from_secs(3),
        "took {dt:?} on {} bytes",
        bytes.len()
    );
}

fn golden_bytes() -> Option<Vec<Vec<u8>>> {
    let dir = golden_dir()?;
    Some(GOLDEN.iter().map(|f| read(&dir.join(f))).collect())
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Truncate(usize),
    Insert(usize, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<usize>(), 1u8..=255).prop_map(|(p, x)| Mutation::Flip(p, x)),
        1 => any::<usize>().prop_map(Mutation::Truncate),
        2 => (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
    ]
}

fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        if b.is_empty() {
            break;
        }
        match m {
            Mutation::Flip(p, x) => {
                let i = p % b.len();
                b[i] ^= x;
            }
            Mutation::Truncate(p) => b.truncate(p % b.len()),
            Mutation::Insert(p, ins) => {
                let i = p % (b.len() + 1);
                b.splice(i..i, ins.iter().copied());
            }
        }
    }
    b
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Byte flips, truncations and insertions anywhere in the golden files.
    #[test]
    fn mutated_golden_files_never_panic(which in 0usize..3, muts in prop::collection::vec(mutation(), 1..6)) {
        let Some(files) = golden_bytes() else { return Ok(()) };
        survives(&mutate(files[which].clone(), &muts));
    }

    /// The same mutations applied to the pickle inside a (valid) zip, so they reach the
    /// interpreter instead of stopping at the zip's checksums.
    #[test]
    fn mutated_pickles_in_valid_zips_never_panic(which in prop::sample::select(vec![0usize, 2]), muts in prop::collection::vec(mutation(), 1..6)) {
        let Some(files) = golden_bytes() else { return Ok(()) };
        let z = rezip(&files[which], |name, data| {
            if name.ends_with("data.pkl") { mutate(data, &muts) } else { data }
        });
        survives(&z);
    }

    /// Random bytes, bare or behind the first bytes of each format.
    #[test]
    fn random_bytes_never_panic(prefix in prop::sample::select(vec![&b""[..], b"PK\x03\x04", b"\x80\x02", b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19.\x80\x02M\xe9\x03.\x80\x02}.\x80\x02"]),
                                body in prop::collection::vec(any::<u8>(), 0..2048)) {
        let mut b = prefix.to_vec();
        b.extend(body);
        survives(&b);
    }
}

/// A `torch.save` zip of `{name: FloatStorage tensor [numel]}` for each `(name, key, numel)`,
/// each storage `bytes[key]` zero bytes, deflated.
fn zip_checkpoint(tensors: &[(&str, &str, u32)], storages: &[(&str, usize)]) -> Vec<u8> {
    let mut p = vec![0x80, 0x02, b'}'];
    let string = |p: &mut Vec<u8>, s: &str| {
        p.push(b'X');
        p.extend((s.len() as u32).to_le_bytes());
        p.extend(s.as_bytes());
    };
    let int = |p: &mut Vec<u8>, v: u32| {
        p.push(b'J');
        p.extend(v.to_le_bytes());
    };
    for &(name, key, numel) in tensors {
        string(&mut p, name);
        p.extend(b"ctorch._utils\n_rebuild_tensor_v2\n((");
        string(&mut p, "storage");
        p.extend(b"ctorch\nFloatStorage\n");
        string(&mut p, key);
        string(&mut p, "cpu");
        int(&mut p, numel);
        p.extend(b"tQ");
        int(&mut p, 0);
        int(&mut p, numel);
        p.push(0x85);
        int(&mut p, 1);
        p.extend(b"\x85\x89ccollections\nOrderedDict\n)RtRs");
    }
    p.push(b'.');
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    w.start_file("archive/data.pkl", opts).unwrap();
    w.write_all(&p).unwrap();
    for (key, n) in storages {
        w.start_file(format!("archive/data/{key}"), opts).unwrap();
        w.write_all(&vec![0u8; *n]).unwrap();
    }
    w.finish().unwrap().into_inner()
}

/// Issue 31: `load_selected` shows the names and shapes first, reads only what is picked, and
/// checks every bound before inflating.
#[test]
fn load_selected_checks_names_before_reading_and_bounds_what_it_inflates() {
    use fracture_layers::pth::{load_selected, ReadLimits, TensorInfo};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.pth");
    std::fs::write(
        &path,
        zip_checkpoint(
            &[("keep", "0", 4), ("skip", "1", 16 << 20)],
            &[("0", 16), ("1", 64 << 20)],
        ),
    )
    .unwrap();
    let opts = LoadOptions::default();
    // Only "keep" is read: the 64 MiB storage of "skip" stays compressed under a 1 kB limit.
    let mut seen = Vec::new();
    let mut pick = |ts: &[TensorInfo<'_>]| {
        seen = ts
            .iter()
            .map(|t| (t.name.to_string(), t.shape.to_vec()))
            .collect();
        Ok(ts.iter().map(|t| t.name == "keep").collect())
    };
    let sd = load_selected(&path, &opts, ReadLimits::for_data(1024), &mut pick).unwrap();
    assert_eq!(
        seen,
        [("keep".into(), vec![4]), ("skip".into(), vec![16 << 20])]
    );
    assert_eq!(sd.names().collect::<Vec<_>>(), ["keep"]);
    assert_eq!(sd.get("keep").unwrap().data, PthData::F32(vec![0.0; 4]));
    // A refusal stops the load with the caller's words.
    let mut refuse = |_: &[TensorInfo<'_>]| Err("no tensor named stem".to_string());
    let e = load_selected(&path, &opts, ReadLimits::for_data(1024), &mut refuse).unwrap_err();
    assert!(matches!(e, PthError::Refused { .. }), "{e}");
    assert!(
        e.to_string().ends_with("c.pth: no tensor named stem"),
        "{e}"
    );
    // Picking a tensor larger than the data bound is refused before any storage is read.
    let mut all = |ts: &[TensorInfo<'_>]| Ok(vec![true; ts.len()]);
    let e = load_selected(&path, &opts, ReadLimits::for_data(1024), &mut all).unwrap_err();
    assert!(e.to_string().contains("the 2 tensors to read"), "{e}");
    // A storage entry declaring more than the bound is refused from its declared size.
    let big = dir.path().join("big.pth");
    std::fs::write(&big, zip_checkpoint(&[("w", "0", 4)], &[("0", 64 << 20)])).unwrap();
    let e = load_selected(&big, &opts, ReadLimits::for_data(1024), &mut all).unwrap_err();
    assert!(e.to_string().contains("zip entry archive/data/0"), "{e}");
    // A pickle over its bound is refused from its declared size.
    let limits = ReadLimits {
        max_pickle_bytes: 16,
        max_data_bytes: 1024,
    };
    let e = load_selected(&path, &opts, limits, &mut all).unwrap_err();
    assert!(e.to_string().contains("archive/data.pkl"), "{e}");
}
