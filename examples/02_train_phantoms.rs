//! 02: train on synthetic phantoms in about ten lines.
//!
//! Generates X-ray-like phantoms in memory (half with a fracture line), trains the small plain
//! CNN for 8 epochs and prints the validation and test reports.
//!
//! Run: `cargo run --release --example 02_train_phantoms`
//!
//! It should reach a validation ROC-AUC above 0.95 and write its files to
//! `runs/example-phantoms/` (a few minutes on 2 cores).

use fracture_nn::data::{phantom::PhantomConfig, Split};
use fracture_nn::{FitInputs, ModelConfig, TrainConfig, Trainer};

fn main() -> anyhow::Result<()> {
    let mut data = PhantomConfig {
        size: 64,
        train: 1000,
        val: 200,
        test: 200,
        ..Default::default()
    }
    .folder()?;
    let config = TrainConfig {
        epochs: 8,
        verbose: true,
        ..Default::default()
    };
    let trainer = Trainer::new(config, "runs/example-phantoms");
    let (train, val) = (data.take_split(Split::Train)?, data.take_split(Split::Val)?);
    let out = trainer.fit(
        FitInputs::new(ModelConfig::phantom(64), train, val)
            .with_optional_test(data.take_split(Split::Test).ok())
            .with_data("phantoms"),
    )?;
    println!("validation:\n{}", out.report.val);
    if let Some(test) = &out.report.test {
        println!("test:\n{test}");
    }
    Ok(())
}
