//! One module per subcommand, plus the shared `--model` and input resolution.

pub mod bench;
pub mod datasets;
pub mod eval;
pub mod fetch;
pub mod figures;
pub mod info;
pub mod input;
pub mod merge;
pub mod methods;
pub mod model_arg;
pub mod ppl;
pub mod report;
pub mod run_args;
pub mod sample;
pub mod simulate;
pub mod verify;
pub mod view;
