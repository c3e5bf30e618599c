//! Rows <-> Arrow record batches for every table of [`super::schema`]. Writers build columns in
//! schema order (checked by `RecordBatch::try_new`); readers look columns up by name and check
//! their types, naming the file and column in any error.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, ListArray, RecordBatch, StringArray,
    UInt32Array,
};
use arrow_schema::{DataType, Field};

use super::io::file_err;
use super::schema::{schema, Table};
use crate::error::Result;
use crate::results::{HeadRow, IouRow, MetricRow, SelectionRow, TokenRow};

mod eval;
pub use eval::{eval_batch, eval_rows};

/// Values the tables repeat from the manifest (run id, method parameters, budget labels).
#[derive(Debug, Clone, Default)]
pub struct TableContext {
    pub run_id: String,
    /// Method name -> its parameters as a JSON object.
    pub params: HashMap<String, String>,
    pub budget_labels: Vec<String>,
    /// Tokens per block of the pooled maps.
    pub block: usize,
}

impl TableContext {
    fn label(&self, b: usize) -> &str {
        self.budget_labels.get(b).map_or("", String::as_str)
    }
}

// ---------- column builders ----------

fn u32s(it: impl IntoIterator<Item = usize>) -> ArrayRef {
    Arc::new(UInt32Array::from_iter_values(
        it.into_iter().map(|x| x as u32),
    ))
}
fn f64s(it: impl IntoIterator<Item = f64>) -> ArrayRef {
    Arc::new(Float64Array::from_iter_values(it))
}
fn opt_f64s(it: impl IntoIterator<Item = Option<f64>>) -> ArrayRef {
    Arc::new(it.into_iter().collect::<Float64Array>())
}
fn opt_u32s(it: impl IntoIterator<Item = Option<usize>>) -> ArrayRef {
    Arc::new(
        it.into_iter()
            .map(|x| x.map(|v| v as u32))
            .collect::<UInt32Array>(),
    )
}
fn opt_bools(it: impl IntoIterator<Item = Option<bool>>) -> ArrayRef {
    Arc::new(it.into_iter().collect::<BooleanArray>())
}
fn bools(it: impl IntoIterator<Item = bool>) -> ArrayRef {
    Arc::new(it.into_iter().map(Some).collect::<BooleanArray>())
}
fn strs<'a>(it: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(it))
}
fn list_of<'a, T: Copy + 'a>(
    it: impl IntoIterator<Item = &'a [T]>,
    item: DataType,
    make: impl FnOnce(Vec<T>) -> ArrayRef,
) -> ArrayRef {
    let mut lens = Vec::new();
    let mut values = Vec::new();
    for s in it {
        lens.push(s.len());
        values.extend_from_slice(s);
    }
    let field = Arc::new(Field::new("item", item, false));
    Arc::new(ListArray::new(
        field,
        arrow_buffer::OffsetBuffer::from_lengths(lens),
        make(values),
        None,
    ))
}
fn list_f32<'a>(it: impl IntoIterator<Item = &'a [f32]>) -> ArrayRef {
    list_of(it, DataType::Float32, |v| Arc::new(Float32Array::from(v)))
}
fn list_u32<'a>(it: impl IntoIterator<Item = &'a [u32]>) -> ArrayRef {
    list_of(it, DataType::UInt32, |v| Arc::new(UInt32Array::from(v)))
}

fn batch(t: Table, cols: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(schema(t), cols)
        .map_err(|e| file_err(Path::new(t.name()), format!("building a record batch: {e}")))
}

// ---------- writers ----------

/// The `metrics` batch of `rows`.
pub fn metrics_batch(rows: &[MetricRow], ctx: &TableContext) -> Result<RecordBatch> {
    batch(
        Table::Metrics,
        vec![
            strs(rows.iter().map(|_| ctx.run_id.as_str())),
            u32s(rows.iter().map(|r| r.input)),
            u32s(rows.iter().map(|r| r.layer)),
            u32s(rows.iter().map(|r| r.head)),
            u32s(rows.iter().map(|r| r.kv_head)),
            strs(rows.iter().map(|r| r.method.as_str())),
            strs(
                rows.iter()
                    .map(|r| ctx.params.get(&r.method).map_or("{}", String::as_str)),
            ),
            u32s(rows.iter().map(|r| r.budget)),
            strs(rows.iter().map(|r| ctx.label(r.budget))),
            f64s(rows.iter().map(|r| r.knob)),
            f64s(rows.iter().map(|r| r.target_sparsity)),
            f64s(rows.iter().map(|r| r.sparsity)),
            f64s(rows.iter().map(|r| r.recall)),
            f64s(rows.iter().map(|r| r.info_loss)),
            f64s(rows.iter().map(|r| r.kl)),
            f64s(rows.iter().map(|r| r.out_rel_err)),
            f64s(rows.iter().map(|r| r.cosine)),
            opt_f64s(rows.iter().map(|r| r.needle_recall)),
            bools(rows.iter().map(|r| r.reached)),
            list_f32(rows.iter().map(|r| r.recall_by_query_block.as_slice())),
        ],
    )
}

/// The `iou` batch of `rows`.
pub fn iou_batch(rows: &[IouRow], ctx: &TableContext) -> Result<RecordBatch> {
    batch(
        Table::Iou,
        vec![
            u32s(rows.iter().map(|r| r.input)),
            u32s(rows.iter().map(|r| r.layer)),
            u32s(rows.iter().map(|r| r.kv_head)),
            u32s(rows.iter().map(|r| r.budget)),
            strs(rows.iter().map(|r| ctx.label(r.budget))),
            strs(rows.iter().map(|r| r.method_a.as_str())),
            strs(rows.iter().map(|r| r.method_b.as_str())),
            f64s(rows.iter().map(|r| r.iou)),
        ],
    )
}

/// The `heads` batch of `rows` (their pooled maps go to [`maps_batch`]).
pub fn heads_batch(rows: &[HeadRow], _ctx: &TableContext) -> Result<RecordBatch> {
    batch(
        Table::Heads,
        vec![
            u32s(rows.iter().map(|r| r.input)),
            u32s(rows.iter().map(|r| r.layer)),
            u32s(rows.iter().map(|r| r.head)),
            u32s(rows.iter().map(|r| r.kv_head)),
            f64s(rows.iter().map(|r| r.sink_mass)),
            list_f32(rows.iter().map(|r| r.energy_share.as_slice())),
            list_f32(rows.iter().map(|r| r.agreement.as_slice())),
        ],
    )
}

/// The `maps` batch: the pooled block map of each head row.
pub fn maps_batch(rows: &[HeadRow], ctx: &TableContext) -> Result<RecordBatch> {
    batch(
        Table::Maps,
        vec![
            u32s(rows.iter().map(|r| r.input)),
            u32s(rows.iter().map(|r| r.layer)),
            u32s(rows.iter().map(|r| r.head)),
            u32s(
                rows.iter()
                    .map(|r| if r.block > 0 { r.block } else { ctx.block }),
            ),
            u32s(rows.iter().map(|r| r.n_blocks)),
            list_f32(rows.iter().map(|r| r.pooled.as_slice())),
        ],
    )
}

/// The `tokens` batch of `rows`.
pub fn tokens_batch(rows: &[TokenRow], _ctx: &TableContext) -> Result<RecordBatch> {
    batch(
        Table::Tokens,
        vec![
            u32s(rows.iter().map(|r| r.input)),
            u32s(rows.iter().map(|r| r.position)),
            u32s(rows.iter().map(|r| r.id as usize)),
            strs(rows.iter().map(|r| r.piece.as_str())),
            bools(rows.iter().map(|r| r.is_punct)),
            bools(rows.iter().map(|r| r.is_newline)),
            opt_u32s(rows.iter().map(|r| r.char_start)),
            opt_u32s(rows.iter().map(|r| r.char_end)),
            bools(rows.iter().map(|r| r.is_needle)),
            bools(rows.iter().map(|r| r.is_needle_query)),
        ],
    )
}

/// The `selections` batch: one table row per query block of each selection row.
pub fn selections_batch(rows: &[SelectionRow], ctx: &TableContext) -> Result<RecordBatch> {
    let per = |f: &dyn Fn(&SelectionRow) -> usize| -> Vec<usize> {
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(f(r), r.n_query_blocks()))
            .collect()
    };
    let method: ArrayRef = strs(
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(r.method.as_str(), r.n_query_blocks())),
    );
    let label: ArrayRef = strs(
        rows.iter()
            .flat_map(|r| std::iter::repeat_n(ctx.label(r.budget), r.n_query_blocks())),
    );
    batch(
        Table::Selections,
        vec![
            u32s(per(&|r| r.input)),
            u32s(per(&|r| r.layer)),
            u32s(per(&|r| r.head)),
            u32s(per(&|r| r.kv_head)),
            method,
            u32s(per(&|r| r.budget)),
            label,
            u32s(rows.iter().flat_map(|r| 0..r.n_query_blocks())),
            list_u32(
                rows.iter()
                    .flat_map(|r| (0..r.n_query_blocks()).map(|q| r.blocks_of(q))),
            ),
            list_f32(
                rows.iter()
                    .flat_map(|r| (0..r.n_query_blocks()).map(|q| r.fraction_of(q))),
            ),
        ],
    )
}

// ---------- readers ----------

/// Typed access to the columns of one batch of a table file.
struct Cols<'a> {
    b: &'a RecordBatch,
    path: &'a Path,
}

impl<'a> Cols<'a> {
    fn get<T: 'static>(&self, name: &str, ty: &str) -> Result<&'a T> {
        let col = self
            .b
            .column_by_name(name)
            .ok_or_else(|| file_err(self.path, format!("column '{name}' is missing")))?;
        col.as_any().downcast_ref::<T>().ok_or_else(|| {
            file_err(
                self.path,
                format!("column '{name}' is {}, expected {ty}", col.data_type()),
            )
        })
    }
    fn u32(&self, name: &str) -> Result<Vec<usize>> {
        let a = self.get::<UInt32Array>(name, "uint32")?;
        Ok(a.values().iter().map(|&v| v as usize).collect())
    }
    fn opt_u32(&self, name: &str) -> Result<Vec<Option<usize>>> {
        let a = self.get::<UInt32Array>(name, "uint32")?;
        Ok(a.iter().map(|v| v.map(|x| x as usize)).collect())
    }
    fn f64(&self, name: &str) -> Result<Vec<f64>> {
        Ok(self.get::<Float64Array>(name, "double")?.values().to_vec())
    }
    fn opt_f64(&self, name: &str) -> Result<Vec<Option<f64>>> {
        Ok(self.get::<Float64Array>(name, "double")?.iter().collect())
    }
    fn bool(&self, name: &str) -> Result<Vec<bool>> {
        let a = self.get::<BooleanArray>(name, "bool")?;
        Ok((0..a.len()).map(|i| a.value(i)).collect())
    }
    fn opt_bool(&self, name: &str) -> Result<Vec<Option<bool>>> {
        Ok(self.get::<BooleanArray>(name, "bool")?.iter().collect())
    }
    fn str(&self, name: &str) -> Result<Vec<String>> {
        let a = self.get::<StringArray>(name, "string")?;
        Ok((0..a.len()).map(|i| a.value(i).to_string()).collect())
    }
    fn list<T: Clone, A: 'static>(
        &self,
        name: &str,
        ty: &str,
        values: impl Fn(&A) -> &[T],
    ) -> Result<Vec<Vec<T>>> {
        let l = self.get::<ListArray>(name, ty)?;
        let v = l
            .values()
            .as_any()
            .downcast_ref::<A>()
            .ok_or_else(|| file_err(self.path, format!("column '{name}' is not {ty}")))?;
        let v = values(v);
        let offs = l.value_offsets();
        Ok(offs
            .windows(2)
            .map(|w| v[w[0] as usize..w[1] as usize].to_vec())
            .collect())
    }
    fn list_f32(&self, name: &str) -> Result<Vec<Vec<f32>>> {
        self.list(name, "list<float>", |a: &Float32Array| a.values().as_ref())
    }
    fn list_u32(&self, name: &str) -> Result<Vec<Vec<u32>>> {
        self.list(name, "list<uint32>", |a: &UInt32Array| a.values().as_ref())
    }
}

/// Reads `metrics` rows.
pub fn metrics_rows(batches: &[RecordBatch], path: &Path) -> Result<Vec<MetricRow>> {
    let mut out = Vec::new();
    for b in batches {
        let c = Cols { b, path };
        let (input, layer, head, kv) = (
            c.u32("input")?,
            c.u32("layer")?,
            c.u32("head")?,
            c.u32("kv_head")?,
        );
        let (method, budget, knob) = (c.str("method")?, c.u32("budget")?, c.f64("knob")?);
        let (target, sparsity, recall) = (
            c.f64("target_sparsity")?,
            c.f64("sparsity")?,
            c.f64("recall")?,
        );
        let (il, kl, err, cos) = (
            c.f64("info_loss")?,
            c.f64("kl")?,
            c.f64("out_rel_err")?,
            c.f64("cosine")?,
        );
        let (needle, reached) = (c.opt_f64("needle_recall")?, c.bool("reached")?);
        let by_qb = c.list_f32("recall_by_query_block")?;
        for (i, (m, q)) in method.into_iter().zip(by_qb).enumerate() {
            out.push(MetricRow {
                input: input[i],
                layer: layer[i],
                head: head[i],
                kv_head: kv[i],
                method: m,
                budget: budget[i],
                knob: knob[i],
                target_sparsity: target[i],
                sparsity: sparsity[i],
                recall: recall[i],
                info_loss: il[i],
                kl: kl[i],
                out_rel_err: err[i],
                cosine: cos[i],
                needle_recall: needle[i],
                reached: reached[i],
                recall_by_query_block: q,
            });
        }
    }
    Ok(out)
}

/// Reads `iou` rows.
pub fn iou_rows(batches: &[RecordBatch], path: &Path) -> Result<Vec<IouRow>> {
    let mut out = Vec::new();
    for b in batches {
        let c = Cols { b, path };
        let (input, layer, kv, budget) = (
            c.u32("input")?,
            c.u32("layer")?,
            c.u32("kv_head")?,
            c.u32("budget")?,
        );
        let (a, bm, iou) = (c.str("method_a")?, c.str("method_b")?, c.f64("iou")?);
        for (i, (ma, mb)) in a.into_iter().zip(bm).enumerate() {
            out.push(IouRow {
                input: input[i],
                layer: layer[i],
                kv_head: kv[i],
                budget: budget[i],
                method_a: ma,
                method_b: mb,
                iou: iou[i],
            });
        }
    }
    Ok(out)
}

/// Reads `heads` rows and fills in their pooled maps from the `maps` rows.
pub fn head_rows(
    heads: &[RecordBatch],
    heads_path: &Path,
    maps: &[RecordBatch],
    maps_path: &Path,
) -> Result<Vec<HeadRow>> {
    // (input, layer, head) -> (blocks a side, tokens per block, map).
    type Map = (usize, usize, Vec<f32>);
    let mut pooled: HashMap<(usize, usize, usize), Map> = HashMap::new();
    for b in maps {
        let c = Cols { b, path: maps_path };
        let (input, layer, head, nb, block) = (
            c.u32("input")?,
            c.u32("layer")?,
            c.u32("head")?,
            c.u32("n_blocks")?,
            c.u32("block")?,
        );
        for (i, m) in c.list_f32("map")?.into_iter().enumerate() {
            if m.len() != nb[i] * nb[i] {
                return Err(file_err(
                    maps_path,
                    format!(
                        "row {i}: map has {} values, expected n_blocks^2 = {}",
                        m.len(),
                        nb[i] * nb[i]
                    ),
                ));
            }
            pooled.insert((input[i], layer[i], head[i]), (nb[i], block[i], m));
        }
    }
    let mut out = Vec::new();
    for b in heads {
        let c = Cols {
            b,
            path: heads_path,
        };
        let (input, layer, head, kv) = (
            c.u32("input")?,
            c.u32("layer")?,
            c.u32("head")?,
            c.u32("kv_head")?,
        );
        let (sink, energy, agree) = (
            c.f64("sink_mass")?,
            c.list_f32("energy_share")?,
            c.list_f32("agreement")?,
        );
        for (i, (e, a)) in energy.into_iter().zip(agree).enumerate() {
            let (n_blocks, block, map) = pooled
                .remove(&(input[i], layer[i], head[i]))
                .unwrap_or_default();
            out.push(HeadRow {
                input: input[i],
                layer: layer[i],
                head: head[i],
                kv_head: kv[i],
                sink_mass: sink[i],
                energy_share: e,
                agreement: a,
                pooled: map,
                n_blocks,
                block,
            });
        }
    }
    Ok(out)
}

/// Reads `tokens` rows.
pub fn token_rows(batches: &[RecordBatch], path: &Path) -> Result<Vec<TokenRow>> {
    let mut out = Vec::new();
    for b in batches {
        let c = Cols { b, path };
        let (input, pos, id) = (c.u32("input")?, c.u32("position")?, c.u32("id")?);
        let (punct, nl) = (c.bool("is_punct")?, c.bool("is_newline")?);
        let (cs, ce) = (c.opt_u32("char_start")?, c.opt_u32("char_end")?);
        let (needle, query) = (c.bool("is_needle")?, c.bool("is_needle_query")?);
        for (i, piece) in c.str("piece")?.into_iter().enumerate() {
            out.push(TokenRow {
                input: input[i],
                position: pos[i],
                id: id[i] as u32,
                piece,
                is_punct: punct[i],
                is_newline: nl[i],
                char_start: cs[i],
                char_end: ce[i],
                is_needle: needle[i],
                is_needle_query: query[i],
            });
        }
    }
    Ok(out)
}

/// Reads `selections` rows, regrouping consecutive query blocks of one head into one row.
pub fn selection_rows(
    batches: &[RecordBatch],
    path: &Path,
    block: usize,
) -> Result<Vec<SelectionRow>> {
    let mut out: Vec<SelectionRow> = Vec::new();
    for b in batches {
        let c = Cols { b, path };
        let (input, layer, head, kv) = (
            c.u32("input")?,
            c.u32("layer")?,
            c.u32("head")?,
            c.u32("kv_head")?,
        );
        let (method, budget, qb) = (c.str("method")?, c.u32("budget")?, c.u32("query_block")?);
        let (blocks, frac) = (c.list_u32("kept_blocks")?, c.list_f32("kept_fraction")?);
        for (i, ((m, kb), kf)) in method.into_iter().zip(blocks).zip(frac).enumerate() {
            if kb.len() != kf.len() {
                return Err(file_err(
                    path,
                    format!("row {i}: kept_blocks and kept_fraction differ in length"),
                ));
            }
            let same = out.last().is_some_and(|r| {
                r.input == input[i]
                    && r.layer == layer[i]
                    && r.head == head[i]
                    && r.budget == budget[i]
                    && r.method == m
                    && r.n_query_blocks() == qb[i]
            });
            if !same {
                if qb[i] != 0 {
                    return Err(file_err(
                        path,
                        format!(
                            "row {i}: query blocks of a head must start at 0 and be consecutive"
                        ),
                    ));
                }
                out.push(SelectionRow::new(
                    input[i], layer[i], head[i], kv[i], m, budget[i], block,
                ));
            }
            if let Some(r) = out.last_mut() {
                r.push_query_block(&kb, &kf);
            }
        }
    }
    Ok(out)
}
