//! Which features tell a radiograph from anything else? For a model file and a dataset, this
//! probe pools (mean and standard deviation per channel) the output of candidate layers, fills
//! a k-NN bank from training images as `fracture_nn::typicality` does, sets the cut at 99 % of
//! validation images, and prints for each layer the share of other folders' images (e.g.
//! photographs, tight crops of radiographs) above the cut.
//!
//! ```sh
//! cargo run --release --example typicality_layers -- MODEL DATA_ROOT FOLDER...
//! ```

use std::path::{Path, PathBuf};

use fracture_nn::data::{preprocess_file, DatasetSplit, LoadOptions, Split};
use fracture_nn::layers::{Layer, Mode};
use fracture_nn::tensor::Tensor4;
use fracture_nn::typicality::knn_score;
use fracture_nn::Classifier;

fn pooled(x: &Tensor4) -> Vec<Vec<f32>> {
    let [n, c, h, w] = x.shape();
    let hw = h * w;
    (0..n)
        .map(|i| {
            let mut v = Vec::with_capacity(2 * c);
            let mut sd = Vec::with_capacity(c);
            for ch in 0..c {
                let s = &x.as_slice()[(i * c + ch) * hw..(i * c + ch + 1) * hw];
                let m = s.iter().sum::<f32>() / hw as f32;
                let var = s.iter().map(|a| (a - m) * (a - m)).sum::<f32>() / hw as f32;
                v.push(m);
                sd.push(var.sqrt());
            }
            v.extend(sd);
            v
        })
        .collect()
}

/// Pooled features at every candidate slot for a batch of standardised images.
fn features(
    chain: &mut [(String, Box<dyn Layer>)],
    x: Tensor4,
    slots: &[String],
) -> Vec<Vec<Vec<f32>>> {
    let mut h = x;
    let mut out = Vec::new();
    for (name, layer) in chain.iter_mut() {
        h = layer.forward_owned(h, Mode::Eval).unwrap();
        if slots.contains(name) {
            out.push(pooled(&h));
        }
    }
    out
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = walk(dir);
    v.sort();
    v
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    assert!(args.len() >= 2, "usage: MODEL DATA_ROOT FOLDER...");
    let clf = Classifier::load(Path::new(&args[0])).unwrap();
    let meta = clf.meta.clone();
    let mut chain = Box::new(clf.net).into_chain("");
    let slots: Vec<String> = [
        "_bn0",
        "_blocks.2",
        "_blocks.4",
        "_blocks.7",
        "_blocks.10",
        "_blocks.15",
        "_bn1",
    ]
    .iter()
    .filter(|s| chain.iter().any(|(n, _)| n == *s))
    .map(|s| s.to_string())
    .collect();
    let options = LoadOptions {
        preprocess: meta.preprocess,
        policy: Default::default(),
    };
    let root = Path::new(&args[1]);
    let load = |split: Split| {
        DatasetSplit::load(&root.join(split.dir_name()), split, &options)
            .unwrap()
            .0
    };
    let (train, val) = (load(Split::Train), load(Split::Val));
    let s = meta.model.image_size;
    let norm = meta.normalization;
    let run = |chain: &mut [(String, Box<dyn Layer>)], imgs: Vec<Vec<f32>>| -> Vec<Vec<Vec<f32>>> {
        let mut per_slot: Vec<Vec<Vec<f32>>> = vec![Vec::new(); slots.len()];
        for chunk in imgs.chunks(16) {
            let x = Tensor4::from_vec([chunk.len(), 1, s, s], chunk.concat()).unwrap();
            for (k, f) in features(chain, x, &slots).into_iter().enumerate() {
                per_slot[k].extend(f);
            }
        }
        per_slot
    };
    let from_split = |d: &DatasetSplit, step: usize| -> Vec<Vec<f32>> {
        (0..d.len())
            .step_by(step)
            .map(|i| {
                let mut v = vec![0f32; s * s];
                norm.apply_u8(d.image(i), &mut v);
                v
            })
            .collect()
    };
    let bank = run(&mut chain, from_split(&train, (train.len() / 1024).max(1)));
    let val_f = run(&mut chain, from_split(&val, 1));
    let mut others = Vec::new();
    for dir in &args[2..] {
        let imgs: Vec<Vec<f32>> = files(Path::new(dir))
            .iter()
            .filter_map(|p| preprocess_file(p, &meta.preprocess, &norm).ok())
            .collect();
        others.push((dir.clone(), run(&mut chain, imgs)));
    }
    let unit = |v: &[Vec<f32>]| -> (Vec<f32>, usize) {
        let d = v[0].len();
        let mut flat = Vec::with_capacity(v.len() * d);
        for r in v {
            let n = r.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            flat.extend(r.iter().map(|a| a / n));
        }
        (flat, d)
    };
    println!(
        "layer         cut(q99)  {}",
        args[2..]
            .iter()
            .map(|a| format!("{a:>28}"))
            .collect::<String>()
    );
    for (k, slot) in slots.iter().enumerate() {
        let (flat, d) = unit(&bank[k]);
        let mut vs: Vec<f32> = val_f[k]
            .iter()
            .map(|f| knn_score(&flat, d, f, 10))
            .collect();
        vs.sort_by(f32::total_cmp);
        let cut = vs[((vs.len() - 1) as f64 * 0.99).ceil() as usize];
        let shares: String = others
            .iter()
            .map(|(_, o)| {
                let flagged = o[k]
                    .iter()
                    .filter(|f| knn_score(&flat, d, f, 10) > cut)
                    .count();
                format!("{:>22}/{:<5}", flagged, o[k].len())
            })
            .collect();
        println!("{slot:<12}  {cut:>8.4}  {shares}");
    }
}
