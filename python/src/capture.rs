//! `capture(...)`: the post-RoPE queries and keys of chosen layers, the exact per-query
//! log-sum-exp, the token ids and the punctuation mask, for prototyping rules: host arrays from
//! the CPU forward pass, or device tensors (handed to Python through DLPack) from a GPU one.

use attnscope_cli::commands::{input, model_arg, simulate::parse_layers};
use attnscope_core::attention::{AttentionHook, DeviceLayer, DeviceTensor, HookAction, LayerQkv};
use attnscope_core::capture::{capture_layer, CaptureOptions};
use ndarray::{Array2, Array3};

/// The options of `capture`: the model and input options of `attnscope simulate`, and layers.
#[derive(clap::Parser)]
#[command(name = "capture")]
pub struct Args {
    /// Layers to capture: `all` or a list like `0,3,10-12`.
    #[arg(long, default_value = "all")]
    layers: String,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Model: a registry name (fetched when missing), a HF folder, or a .gguf file.
    #[arg(long, default_value = "smollm2-135m")]
    model: String,
    #[command(flatten)]
    input: input::InputArgs,
    /// Where the forward pass runs: cpu, cuda or cuda:N (on a GPU the tensors stay there).
    #[arg(long, default_value = "cpu")]
    device: attnscope_core::Device,
    /// Storage on the GPU: f32 (exact, matches the CPU path) or bf16 (fast).
    #[arg(long, default_value = "f32")]
    precision: attnscope_core::device::Precision,
}

/// One captured layer.
#[derive(Debug)]
pub struct Layer {
    pub layer: usize,
    /// `[q heads, n, d]`.
    pub q: Array3<f32>,
    /// `[KV heads, n, d]`.
    pub k: Array3<f32>,
    /// `[q heads, n]`: log-sum-exp of the scaled causal scores of each query.
    pub lse: Array2<f32>,
}

/// One layer captured on a GPU: q `[q heads, n, d]`, k `[KV heads, n, d]`, lse `[q heads, n]`,
/// f32 device tensors.
pub struct DeviceLayerTensors {
    pub layer: usize,
    pub tensors: [Box<dyn DeviceTensor>; 3],
}

/// What `capture` returns.
pub struct Captured {
    pub layers: Vec<Layer>,
    pub device_layers: Vec<DeviceLayerTensors>,
    pub ids: Vec<u32>,
    pub pieces: Vec<String>,
    pub punct: Vec<bool>,
    pub newline: Vec<bool>,
}

/// `[n, heads * d]` as `[heads, n, d]`.
fn split_heads(x: ndarray::ArrayView2<'_, f32>, heads: usize, d: usize) -> Array3<f32> {
    let n = x.nrows();
    let mut out = Array3::zeros((heads, n, d));
    for h in 0..heads {
        out.index_axis_mut(ndarray::Axis(0), h)
            .assign(&x.slice(ndarray::s![.., h * d..(h + 1) * d]));
    }
    out
}

struct Hook {
    layers: Option<Vec<usize>>,
    out: Vec<Layer>,
    on_device: Vec<DeviceLayerTensors>,
}

/// The interruption check before each layer.
fn stop_check(layer: usize) -> attnscope_core::Result<()> {
    if attnscope_analysis::sim::stop_requested() {
        return Err(attnscope_core::CoreError::Input(format!(
            "stopped before layer {layer}: interrupted"
        )));
    }
    Ok(())
}

impl AttentionHook for Hook {
    fn on_layer(&mut self, qkv: &LayerQkv<'_>) -> attnscope_core::Result<HookAction> {
        stop_check(qkv.layer)?;
        if !self.inspects(qkv.layer) {
            return Ok(HookAction::Dense);
        }
        let (heads, dense) = capture_layer(qkv, &CaptureOptions::default());
        let n = qkv.len();
        let mut lse = Array2::zeros((qkv.n_heads, n));
        for (h, c) in heads.iter().enumerate() {
            lse.row_mut(h).assign(&ndarray::ArrayView1::from(&c.lse));
        }
        self.out.push(Layer {
            layer: qkv.layer,
            q: split_heads(qkv.q, qkv.n_heads, qkv.head_dim),
            k: split_heads(qkv.k, qkv.n_kv_heads, qkv.head_dim),
            lse,
        });
        Ok(HookAction::DenseOutput(dense))
    }

    /// On a GPU forward pass the layer's tensors are copied on the device, not to the host.
    fn on_layer_device(
        &mut self,
        qkv: &LayerQkv<'_>,
        device: &mut dyn DeviceLayer,
    ) -> attnscope_core::Result<HookAction> {
        stop_check(qkv.layer)?;
        if self.inspects(qkv.layer) {
            self.on_device.push(DeviceLayerTensors {
                layer: qkv.layer,
                tensors: device.export_qkv()?,
            });
        }
        Ok(HookAction::Dense)
    }

    fn inspects(&self, layer: usize) -> bool {
        self.layers.as_ref().is_none_or(|l| l.contains(&layer))
    }
}

/// Loads the model, prepares the input exactly as `simulate` does and runs the forward pass
///, keeping the chosen layers.
pub fn run(a: Args) -> anyhow::Result<Captured> {
    let mut model = model_arg::load(&a.model, a.input.tokenizer.as_deref(), a.quiet)?;
    model.to_device(a.device, a.precision)?;
    let layers = parse_layers("--layers", &a.layers, model.config.n_layers)?;
    let inp = input::prepare(&a.input, &model, a.quiet)?;
    let mut hook = Hook {
        layers,
        out: Vec::new(),
        on_device: Vec::new(),
    };
    model.forward(&inp.ids, &mut hook)?;
    Ok(Captured {
        layers: hook.out,
        device_layers: hook.on_device,
        ids: inp.ids,
        pieces: inp.pieces,
        punct: inp.punct,
        newline: inp.newline,
    })
}
