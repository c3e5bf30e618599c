//! The options `simulate` and `eval` share (flattened into both): the model, the methods and
//! their parameters, the calibration text, the output folder, progress and the device.

use std::path::{Path, PathBuf};

use anyhow::Result;
use attnscope_analysis::registry;
use attnscope_analysis::sim::MethodRun;

use super::simulate::{not_the_knob, overrides};

#[derive(clap::Args)]
pub struct RunArgs {
    /// Model: a registry name (fetched when missing), a HF folder, a .gguf file, or a Hugging
    /// Face id ORG/NAME in the local hub cache.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Revision (branch, tag or commit) of a Hugging Face id `--model ORG/NAME` in the local hub
    /// cache ($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub); default `main`.
    #[arg(long)]
    pub revision: Option<String>,
    /// Methods: `all` or a comma-separated list (see `attnscope methods`); `eval` also takes
    /// `none` (dense attention alone).
    #[arg(long, default_value = "all")]
    pub methods: String,
    /// A method parameter, `method.name=value` (repeatable), e.g. `phsa.lambda=0.3`.
    #[arg(long = "param")]
    pub params: Vec<String>,
    /// Calibration text for methods that fit settings on it (phsa-fit): a corpus text name or a
    /// file; use a different text from --text. Default when such a method runs: plrabn12 (lcet10
    /// when --text is plrabn12).
    #[arg(long)]
    pub calibration_text: Option<String>,
    /// Tokens of calibration text [default: --len with --calibration-text, else --len capped at
    /// 2048].
    #[arg(long)]
    pub calibration_len: Option<usize>,
    /// Output run directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Overwrite an existing run directory.
    #[arg(long)]
    pub force: bool,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
    /// Where the forward pass runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    pub device: attnscope_core::Device,
    /// Storage on the GPU: f32 (exact, matches the CPU path) or bf16 (fast).
    #[arg(long, default_value = "f32")]
    pub precision: attnscope_core::device::Precision,
}

impl RunArgs {
    /// The model of `--model` (and `--revision`), with `tokenizer` when given, on `--device`.
    pub fn load_model(&self, tokenizer: Option<&Path>) -> Result<attnscope_core::Model> {
        let mut model = super::model_arg::load_revision(
            &self.model,
            self.revision.as_deref(),
            tokenizer,
            self.quiet,
        )?;
        model.to_device(self.device, self.precision)?;
        Ok(model)
    }

    /// Every method of `--methods` with its `--param` overrides (a parameter that is the
    /// method's budget knob is refused); empty when none is listed.
    pub fn listed_methods(&self) -> Result<Vec<MethodRun>> {
        let ov = overrides(&self.params)?;
        let mut runs = Vec::new();
        for info in registry::parse_list(&self.methods)? {
            let mine: Vec<(String, f64)> = ov
                .iter()
                .filter(|(m, _, _)| m == info.name)
                .map(|(_, k, v)| (k.clone(), *v))
                .collect();
            let run = info.configure(&mine)?;
            for (name, _) in &run.overrides {
                not_the_knob("--param", &run, name)?;
            }
            runs.push(run);
        }
        Ok(runs)
    }
}
