//! 04: classify radiographs with a trained model.
//!
//! Loads a model file (written by `fracture train` or example 02) and prints P(fractured) and
//! the label for each image given, at the model's own operating threshold (chosen on validation).
//!
//! Run: `cargo run --release --example 04_predict -- <model.safetensors> <image>...`
//! e.g. after example 02 and `fracture synth --out /tmp/ph`:
//! `cargo run --release --example 04_predict -- runs/example-phantoms/model.safetensors /tmp/ph/test/fractured/*.png`
//!
//! It prints one line per image: the path, P(fractured) and the label; an unreadable image gets
//! an error line and the others are still classified.

use fracture_nn::Classifier;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(model) = args.next() else {
        anyhow::bail!("usage: 04_predict <model.safetensors> <image>...");
    };
    let mut clf = Classifier::load(model.as_ref())?;
    println!(
        "threshold {:.4} ({})",
        clf.meta.threshold, clf.meta.threshold_rule
    );
    for path in args {
        match clf.predict_file(path.as_ref()) {
            Ok(p) => println!("{path}\tP(fractured) = {p:.4}\t{}", clf.label(p, None)),
            Err(e) => println!("{path}\terror: {e}"),
        }
    }
    Ok(())
}
