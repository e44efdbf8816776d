//! `fracture info`: what a model file holds (architecture, input, normalisation, classes,
//! threshold, provenance, typicality, layer table), as text or one JSON object.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;
use fracture_nn::{Classifier, Tta};

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Model file.
    #[arg(long)]
    model: PathBuf,
    /// Print the description as one JSON object: the model file's metadata (architecture,
    /// preprocessing, normalisation, classes, threshold, provenance), the parameter count and
    /// the layer table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: InfoArgs) -> Result<ExitCode> {
    use fracture_nn::layers::Layer;
    let clf = Classifier::load(&a.model)?;
    if a.json {
        let s = clf.meta.model.image_size;
        let x = fracture_nn::tensor::Tensor4::zeros([1, clf.meta.model.in_channels, s, s]);
        let parameters = clf.net.num_params();
        let meta = serde_json::to_value(&clf.meta)?;
        let mut net = clf.net;
        let layers = fracture_nn::summary::summary(&mut net, &x, 2)?;
        let v = serde_json::json!({
            "model_file": a.model.display().to_string(),
            "parameters": parameters,
            "meta": meta,
            "layers": layers,
        });
        println!("{}", serde_json::to_string(&v)?);
        return Ok(ExitCode::SUCCESS);
    }
    let m = &clf.meta;
    println!("model file     {}", a.model.display());
    println!("architecture   {}", m.model.backbone().describe());
    if let Ok(site) = m.model.mask_site().map_err(|_| ()).and_then(|s| {
        if m.model.mask_head {
            Ok(s)
        } else {
            Err(())
        }
    }) {
        println!(
            "where          box-mask head after {}.{} ({} x {} cells of {} px): its map is the heatmap",
            site.sequence, site.after, site.side, site.side, site.stride
        );
    }
    println!(
        "head           {}, dropout {}, test-time augmentation {}",
        m.model.head.describe(),
        m.model.dropout,
        tta_words(m.tta)
    );
    if m.model.members > 1 {
        println!(
            "ensemble       {} members (seeds {} + i), logits averaged",
            m.model.members, m.provenance.seed
        );
    }
    println!("parameters     {}", clf.net.num_params());
    println!(
        "input          {} x {} px, {} channel(s), resize {}",
        m.model.image_size,
        m.model.image_size,
        m.model.in_channels,
        m.preprocess.resize_mode.describe()
    );
    println!(
        "normalisation  mean {:.4}, std {:.4}",
        m.normalization.mean, m.normalization.std
    );
    println!("input formula  {}", m.input_formula());
    println!(
        "classes        {:?} (positive: {})",
        m.class_names, m.class_names[m.positive_class]
    );
    println!("threshold      {:.4} ({})", m.threshold, m.threshold_rule);
    let p = &m.provenance;
    println!(
        "provenance     fracture-nn {}, data {}, seed {}, {} epochs, best epoch {}, val ROC-AUC {}",
        p.crate_version,
        p.data,
        p.seed,
        p.epochs,
        p.best_epoch,
        p.val_auc.map_or("n/a".into(), |v| format!("{v:.4}"))
    );
    if let Some(l) = &p.local_validation {
        println!(
            "local check    threshold {:.4} set by `fracture validate` on {} ({} images, target sensitivity {})",
            l.threshold, l.data, l.n, l.target_sensitivity
        );
    }
    match &m.model.typicality {
        Some(t) => println!(
            "typicality     k-NN check on {} training feature vectors (k = {}); atypical above {:.4} (99 % of validation images below)",
            t.references, t.k, t.q99
        ),
        None => println!("typicality     none (this file cannot say when an image is unlike its training data)"),
    }
    let s = m.model.image_size;
    let x = fracture_nn::tensor::Tensor4::zeros([1, m.model.in_channels, s, s]);
    let mut net = clf.net;
    let rows = fracture_nn::summary::summary(&mut net, &x, 2)?;
    println!("\n{}", fracture_nn::summary::format_summary(&rows));
    Ok(ExitCode::SUCCESS)
}

/// Test-time augmentation in words: "none", "horizontal flip (2 views averaged)".
pub(crate) fn tta_words(tta: Tta) -> String {
    match tta {
        Tta::Off => "off".into(),
        Tta::HFlip => "horizontal flip (the image and its mirror image averaged)".into(),
    }
}
