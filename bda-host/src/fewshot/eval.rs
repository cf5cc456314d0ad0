//! `bda fewshot eval`: test a backbone (a checkpoint, or a random one) on episodes, and the
//! test loop that training ends with.

use std::time::Instant;

use bda_cpu::conv4::init_params;
use bda_kernel::fewshot::{Batch, MetaBackend, MetaError};
use clap::ArgMatches;
use indicatif::ProgressBar;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::args::{EpisodeArgs, EvalArgs, EvalConfig, FsMethod};
use super::checkpoint::Checkpoint;
use super::config::{Plan, RunConfig, arch_for, data_format};
use super::report::{self, Report};
use super::source::{Source, data_source, split_name};
use crate::config::ReportHeader;
use crate::device::{OpenDevice, fewshot_backend};
use crate::error::CliError;
use crate::output::Interrupt;
use crate::progress;

/// The one-line error of a failed evaluation.
pub(super) fn eval_error(e: MetaError) -> CliError {
    match e {
        MetaError::NonFinite => CliError::run("evaluation: a head became non-finite"),
        MetaError::Device(m) => CliError::run(format!("evaluation: {m}")),
    }
}

/// Test `params` on `episodes` episodes of `source` drawn with `rng`, `meta_batch` episodes
/// per forward pass (batch-norm statistics), each head fitted by the evaluation procedure.
/// Stops early (with the accuracies so far) when `interrupt` says so.
pub(super) fn test_backbone(
    backend: &mut dyn MetaBackend,
    plan: &Plan,
    params: &[f32],
    (source, episodes): (&Source, usize),
    rng: &mut ChaCha8Rng,
    (bar, interrupt): (&ProgressBar, &Interrupt),
) -> Result<Vec<f64>, CliError> {
    let head = plan.head.evaluation();
    let mut accs = Vec::with_capacity(episodes);
    while accs.len() < episodes && interrupt.poll().is_none() {
        let b = plan.cfg.episode.meta_batch.min(episodes - accs.len());
        let tasks = source.tasks(b, rng);
        accs.extend(
            backend
                .evaluate_tasks(Batch {
                    shape: plan.cfg.arch,
                    params,
                    tasks: &tasks,
                    head: &head,
                })
                .map_err(eval_error)?,
        );
        bar.inc(b as u64);
    }
    Ok(accs)
}

/// The settings of a random backbone (the peer's episode shape, RHG's head procedure), on
/// the images of the data's layout.
fn random_backbone(e: &EvalConfig) -> Result<RunConfig, CliError> {
    let src = &e.source;
    let data_dir = (!src.synthetic).then(|| src.data_dir.clone()).flatten();
    let format = data_format(data_dir.as_deref(), src.format)?;
    let episode = EpisodeArgs {
        ways: 5,
        shots: 1,
        queries: 15,
        meta_batch: 16,
        method: FsMethod::Rhg,
        k: 5,
        first_order: false,
        lambda: 2.0,
        cg_iters: 5,
    };
    Ok(RunConfig {
        format,
        rotations: true,
        val_classes: src.val_classes,
        ..RunConfig::untrained(episode, arch_for(format, e.channels), e.seed)
    })
}

/// Run `bda fewshot eval`.
pub fn run(a: &EvalArgs, matches: &ArgMatches) -> Result<(), CliError> {
    let c = crate::ranks::agree(a.out.configured(&a.run, matches, "fewshot eval"))?;
    c.place.run(|device| eval(a, &c, device))
}

/// What an evaluation needs: the backbone, its settings checked, the data, the report's
/// header and the backend.
struct Setup {
    params: Vec<f32>,
    steps: u64,
    method: String,
    plan: Plan,
    source: Source,
    header: ReportHeader,
    backend: Box<dyn MetaBackend>,
}

fn setup(e: &EvalConfig, device: &OpenDevice) -> Result<Setup, CliError> {
    if e.episodes == 0 {
        return Err(CliError::input("--episodes 0: must be positive"));
    }
    let (base, params, steps, method) = match &e.checkpoint {
        Some(path) if !e.random_backbone => {
            // The effective settings (the flags override the checkpoint's) are checked below.
            let (ck, _) = Checkpoint::load(path)?;
            let m = ck.config.method_name().to_string();
            (ck.config, ck.params, ck.step, m)
        }
        None if !e.random_backbone => {
            return Err(CliError::input(
                "bda fewshot eval: give --checkpoint FILE or --random-backbone",
            ));
        }
        _ => {
            let cfg = random_backbone(e)?;
            let mut rng = ChaCha8Rng::seed_from_u64(e.seed);
            let params = init_params(&cfg.arch, &mut rng);
            (cfg, params, 0, "random".to_string())
        }
    };
    let ep = &base.episode;
    let src = &e.source;
    if let Some(w) = e.ways.filter(|&w| w != ep.ways && base.network().is_some()) {
        return Err(CliError::input(format!(
            "--ways {w}: the checkpoint's network ({}) has a {}-way head",
            base.method_name(),
            ep.ways
        )));
    }
    let cfg = RunConfig {
        episode: EpisodeArgs {
            ways: e.ways.unwrap_or(ep.ways),
            shots: e.shots.unwrap_or(ep.shots),
            queries: e.queries.unwrap_or(ep.queries),
            meta_batch: e.meta_batch.unwrap_or(ep.meta_batch),
            k: e.k.unwrap_or(ep.k),
            ..ep.clone()
        },
        ll_lr: e.ll_lr.unwrap_or(base.ll_lr),
        data_dir: if src.synthetic {
            None
        } else {
            src.data_dir.clone().or(base.data_dir.clone())
        },
        // A new folder's layout is its own (given or detected), not the checkpoint's.
        format: match &src.data_dir {
            Some(_) if !src.synthetic => src.format,
            _ => base.format,
        },
        rotations: base.rotations && !src.no_rotations,
        val_classes: if src.val_classes > 0 {
            src.val_classes
        } else {
            base.val_classes
        },
        ..base
    };
    // Evaluation fits heads without truncation: keep a checkpoint's T valid for a smaller K.
    let cfg = RunConfig {
        truncate: cfg.truncate.clamp(1, cfg.episode.k),
        ..cfg
    };
    let plan = cfg.check()?;
    let cfg = &plan.cfg;
    if e.random_backbone && cfg.data_dir.is_none() && !src.synthetic {
        return Err(CliError::input(
            "bda fewshot eval: give --data-dir DIR (Omniglot or MiniImageNet layout) or --synthetic",
        ));
    }
    let dir = cfg.data_dir.as_deref();
    let source = Source::open(&plan, e.split)?;
    let ep = &cfg.episode;
    let resolved = EvalConfig {
        ways: Some(ep.ways),
        shots: Some(ep.shots),
        queries: Some(ep.queries),
        meta_batch: Some(ep.meta_batch),
        k: Some(ep.k),
        ll_lr: Some(cfg.ll_lr),
        channels: cfg.arch.channels,
        source: cfg.source(),
        ..e.clone()
    };
    let header = ReportHeader::new("fewshot eval", &resolved, data_source(dir, &[&source])?)?;
    let backend = fewshot_backend(device, cfg.arch, &plan.head)?;
    Ok(Setup {
        params,
        steps,
        method,
        plan,
        source,
        header,
        backend,
    })
}

fn eval(a: &EvalArgs, e: &EvalConfig, device: &OpenDevice) -> Result<(), CliError> {
    let t0 = Instant::now();
    // Every rank sets up; one that cannot ends them all.
    let Setup {
        params,
        steps,
        method,
        plan,
        source,
        header,
        mut backend,
    } = crate::ranks::agree(setup(e, device))?;
    let cfg = &plan.cfg;
    let mut rng = ChaCha8Rng::seed_from_u64(e.seed ^ 0x7e57);
    let bar = progress::bar_unless(a.out.quiet, e.episodes as u64, "test");
    let interrupt = Interrupt::watch()?;
    let accs = test_backbone(
        backend.as_mut(),
        &plan,
        &params,
        (&source, e.episodes),
        &mut rng,
        (&bar, &interrupt),
    )?;
    bar.finish_and_clear();
    if !crate::ranks::lead() {
        return Ok(());
    }
    let mut r = Report::new(header, cfg, &method, &accs, backend.device());
    r.ul_iters = steps;
    r.seconds = t0.elapsed().as_secs_f64();
    r.interrupted = interrupt.requested().is_some();
    report::print(&r, a.out.json, split_name(e.split))?;
    match interrupt.requested() {
        Some(s) => Err(s.stopped(&format!("{} of {} episodes", accs.len(), e.episodes))),
        None => Ok(()),
    }
}
