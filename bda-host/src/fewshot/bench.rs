//! `bda fewshot bench`: seconds per meta-step on random inputs with the PyTorch peer's
//! shapes, and the convolution throughput of the meta-step and of the backbone alone.

use std::time::Instant;

use bda_kernel::fewshot::{Batch, Conv4Shape, MetaBackend, MetaError, Task};
use clap::ArgMatches;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::args::FsMethod;
use super::args::{BenchArgs, BenchConfig};
use super::config::{RunConfig, init_meta_params};
use super::data::synthetic_task;
use crate::config::ReportHeader;
use crate::device::{OpenDevice, fewshot_backend};
use crate::error::CliError;
use crate::optim::Adam;

/// The result of `bda fewshot bench` (`--json`).
#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// Command, version, effective configuration.
    #[serde(flatten)]
    pub header: ReportHeader,
    /// Always `bda`.
    pub impl_name: &'static str,
    /// `cpu`, or `cuda (device name)`.
    pub device: String,
    /// Method.
    pub method: &'static str,
    /// Classes.
    pub ways: usize,
    /// Shots.
    pub shots: usize,
    /// Queries per class.
    pub queries: usize,
    /// Episodes per meta-step.
    pub meta_batch: usize,
    /// Head steps.
    #[serde(rename = "K")]
    pub k: u32,
    /// Input images: channels × side × side.
    pub in_channels: usize,
    /// Side of the input images.
    pub image_size: usize,
    /// Convolution channels.
    pub channels: usize,
    /// Rayon threads (the CPU path; the host side of the CUDA path), per rank.
    pub threads: usize,
    /// Processes the backbone was split over (MPI ranks; 1 without a launcher).
    pub ranks: usize,
    /// Seconds per meta-step (forward, K head steps and their reverse pass per task,
    /// backward, Adam).
    pub s_per_ul_iter: f64,
    /// Convolution FLOPs (forward + backward) per meta-step / seconds per meta-step.
    pub gflops_ul_iter: f64,
    /// Seconds of the backbone's forward + backward alone (one meta-batch; the head
    /// methods only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub s_backbone: Option<f64>,
    /// Convolution FLOPs per backbone forward + backward / `s_backbone`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gflops_backbone: Option<f64>,
    /// Where the backbone's time goes, block by block (CPU only; empty on a device).
    pub layers: Vec<LayerProfile>,
}

/// One block of the backbone in `bda fewshot bench`: its shape, its mean seconds per pass
/// (convolution, batch norm, ReLU and pooling together) and the rate of its convolutions.
#[derive(Debug, Serialize)]
pub struct LayerProfile {
    /// Block index (0 = the one reading the images).
    pub block: usize,
    /// Input channels.
    pub c_in: usize,
    /// Side of the block's input maps.
    pub side: usize,
    /// Seconds of the forward pass.
    pub forward_s: f64,
    /// Seconds of the backward pass (weight gradient, and input gradient but for block 0).
    pub backward_s: f64,
    /// Convolution FLOPs of the block (forward + backward) / (forward_s + backward_s).
    pub gflops: f64,
}

/// Per-block profiles from the summed (forward, backward) seconds of `steps` passes.
fn layer_profiles(
    shape: Conv4Shape,
    n: usize,
    sums: &[(f64, f64)],
    steps: usize,
) -> Vec<LayerProfile> {
    sums.iter()
        .enumerate()
        .map(|(l, &(f, b))| {
            let (f, b) = (f / steps as f64, b / steps as f64);
            let s = shape.side_at(l);
            let fwd = 2.0 * (shape.channels * shape.c_in(l) * 9 * s * s * n) as f64;
            let flops = if l == 0 { 2.0 * fwd } else { 3.0 * fwd };
            LayerProfile {
                block: l,
                c_in: shape.c_in(l),
                side: s,
                forward_s: f,
                backward_s: b,
                gflops: flops / (f + b) / 1e9,
            }
        })
        .collect()
}

/// Convolution FLOPs of one meta-step of a whole-network method, from the products each
/// task asks of `bda_cpu::network` (support `s`, query `q` images; `C(n)` the forward
/// convolutions of n images as direct 3×3 convolutions, `C₀(n)` block 0's):
///
/// * a gradient `G(n) = 3C(n) − C₀(n)`: forward, weight gradients, input gradients but
///   for the images';
/// * an H·v at weights whose gradient was just taken, `H(n) = 6C(n) − 4C₀(n)`: the tangent
///   forward pass (two products per block, one for block 0) and the tangent backward pass
///   (two weight products, and two input products but for block 0), the primal passes
///   being kept from the gradient; without a gradient first (iMAML's first CG step) the
///   primal forward and input products, `2C(n) − C₀(n)`, once;
/// * every method: K gradients on the support set (BDA's steps also on the query set) and
///   `G(q)` at `y_K` (whose forward pass also gives the query accuracy);
/// * MAML and Meta-SGD: `K·H(s)` back through the steps; BDA: `K·(H(s) + H(q))`; iMAML:
///   `cg·H(s)`; first-order MAML and Reptile nothing more.
///
/// The head's products (`ways × features` per image) are left out. The Winograd blocks
/// multiply less than these counts say, so the rate is that of direct convolutions.
fn network_flops(cfg: &RunConfig) -> f64 {
    let (a, e) = (cfg.arch, &cfg.episode);
    let c = |n: usize| a.conv_flops(n).0;
    let c0 = |n: usize| 2.0 * (a.channels * a.in_channels * 9 * a.side * a.side * n) as f64;
    let g = |n: usize| 3.0 * c(n) - c0(n);
    let h = |n: usize| 6.0 * c(n) - 4.0 * c0(n);
    let (s, q, k) = (e.ways * e.shots, e.ways * e.queries, f64::from(e.k));
    let method = e.effective_method();
    let inner = match method {
        FsMethod::BdaNet => k * (g(s) + g(q)),
        _ => k * g(s),
    };
    let reverse = match method {
        FsMethod::Maml | FsMethod::Metasgd => k * h(s),
        FsMethod::BdaNet => k * (h(s) + h(q)),
        FsMethod::Imaml => f64::from(e.cg_iters) * h(s) + 2.0 * c(s) - c0(s),
        _ => 0.0,
    };
    e.meta_batch as f64 * (inner + g(q) + reverse)
}

/// The one-line error of a failed benchmark step.
fn bench_error(e: MetaError) -> CliError {
    match e {
        MetaError::NonFinite => CliError::run("bench: the meta-loss or its gradient is not finite"),
        MetaError::Device(m) => CliError::run(format!("bench: {m}")),
    }
}

/// Run `bda fewshot bench`.
pub fn run(a: &BenchArgs, matches: &ArgMatches) -> Result<(), CliError> {
    let c = crate::ranks::agree(a.out.configured(&a.run, matches, "fewshot bench"))?;
    c.place.run(|device| bench(a, &c, device))
}

fn bench(a: &BenchArgs, b: &BenchConfig, device: &OpenDevice) -> Result<(), CliError> {
    let arch = Conv4Shape {
        channels: b.channels,
        in_channels: b.in_channels,
        side: b.image_size,
        ..Conv4Shape::CONV4
    };
    let base = RunConfig::untrained(b.episode.clone(), arch, 0);
    let cfg = RunConfig {
        ll_lr: b.ll_lr.unwrap_or(base.ll_lr),
        checkpoint_every: b.checkpoint_every,
        ..base
    };
    for (flag, v, max) in [
        ("--image-size", b.image_size, 1024),
        ("--in-channels", b.in_channels, 64),
    ] {
        if v == 0 || v > max {
            return Err(CliError::input(format!("{flag} {v}: must be in 1..={max}")));
        }
    }
    let plan = cfg.check()?;
    let cfg = &plan.cfg;
    if b.steps == 0 {
        return Err(CliError::input("--steps 0: must be positive"));
    }
    let header = ReportHeader::new("fewshot bench", b, None)?;
    let mut rng = ChaCha8Rng::seed_from_u64(0);
    let mut params = init_meta_params(cfg, &mut rng);
    let mut adam = Adam::new(cfg.ul_lr, params.len());
    // Fixed random inputs, as the peer.
    let e = &cfg.episode;
    let tasks: Vec<Task> = (0..e.meta_batch)
        .map(|_| synthetic_task(e.ways, e.shots, e.queries, arch.pixels(), &mut rng))
        .collect();
    let head = plan.head;
    // A device that fails on one rank alone ends every rank.
    let mut backend = crate::ranks::agree(fewshot_backend(device, arch, &head))?;
    let mut step = |backend: &mut dyn MetaBackend, params: &mut Vec<f32>| -> Result<(), CliError> {
        let mg = backend
            .meta_gradient(Batch {
                shape: arch,
                params,
                tasks: &tasks,
                head: &head,
            })
            .map_err(bench_error)?;
        adam.step(params, &mg.grad);
        Ok(())
    };
    step(backend.as_mut(), &mut params)?; // warm-up
    let t0 = Instant::now();
    for _ in 0..b.steps {
        step(backend.as_mut(), &mut params)?;
    }
    let s_step = t0.elapsed().as_secs_f64() / b.steps as f64;
    // The backbone alone (the head methods; the whole network has no backbone pass of its
    // own, its arithmetic is the products').
    let n = cfg.episode.meta_batch * cfg.episode.ways * (cfg.episode.shots + cfg.episode.queries);
    let (f, bw) = arch.conv_flops(n);
    let mut layers = Vec::new();
    let (flops, backbone) = if head.network.is_some() {
        (network_flops(cfg), None)
    } else {
        let dfeats = vec![1e-3f32; n * arch.features()];
        let batch = Batch {
            shape: arch,
            params: &params,
            tasks: &tasks,
            head: &head,
        };
        let t1 = Instant::now();
        let mut sums: Vec<(f64, f64)> = Vec::new();
        for _ in 0..b.steps {
            if let Some(blocks) = backend.backbone_pass(batch, &dfeats).map_err(bench_error)? {
                sums.resize(blocks.len(), (0.0, 0.0));
                for (s, (f, bw)) in sums.iter_mut().zip(blocks) {
                    (s.0, s.1) = (s.0 + f, s.1 + bw);
                }
            }
        }
        let s_bb = t1.elapsed().as_secs_f64() / b.steps as f64;
        layers = layer_profiles(arch, n, &sums, b.steps);
        (f + bw, Some((s_bb, (f + bw) / s_bb / 1e9)))
    };
    let r = BenchReport {
        header,
        impl_name: "bda",
        device: backend.device(),
        method: cfg.method_name(),
        ways: cfg.episode.ways,
        shots: cfg.episode.shots,
        queries: cfg.episode.queries,
        meta_batch: cfg.episode.meta_batch,
        k: cfg.episode.k,
        in_channels: arch.in_channels,
        image_size: arch.side,
        channels: arch.channels,
        threads: rayon::current_num_threads(),
        ranks: crate::ranks::size(),
        s_per_ul_iter: s_step,
        gflops_ul_iter: flops / s_step / 1e9,
        s_backbone: backbone.map(|b| b.0),
        gflops_backbone: backbone.map(|b| b.1),
        layers,
    };
    // Rank 0 reports (its timings: every rank waits for the others at each collective).
    if !crate::ranks::lead() {
        return Ok(());
    }
    if a.out.json {
        println!(
            "{}",
            serde_json::to_string(&r).map_err(|e| CliError::run(e.to_string()))?
        );
    } else {
        println!(
            "{}-way {}-shot, {} queries, meta-batch {}, K = {}, {}×{}×{} images, {} channels, {} on {} ({} threads × {} ranks): {:.3} s/meta-step",
            r.ways,
            r.shots,
            r.queries,
            r.meta_batch,
            r.k,
            r.in_channels,
            r.image_size,
            r.image_size,
            r.channels,
            r.method,
            r.device,
            r.threads,
            r.ranks,
            r.s_per_ul_iter
        );
        print!(
            "conv FLOPs {:.1} G per meta-step: {:.1} GFLOP/s over the meta-step",
            flops / 1e9,
            r.gflops_ul_iter
        );
        match backbone {
            Some((s, g)) => println!(", {g:.1} GFLOP/s in the backbone alone ({s:.3} s)"),
            None => println!(),
        }
        for p in &r.layers {
            println!(
                "  block {} ({}×{s}×{s} in): forward {:.3} s, backward {:.3} s, {:.1} GFLOP/s",
                p.block,
                p.c_in,
                p.forward_s,
                p.backward_s,
                p.gflops,
                s = p.side,
            );
        }
    }
    Ok(())
}
