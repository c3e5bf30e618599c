//! A run bundle indexed for the views: every lookup a view makes per frame is a hash or a slice
//! index. Views only read a [`RunData`]; it is built once, on a background thread, by
//! [`RunData::open`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use attnscope_analysis::bundle::{Bundle, Manifest, SelectionRow, TokenRow};
use attnscope_analysis::sim::{IouRow, MetricRow};

/// A per-head statistic that does not depend on a method.
#[derive(Debug, Clone)]
pub struct HeadInfo {
    pub kv_head: usize,
    pub sink_mass: f64,
    /// Share of q.k energy per rotary chunk (0 = highest frequency).
    pub energy_share: Vec<f32>,
    /// Agreement of each chunk's top-k keys with the full top-k.
    pub agreement: Vec<f32>,
    /// Pooled `[n_blocks, n_blocks]` map, row-major (empty when the bundle has no maps).
    pub map: Vec<f32>,
    pub n_blocks: usize,
}

impl HeadInfo {
    /// The largest energy share of one rotary chunk (frequency dominance).
    pub fn dominance(&self) -> f64 {
        self.energy_share
            .iter()
            .copied()
            .fold(f32::NAN, f32::max)
            .into()
    }

    /// Mean over query blocks of the entropy (nats) of the row-normalized pooled map.
    pub fn block_entropy(&self) -> f64 {
        let n = self.n_blocks;
        if n == 0 || self.map.len() < n * n {
            return f64::NAN;
        }
        let (mut sum, mut rows) = (0.0f64, 0usize);
        for q in 0..n {
            let row = &self.map[q * n..q * n + q + 1];
            let total: f32 = row.iter().sum();
            if total <= 0.0 {
                continue;
            }
            let h: f32 = row
                .iter()
                .filter(|&&x| x > 0.0)
                .map(|&x| {
                    let p = x / total;
                    -p * p.ln()
                })
                .sum();
            sum += f64::from(h);
            rows += 1;
        }
        if rows == 0 {
            f64::NAN
        } else {
            sum / rows as f64
        }
    }
}

/// Key of a per-(input, layer, head) value.
pub type HeadKey = (usize, usize, usize);
/// Key of a per-(input, layer, head, method, budget) value; the method is an index into
/// [`RunData::methods`].
pub type RowKey = (usize, usize, usize, usize, usize);

/// A loaded, indexed run bundle.
#[derive(Debug)]
pub struct RunData {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Simulated layers, ascending.
    pub layers: Vec<usize>,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// Method labels of the metric rows (sweep members included), in run order.
    pub methods: Vec<String>,
    /// Budget labels, by budget index.
    pub budgets: Vec<String>,
    pub n_inputs: usize,
    /// Tokens per block of the maps and selections.
    pub block: usize,
    pub metrics: Vec<MetricRow>,
    metric_index: HashMap<RowKey, usize>,
    pub heads: HashMap<HeadKey, HeadInfo>,
    selections: HashMap<RowKey, SelectionRow>,
    pub iou: Vec<IouRow>,
    /// Tokens of each input.
    pub tokens: Vec<Vec<TokenRow>>,
    /// Budgets that have selections.
    pub selection_budgets: Vec<usize>,
    /// Seconds spent reading and indexing.
    pub load_seconds: f64,
}

/// Why a bundle could not be shown.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadError {
    pub dir: PathBuf,
    pub message: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.dir.display(), self.message)
    }
}

impl RunData {
    /// Reads and indexes the bundle in `dir`.
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let t = Instant::now();
        let bundle = Bundle::read(dir).map_err(|e| LoadError {
            dir: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let mut data = Self::from_bundle(bundle);
        data.load_seconds = t.elapsed().as_secs_f64();
        Ok(data)
    }

    /// Indexes a bundle already in memory.
    pub fn from_bundle(b: Bundle) -> Self {
        let Bundle {
            dir,
            manifest,
            results,
            tokens,
        } = b;
        let mut methods: Vec<String> = Vec::new();
        for r in &results.metrics {
            if !methods.contains(&r.method) {
                methods.push(r.method.clone());
            }
        }
        for r in &results.selections {
            if !methods.contains(&r.method) {
                methods.push(r.method.clone());
            }
        }
        let midx = |m: &str| methods.iter().position(|x| x == m).unwrap_or(0);
        let metric_index: HashMap<RowKey, usize> = results
            .metrics
            .iter()
            .enumerate()
            .map(|(i, r)| ((r.input, r.layer, r.head, midx(&r.method), r.budget), i))
            .collect();
        let selections: HashMap<RowKey, SelectionRow> = results
            .selections
            .into_iter()
            .map(|r| ((r.input, r.layer, r.head, midx(&r.method), r.budget), r))
            .collect();
        let mut layers: Vec<usize> = results
            .metrics
            .iter()
            .map(|r| r.layer)
            .chain(results.heads.iter().map(|h| h.layer))
            .collect();
        if layers.is_empty() {
            layers = manifest.layers.clone();
        }
        layers.sort_unstable();
        layers.dedup();
        let n_heads = results
            .metrics
            .iter()
            .map(|r| r.head + 1)
            .chain(results.heads.iter().map(|h| h.head + 1))
            .max()
            .unwrap_or(0)
            .max(manifest.model.n_heads);
        let heads: HashMap<HeadKey, HeadInfo> = results
            .heads
            .into_iter()
            .map(|h| {
                (
                    (h.input, h.layer, h.head),
                    HeadInfo {
                        kv_head: h.kv_head,
                        sink_mass: h.sink_mass,
                        energy_share: h.energy_share,
                        agreement: h.agreement,
                        map: h.pooled,
                        n_blocks: h.n_blocks,
                    },
                )
            })
            .collect();
        let n_inputs = manifest.data.inputs.len().max(1);
        let mut per_input: Vec<Vec<TokenRow>> = vec![Vec::new(); n_inputs];
        for t in tokens {
            if t.input >= per_input.len() {
                per_input.resize(t.input + 1, Vec::new());
            }
            per_input[t.input].push(t);
        }
        for t in &mut per_input {
            t.sort_by_key(|r| r.position);
        }
        let mut selection_budgets: Vec<usize> = selections.keys().map(|k| k.4).collect();
        selection_budgets.sort_unstable();
        selection_budgets.dedup();
        let mut budgets: Vec<String> = manifest.budgets.iter().map(|b| b.label.clone()).collect();
        let max_budget = results
            .metrics
            .iter()
            .map(|r| r.budget + 1)
            .max()
            .unwrap_or(0);
        while budgets.len() < max_budget {
            budgets.push(format!("budget {}", budgets.len()));
        }
        Self {
            dir,
            layers,
            n_heads,
            n_kv_heads: manifest.model.n_kv_heads.max(1),
            methods,
            budgets,
            n_inputs: per_input.len().max(1),
            block: manifest.capture_block.max(1),
            metrics: results.metrics,
            metric_index,
            heads,
            selections,
            iou: results.iou,
            tokens: per_input,
            selection_budgets,
            load_seconds: 0.0,
            manifest,
        }
    }

    /// Index of a method label.
    pub fn method_index(&self, label: &str) -> Option<usize> {
        self.methods.iter().position(|m| m == label)
    }

    /// The metric row of one (input, layer, head, method, budget).
    pub fn metric(
        &self,
        input: usize,
        layer: usize,
        head: usize,
        method: usize,
        budget: usize,
    ) -> Option<&MetricRow> {
        self.metric_index
            .get(&(input, layer, head, method, budget))
            .map(|&i| &self.metrics[i])
    }

    /// The compacted selection of one (input, layer, head, method, budget), when saved.
    pub fn selection(
        &self,
        input: usize,
        layer: usize,
        head: usize,
        method: usize,
        budget: usize,
    ) -> Option<&SelectionRow> {
        self.selections.get(&(input, layer, head, method, budget))
    }

    /// The statistics and pooled map of one head.
    pub fn head(&self, input: usize, layer: usize, head: usize) -> Option<&HeadInfo> {
        self.heads.get(&(input, layer, head))
    }

    /// True when the bundle has pooled maps.
    pub fn has_maps(&self) -> bool {
        self.heads
            .values()
            .any(|h| h.n_blocks > 0 && !h.map.is_empty())
    }

    /// Layers of input `input` with captured Q/K/V.
    pub fn qkv_layers(&self, input: usize) -> Vec<usize> {
        self.manifest
            .qkv
            .iter()
            .filter(|q| q.input == input)
            .flat_map(|q| q.layers.iter().copied())
            .collect()
    }

    /// Tokens of each input.
    pub fn n_tokens(&self) -> usize {
        self.manifest.n_tokens
    }

    /// A short description of the run for the status bar.
    pub fn describe_input(&self, input: usize) -> String {
        match self.manifest.data.inputs.get(input) {
            Some(i) if !i.name.is_empty() => i.name.clone(),
            Some(i) => i.text.clone(),
            None => self.manifest.data.dataset.clone(),
        }
    }

    /// Mean of `f` over the metric rows (q-heads) of a method and budget at one layer (all
    /// layers for `None`); `None` when there are no finite values.
    pub fn mean_over(
        &self,
        method: usize,
        budget: usize,
        layer: Option<usize>,
        f: impl Fn(&MetricRow) -> f64,
    ) -> Option<f64> {
        let label = self.methods.get(method)?;
        let (mut s, mut c) = (0.0, 0usize);
        for r in &self.metrics {
            if r.budget == budget && &r.method == label && layer.is_none_or(|l| l == r.layer) {
                let v = f(r);
                if v.is_finite() {
                    s += v;
                    c += 1;
                }
            }
        }
        (c > 0).then(|| s / c as f64)
    }
}
