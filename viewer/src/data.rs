//! A run bundle indexed for the views: every lookup a view makes per frame is a hash or a slice
//! index. Views only read a [`RunData`]; it is built once, on a background thread, by
//! [`RunData::open`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use arrow_array::RecordBatch;
use attnscope_analysis::bundle::io::read_json;
use attnscope_analysis::bundle::{
    check_table_file, read_table, tables, Bundle, Manifest, Table, FORMAT_VERSION,
};
use attnscope_analysis::results::{IouRow, MetricRow, SelectionRow, SimResults, TokenRow};

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
#[derive(Debug, Clone)]
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
    /// Tokens per block of the pooled maps.
    pub block: usize,
    /// Tokens per block of the selections and of `recall_by_query_block` (the capture block;
    /// `block` is a whole multiple of it, larger for inputs of more than 256 capture blocks).
    pub capture_block: usize,
    pub metrics: Vec<MetricRow>,
    metric_index: HashMap<RowKey, usize>,
    pub heads: HashMap<HeadKey, HeadInfo>,
    selections: HashMap<RowKey, SelectionRow>,
    pub iou: Vec<IouRow>,
    /// Tokens of each input.
    pub tokens: Vec<Vec<TokenRow>>,
    /// Budgets that have selections.
    pub selection_budgets: Vec<usize>,
    /// Whether the pooled maps and selections (the large tables) are in yet.
    pub heavy: Heavy,
    /// Seconds spent reading and indexing the small tables (the run is shown after these).
    pub load_seconds: f64,
    /// Seconds spent reading the maps and selections.
    pub heavy_seconds: f64,
}

/// State of the large tables (`maps`, `selections`), read after the run is shown.
#[derive(Debug, Clone, PartialEq)]
pub enum Heavy {
    Loading,
    Ready,
    Failed(String),
}

/// The large tables, read on their own ([`RunData::read_heavy`]) and added with
/// [`RunData::install`].
#[derive(Debug, Default)]
pub struct HeavyTables {
    /// Pooled map of each head: `(n_blocks, map)`.
    pub maps: HashMap<HeadKey, (usize, Vec<f32>)>,
    pub selections: Vec<SelectionRow>,
    pub seconds: f64,
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

fn err(dir: &Path, e: impl std::fmt::Display) -> LoadError {
    LoadError {
        dir: dir.to_path_buf(),
        message: e.to_string(),
    }
}

/// Reads one table of a bundle, checking its SHA-256 and row count against the manifest.
fn load_table(dir: &Path, m: &Manifest, t: Table) -> Result<(PathBuf, Vec<RecordBatch>), String> {
    let info = m
        .tables
        .iter()
        .find(|i| i.name == t.name())
        .ok_or_else(|| format!("manifest.json lists no '{}' table", t.name()))?;
    let path = dir.join(&info.file);
    check_table_file(&path, info).map_err(|e| e.to_string())?;
    let batches = read_table(&path, m.format).map_err(|e| e.to_string())?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    if rows != info.rows {
        return Err(format!(
            "{}: has {rows} rows but manifest.json says {} (truncated or replaced?)",
            path.display(),
            info.rows
        ));
    }
    Ok((path, batches))
}

impl RunData {
    /// Reads and indexes the whole bundle in `dir` (both phases of [`Self::open_summary`] and
    /// [`Self::read_heavy`]).
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let mut d = Self::open_summary(dir)?;
        let heavy = Self::read_heavy(dir, &d.manifest);
        d.install(heavy);
        Ok(d)
    }

    /// Reads the manifest and the small tables (metrics, IoU, heads, tokens): enough to show
    /// the run. The maps and selections follow with [`Self::read_heavy`].
    pub fn open_summary(dir: &Path) -> Result<Self, LoadError> {
        let t = Instant::now();
        let mpath = dir.join("manifest.json");
        if !mpath.is_file() {
            // The bundle reader explains a missing manifest best (interrupted run, no folder).
            return Err(match Bundle::read(dir) {
                Err(e) => err(dir, e),
                Ok(_) => err(dir, "no manifest.json"),
            });
        }
        let raw: serde_json::Value = read_json(&mpath).map_err(|e| err(dir, e))?;
        let version = raw
            .get("format_version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                err(
                    dir,
                    format!(
                        "{}: no format_version: not an attnscope manifest",
                        mpath.display()
                    ),
                )
            })?;
        if version > u64::from(FORMAT_VERSION) || version < 2 {
            // Same wording as the bundle reader.
            return Err(match Bundle::read(dir) {
                Err(e) => err(dir, e),
                Ok(_) => err(dir, format!("unsupported bundle format version {version}")),
            });
        }
        let manifest: Manifest = serde_json::from_value(raw)
            .map_err(|e| err(dir, format!("{}: invalid manifest: {e}", mpath.display())))?;
        let load = |t: Table| load_table(dir, &manifest, t).map_err(|e| err(dir, e));
        let (mp, m) = load(Table::Metrics)?;
        let (ip, i) = load(Table::Iou)?;
        let (hp, h) = load(Table::Heads)?;
        let (tp, tk) = load(Table::Tokens)?;
        let metrics = tables::metrics_rows(&m, &mp).map_err(|e| err(dir, e))?;
        let iou = tables::iou_rows(&i, &ip).map_err(|e| err(dir, e))?;
        let heads = tables::head_rows(&h, &hp, &[], &hp).map_err(|e| err(dir, e))?;
        let tokens = tables::token_rows(&tk, &tp).map_err(|e| err(dir, e))?;
        let results = SimResults {
            metrics,
            iou,
            heads,
            ..SimResults::default()
        };
        let mut d = Self::index(dir.to_path_buf(), manifest, results, tokens);
        d.heavy = Heavy::Loading;
        d.load_seconds = t.elapsed().as_secs_f64();
        Ok(d)
    }

    /// Reads the large tables: pooled maps and selections.
    pub fn read_heavy(dir: &Path, m: &Manifest) -> Result<HeavyTables, String> {
        let t = Instant::now();
        let (hp, h) = load_table(dir, m, Table::Heads)?;
        let (pp, p) = load_table(dir, m, Table::Maps)?;
        let maps = tables::head_rows(&h, &hp, &p, &pp)
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|r| ((r.input, r.layer, r.head), (r.n_blocks, r.pooled)))
            .collect();
        let (sp, s) = load_table(dir, m, Table::Selections)?;
        let selections =
            tables::selection_rows(&s, &sp, m.capture_block.max(1)).map_err(|e| e.to_string())?;
        Ok(HeavyTables {
            maps,
            selections,
            seconds: t.elapsed().as_secs_f64(),
        })
    }

    /// Adds the large tables (or records why they could not be read).
    pub fn install(&mut self, heavy: Result<HeavyTables, String>) {
        let h = match heavy {
            Ok(h) => h,
            Err(e) => {
                self.heavy = Heavy::Failed(e);
                return;
            }
        };
        self.heavy_seconds = h.seconds;
        for (k, (nb, map)) in h.maps {
            if let Some(x) = self.heads.get_mut(&k) {
                x.n_blocks = nb;
                x.map = map;
            }
        }
        for r in h.selections {
            let m = match self.method_index(&r.method) {
                Some(m) => m,
                None => {
                    self.methods.push(r.method.clone());
                    self.methods.len() - 1
                }
            };
            self.selections
                .insert((r.input, r.layer, r.head, m, r.budget), r);
        }
        let mut sb: Vec<usize> = self.selections.keys().map(|k| k.4).collect();
        sb.sort_unstable();
        sb.dedup();
        self.selection_budgets = sb;
        self.heavy = Heavy::Ready;
    }

    /// Indexes a bundle already in memory.
    pub fn from_bundle(b: Bundle) -> Self {
        let Bundle {
            dir,
            manifest,
            mut results,
            tokens,
        } = b;
        let selections = std::mem::take(&mut results.selections);
        let maps = results
            .heads
            .iter_mut()
            .map(|h| {
                (
                    (h.input, h.layer, h.head),
                    (h.n_blocks, std::mem::take(&mut h.pooled)),
                )
            })
            .collect();
        let mut d = Self::index(dir, manifest, results, tokens);
        d.install(Ok(HeavyTables {
            maps,
            selections,
            seconds: 0.0,
        }));
        d
    }

    /// Indexes the small tables.
    fn index(dir: PathBuf, manifest: Manifest, results: SimResults, tokens: Vec<TokenRow>) -> Self {
        let mut methods: Vec<String> = Vec::new();
        for r in &results.metrics {
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
        let selections: HashMap<RowKey, SelectionRow> = HashMap::new();
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
        let selection_budgets = Vec::new();
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
            block: manifest.map_block(),
            capture_block: manifest.capture_block.max(1),
            metrics: results.metrics,
            metric_index,
            heads,
            selections,
            iou: results.iou,
            tokens: per_input,
            selection_budgets,
            heavy: Heavy::Ready,
            load_seconds: 0.0,
            heavy_seconds: 0.0,
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

    /// The input indices the run holds, ascending: `0..n_inputs`, or some of a sweep's for a
    /// part of it (`simulate --shard`).
    pub fn input_indices(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.manifest.data.inputs.iter().map(|i| i.index).collect();
        if v.is_empty() {
            v = (0..self.n_inputs).collect();
        }
        v.sort_unstable();
        v
    }

    /// A short description of the run for the status bar.
    pub fn describe_input(&self, input: usize) -> String {
        // By index, not position: a part of a sweep (`--shard`) holds some of its inputs.
        match self.manifest.data.inputs.iter().find(|i| i.index == input) {
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
