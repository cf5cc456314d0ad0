//! `bda_cpu::network::NetworkMeta`, the few-shot seam for the MAML family, against the
//! kernel's `f64` reference run through the same engine: for every rule (MAML, Meta-SGD,
//! first-order MAML, Reptile, iMAML, BDA on the whole network) the `f32` meta-gradient of a
//! meta-batch is the mean of the reference's per-task meta-gradients, and its loss the mean
//! of their `φ`; evaluation accuracies are percentages of the query set.

use bda_cpu::network::NetworkMeta;
use bda_kernel::Method;
use bda_kernel::backend::{MethodConfig, MethodSpec};
use bda_kernel::fewshot::{
    Batch, Conv4Shape, HeadProcedure, MetaBackend, Network, NetworkProcedure, NetworkRule,
    NetworkTask, ReferenceTask, Task,
};
use bda_testkit::instance::{network_tasks, network_weights};
use bda_testkit::{Rng, rel_err};

const SHAPE: Conv4Shape = Conv4Shape {
    channels: 3,
    in_channels: 1,
    side: 8,
    blocks: 2,
};

fn tasks(ways: usize, r: &mut Rng) -> Vec<Task> {
    network_tasks(SHAPE, ways, 3, r)
}

/// A network of `ways` classes, three tasks and `f32` weights drawn from `seed`.
fn instance(seed: u64, ways: usize) -> (Network, Vec<Task>, Vec<f32>) {
    let mut r = Rng::new(seed);
    let net = Network { shape: SHAPE, ways };
    let batch_tasks = tasks(ways, &mut r);
    let x = network_weights(&net, &mut r)
        .iter()
        .map(|&v| v as f32)
        .collect();
    (net, batch_tasks, x)
}

/// The whole-network procedure of `method` with hypergradient rule and proximal weight
/// `prox`, K = 2.
fn procedure(method: Method, prox: f64) -> HeadProcedure<f32> {
    HeadProcedure {
        spec: MethodConfig::new(method, 2, 0.2f32).build().unwrap(),
        l2: 0.0,
        network: Some(NetworkProcedure {
            rule: NetworkRule::Hypergradient,
            prox,
        }),
    }
}

/// The reference's `(φ, meta-gradient)` of one task: the kernel's rules on the `f64`
/// products.
fn reference(
    net: Network,
    t: &Task,
    p: NetworkProcedure,
    spec: MethodSpec<f64>,
    x: &[f64],
) -> (f64, Vec<f64>) {
    let up = |v: &[f32]| v.iter().map(|&x| f64::from(x)).collect::<Vec<f64>>();
    let (s, q) = (up(&t.support), up(&t.query));
    let reference = ReferenceTask {
        net,
        support: (&s, &t.support_labels),
        query: (&q, &t.query_labels),
    };
    let a = NetworkTask::of(reference, p)
        .meta_gradient(p.rule, spec, x)
        .unwrap();
    (a.phi, a.grad)
}

#[test]
fn every_rule_is_the_mean_of_the_references_tasks() {
    let mut r = Rng::new(11);
    let ways = 3;
    let net = Network { shape: SHAPE, ways };
    let batch_tasks = tasks(ways, &mut r);
    let weights = network_weights(&net, &mut r);
    let cases = [
        (NetworkRule::Hypergradient, Method::Rhg, 0.0, "maml"),
        (NetworkRule::PerWeightSteps, Method::Rhg, 0.0, "metasgd"),
        (NetworkRule::FirstOrder, Method::Rhg, 0.0, "fomaml"),
        (NetworkRule::Reptile, Method::Rhg, 0.0, "reptile"),
        (NetworkRule::Hypergradient, Method::Ihg, 2.0, "imaml"),
        (NetworkRule::Hypergradient, Method::Bda, 0.0, "bda-net"),
    ];
    for (rule, method, prox, name) in cases {
        let p = NetworkProcedure { rule, prox };
        let per_weight = rule == NetworkRule::PerWeightSteps;
        let step = if per_weight { 1.0 } else { 0.2 };
        let mut cfg = MethodConfig::new(method, 3, step);
        cfg.cg_iters = 4;
        let spec = cfg.build().unwrap();
        let mut x = weights.clone();
        if per_weight {
            x.extend((0..weights.len()).map(|_| f64::from(r.range(0.1, 0.3))));
        }
        let mut want = vec![0.0; x.len()];
        let mut want_loss = 0.0;
        for t in &batch_tasks {
            let (phi, g) = reference(net, t, p, spec, &x);
            want_loss += phi / 3.0;
            want.iter_mut().zip(&g).for_each(|(w, g)| *w += g / 3.0);
        }
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let head = HeadProcedure {
            spec: spec.cast::<f32>().unwrap(),
            l2: 0.0,
            network: Some(p),
        };
        let batch = Batch {
            shape: SHAPE,
            params: &xf,
            tasks: &batch_tasks,
            head: &head,
        };
        let got = NetworkMeta::default().meta_gradient(batch).unwrap();
        let got_grad: Vec<f64> = got.grad.iter().map(|&g| f64::from(g)).collect();
        let e = rel_err(&got_grad, &want);
        println!(
            "{name}: f32 meta-gradient against the f64 reference {e:.1e}, loss {} / {want_loss}",
            got.loss
        );
        assert!(e < 1e-5, "{name}: {e}");
        assert!(
            (got.loss - want_loss).abs() < 1e-5 * want_loss.abs(),
            "{name} loss"
        );
        assert!((0.0..=100.0).contains(&got.acc));
        let accs = NetworkMeta::default().evaluate_tasks(batch).unwrap();
        assert_eq!(accs.len(), 3);
        // Two queries per class, three classes: multiples of 100/6.
        for a in accs {
            assert!(
                (a * 6.0 / 100.0 - (a * 6.0 / 100.0).round()).abs() < 1e-9,
                "{a}"
            );
        }
    }
    // A head procedure, or meta-parameters of the wrong length, are refused.
    let head = HeadProcedure {
        spec: MethodConfig::new(Method::Rhg, 2, 0.1f32).build().unwrap(),
        l2: 0.0,
        network: None,
    };
    let xf = vec![0.1f32; net.num_params()];
    let b = Batch {
        shape: SHAPE,
        params: &xf,
        tasks: &batch_tasks,
        head: &head,
    };
    assert!(NetworkMeta::default().meta_gradient(b).is_err());
    let head = HeadProcedure {
        network: Some(NetworkProcedure {
            rule: NetworkRule::PerWeightSteps,
            prox: 0.0,
        }),
        ..head
    };
    let b = Batch { head: &head, ..b };
    assert!(NetworkMeta::default().meta_gradient(b).is_err());
}

/// Ranks split a meta-batch's tasks and add their outcomes in task order: the same bits as
/// one process for 1 to 4 ranks (4 ranks and 3 tasks: one rank runs none), evaluations
/// gathered in task order, and a failure on one rank ends every rank with one message.
#[test]
fn ranks_split_the_tasks_with_the_bits_of_one_process() {
    use bda_cpu::ranks::LocalRanks;
    let (_, batch_tasks, x) = instance(5, 2);
    for (method, prox) in [(Method::Rhg, 0.0), (Method::Ihg, 20.0)] {
        let head = procedure(method, prox);
        let batch = Batch {
            shape: SHAPE,
            params: &x,
            tasks: &batch_tasks,
            head: &head,
        };
        let one = NetworkMeta::default().meta_gradient(batch).unwrap();
        let one_eval = NetworkMeta::default().evaluate_tasks(batch).unwrap();
        for ranks in 1..=4 {
            let all = LocalRanks::run(ranks, |comm| {
                let mut meta = NetworkMeta::with_ranks(comm);
                (
                    meta.meta_gradient(batch).unwrap(),
                    meta.evaluate_tasks(batch).unwrap(),
                )
            });
            for (g, e) in all {
                assert_eq!(g.grad, one.grad, "{method:?} on {ranks} ranks");
                assert_eq!((g.loss, g.acc), (one.loss, one.acc));
                assert_eq!(e, one_eval);
            }
        }
    }
    // NaN weights fail on the ranks that own tasks; every rank returns the same error.
    let bad = vec![f32::NAN; x.len()];
    let head = procedure(Method::Rhg, 0.0);
    let batch = Batch {
        shape: SHAPE,
        params: &bad,
        tasks: &batch_tasks[..1],
        head: &head,
    };
    let errs = LocalRanks::run(3, |comm| NetworkMeta::with_ranks(comm).meta_gradient(batch));
    for e in errs {
        assert_eq!(e.unwrap_err(), bda_kernel::fewshot::MetaError::NonFinite);
    }
}

/// iMAML's CG stops at non-positive curvature are counted per meta-batch: the count is the
/// tasks' own (each task run alone through the kernel's rules on the same products), the
/// same on 1 to 3 ranks, and 0 for MAML.
#[test]
fn cg_stops_are_counted_over_the_tasks() {
    use bda_cpu::ranks::LocalRanks;
    let (net, batch_tasks, x) = instance(9, 3);
    let mut seen = 0;
    for (method, prox) in [(Method::Ihg, 0.05), (Method::Ihg, 2.0), (Method::Rhg, 0.0)] {
        let p = NetworkProcedure {
            rule: NetworkRule::Hypergradient,
            prox,
        };
        let mut cfg = MethodConfig::new(method, 3, 0.2f32);
        cfg.cg_iters = 8;
        let spec = cfg.build().unwrap();
        let want: usize = batch_tasks
            .iter()
            .map(|t| {
                let (s, q) = (
                    bda_cpu::network::TaskImages::new(&SHAPE, &t.support, &t.support_labels),
                    bda_cpu::network::TaskImages::new(&SHAPE, &t.query, &t.query_labels),
                );
                let mut task = NetworkTask::of(bda_cpu::network::CpuTask::new(net, &s, &q), p);
                usize::from(task.meta_gradient(p.rule, spec, &x).unwrap().cg_stop)
            })
            .sum();
        let head = HeadProcedure {
            spec,
            l2: 0.0,
            network: Some(p),
        };
        let batch = Batch {
            shape: SHAPE,
            params: &x,
            tasks: &batch_tasks,
            head: &head,
        };
        for got in LocalRanks::run(3, |comm| {
            NetworkMeta::with_ranks(comm).meta_gradient(batch).unwrap()
        }) {
            assert_eq!(got.cg_stops, want, "{method:?}, λ = {prox}");
        }
        println!("{method:?}, λ = {prox}: {want} of 3 tasks stopped at negative curvature");
        if method == Method::Rhg {
            assert_eq!(want, 0);
        }
        seen += want;
    }
    assert!(
        seen > 0,
        "no task met negative curvature: the count is not exercised"
    );
}
