//! Large tensors recycle their buffers (fracture-tensor's pool), and layers reuse their mask and
//! argmax allocations between steps: a second step, which runs on buffers full of the first
//! step's values, must give bit-for-bit the results of a fresh network on the same input.

use fracture_layers::{
    BatchNorm2dConfig, Conv2dConfig, Layer, MaxPool2dConfig, Mode, Relu, Sequential,
};
use fracture_tensor::Tensor4;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn net() -> Sequential {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    Sequential::new()
        .with(
            "conv",
            Conv2dConfig::new(3, 8, 3)
                .with_padding(1)
                .with_bias(false)
                .init(&mut rng)
                .unwrap(),
        )
        .unwrap()
        .with("bn", BatchNorm2dConfig::new(8).init().unwrap())
        .unwrap()
        .with("relu", Relu::new())
        .unwrap()
        .with("pool", MaxPool2dConfig::new(2).init().unwrap())
        .unwrap()
}

fn input(seed: u64) -> Tensor4 {
    // [2, 8, 96, 96] activations: 147456 values (576 KiB), above the pooling threshold.
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let v = (0..2 * 3 * 96 * 96)
        .map(|_| rng.gen_range(-2.0..2.0))
        .collect();
    Tensor4::from_vec([2, 3, 96, 96], v).unwrap()
}

fn step(net: &mut Sequential, x: &Tensor4) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
    let y = net.forward(x, Mode::Train).unwrap();
    let dy = Tensor4::from_vec(
        y.shape(),
        (0..y.len()).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect(),
    )
    .unwrap();
    net.zero_grad();
    let dx = net.backward(&dy).unwrap();
    let grads = net
        .named_params()
        .into_iter()
        .map(|(_, p)| p.grad.as_slice().to_vec())
        .collect();
    (y.as_slice().to_vec(), dx.as_slice().to_vec(), grads)
}

#[test]
fn second_step_on_recycled_buffers_equals_a_fresh_step() {
    let (x1, x2) = (input(1), input(2));
    let mut a = net();
    let first = step(&mut a, &x1);
    // Running statistics differ after a step but do not enter a training-mode pass.
    let second = step(&mut a, &x2);
    let fresh = step(&mut net(), &x2);
    assert_ne!(
        first.0, second.0,
        "inputs must differ for the test to mean anything"
    );
    assert_eq!(second.0, fresh.0, "forward output");
    assert_eq!(second.1, fresh.1, "input gradient");
    assert_eq!(second.2, fresh.2, "parameter gradients");
    // Eval after training reuses the spare argmax/mask buffers too.
    let e1 = a.forward(&x2, Mode::Eval).unwrap();
    let e2 = a.forward(&x2, Mode::Eval).unwrap();
    assert_eq!(e1.as_slice(), e2.as_slice());
}
