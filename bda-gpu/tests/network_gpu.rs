//! The whole network as the lower level on a CUDA device: `GpuTask`'s products (loss,
//! gradient, Hessian–vector product by the R-operator) against the kernel's `f64`
//! reference on both sets, and `GpuNetworkMeta`'s meta-gradients for every rule of the
//! MAML family against the CPU's `NetworkMeta`. Each test prints `skipped: <reason>` and
//! returns when no CUDA device is usable (or fails with the reason when `BDA_REQUIRE_CUDA`
//! is set); `all_network_tests_on_a_fake_device` runs them all once more on the CPU
//! stand-ins of `tests/fake_cuda`. Run with `--nocapture` to see the measured errors.

use bda_cpu::network::NetworkMeta;
use bda_gpu::{GpuDevice, GpuNetworkMeta, GpuTask};
use bda_kernel::Method;
use bda_kernel::backend::MethodConfig;
use bda_kernel::fewshot::{
    Batch, Conv4Shape, HeadProcedure, MetaBackend, Network, NetworkLoss, NetworkProcedure,
    NetworkRule, ReferenceTask, Task, TaskSet,
};
use bda_testkit::instance::{network_tasks, network_weights};
use bda_testkit::{Rng, cuda, cxx, rel_err};

/// 9 → 5 → 3 → 2 (ceil mode on odd maps), grey.
const GREY: Conv4Shape = Conv4Shape {
    channels: 3,
    in_channels: 1,
    side: 9,
    blocks: 3,
};

/// Three input channels: 7 → 4 → 2.
const RGB: Conv4Shape = Conv4Shape {
    channels: 4,
    in_channels: 3,
    side: 7,
    blocks: 2,
};

fn device() -> Option<GpuDevice> {
    let dev = cuda::or_skip(GpuDevice::open(cuda::ordinal()))?;
    println!("{}", dev.info());
    Some(dev)
}

/// The tolerance of an `f32` product against `f64` on the stand-in device (the CPU's `f32`
/// products measure 7.8e-7 against the same reference), `hardware` on a GPU.
fn tol(hardware: f64) -> f64 {
    cuda::tolerance(1e-5, hardware)
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&v| f64::from(v)).collect()
}

fn f32s(v: &[f64]) -> Vec<f32> {
    v.iter().map(|&v| v as f32).collect()
}

fn tasks(shape: Conv4Shape, ways: usize, count: usize, r: &mut Rng) -> Vec<Task> {
    network_tasks(shape, ways, count, r)
}

fn products_follow_the_reference(shape: Conv4Shape, seed: u64) {
    let Some(dev) = device() else { return };
    let mut r = Rng::new(seed);
    let net = Network { shape, ways: 3 };
    let t = tasks(shape, 3, 1, &mut r).remove(0);
    let (s64, q64) = (f64s(&t.support), f64s(&t.query));
    let mut want_task = ReferenceTask {
        net,
        support: (&s64, &t.support_labels),
        query: (&q64, &t.query_labels),
    };
    let sets = (
        (t.support.as_slice(), t.support_labels.as_slice()),
        (t.query.as_slice(), t.query_labels.as_slice()),
    );
    let mut gpu = GpuTask::new(&dev, net, sets.0, sets.1).unwrap();
    let y = network_weights(&net, &mut r);
    let v: Vec<f64> = (0..y.len())
        .map(|_| f64::from(r.range(-1.0, 1.0)))
        .collect();
    let n = net.num_params();
    for set in [TaskSet::Support, TaskSet::Query] {
        let (mut g64, mut h64) = (vec![0.0; n], vec![0.0; n]);
        let loss64 = want_task.loss_grad(&y, set, &mut g64);
        want_task.hvp(&y, &v, set, &mut h64);
        let (mut g, mut h) = (vec![0.0f32; n], vec![0.0f32; n]);
        let loss = gpu.loss_grad(&f32s(&y), set, &mut g);
        gpu.hvp(&f32s(&y), &f32s(&v), set, &mut h);
        assert!(gpu.take_error().is_none());
        let el = (f64::from(loss) - loss64).abs() / loss64.abs();
        let (eg, eh) = (rel_err(&f64s(&g), &g64), rel_err(&f64s(&h), &h64));
        println!("{shape:?} {set:?}: loss {el:.1e}, gradient {eg:.1e}, H·v {eh:.1e}");
        assert!(el < tol(1e-5), "loss {el:.2e}");
        assert!(eg < tol(1e-4), "gradient {eg:.2e}");
        assert!(eh < tol(1e-4), "H·v {eh:.2e}");
    }
}

#[test]
fn products_follow_the_reference_grey() {
    products_follow_the_reference(GREY, 3);
}

#[test]
fn products_follow_the_reference_rgb() {
    products_follow_the_reference(RGB, 4);
}

/// Every rule's meta-gradient, loss and accuracy on the device against the CPU's.
#[test]
fn every_rule_follows_the_cpu() {
    let Some(dev) = device() else { return };
    let mut r = Rng::new(12);
    let ways = 3;
    let net = Network { shape: GREY, ways };
    let batch_tasks = tasks(GREY, ways, 3, &mut r);
    let weights = f32s(&network_weights(&net, &mut r));
    let mut gpu = GpuNetworkMeta::new(&dev).unwrap();
    assert!(gpu.device().starts_with("cuda"));
    let cases = [
        (NetworkRule::Hypergradient, Method::Rhg, 0.0, "maml"),
        (NetworkRule::PerWeightSteps, Method::Rhg, 0.0, "metasgd"),
        (NetworkRule::FirstOrder, Method::Rhg, 0.0, "fomaml"),
        (NetworkRule::Reptile, Method::Rhg, 0.0, "reptile"),
        // λ = 20: at λ = 2 these random weights make λI + H indefinite, CG stops at
        // negative curvature with a residual 137 times ‖∇F‖ and its result is
        // ill-determined (f32 against f64: 5e-5 on the CPU, 4e-4 here); at λ = 20 both
        // follow the f64 reference to 7e-7.
        (NetworkRule::Hypergradient, Method::Ihg, 20.0, "imaml"),
        (NetworkRule::Hypergradient, Method::Bda, 0.0, "bda-net"),
    ];
    for (rule, method, prox, name) in cases {
        let p = NetworkProcedure { rule, prox };
        let per_weight = rule == NetworkRule::PerWeightSteps;
        let mut cfg = MethodConfig::new(method, 3, if per_weight { 1.0 } else { 0.2f32 });
        cfg.cg_iters = 4;
        let head = HeadProcedure {
            spec: cfg.build().unwrap(),
            l2: 0.0,
            network: Some(p),
        };
        let mut x = weights.clone();
        if per_weight {
            x.extend((0..weights.len()).map(|_| r.range(0.1, 0.3)));
        }
        let batch = Batch {
            shape: GREY,
            params: &x,
            tasks: &batch_tasks,
            head: &head,
        };
        let (got, want) = (
            gpu.meta_gradient(batch).unwrap(),
            NetworkMeta::default().meta_gradient(batch).unwrap(),
        );
        let e = rel_err(&f64s(&got.grad), &f64s(&want.grad));
        let el = (got.loss - want.loss).abs() / want.loss.abs();
        println!("{name}: meta-gradient against the CPU {e:.1e}, loss {el:.1e}");
        assert!(e < tol(1e-4), "{name}: meta-gradient {e:.2e}");
        assert!(el < tol(1e-5), "{name}: loss {el:.2e}");
        // Six queries per task: one image apart at most (a near tie may fall either way).
        assert!(
            (got.acc - want.acc).abs() <= 100.0 / 6.0 / 3.0 + 1e-9,
            "{name}: accuracy"
        );
        let (accs, want_accs) = (
            gpu.evaluate_tasks(batch).unwrap(),
            NetworkMeta::default().evaluate_tasks(batch).unwrap(),
        );
        assert_eq!(accs.len(), 3);
        for (a, w) in accs.iter().zip(&want_accs) {
            assert!(
                (a - w).abs() <= 100.0 / 6.0 + 1e-9,
                "{name}: {a} against {w}"
            );
        }
    }
    // A head procedure is refused with a message.
    let head = HeadProcedure {
        spec: MethodConfig::new(Method::Rhg, 2, 0.1f32).build().unwrap(),
        l2: 0.0,
        network: None,
    };
    let b = Batch {
        shape: GREY,
        params: &weights,
        tasks: &batch_tasks,
        head: &head,
    };
    assert!(gpu.meta_gradient(b).is_err());
}

/// Another task loaded into a task's buffers (the same sizes, then a query set of another
/// size) gives the products of a task built for it, bit for bit.
#[test]
fn a_loaded_task_equals_a_new_one() {
    let Some(dev) = device() else { return };
    let mut r = Rng::new(8);
    let net = Network {
        shape: RGB,
        ways: 3,
    };
    let mut ts = tasks(RGB, 3, 2, &mut r);
    let y = f32s(&network_weights(&net, &mut r));
    let sets = |t: &Task| {
        (
            (t.support.clone(), t.support_labels.clone()),
            (t.query.clone(), t.query_labels.clone()),
        )
    };
    let ((s0, l0), (q0, m0)) = sets(&ts[0]);
    let mut reused = GpuTask::new(&dev, net, (&s0, &l0), (&q0, &m0)).unwrap();
    // The second task's query set one image shorter: that set is reallocated.
    let shorter = (ts[1].query_labels.len() - 1) * RGB.pixels();
    ts[1].query.truncate(shorter);
    ts[1].query_labels.pop();
    for t in &ts[1..] {
        let ((s, l), (q, m)) = sets(t);
        reused.load((&s, &l), (&q, &m)).unwrap();
        let mut fresh = GpuTask::new(&dev, net, (&s, &l), (&q, &m)).unwrap();
        assert_eq!(reused.query_len(), fresh.query_len());
        for set in [TaskSet::Support, TaskSet::Query] {
            let n = net.num_params();
            let (mut a, mut b) = (vec![0.0f32; n], vec![0.0f32; n]);
            let (la, lb) = (
                reused.loss_grad(&y, set, &mut a),
                fresh.loss_grad(&y, set, &mut b),
            );
            assert_eq!((la, &a), (lb, &b), "{set:?} gradient");
            reused.hvp(&y, &b, set, &mut a);
            let v = b.clone();
            fresh.hvp(&y, &v, set, &mut b);
            assert_eq!(a, b, "{set:?} H·v");
        }
        assert_eq!(
            reused.query_hits(&y).unwrap(),
            fresh.query_hits(&y).unwrap()
        );
    }
}

/// Labels beyond the head's classes and images of the wrong length are errors, not panics.
#[test]
fn bad_sets_are_errors() {
    let Some(dev) = device() else { return };
    let net = Network {
        shape: RGB,
        ways: 2,
    };
    let img = vec![0.5f32; RGB.pixels()];
    let bad_label = GpuTask::new(&dev, net, (&img, &[2]), (&img, &[0]));
    assert!(bad_label.unwrap_err().to_string().contains("label"));
    assert!(GpuTask::new(&dev, net, (&img[1..], &[0]), (&img, &[0])).is_err());
    assert!(GpuTask::new(&dev, net, (&[], &[]), (&img, &[0])).is_err());
}

/// With `BDA_REQUIRE_CUDA` set, a test that finds no usable device fails with the reason.
#[test]
fn a_required_device_that_is_missing_fails() {
    cuda::assert_required_fails("products_follow_the_reference_grey");
}

/// This file's tests once more on the CPU stand-ins of the CUDA libraries.
#[test]
fn all_network_tests_on_a_fake_device() {
    cxx::run_on_fake_device(
        env!("CARGO_TARGET_TMPDIR"),
        "fake_cuda_network",
        "all_network_tests_on_a_fake_device",
    );
}
