//! Augmentation properties: any configuration keeps the shape and the [0, 1] range, the same
//! seed gives the same output, and loader batches do not depend on the thread count or on
//! prefetching.

use fracture_data::augment::{
    Blur, Downscale, Gamma, Jitter, Noise, ResizedCrop, Rotation, Translate,
};
use fracture_data::phantom::PhantomConfig;
use fracture_data::{sample_rng, Augment, BatchLoader, LoaderConfig, Normalization, Split};
use proptest::prelude::*;

fn probability() -> impl Strategy<Value = f32> {
    prop_oneof![Just(0.0f32), Just(1.0f32), 0.0f32..=1.0]
}

prop_compose! {
    fn any_augment()(
        hflip in probability(), vflip in probability(),
        rot_p in probability(), max_degrees in 0.0f32..=180.0,
        crop_p in probability(), s0 in 0.05f32..=1.0, s1 in 0.05f32..=1.0,
        r0 in 0.3f32..=3.0, r1 in 0.3f32..=3.0,
        tr_p in probability(), tr in 0.0f32..=1.0,
        b_p in probability(), b in 0.0f32..=1.0,
        c_p in probability(), c in 0.0f32..=1.0,
        n_p in probability(), n in 0.0f32..=0.5,
        acq in (probability(), 0.1f32..=3.0, probability(), 0.3f32..=4.0, probability(), 0.1f32..=1.0),
    ) -> Augment {
        let (g_p, g, bl_p, sigma, d_p, f) = acq;
        Augment {
            hflip,
            vflip,
            rotation: Rotation { p: rot_p, max_degrees },
            crop: ResizedCrop { p: crop_p, scale: [s0.min(s1), s0.max(s1)], ratio: [r0.min(r1), r0.max(r1)] },
            translate: Translate { p: tr_p, max_fraction: tr },
            brightness: Jitter { p: b_p, amount: b },
            contrast: Jitter { p: c_p, amount: c },
            noise: Noise { p: n_p, std: n },
            gamma: Gamma { p: g_p, range: [g.min(1.0), g.max(1.0)] },
            blur: Blur { p: bl_p, max_sigma: sigma },
            downscale: Downscale { p: d_p, min_factor: f },
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn keeps_shape_and_range_and_is_deterministic(
        aug in any_augment(),
        size in 1usize..40,
        seed in any::<u64>(),
        epoch in 0u64..1000,
        index in 0u64..100_000,
        fill in any::<u64>(),
    ) {
        prop_assert!(aug.validate().is_ok());
        let src: Vec<u8> = (0..size * size)
            .map(|i| (fill.wrapping_mul(i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        let mut a = vec![f32::NAN; size * size];
        let mut b = vec![f32::NAN; size * size];
        aug.apply(&src, size, &mut sample_rng(seed, epoch, index), &mut a).unwrap();
        aug.apply(&src, size, &mut sample_rng(seed, epoch, index), &mut b).unwrap();
        prop_assert_eq!(a.len(), size * size);
        prop_assert!(a.iter().all(|v| v.is_finite() && (0.0..=1.0).contains(v)), "{:?}", a);
        prop_assert_eq!(&a, &b);
    }

    #[test]
    fn no_augmentation_is_the_identity(size in 1usize..24, v in any::<u8>()) {
        let src = vec![v; size * size];
        let mut out = vec![0.0; size * size];
        Augment::none().apply(&src, size, &mut sample_rng(0, 0, 0), &mut out).unwrap();
        prop_assert!(out.iter().all(|&x| x == v as f32 / 255.0));
    }
}

#[test]
fn different_samples_get_different_augmentations() {
    let aug = Augment {
        noise: Noise { p: 1.0, std: 0.05 },
        ..Augment::default()
    };
    let src: Vec<u8> = (0..32 * 32).map(|i| (i % 251) as u8).collect();
    let run = |index| {
        let mut out = vec![0.0; 32 * 32];
        aug.apply(&src, 32, &mut sample_rng(9, 0, index), &mut out)
            .unwrap();
        out
    };
    assert_ne!(run(0), run(1));
}

fn loader(prefetch: bool, balanced: bool) -> BatchLoader {
    let mut data = PhantomConfig {
        size: 24,
        train: 37,
        val: 0,
        test: 0,
        seed: 3,
        ..PhantomConfig::default()
    }
    .folder()
    .unwrap();
    let norm = data.normalization().unwrap();
    let train = data.take_split(Split::Train).unwrap();
    BatchLoader::new(
        train,
        norm,
        LoaderConfig {
            batch_size: 8,
            seed: 11,
            balanced,
            prefetch,
            augment: Some(Augment {
                vflip: 0.5,
                noise: Noise { p: 0.5, std: 0.03 },
                ..Augment::default()
            }),
            ..LoaderConfig::default()
        },
    )
    .unwrap()
}

fn all_batches(l: &BatchLoader, epochs: usize) -> Vec<fracture_data::Batch> {
    (0..epochs).flat_map(|e| l.epoch(e)).collect()
}

#[test]
fn batches_do_not_depend_on_thread_count_or_prefetch() {
    for balanced in [false, true] {
        let sync = loader(false, balanced);
        let in_pool = |threads: usize| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| all_batches(&sync, 2))
        };
        let one = in_pool(1);
        assert_eq!(one.len(), 10);
        assert_eq!(one, in_pool(4), "balanced={balanced}");
        assert_eq!(
            one,
            all_batches(&loader(true, balanced), 2),
            "prefetch, balanced={balanced}"
        );
        // Random access gives the same batch as iteration.
        assert_eq!(one[6], sync.batch(1, 1));
    }
}

#[test]
fn normalisation_is_applied_after_augmentation() {
    let l = loader(false, false);
    let Normalization { mean, std } = l.normalization();
    for batch in l.epoch(0) {
        for &v in &batch.images {
            let unit = v * std + mean;
            assert!((-1e-5..=1.0 + 1e-5).contains(&unit), "{unit}");
        }
    }
}
