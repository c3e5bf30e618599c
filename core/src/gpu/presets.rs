//! Named model shapes for runs on random weights (benchmarks without files): the configs of the
//! real checkpoints this project uses, as in their `config.json`.

use crate::config::{Arch, ModelConfig};

/// Names accepted by [`random_config`].
pub const RANDOM_CONFIGS: [&str; 5] = [
    "smollm2-135m",
    "qwen2.5-0.5b",
    "qwen2.5-1.5b",
    "qwen2.5-7b",
    "llama3.1-8b",
];

/// The config of a named model shape: `smollm2-135m`, `qwen2.5-0.5b` (Qwen2.5(-Coder)-0.5B:
/// 24 layers, 14/2 heads, head dim 64), `qwen2.5-1.5b` (28 layers, 12/2 heads, head dim 128),
/// `qwen2.5-7b` (28 layers, 28/4 heads, head dim 128) or `llama3.1-8b` (32 layers, 32/8 heads,
/// head dim 128, Llama 3 RoPE scaling).
pub fn random_config(name: &str) -> Option<ModelConfig> {
    let qwen = |n_layers, (n_heads, n_kv_heads), head_dim, hidden, intermediate| ModelConfig {
        arch: Arch::Qwen2,
        n_layers,
        n_heads,
        n_kv_heads,
        head_dim,
        hidden,
        intermediate,
        vocab: 151_936,
        rms_eps: 1e-6,
        rope_theta: 1_000_000.0,
        rope_scaling: Default::default(),
        max_context: 32_768,
        tie_embeddings: true,
        bos_token_id: None,
        eos_token_id: Some(151_643),
        attention: Default::default(),
    };
    match name {
        "qwen2.5-0.5b" | "qwen2.5-coder-0.5b" => Some(qwen(24, (14, 2), 64, 896, 4864)),
        "qwen2.5-1.5b" | "qwen2.5-coder-1.5b" => Some(qwen(28, (12, 2), 128, 1536, 8960)),
        "qwen2.5-7b" => Some(ModelConfig {
            vocab: 152_064,
            tie_embeddings: false,
            ..qwen(28, (28, 4), 128, 3584, 18944)
        }),
        "llama3.1-8b" => Some(ModelConfig {
            arch: Arch::Llama,
            n_layers: 32,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            hidden: 4096,
            intermediate: 14336,
            vocab: 128_256,
            rms_eps: 1e-5,
            rope_theta: 500_000.0,
            rope_scaling: crate::rope::RopeScaling::Llama3 {
                factor: 8.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max: 8192,
            },
            max_context: 131_072,
            tie_embeddings: false,
            bos_token_id: Some(128_000),
            eos_token_id: Some(128_001),
            attention: Default::default(),
        }),
        "smollm2-135m" => Some(ModelConfig {
            arch: Arch::Llama,
            n_layers: 30,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            hidden: 576,
            intermediate: 1536,
            vocab: 49_152,
            rms_eps: 1e-5,
            rope_theta: 100_000.0,
            rope_scaling: Default::default(),
            max_context: 8192,
            tie_embeddings: true,
            bos_token_id: Some(1),
            eos_token_id: Some(2),
            attention: Default::default(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_named_shape_has_a_consistent_config() {
        for name in RANDOM_CONFIGS {
            let c = random_config(name).expect("named");
            assert_eq!(c.n_heads % c.n_kv_heads, 0, "{name}");
            assert!(c.head_dim.is_multiple_of(2) && c.hidden > 0, "{name}");
        }
        assert!(random_config("gpt-5").is_none());
    }
}
