//! Helpers shared by the facade's integration tests.

#![allow(dead_code)] // each test file uses a subset

use std::path::Path;

use fracture_nn::data::phantom::PhantomConfig;
use fracture_nn::data::ImageFolder;
use fracture_nn::layers::{checkpoint, Layer};
use fracture_nn::ModelConfig;

/// Phantoms of `size` px: `train` training images, a third as many for val and for test.
pub fn phantoms(size: usize, train: usize, seed: u64) -> ImageFolder {
    PhantomConfig {
        size,
        train,
        val: train / 3,
        test: train / 3,
        seed,
        ..Default::default()
    }
    .folder()
    .unwrap()
}

/// Every parameter and buffer of a model file built as `model`, by name, in walk order.
pub fn tensors(path: &Path, model: &ModelConfig) -> Vec<(String, Vec<f32>)> {
    // A model file at the end of a run also holds its typicality bank: build what it describes.
    let model = fracture_nn::Classifier::read_meta(path)
        .map(|m| m.model)
        .unwrap_or_else(|_| model.clone());
    let mut net = model.build(0).unwrap();
    checkpoint::load_model(path, &mut net).unwrap();
    named_tensors(&net)
}

/// Every parameter and buffer of `net`, by name, in walk order.
pub fn named_tensors(net: &dyn Layer) -> Vec<(String, Vec<f32>)> {
    let mut out: Vec<(String, Vec<f32>)> = net
        .named_params()
        .into_iter()
        .map(|(n, p)| (n, p.value.as_slice().to_vec()))
        .collect();
    out.extend(
        net.named_buffers()
            .into_iter()
            .map(|(n, b)| (n, b.value.as_slice().to_vec())),
    );
    out
}
