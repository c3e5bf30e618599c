//! One module per subcommand, plus the shared `--model` resolution.

pub mod fetch;
pub mod info;
pub mod model_arg;
pub mod ppl;
