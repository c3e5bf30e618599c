//! Decoder-only transformers. [`Model::load`] reads a Hugging Face folder or a GGUF file; each
//! architecture family has one file that says which tensors its layers need and how they are
//! applied ([`llama`], [`mistral`], [`qwen2`], [`qwen3`], [`gemma2`], [`gemma3`], [`phi3`],
//! [`olmo2`]); [`decoder`] holds the forward pass they share. What differs between layers of
//! one model (sliding windows, soft-capping, a second RoPE base) comes from the config
//! ([`crate::config::AttentionConfig`]).

pub mod decoder;
pub mod finite;
pub mod gemma2;
pub mod gemma3;
mod layer;
pub mod llama;
pub mod mistral;
pub mod olmo2;
pub mod phi3;
pub mod qwen2;
pub mod qwen3;

pub use layer::Layer;

use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};

use crate::attention::AttentionHook;
use crate::config::{Arch, ModelConfig};
use crate::device::Device;
use crate::error::{CoreError, Result};
use crate::gguf::model::load_gguf_model;
use crate::ops::{to_array2, Rope};
use crate::safetensors_io::load_safetensors_dir;
use crate::tensor::Weights;
use crate::tokenizer::Tokenizer;
use layer::load_layer;

/// A loaded model: config, f32 weights, RoPE tables and (when available) its tokenizer.
#[derive(Debug)]
pub struct Model {
    pub config: ModelConfig,
    /// The folder or file the model was loaded from.
    pub source: PathBuf,
    /// Storage types of the weights as loaded (e.g. `Q4_1 x 180, F32 x 61`).
    pub storage: String,
    pub tokenizer: Option<Tokenizer>,
    pub(crate) embed: Array2<f32>,
    pub(crate) layers: Vec<Layer>,
    pub(crate) norm: Array1<f32>,
    /// The output head ([`OutputHead`]).
    pub(crate) lm_head: OutputHead,
    pub(crate) rope: Rope,
    /// RoPE of the local layers where they have their own base (Gemma 3).
    pub(crate) rope_local: Option<Rope>,
    /// The architecture's layer description.
    pub(crate) spec: &'static layer::LayerSpec,
    /// Why the file's tokenizer could not be rebuilt (named by [`Model::tokenizer`]).
    pub(crate) tokenizer_note: Option<String>,
    /// The device copy of the weights after [`Model::to_device`]; forward passes then run there.
    pub(crate) on_device: Option<std::sync::Arc<dyn DeviceModel>>,
}

/// A model's twin on an accelerator (the GPU twin of [`crate::gpu`]): once
/// [`Model::to_device`] installed one, [`Model::forward`] runs there. The model only knows this
/// contract, so the device code depends on the model and never the other way round.
pub(crate) trait DeviceModel: std::fmt::Debug + Send + Sync {
    /// Where the twin runs.
    fn device(&self) -> Device;

    /// The forward pass of [`Model::forward_with_progress`] on the device (input already checked).
    fn forward(
        &self,
        ids: &[u32],
        hook: &mut dyn AttentionHook,
        progress: &mut dyn FnMut(usize),
    ) -> Result<Array2<f32>>;

    /// For typed access to the twin (`Model::gpu`).
    #[cfg(feature = "cuda")]
    fn as_any(&self) -> &dyn std::any::Any;
}

/// The weights that turn final hidden states into logits.
#[derive(Debug)]
pub(crate) enum OutputHead {
    /// The embedding matrix (tied embeddings, or no `lm_head.weight` in the file).
    Tied,
    /// A separate `[vocab, hidden]` matrix.
    Own(Array2<f32>),
    /// A separate head released by [`Model::release_output_head`]: logits are refused.
    Released,
}

impl Model {
    /// Loads a HF folder (`config.json`, safetensors, optional `tokenizer.json`) or a `.gguf` file
    /// (tokenizer rebuilt from its metadata when present).
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_tokenizer(path, None)
    }

    /// As [`Model::load`], with an explicit `tokenizer.json` that takes precedence.
    pub fn load_with_tokenizer(path: &Path, tokenizer_json: Option<&Path>) -> Result<Self> {
        let mut note = None;
        let (config, weights, mut tokenizer) = if path.is_dir() {
            let config = ModelConfig::from_hf_json(&path.join("config.json"))?;
            let weights = load_safetensors_dir(path)?;
            let tj = path.join("tokenizer.json");
            let tok = tj
                .is_file()
                .then(|| Tokenizer::from_file(&tj))
                .transpose()?;
            (config, weights, tok)
        } else if path.is_file() {
            let (config, weights, gguf) = load_gguf_model(path)?;
            let tok = gguf
                .metadata
                .contains_key("tokenizer.ggml.model")
                .then(|| Tokenizer::from_gguf(&gguf.metadata, path))
                .transpose();
            // A tokenizer type that cannot be rebuilt does not stop the model from loading
            // (ids can come from elsewhere); `Model::tokenizer` names the reason.
            match tok {
                Ok(t) => (config, weights, t),
                Err(e @ CoreError::Unsupported { .. }) => {
                    note = Some(e.to_string());
                    (config, weights, None)
                }
                Err(e) => return Err(e),
            }
        } else {
            return Err(CoreError::format(
                path,
                "no such model: expected a Hugging Face folder or a .gguf file",
            ));
        };
        if let Some(tj) = tokenizer_json {
            tokenizer = Some(Tokenizer::from_file(tj)?);
        }
        let mut model = Self::from_weights(config, weights)?;
        if tokenizer.is_none() {
            model.tokenizer_note = note;
        }
        model.tokenizer = tokenizer;
        Ok(model)
    }

    /// Builds a model from a config and weights under HF names (checks every shape).
    pub fn from_weights(config: ModelConfig, mut w: Weights) -> Result<Self> {
        config.validate(&w.source)?;
        let spec: &'static layer::LayerSpec = match config.arch {
            Arch::Llama => &llama::SPEC,
            Arch::Mistral => &mistral::SPEC,
            Arch::Qwen2 => &qwen2::SPEC,
            Arch::Qwen3 => &qwen3::SPEC,
            Arch::Gemma2 => &gemma2::SPEC,
            Arch::Gemma3 => &gemma3::SPEC,
            Arch::Phi3 => &phi3::SPEC,
            Arch::Olmo2 => &olmo2::SPEC,
        };
        let plus_one = spec.norm_plus_one && !w.norms_plus_one;
        let (v, h) = (config.vocab, config.hidden);
        let embed = w.take("model.embed_tokens.weight", &[v, h])?;
        let layers = (0..config.n_layers)
            .map(|i| load_layer(&mut w, &config, spec, i, plus_one))
            .collect::<Result<Vec<_>>>()?;
        let mut norm = Array1::from_vec(w.take("model.norm.weight", &[h])?.data);
        if plus_one {
            norm.mapv_inplace(|x| 1.0 + x);
        }
        let lm_head = match config.tie_embeddings {
            true => None,
            false => w
                .take_opt("lm_head.weight", &[v, h])?
                .map(|t| to_array2(t, v, h)),
        }
        .map_or(OutputHead::Tied, OutputHead::Own);
        let storage = w
            .dtypes
            .iter()
            .map(|(k, n)| format!("{k} x {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let rope = Rope::scaled(
            config.head_dim,
            config.rope_theta,
            config.rope_scaling.clone(),
            config.max_context,
        );
        let rope_local = config.attention.local_rope_theta.map(|theta| {
            Rope::scaled(
                config.head_dim,
                theta,
                Default::default(),
                config.max_context,
            )
        });
        Ok(Self {
            source: w.source.clone(),
            storage,
            tokenizer: None,
            tokenizer_note: None,
            spec,
            rope_local,
            embed: to_array2(embed, v, h),
            layers,
            norm,
            lm_head,
            rope,
            config,
            on_device: None,
        })
    }

    /// Where [`Model::forward`] runs.
    pub fn device(&self) -> Device {
        self.on_device
            .as_ref()
            .map_or(Device::Cpu, |twin| twin.device())
    }

    /// The model's tokenizer, or an error naming the model when it has none.
    pub fn tokenizer(&self) -> Result<&Tokenizer> {
        self.tokenizer.as_ref().ok_or_else(|| {
            if let Some(note) = &self.tokenizer_note {
                return CoreError::format(
                    &self.source,
                    format!("no tokenizer ({note}); pass a tokenizer.json"),
                );
            }
            CoreError::format(
                &self.source,
                "no tokenizer: the folder has no tokenizer.json and the GGUF no tokenizer \
                 metadata (pass a tokenizer.json)",
            )
        })
    }
}
