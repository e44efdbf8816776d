//! The box-mask head end to end on phantoms whose fracture lines are known: it trains only when
//! given boxes and a loss weight, its loss falls, its map is the heatmap, it survives a save
//! and load, weights from a model without one start it fresh, and the ONNX export gives its map
//! as `fracture_map` (checked with tract against the engine's own forward pass).

use fracture_nn::data::phantom::{FractureLine, PhantomConfig};
use fracture_nn::data::{PixelBox, Split};
use fracture_nn::layers::{find_in, mask_bce_with_logits, Layer, MaskHead, Mode};
use fracture_nn::pretrained::{load_into, ClassifierInit, SourceTensor};
use fracture_nn::tensor::Tensor4;
use fracture_nn::{
    Classifier, ClassifierMeta, FitInputs, GradCam, ModelConfig, TrainConfig, Trainer,
};
use prost::Message;
use tract_onnx::prelude::*;

/// How the ImageNet EfficientNet-Lite weights standardise their input: `(x - 0.5) / 0.5`.
const IMAGENET_NORMALIZATION: fracture_nn::data::Normalization = fracture_nn::data::Normalization {
    mean: 0.5,
    std: 0.5,
};

const SIZE: usize = 64;

fn model() -> ModelConfig {
    ModelConfig {
        mask_head: true,
        ..ModelConfig::lite0(SIZE)
            .with_arch(fracture_nn::model::EfficientNetLite::default().with_drop_path(0.0))
    }
}

/// The bounding box of a fracture line, padded by 3 px.
fn line_box(f: &FractureLine) -> PixelBox {
    let (x0, x1) = (f.start[0].min(f.end[0]), f.start[0].max(f.end[0]));
    let (y0, y1) = (f.start[1].min(f.end[1]), f.start[1].max(f.end[1]));
    [x0 - 3.0, y0 - 3.0, x1 + 3.0, y1 + 3.0]
}

fn phantoms(
    split: Split,
    n: usize,
) -> (fracture_nn::data::DatasetSplit, Vec<Option<Vec<PixelBox>>>) {
    let cfg = PhantomConfig {
        size: SIZE,
        train: n,
        val: n / 2,
        test: 0,
        seed: 4,
        ..Default::default()
    };
    let set = cfg.split(split).unwrap();
    let boxes = set
        .fractures
        .iter()
        .map(|f| Some(f.iter().map(line_box).collect()))
        .collect();
    (set.data, boxes)
}

/// Mean mask loss of `net` over the images and boxes given (eval mode, no augmentation).
fn mask_loss(
    clf: &mut Classifier,
    data: &fracture_nn::data::DatasetSplit,
    boxes: &[Option<Vec<PixelBox>>],
) -> f32 {
    let side = clf.meta.model.mask_site().unwrap().side;
    let path = clf.meta.model.mask_head_path().unwrap();
    let mut total = 0.0;
    for (i, b) in boxes.iter().enumerate().take(data.len()) {
        let x: Vec<f32> = data
            .image(i)
            .iter()
            .map(|&p| clf.meta.normalization.apply(p))
            .collect();
        clf.net
            .forward(
                &Tensor4::from_vec([1, 1, SIZE, SIZE], x).unwrap(),
                // Batch statistics: a few tiny epochs leave Lite's slow (momentum 0.01) running
                // statistics near their start, so eval mode would not show what was learned.
                Mode::Train,
            )
            .unwrap();
        let head = find_in(&clf.net, &path)
            .and_then(|l| l.as_any())
            .and_then(|a| a.downcast_ref::<MaskHead>())
            .unwrap();
        let mut target = vec![0.0; side * side];
        fracture_nn::data::boxes::mask_target(b.as_deref().unwrap(), None, SIZE, side, &mut target);
        let (l, _) = mask_bce_with_logits(head.logits().unwrap(), &target, &[1.0], 20.0).unwrap();
        total += l;
    }
    total / data.len() as f32
}

fn train(dir: &std::path::Path, mask_weight: f32, init: &std::path::Path) -> Classifier {
    let (train, boxes) = phantoms(Split::Train, 48);
    let (val, _) = phantoms(Split::Val, 48);
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 16,
        lr: 2e-3,
        seed: 1,
        mask_weight,
        ..Default::default()
    };
    let mut trainer = Trainer::new(cfg, dir);
    trainer.init = Some(init.to_path_buf());
    trainer
        .fit(
            FitInputs::new(model(), train, val)
                .with_boxes(boxes)
                .with_data("phantoms"),
        )
        .unwrap();
    // The weights after the last epoch (the saved model is the best epoch by ROC-AUC).
    let mut meta = Classifier::read_meta(&dir.join("model.safetensors")).unwrap();
    meta.model = meta.model.without_typicality();
    let mut net = meta.model.build(0).unwrap();
    fracture_nn::layers::checkpoint::load_model(dir.join("last.safetensors"), &mut net).unwrap();
    Classifier::from_parts(net, meta)
}

#[test]
fn the_mask_head_trains_on_boxes_and_its_map_is_the_heatmap() {
    let tmp = tempfile::tempdir().unwrap();
    // A starting model with a mask head at its prior (what --pretrained gives).
    let start = Classifier::new(ClassifierMeta::new(model(), IMAGENET_NORMALIZATION), 7).unwrap();
    let init = tmp.path().join("init.safetensors");
    start.save(&init).unwrap();
    assert!(start
        .meta
        .model
        .describe()
        .contains("box-mask head after _blocks.10 (4 x 4 cells"));

    let (train_data, train_boxes) = phantoms(Split::Train, 48);
    let mut before = Classifier::load(&init).unwrap();
    let loss_before = mask_loss(&mut before, &train_data, &train_boxes);

    let mut with = train(&tmp.path().join("with"), 1.0, &init);
    let mut without = train(&tmp.path().join("without"), 0.0, &init);
    let head_w = |c: &Classifier| {
        c.net
            .param("_blocks.mask_head.conv.weight")
            .unwrap()
            .value
            .clone()
    };
    // Without a mask loss the head gets no gradient (AdamW's decoupled decay aside, which
    // shrinks it by the same factor everywhere); with one it learns.
    let (w0, w_without) = (head_w(&start), head_w(&without));
    let ratio: Vec<f32> = w0
        .as_slice()
        .iter()
        .zip(w_without.as_slice())
        .map(|(a, b)| b / a)
        .collect();
    assert!(
        ratio.windows(2).all(|r| (r[0] - r[1]).abs() < 1e-4),
        "only weight decay may touch it"
    );
    let loss_after = mask_loss(&mut with, &train_data, &train_boxes);
    let loss_untrained = mask_loss(&mut without, &train_data, &train_boxes);
    assert!(
        loss_after < 0.8 * loss_before && loss_after < loss_untrained,
        "mask loss before {loss_before}, after training with boxes {loss_after}, without {loss_untrained}"
    );

    // The heatmap is the head's map: its one map has the head's grid and no channel weights,
    // and its peak sits in the hottest cell.
    let mut cam = GradCam::new(&with).unwrap();
    let x: Vec<f32> = train_data
        .image(0)
        .iter()
        .map(|&p| with.meta.normalization.apply(p))
        .collect();
    let heat = cam.heatmap(&x).unwrap();
    assert_eq!(
        (heat.cams.len(), heat.cams[0].width, heat.cams[0].height),
        (1, 4, 4)
    );
    assert!(heat.cams[0].weights.is_empty());
    let v = &heat.cams[0].values;
    assert!(v.iter().all(|p| (0.0..=1.0).contains(p)));
    let hot = (0..16).max_by(|&a, &b| v[a].total_cmp(&v[b])).unwrap();
    let [px, py] = heat.peak.unwrap();
    assert_eq!((px * 4 / SIZE, py * 4 / SIZE), (hot % 4, hot / 4));
}

#[test]
fn weights_without_a_mask_head_start_it_fresh() {
    let donor = ModelConfig::lite0(SIZE).build(3).unwrap();
    let mut source = std::collections::BTreeMap::new();
    for (name, p) in donor.named_params() {
        source.insert(
            name,
            SourceTensor {
                shape: p.torch_shape().to_vec(),
                data: p.value.as_slice().to_vec(),
            },
        );
    }
    for (name, b) in donor.named_buffers() {
        source.insert(
            name,
            SourceTensor {
                shape: b.torch_shape().to_vec(),
                data: b.value.as_slice().to_vec(),
            },
        );
    }
    let mut net = model().build(5).unwrap();
    let report = load_into(&mut net, &model(), &source, ClassifierInit::Load).unwrap();
    assert_eq!(
        report.replaced,
        [
            "_blocks.mask_head.conv.weight",
            "_blocks.mask_head.conv.bias"
        ]
    );
    assert!(report.unused.is_empty());
    // Everything else came from the donor; the head is where it sits in the network.
    assert_eq!(
        net.param("_blocks.10._bn2.weight").unwrap().value,
        donor.param("_blocks.10._bn2.weight").unwrap().value
    );
    let names: Vec<String> = net.named_params().into_iter().map(|(n, _)| n).collect();
    let at = names
        .iter()
        .position(|n| n == "_blocks.mask_head.conv.weight")
        .unwrap();
    assert!(names[at - 1].starts_with("_blocks.10.") && names[at + 2].starts_with("_blocks.11."));
}

#[test]
fn onnx_export_gives_the_mask_as_fracture_map() {
    let meta = ClassifierMeta::new(model(), IMAGENET_NORMALIZATION);
    let mut clf = Classifier::new(meta, 11).unwrap();
    // A head that is not at its prior everywhere, so the map has structure.
    for (i, w) in clf
        .net
        .param_mut("_blocks.mask_head.conv.weight")
        .unwrap()
        .value
        .as_slice_mut()
        .iter_mut()
        .enumerate()
    {
        *w = ((i % 7) as f32 - 3.0) * 0.05;
    }
    let bytes = fracture_nn::onnx::export(&clf).unwrap().encode_to_vec();
    let plan = tract_onnx::onnx()
        .model_for_read(&mut &bytes[..])
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let (train_data, _) = phantoms(Split::Train, 6);
    let n = 3;
    let xs: Vec<f32> = (0..n)
        .flat_map(|i| {
            train_data
                .image(i)
                .iter()
                .map(|&p| clf.meta.normalization.apply(p))
                .collect::<Vec<_>>()
        })
        .collect();
    let input = tract_ndarray::Array4::from_shape_vec((n, 1, SIZE, SIZE), xs.clone()).unwrap();
    let out = plan.run(tvec!(Tensor::from(input).into_tvalue())).unwrap();
    assert_eq!(out.len(), 3, "p_fractured, logits and fracture_map");
    let map = out[2].to_plain_array_view::<f32>().unwrap();
    assert_eq!(map.shape(), [n, 1, 4, 4]);
    clf.net
        .forward(
            &Tensor4::from_vec([n, 1, SIZE, SIZE], xs).unwrap(),
            Mode::Eval,
        )
        .unwrap();
    let path = clf.meta.model.mask_head_path().unwrap();
    let head = find_in(&clf.net, &path)
        .and_then(|l| l.as_any())
        .and_then(|a| a.downcast_ref::<MaskHead>())
        .unwrap();
    let want: Vec<f32> = head
        .logits()
        .unwrap()
        .as_slice()
        .iter()
        .map(|z| 1.0 / (1.0 + (-z).exp()))
        .collect();
    let got: Vec<f32> = map.iter().copied().collect();
    let worst = want
        .iter()
        .zip(&got)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(
        worst < 1e-4,
        "fracture_map differs from the engine's mask by {worst}"
    );
    assert!(
        want.iter().any(|&p| (p - want[0]).abs() > 1e-3),
        "the map should vary"
    );
}
