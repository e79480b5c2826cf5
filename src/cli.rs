//! The command line: clap types, turning arguments into library calls, and
//! printing. Exit codes are decided in one place, [`exit_code`]:
//! 0 success, 2 bad usage or spec, 1 anything else.

use crate::report::{self, Format};
use crate::spec::{self, SpecError};
use crate::store::Store;
use crate::{data, models, sched};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "fer-lab",
    version,
    about = "Facial-expression-recognition experiments: TOML spec -> candle training -> SQLite -> leaderboard"
)]
pub struct Cli {
    /// SQLite database holding sweeps, trials and epochs.
    #[arg(
        long,
        global = true,
        env = "FER_LAB_DB",
        default_value = "runs/fer-lab.sqlite"
    )]
    pub db: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train every trial of a spec that is not finished yet.
    Sweep {
        /// The experiment spec, e.g. experiments/smoke.toml.
        spec: PathBuf,
        /// Override a spec field, e.g. --set train.epochs=2 --set data.root=/data/CK+48.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// CPU threads (default: scheduler.threads, or all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Start every trial of the spec over, forgetting stored epochs and checkpoints.
        #[arg(long, conflicts_with = "resume")]
        fresh: bool,
        /// Continue unfinished trials from their last checkpoint (the default; explicit for scripts).
        #[arg(long)]
        resume: bool,
    },
    /// Compare stored trials, best validation accuracy first.
    Leaderboard {
        /// Only this sweep (the spec's experiment.name).
        #[arg(long)]
        sweep: Option<String>,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// One line per trial (per fold) instead of per sweep point.
        #[arg(long)]
        per_trial: bool,
        /// Also draw the top points as a bar chart (error bars over folds) into this PNG.
        #[arg(long, value_name = "FILE.png")]
        plot: Option<PathBuf>,
        /// How many points the plot shows.
        #[arg(long, default_value_t = 12)]
        top: usize,
    },
    /// Classification report, confusion matrix and curves of a trial, or of a
    /// k-fold sweep point pooled over its folds (give any of its trials).
    Report {
        /// Trial id (as in the leaderboard) or a prefix of its key.
        #[arg(required_unless_present = "sweep")]
        trial: Option<String>,
        /// Report the best point of this sweep instead.
        #[arg(long, conflicts_with = "trial")]
        sweep: Option<String>,
        /// Folder for report.txt and the PNGs.
        #[arg(long, default_value = "runs/report")]
        out: PathBuf,
    },
    /// Trials by state per sweep, what runs where, epochs done, ETA.
    Status {
        /// Only this sweep.
        #[arg(long)]
        sweep: Option<String>,
    },
    /// Data set tools.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// List the backbones fer-lab can train, with parameter counts.
    Backbones,
    /// Classify images with a trained model (a fer-lab model file from
    /// runs/models/, or any weights file with a fitting head).
    Predict {
        #[arg(long)]
        backbone: String,
        /// safetensors or .pth file, head included.
        #[arg(long)]
        weights: PathBuf,
        /// Number of classes of the head (default: the file's).
        #[arg(long, conflicts_with = "labels")]
        classes: Option<usize>,
        /// Class names in index order, comma-separated.
        #[arg(long, value_delimiter = ',')]
        labels: Option<Vec<String>>,
        /// How many classes to show per image.
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Also print the raw logits.
        #[arg(long)]
        logits: bool,
        /// Input side in pixels (default: the model file's, else the backbone's).
        #[arg(long)]
        size: Option<usize>,
        #[arg(long, value_enum, default_value_t = PredictFormat::Text)]
        format: PredictFormat,
        /// Image files.
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// Time the training step and evaluation of backbones on a fixed random
    /// batch (the same settings as bench/vs_pytorch.py uses for PyTorch).
    Bench {
        /// A backbone name, or "all" (the six the product ships: resnet18,
        /// resnet50, resnet101, vgg16, efficientnet_b0, densenet121).
        #[arg(long, default_value = "all")]
        backbone: String,
        #[arg(long, default_value_t = 48)]
        size: usize,
        #[arg(long, default_value_t = 8)]
        batch: usize,
        /// CPU threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Timed steps after 3 warm-up steps.
        #[arg(long, default_value_t = 10)]
        steps: usize,
        /// One JSON object per backbone, one per line.
        #[arg(long)]
        json: bool,
        /// Also print the time spent in each kernel per training step.
        #[arg(long)]
        profile: bool,
    },
    /// Pretrained weights.
    Weights {
        #[command(subcommand)]
        command: WeightsCommand,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PredictFormat {
    Text,
    /// One JSON object per image, one per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum WeightsCommand {
    /// Download a file (default model.safetensors) of a Hugging Face model
    /// repository into the cache and print its path; the only command that
    /// goes online. Fails at once when offline (HF_HUB_OFFLINE=1).
    Pull {
        /// Repository id, e.g. timm/resnet101.tv_in1k.
        repo: String,
        #[arg(long, default_value = "model.safetensors")]
        file: String,
        /// Cache folder (default: $HF_HOME/hub or ~/.cache/huggingface/hub).
        #[arg(long)]
        cache: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Write a synthetic expression-like data set as PNG class folders.
    Synth {
        #[arg(long)]
        out: PathBuf,
        /// Images per class.
        #[arg(long, default_value_t = 60)]
        per_class: usize,
        /// Image side in pixels.
        #[arg(long, default_value_t = 48)]
        size: usize,
        #[arg(long, default_value_t = 7)]
        seed: u64,
    },
}

/// A usage problem found after clap parsed the arguments.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

fn open_existing(db: &std::path::Path) -> anyhow::Result<Store> {
    if !db.exists() {
        return Err(UsageError(format!(
            "no database at {}; run `fer-lab sweep SPEC` first or pass --db",
            db.display()
        ))
        .into());
    }
    Ok(Store::open(db)?)
}

/// The one place that maps errors to exit codes.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    let no_trial = matches!(
        err.downcast_ref::<crate::store::StoreError>(),
        Some(crate::store::StoreError::NoSuchTrial(_))
    );
    if err.downcast_ref::<SpecError>().is_some()
        || err.downcast_ref::<UsageError>().is_some()
        || no_trial
    {
        2
    } else {
        1
    }
}

/// Sizes candle's and rayon's thread pools once, before any tensor work;
/// returns the total thread count (`RAYON_NUM_THREADS` if set, else
/// `threads`, else all cores). With several CPU slots each slot gets its own
/// rayon pool (threads / slots) and candle's element-wise pool is turned off
/// (ops run on the calling slot's thread), so pools never oversubscribe.
fn configure_threads(threads: usize, cpu_slots: usize) -> usize {
    let from_env = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0);
    let n = match (from_env, threads) {
        (Some(env), _) => env,
        (None, 0) => std::thread::available_parallelism().map_or(1, |n| n.get()),
        (None, t) => t,
    };
    let per_slot = n.div_ceil(cpu_slots.max(1)).max(1);
    // candle runs element-wise ops on a spinning pool of its own beside
    // rayon's. With several slots, or at most 2 threads per slot, run them on
    // the calling thread instead: on 2 cores this made experiments/smoke.toml
    // 19% faster (124 s -> 101 s, same numbers), see the README.
    let inline_elementwise =
        cpu_slots > 1 || (per_slot <= 2 && std::env::var_os("CANDLE_NUM_THREADS").is_none());
    // SAFETY: called once at start-up, before fer-lab starts any thread.
    unsafe {
        std::env::set_var("RAYON_NUM_THREADS", per_slot.to_string());
        if inline_elementwise {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
    }
    let _ = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build_global();
    n
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Sweep {
            spec,
            overrides,
            threads,
            fresh,
            resume: _,
        } => {
            let loaded = spec::load(&spec, &overrides)?;
            let threads = configure_threads(
                threads.unwrap_or(loaded.spec.scheduler.threads),
                loaded.spec.scheduler.cpu_slots,
            );
            let summary =
                sched::run_sweep(&loaded, &cli.db, sched::SweepOptions { fresh, threads })?;
            eprintln!(
                "sweep {}: {} trials: {} trained, {} skipped (already finished), {} failed, {} diverged, {} pruned, {} interrupted. Results: fer-lab leaderboard --db {}",
                loaded.spec.experiment.name,
                summary.trials,
                summary.done,
                summary.skipped,
                summary.failed,
                summary.diverged,
                summary.pruned,
                summary.interrupted,
                cli.db.display()
            );
            if summary.interrupted > 0 {
                anyhow::bail!(
                    "interrupted: {} trial(s) stopped after a checkpointed epoch; run the same command again to resume",
                    summary.interrupted
                );
            }
            if summary.failed > 0 {
                anyhow::bail!(
                    "{} trial(s) failed; their errors are in the trials table",
                    summary.failed
                );
            }
            Ok(())
        }
        Command::Leaderboard {
            sweep,
            format,
            per_trial,
            plot,
            top,
        } => {
            let store = open_existing(&cli.db)?;
            if let Some(name) = &sweep
                && !store.sweep_names()?.contains(name)
            {
                let known = store.sweep_names()?.join(", ");
                return Err(UsageError(format!(
                    "no sweep named {name:?} in {}; stored sweeps: {known}",
                    cli.db.display()
                ))
                .into());
            }
            let rows = report::rows(&store.trials(sweep.as_deref())?, per_trial);
            print!("{}", report::render(&rows, format));
            if let Some(path) = plot {
                let title = format!(
                    "fer-lab leaderboard{}",
                    sweep.map_or(String::new(), |s| format!(": {s}"))
                );
                report::plots::bars_png(
                    &path,
                    &report::bars(&rows, top),
                    &title,
                    "accuracy % (mean ± std over folds)",
                )?;
                eprintln!("plot: {}", path.display());
            }
            Ok(())
        }
        Command::Status { sweep } => {
            let store = open_existing(&cli.db)?;
            print!(
                "{}",
                report::status::render(&store.status_lines(sweep.as_deref())?)
            );
            Ok(())
        }
        Command::Report { trial, sweep, out } => {
            let store = open_existing(&cli.db)?;
            let trial = match (trial, sweep) {
                (Some(t), _) => t,
                (None, Some(s)) => report::trial::best_of_sweep(&store, &s)?,
                (None, None) => unreachable!("clap requires one"),
            };
            let written = report::trial::write(&store, &trial, &out)?;
            print!("{}", written.text);
            println!();
            for f in &written.files {
                println!("wrote {}", f.display());
            }
            Ok(())
        }
        Command::Predict {
            backbone,
            weights,
            classes,
            labels,
            top,
            logits,
            size,
            format,
            images,
        } => {
            configure_threads(0, 1);
            let opts = crate::predict::PredictOptions {
                backbone,
                weights,
                classes,
                labels,
                top,
                size,
            };
            let device = candle_core::Device::Cpu;
            let predictor = crate::predict::Predictor::load(&opts, &device)?;
            let preds = predictor.predict(&images, top, logits)?;
            match format {
                PredictFormat::Text => print!("{}", crate::predict::render_text(&preds)),
                PredictFormat::Json => {
                    for p in &preds {
                        println!("{}", serde_json::to_string(p)?);
                    }
                }
            }
            Ok(())
        }
        Command::Bench {
            backbone,
            size,
            batch,
            threads,
            steps,
            json,
            profile,
        } => {
            configure_threads(threads.unwrap_or(0), 1);
            let names: Vec<String> = if backbone == "all" {
                crate::bench::DEFAULT_SET
                    .iter()
                    .map(|s| s.to_string())
                    .collect()
            } else {
                backbone.split(',').map(str::to_string).collect()
            };
            for n in &names {
                if models::info(n).is_none() {
                    return Err(UsageError(format!(
                        "unknown backbone {n:?}, expected \"all\" or one of: {}",
                        models::names().join(", ")
                    ))
                    .into());
                }
            }
            if steps == 0 || batch == 0 || size < 32 {
                return Err(UsageError(format!(
                    "--steps and --batch must be >= 1 and --size >= 32, got {steps}, {batch}, {size}"
                ))
                .into());
            }
            let device = candle_core::Device::Cpu;
            let opts = crate::bench::BenchOptions {
                size,
                batch,
                steps,
                profile,
                ..Default::default()
            };
            let matmul = crate::bench::matmul_gflops(1024, &device)?;
            let mut rows = Vec::new();
            for n in &names {
                // On a worker of the pool, as a sweep's trials run (see
                // `sched`): parallel kernels then start on the calling
                // thread instead of being handed to a sleeping worker.
                let row = rayon::scope(|_| crate::bench::bench_backbone(n, &opts, &device))?;
                if json {
                    let mut v = serde_json::to_value(&row)?;
                    v["matmul_gflops"] = serde_json::json!(matmul);
                    println!("{v}");
                } else {
                    eprintln!("{n}: {:.1} train img/s", row.train_images_per_sec);
                    if profile {
                        println!("{}", crate::bench::render_kernels(&row));
                    }
                }
                rows.push(row);
            }
            if !json {
                println!("{}", crate::bench::render(&rows, matmul));
                println!(
                    "threads: {}; batch {batch}; {size}x{size}x3; median of {steps} steps after 3 warm-ups",
                    rayon::current_num_threads()
                );
            }
            Ok(())
        }
        Command::Weights {
            command: WeightsCommand::Pull { repo, file, cache },
        } => {
            let path = crate::hub::pull(&repo, &file, cache)?;
            println!("{}", path.display());
            Ok(())
        }
        Command::Data {
            command:
                DataCommand::Synth {
                    out,
                    per_class,
                    size,
                    seed,
                },
        } => {
            if !(2..=100_000).contains(&per_class) || !(16..=1024).contains(&size) {
                return Err(UsageError(format!("--per-class must be in 2..=100000 and --size in 16..=1024, got {per_class} and {size}")).into());
            }
            let files = data::synth::write(&out, per_class, size, seed)?;
            println!(
                "wrote {} images in {} classes to {}",
                files.len(),
                data::synth::CLASSES.len(),
                out.display()
            );
            Ok(())
        }
        Command::Backbones => {
            let mut table = comfy_table::Table::new();
            table.load_style(comfy_table::presets::UTF8_FULL_CONDENSED);
            table.set_header([
                "backbone",
                "family",
                "parameters (1000 classes)",
                "input",
                "first conv",
                "classifier",
            ]);
            let cfg = models::ModelConfig::new(1000, 3);
            for info in models::REGISTRY {
                let model = models::build(info.name, &cfg, 0, &candle_core::Device::Cpu)?;
                table.add_row([
                    info.name.to_string(),
                    info.family.to_string(),
                    model.params.count().to_string(),
                    format!(
                        "{0}x{0}, mean {1:?}, std {2:?}",
                        info.input.size, info.input.mean, info.input.std
                    ),
                    info.first_conv.into(),
                    info.classifier.into(),
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}
