//! `bda hyperclean`: data hyper-cleaning (journal §8.2, Table 2) at dataset scale.
//!
//! The problem is [`bda_kernel::hyperclean`]'s; the methods are the kernel's engine
//! ([`bda_kernel::backend::Hypergrad`]); the backends are `bda-cpu`'s and `bda-gpu`'s, one
//! per classifier, chosen in [`crate::device::hyperclean_backend`]. This module is the
//! upper-level loop and the user interface. The options flow one way: parsed
//! ([`args`]), checked once into a [`Checked`] run (the method's spec built there), the data
//! loaded, then the loop ([`driver`]) on the backend.
//!
//! | module | holds |
//! |---|---|
//! | [`args`] | the options: the configuration a report records, and the output options; their one check |
//! | [`data`] | the data of a run: an MNIST-format folder split by the protocol |
//! | [`driver`] | the upper-level loop, generic over the backend ([`driver::train`]) |
//! | [`eval`] | validation/test predictions and clean-detection F1 through the classifier's predictor |
//! | [`init`] | the lower level's starting point: zero, or Xavier re-drawn each upper iteration |
//! | [`metrics`] | accuracy, macro-F1, clean-detection F1 |
//! | [`report`] | the summary table, the JSON report and the SVG plot |
//! | [`weights`] | `--weights-out`: the learned weight of every training sample, as CSV |

pub mod args;
pub mod data;
pub mod driver;
pub mod eval;
pub mod init;
pub mod metrics;
pub mod report;
pub mod weights;

use std::fmt::Display;
use std::io::IsTerminal;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::time::Instant;

use bda_kernel::backend::Methods;
use clap::ArgMatches;

pub use args::{Checked, DatasetName, HypercleanArgs, HypercleanConfig};
pub use data::HostData;
use driver::{Row, TrainConfig};
pub use eval::Evaluator;
use report::Summary;

use crate::config::{DataSource, ReportHeader};
use crate::device::{BackendInfo, HypercleanJob, OpenDevice, hyperclean_backend};
use crate::error::CliError;
use crate::output::{Interrupt, Signal};
use crate::ranks;

/// Options of a run that are not part of the method.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// λ of the regulariser.
    pub lambda: f64,
    /// Draw a progress bar on stderr.
    pub progress: bool,
    /// CPU backend: keep the softmax outputs for the reverse pass.
    pub prob_cache: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            lambda: 1e-4,
            progress: false,
            prob_cache: true,
        }
    }
}

/// What a run hands back besides the report's numbers.
pub struct Outcome {
    /// The report without its header and load time.
    pub summary: Summary,
    /// The final `x`, `y` and the history.
    pub trained: driver::Trained,
    /// The signal that stopped the run early, if one did.
    pub signal: Option<Signal>,
}

/// Train, evaluate and summarise a row on prepared data, on the CPU or an opened CUDA device.
pub fn run_on(
    data: &HostData,
    cfg: &TrainConfig,
    opt: &RunOptions,
    device: &OpenDevice,
    header: ReportHeader,
) -> Result<Outcome, CliError> {
    let problem = data.problem(opt.lambda as f32);
    problem
        .validate()
        .map_err(|e| CliError::input(format!("data: {e}")))?;
    let job = Job {
        data,
        cfg,
        opt,
        header,
    };
    hyperclean_backend(device, &problem, opt.prob_cache, job)
}

/// The upper-level loop, evaluation and summary of one row: [`HypercleanJob`] for any
/// backend.
struct Job<'a> {
    data: &'a HostData,
    cfg: &'a TrainConfig,
    opt: &'a RunOptions,
    header: ReportHeader,
}

impl HypercleanJob for Job<'_> {
    type Output = Outcome;

    fn run<B: Methods>(self, backend: &mut B, info: BackendInfo<'_>) -> Result<Outcome, CliError>
    where
        B::Error: Display,
    {
        let Job {
            data,
            cfg,
            opt,
            header,
        } = self;
        let mut eval = Evaluator::new(data, info.predictor)
            .map_err(|e| CliError::input(format!("data: {e}")))?;
        let iters = cfg.iterations();
        if opt.progress && iters > 0 {
            eval.bar = Some(crate::progress::bar(u64::from(iters), cfg.row.name()));
        }
        // From here on SIGINT/SIGTERM end the run after the current upper iteration.
        eval.interrupt = Some(Interrupt::watch()?);
        let x0: Vec<f64> = match cfg.row {
            Row::Oracle => data
                .corrupted
                .iter()
                .map(|&c| if c { -1e4 } else { 1e4 })
                .collect(),
            _ => vec![0.0; data.train.labels.len()],
        };
        let draws = init::InitDraw::new(cfg.init, cfg.seed, &data.problem(0.0));
        let trained = driver::train(backend, cfg, &x0, &draws, &mut eval).map_err(|e| match e {
            driver::TrainError::Config(m) => CliError::input(m),
            e => CliError::run(e.to_string()),
        })?;
        if let Some(b) = eval.bar.take() {
            b.finish_and_clear();
        }
        let summary = summarise(data, cfg, &eval, &trained, header, &info);
        let signal = eval.interrupt.as_ref().and_then(Interrupt::requested);
        Ok(Outcome {
            summary,
            trained,
            signal,
        })
    }
}

/// The report of a trained row (without its load time and seed).
fn summarise(
    data: &HostData,
    cfg: &TrainConfig,
    eval: &Evaluator<'_>,
    trained: &driver::Trained,
    header: ReportHeader,
    info: &BackendInfo<'_>,
) -> Summary {
    let iters = trained.iterations;
    let val_pred = eval.predict_val(&trained.y);
    let test_pred = eval.predict_test(&trained.y);
    let pct = |v: f64| (v * 1e4).round() / 100.0;
    Summary {
        header,
        dataset: data.dataset.clone(),
        method: cfg.row.name().to_string(),
        device: info.device.to_string(),
        k: cfg.spec.steps(),
        truncate: matches!(cfg.row, Row::Method(_))
            .then(|| cfg.spec.truncate())
            .flatten(),
        ul_iters: iters,
        ul_lr: cfg.ul_lr,
        optimizer: format!("{:?}", cfg.optimizer).to_lowercase(),
        n_train: data.train.labels.len(),
        n_val: data.val.labels.len(),
        n_test: data.test.labels.len(),
        noise: data.corrupted.iter().filter(|&&c| c).count() as f64
            / data.corrupted.len().max(1) as f64,
        ul_loss: trained.ul_loss,
        val_acc: pct(metrics::accuracy(&val_pred, &data.val.labels)),
        test_acc: pct(metrics::accuracy(&test_pred, &data.test.labels)),
        test_f1: pct(metrics::macro_f1(
            &test_pred,
            &data.test.labels,
            data.classes,
        )),
        clean_f1: pct(metrics::clean_f1(&trained.x, &data.corrupted)),
        seconds: trained.seconds,
        s_per_ul_iter: if iters > 0 {
            trained.loop_seconds / f64::from(iters)
        } else {
            0.0
        },
        load_seconds: 0.0,
        seed: 0,
        threads: rayon::current_num_threads(),
        ranks: ranks::size(),
        kernels: info.kernels.to_string(),
        max_rss_mib: crate::memory::max_rss_mib(),
        n_flagged: trained.x.iter().filter(|&&x| weights::flagged(x)).count(),
        history: trained.history.clone(),
        interrupted: trained.interrupted,
    }
}

/// The bytes one kept lower-level iterate takes: the `f32` values, plus the softmax outputs
/// (and the network's hidden pre-activations) of both sets the CPU backend keeps with it
/// (unless `--no-prob-cache`).
fn state_bytes(data: &HostData, opt: &RunOptions) -> usize {
    let cache = if opt.prob_cache {
        (data.train.labels.len() + data.val.labels.len())
            * (data.classes + data.classifier.hidden())
    } else {
        0
    };
    4 * (data.y_len() + cache)
}

/// One line on stderr when IHG's conjugate gradient met non-positive curvature (a lower
/// level that is not convex there) in some upper iterations.
fn warn_negative_curvature(history: &[driver::IterRecord]) {
    let bent: Vec<_> = history
        .iter()
        .filter_map(|r| {
            let cg = r.cg?;
            Some((r.ul_iter, cg.negative_curvature_at?, cg.curvature?))
        })
        .collect();
    if let Some(&(ul, cg, v)) = bent.first() {
        eprintln!(
            "bda: IHG's conjugate gradient met non-positive curvature in {} of {} upper iterations (first: upper iteration {ul}, CG iteration {cg}, pᵀHp/pᵀp = {v:.3e}) and stopped there with the solution so far (history[].cg)",
            bent.len(),
            history.len()
        );
    }
}

/// The folder to read and what reports call it: the dataset's name, or the folder given.
fn data_location(c: &HypercleanConfig) -> (PathBuf, String) {
    match &c.data_dir {
        Some(d) => (d.clone(), d.display().to_string()),
        None => (
            PathBuf::from(c.dataset.default_dir()),
            c.dataset.name().to_string(),
        ),
    }
}

/// Run `bda hyperclean` (`matches`: the subcommand's, to tell which options were given):
/// parse, check once, then load and train on the opened device.
pub fn run(args: &HypercleanArgs, matches: &ArgMatches) -> Result<(), CliError> {
    // Every rank reads the options; rank 0 alone checks the files it will write.
    let checked = ranks::agree((|| {
        let c = args.out.configured(&args.run, matches, "hyperclean")?;
        let checked = c.check()?;
        if let Some(p) = args.plot.as_ref().filter(|_| ranks::lead()) {
            let why = match checked.train.row {
                Row::Method(_) => format!("--ul-iters {}", c.ul_iters),
                row => format!("--method {row}"),
            };
            crate::output::check_plot(p, checked.train.iterations().into(), &why)?;
        }
        if let Some(p) = args.weights_out.as_ref().filter(|_| ranks::lead()) {
            crate::output::check_writable("--weights-out", p)?;
        }
        Ok(checked)
    })())?;
    // The device is opened before any data is read: a missing one is one line, exit 2.
    let place = checked.config.place.clone();
    place.run(|device| run_checked(args, checked, device))
}

fn run_checked(args: &HypercleanArgs, run: Checked, device: &OpenDevice) -> Result<(), CliError> {
    let Checked {
        config: c,
        mut train,
    } = run;
    let (dir, name) = data_location(&c);
    let t0 = Instant::now();
    let (n_train, n_val) = c.sizes();
    // Every rank reads the data; a rank that cannot ends them all.
    let (data, source) = ranks::agree((|| {
        let data = HostData::load_mnist(&dir, &name, n_train, n_val, c.noise, c.seed)
            .map_err(|e| match c.split {
                Some(s) if c.n_train.is_none() && c.n_val.is_none() => {
                    CliError::input(format!("--split {}: {e}", s.name()))
                }
                _ => CliError::input(e),
            })?
            .with_classifier(c.classifier());
        let source: DataSource = data::mnist_source(&dir)?;
        Ok((data, source))
    })())?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let lead = ranks::lead();
    let opt = RunOptions {
        lambda: c.lambda,
        progress: lead && !args.out.quiet && std::io::stderr().is_terminal(),
        prob_cache: !c.no_prob_cache,
    };
    // The checkpoint stride's default depends on the memory of one iterate of this data.
    let every = c.checkpoint_every.unwrap_or_else(|| {
        args::auto_checkpoint(train.spec.kept_steps(), state_bytes(&data, &opt))
    });
    train.spec = train.spec.with_checkpoints(NonZeroU32::new(every));
    // A finite blow-up is a divergence too: a loss 1000 times a uniform guess's.
    train.diverge_above = Some(crate::error::blow_up_bound(data.classes));
    let header = ReportHeader::new("hyperclean", &c.resolved(&train.spec), Some(source))?;
    let outcome = ranks::agree(run_on(&data, &train, &opt, device, header))?;
    if !lead {
        return Ok(());
    }
    let mut summary = outcome.summary;
    summary.load_seconds = load_seconds;
    summary.seed = c.seed;
    if !args.out.quiet {
        warn_negative_curvature(&summary.history);
    }
    // The files written at the end: a failure is reported after the report is printed.
    let mut late = None;
    if let Some(p) = &args.plot {
        late = report::plot(p, &summary).err();
    }
    if let Some(p) = &args.weights_out
        && let Err(e) = weights::write(p, &data, &outcome.trained.x)
    {
        late.get_or_insert(e);
    }
    if args.out.json {
        println!("{}", report::json(&summary)?);
    } else {
        print!("{}", report::table(&summary));
    }
    let stopped = outcome
        .signal
        .map(|s| s.stopped(&format!("{} upper iterations", summary.ul_iters)));
    crate::output::finish(late, stopped)
}
