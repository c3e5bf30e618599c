//! Gemma 3 (text): Gemma 2's layer with a per-head `1 + w` RMSNorm of queries and keys before
//! RoPE and no soft-capping; five local (sliding-window) layers per global one (`layer_types`),
//! the local layers with their own unscaled RoPE base (`rope_local_base_freq`, 10,000), the
//! global ones with `rope_theta` and its scaling.

use super::layer::{LayerSpec, Presence};

/// Gemma 3 layers: Gemma 2's with per-head q/k norms.
pub(crate) const SPEC: LayerSpec = LayerSpec {
    qk_norm: Presence::Required,
    ..super::gemma2::SPEC
};
