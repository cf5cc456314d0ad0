//! `bda fewshot`: the meta-training loop. The settings are checked once into a
//! [`Plan`]; episodes are drawn on the host, the meta-gradient comes from the
//! [`MetaBackend`] (CPU or CUDA), Adam updates the backbone; validation, checkpoints, the
//! test and the report follow.

use std::time::Instant;

use bda_kernel::backend::default_truncate;
use bda_kernel::fewshot::{Batch, MetaBackend, MetaError, Task};
use clap::ArgMatches;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::args::{SplitArg, TrainArgs, TrainConfig};
use super::checkpoint::{Best, Checkpoint, RngState};
use super::config::{Plan, RunConfig, arch_for, data_format, default_step, init_meta_params};
use super::data::DataFormat;
use super::eval::{eval_error, test_backbone};
use super::projection::{SN_INIT_ITERS, SN_STEP_ITERS, orthogonality_sum};
use super::report::{self, Report, mean_ci};
use super::resume;
use super::source::{Source, data_source};
use crate::config::{ReportHeader, given_on_command_line};
use crate::device::fewshot_backend;
use crate::error::CliError;
use crate::optim::Adam;
use crate::output::Interrupt;
use crate::{progress, ranks};

/// The one-line error of a failed meta-gradient at meta-step `step` (1-based).
fn meta_error(e: MetaError, step: u64) -> CliError {
    match e {
        MetaError::NonFinite => CliError::run(format!(
            "diverged at meta-step {step}: the meta-loss or its gradient is not finite (reduce --ll-lr or --ul-lr)"
        )),
        MetaError::Device(m) => CliError::run(format!("meta-step {step}: {m}")),
    }
}

impl TrainConfig {
    /// The checkpoint settings of a fresh run: the backbone's input shape comes from the
    /// data's layout (detected unless `--format` says it).
    pub fn run_config(&self) -> Result<RunConfig, CliError> {
        let src = &self.source;
        let data_dir = (!src.synthetic).then(|| src.data_dir.clone()).flatten();
        let format = data_format(data_dir.as_deref(), src.format)?;
        let arch = arch_for(format, self.channels);
        Ok(RunConfig {
            episode: self.episode.clone(),
            truncate: self.truncate.unwrap_or(default_truncate(self.episode.k)),
            ll_lr: self
                .ll_lr
                .unwrap_or_else(|| default_step(arch, self.episode.effective_method())),
            mu: self.mu,
            alpha: self.alpha,
            l2: self.l2,
            ul_lr: self.ul_lr,
            ul_projection: self.ul_projection,
            seed: self.seed,
            data_dir,
            format,
            rotations: !src.no_rotations && format != Some(DataFormat::Miniimagenet),
            val_classes: src.val_classes,
            arch,
            checkpoint_every: self.checkpoint_every,
        })
    }

    /// The configuration a report records: the run's settings (a resumed run's come from
    /// its checkpoint) with every default written out.
    pub(super) fn resolved(&self, run: &RunConfig) -> TrainConfig {
        TrainConfig {
            episode: run.episode.clone(),
            truncate: Some(run.truncate),
            ll_lr: Some(run.ll_lr),
            mu: run.mu,
            alpha: run.alpha,
            l2: run.l2,
            ul_lr: run.ul_lr,
            ul_projection: run.ul_projection,
            checkpoint_every: run.checkpoint_every,
            channels: run.arch.channels,
            seed: run.seed,
            source: run.source(),
            ..self.clone()
        }
    }
}

/// Run `bda fewshot` (meta-training).
pub fn run(a: &TrainArgs, matches: &ArgMatches) -> Result<(), CliError> {
    let c = ranks::agree(a.out.configured(&a.run, matches, "fewshot"))?;
    c.place.run(|device| train(a, &c, matches, device))
}

/// What a run needs before its first meta-step: the settings (a resumed run's from its
/// checkpoint) checked once, the checkpoint to continue, the data, the report's header and
/// the backend.
struct Setup {
    plan: Plan,
    ck: Checkpoint,
    c: TrainConfig,
    save_every: u64,
    source_train: Source,
    source_test: Source,
    source_val: Option<Source>,
    header: ReportHeader,
    backend: Box<dyn MetaBackend>,
}

fn setup(
    a: &TrainArgs,
    given: &TrainConfig,
    matches: &ArgMatches,
    device: &crate::device::OpenDevice,
) -> Result<Setup, CliError> {
    // The settings (a resumed run's from its checkpoint), checked once.
    let (plan, mut ck, c, save_every) = match &given.resume {
        Some(path) => {
            let (mut ck, mut plan) = Checkpoint::load(path)?;
            let stored = ck.run.clone().unwrap_or_else(|| given.resolved(&ck.config));
            let c = resume::resumed(given, matches, &stored, path)?;
            // A copy of the data elsewhere (its hash is checked once the data are read).
            plan.cfg.data_dir.clone_from(&c.source.data_dir);
            ck.config.data_dir.clone_from(&c.source.data_dir);
            let save_every = match ck.save_every {
                Some(n) if !given_on_command_line(matches, "save_every") => n,
                _ => a.save_every,
            };
            (plan, ck, c, save_every)
        }
        None => {
            let plan = given.run_config()?.check()?;
            if plan.cfg.data_dir.is_none() && !given.source.synthetic {
                return Err(CliError::input(
                    "bda fewshot: give --data-dir DIR (Omniglot or MiniImageNet layout) or --synthetic",
                ));
            }
            let ck = fresh_checkpoint(&plan.cfg)?;
            (plan, ck, given.clone(), a.save_every)
        }
    };
    // Rank 0 alone writes the files.
    if let Some(p) = a.plot.as_ref().filter(|_| ranks::lead()) {
        crate::output::check_plot(p, c.ul_iters, &format!("--ul-iters {}", c.ul_iters))?;
    }
    if let Some(p) = a.save.as_ref().filter(|_| ranks::lead()) {
        crate::output::check_writable("--save", p)?;
    }
    if c.patience > 0 {
        if c.val_every == 0 || c.val_episodes == 0 {
            return Err(CliError::input(format!(
                "--patience {}: needs validation (--val-every and --val-episodes > 0)",
                c.patience
            )));
        }
        if plan.format == Some(DataFormat::Omniglot) && plan.cfg.val_classes == 0 {
            return Err(CliError::input(format!(
                "--patience {}: would select the backbone on the test classes (Omniglot validates on images_evaluation): give --val-classes N",
                c.patience
            )));
        }
    }
    let cfg = &plan.cfg;
    let source_train = Source::open(&plan, SplitArg::Train)?;
    let source_test = Source::open(&plan, SplitArg::Test)?;
    // Omniglot without held-out characters validates on its evaluation split: read once.
    let source_val = match plan.format {
        Some(DataFormat::Omniglot) if cfg.val_classes == 0 => None,
        Some(_) => Some(Source::open(&plan, SplitArg::Val)?),
        None => None,
    };
    let mut sources = vec![&source_train, &source_test];
    sources.extend(source_val.as_ref());
    let dir = cfg.data_dir.as_deref();
    let data = data_source(dir, &sources)?;
    if let Some(path) = &c.resume {
        resume::same_data(path, ck.data.as_ref(), data.as_ref())?;
    }
    // What `--resume` will continue, the data folder made absolute so that it is found
    // from any working directory.
    let mut run = c.resolved(cfg);
    if let Some(d) = &run.source.data_dir {
        run.source.data_dir = Some(
            std::path::absolute(d)
                .map_err(|e| CliError::input(format!("--data-dir {}: {e}", d.display())))?,
        );
    }
    ck.run = Some(run);
    ck.data.clone_from(&data);
    ck.save_every = Some(save_every);
    let header = ReportHeader::new("fewshot", &c.resolved(cfg), data)?;
    let backend = fewshot_backend(device, cfg.arch, &plan.head)?;
    Ok(Setup {
        plan,
        ck,
        c,
        save_every,
        source_train,
        source_test,
        source_val,
        header,
        backend,
    })
}

fn train(
    a: &TrainArgs,
    given: &TrainConfig,
    matches: &ArgMatches,
    device: &crate::device::OpenDevice,
) -> Result<(), CliError> {
    let t0 = Instant::now();
    // Every rank sets up; one that cannot ends them all.
    let Setup {
        plan,
        mut ck,
        c,
        save_every,
        source_train,
        source_test,
        source_val,
        header,
        mut backend,
    } = ranks::agree(setup(a, given, matches, device))?;
    let (c, cfg) = (&c, &plan.cfg);
    let val_source = source_val.as_ref().unwrap_or(&source_test);
    // Validation episodes: drawn once from the validation split with their own seed, so a
    // resumed run validates on the same ones.
    let mut val_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x5a5a_0001);
    let val_tasks = match c.val_every {
        0 => Vec::new(),
        _ => val_source.tasks(c.val_episodes, &mut val_rng),
    };
    let mut rng = ck.rng.restore();
    let total = c.ul_iters;
    let start = ck.step;
    let bar = progress::bar_unless(a.out.quiet, total.saturating_sub(start), "meta-train");
    // From here on SIGINT/SIGTERM end the run after the current step, with its results.
    let interrupt = Interrupt::watch()?;
    let t_train = Instant::now();
    let loss_bound = crate::error::blow_up_bound(cfg.episode.ways);
    for step in start..total {
        let tasks = source_train.tasks(cfg.episode.meta_batch, &mut rng);
        let mg = backend
            .meta_gradient(Batch {
                shape: cfg.arch,
                params: &ck.params,
                tasks: &tasks,
                head: &plan.head,
            })
            .map_err(|e| meta_error(e, step + 1))?;
        // A finite blow-up is a divergence too: a loss 1000 times a uniform guess's.
        if mg.loss > loss_bound {
            return Err(CliError::run(format!(
                "diverged at meta-step {}: the meta-loss {:.3e} exceeds {loss_bound:.3e}, 1000 times a uniform guess's (reduce --ll-lr or --ul-lr)",
                step + 1,
                mg.loss
            )));
        }
        ck.adam.step(&mut ck.params, &mg.grad);
        let proj = cfg.ul_projection;
        proj.apply(cfg.arch, &mut ck.params, &mut ck.power, SN_STEP_ITERS)
            .map_err(|e| CliError::run(format!("meta-step {}: {e}", step + 1)))?;
        ck.step = step + 1;
        ck.rng = RngState::of(cfg.seed, &rng);
        ck.history.loss.push((ck.step, mg.loss, mg.acc));
        if mg.cg_stops > 0 {
            ck.history.cg_stops.push((ck.step, mg.cg_stops as u64));
        }
        let mut stop = false;
        if c.val_every > 0 && ck.step % c.val_every == 0 {
            let acc = validate(backend.as_mut(), &plan, &ck.params, &val_tasks)?;
            ck.history.val.push((ck.step, acc));
            ck.history
                .ortho
                .push((ck.step, orthogonality_sum(cfg.arch, &ck.params)));
            bar.set_message(format!("loss {:.3} val {acc:.1}%", mg.loss));
            if c.patience > 0 {
                stop = early_stop(&mut ck, acc, c.patience);
            }
        }
        if let Some(path) = &a.save
            && save_every > 0
            && ck.step % save_every == 0
        {
            // Rank 0 writes; a failure ends every rank.
            ranks::agree(match ranks::lead() {
                true => ck.save(path),
                false => Ok(()),
            })?;
        }
        bar.inc(1);
        if stop || interrupt.poll().is_some() {
            break;
        }
    }
    bar.finish_and_clear();
    let trained = ck.step.saturating_sub(start);
    let s_per = (trained > 0).then(|| t_train.elapsed().as_secs_f64() / trained as f64);
    // The outputs written at the end: a failure is reported after the report is printed.
    let mut late: Option<CliError> = None;
    if let Some(path) = a.save.as_ref().filter(|_| ranks::lead()) {
        late = ck.save(path).err();
    }
    let saved = a.save.as_deref().filter(|_| late.is_none());
    let mut test_rng = ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x7e57);
    // Interrupted during training: no test (the checkpoint can be tested with `eval`).
    let episodes = match interrupt.requested() {
        Some(_) => 0,
        None => c.episodes,
    };
    let tbar = progress::bar_unless(a.out.quiet, episodes as u64, "test");
    // With early stopping the best validated backbone is tested.
    let tested = match (&ck.best, c.patience) {
        (Some(b), 1..) => &b.params,
        _ => &ck.params,
    };
    let accs = test_backbone(
        backend.as_mut(),
        &plan,
        tested,
        (&source_test, episodes),
        &mut test_rng,
        (&tbar, &interrupt),
    )?;
    tbar.finish_and_clear();
    // The report, the plot and the messages: rank 0's.
    if !ranks::lead() {
        return Ok(());
    }
    if let Some(path) = &a.plot
        && let Err(e) = report::write_plot(path, &ck)
    {
        late.get_or_insert(e);
    }
    let last = &ck.history.loss[ck.history.loss.len().saturating_sub(10)..];
    let mut r = Report::new(header, cfg, cfg.method_name(), &accs, backend.device());
    r.truncate = plan.head.spec.truncate();
    r.ul_iters = ck.step;
    r.seconds = t0.elapsed().as_secs_f64();
    r.s_per_ul_iter = s_per;
    r.ul_loss =
        (!last.is_empty()).then(|| last.iter().map(|l| l.1).sum::<f64>() / last.len() as f64);
    r.history = report::history(&ck.history);
    if c.patience > 0 {
        r.best_ul_iter = ck.best.as_ref().map(|b| b.step);
        r.best_val_acc = ck.best.as_ref().map(|b| b.val_acc);
    }
    let signal = interrupt.requested();
    r.interrupted = signal.is_some();
    report::print(&r, a.out.json, "test")?;
    if let Some(path) = &a.plot
        && !a.out.json
        && late.is_none()
    {
        println!("plot written to {}", path.display());
    }
    let saved = saved.map_or(String::new(), |p| {
        format!("; checkpoint written to {}", p.display())
    });
    let stopped = signal.map(|s| s.stopped(&format!("{} meta-steps{saved}", ck.step)));
    crate::output::finish(late, stopped)
}

/// The checkpoint a new run starts from: the initial backbone (projected), Adam's state,
/// the episode generator.
fn fresh_checkpoint(cfg: &RunConfig) -> Result<Checkpoint, CliError> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut params = init_meta_params(cfg, &mut rng);
    let proj = cfg.ul_projection;
    let mut power = proj.initial_state(cfg.arch, cfg.seed);
    proj.apply(cfg.arch, &mut params, &mut power, SN_INIT_ITERS)
        .map_err(|e| CliError::run(format!("the initial backbone: {e}")))?;
    let adam = Adam::new(cfg.ul_lr, params.len());
    let mut ck = Checkpoint::new(cfg.clone(), params, adam, RngState::of(cfg.seed, &rng));
    ck.power = power;
    ck.history
        .ortho
        .push((0, orthogonality_sum(ck.config.arch, &ck.params)));
    Ok(ck)
}

/// Records validation accuracy `acc` at `ck.step`: keeps the backbone if it is the best so
/// far, and says whether `patience` validations have passed since the best one.
fn early_stop(ck: &mut Checkpoint, acc: f64, patience: u64) -> bool {
    if ck.best.as_ref().is_none_or(|b| acc > b.val_acc) {
        ck.best = Some(Best {
            step: ck.step,
            val_acc: acc,
            params: ck.params.clone(),
        });
    }
    let best = ck.best.as_ref().map_or(0, |b| b.step);
    let since = ck.history.val.iter().filter(|v| v.0 > best).count() as u64;
    since >= patience
}

/// Mean validation accuracy (%) of `params` on `tasks`, `meta_batch` tasks per batch, each
/// head fitted by the evaluation procedure.
fn validate(
    backend: &mut dyn MetaBackend,
    plan: &Plan,
    params: &[f32],
    tasks: &[Task],
) -> Result<f64, CliError> {
    let eval = plan.head.evaluation();
    let mut accs = Vec::with_capacity(tasks.len());
    for chunk in tasks.chunks(plan.cfg.episode.meta_batch) {
        accs.extend(
            backend
                .evaluate_tasks(Batch {
                    shape: plan.cfg.arch,
                    params,
                    tasks: chunk,
                    head: &eval,
                })
                .map_err(eval_error)?,
        );
    }
    Ok(mean_ci(&accs).0)
}
