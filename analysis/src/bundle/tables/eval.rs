//! The `eval` table (rows of `attnscope eval`) <-> Arrow record batches.

use std::path::Path;

use arrow_array::RecordBatch;

use super::{
    batch, bools, f64s, list_f32, opt_bools, opt_f64s, opt_u32s, strs, u32s, Cols, TableContext,
};
use crate::bundle::schema::Table;
use crate::error::Result;
use crate::results::EvalRow;

/// The `eval` batch of `rows`.
pub fn eval_batch(rows: &[EvalRow], _ctx: &TableContext) -> Result<RecordBatch> {
    batch(
        Table::Eval,
        vec![
            u32s(rows.iter().map(|r| r.input)),
            strs(rows.iter().map(|r| r.method.as_str())),
            opt_u32s(rows.iter().map(|r| r.budget)),
            strs(rows.iter().map(|r| r.budget_label.as_str())),
            u32s(rows.iter().map(|r| r.tokens)),
            opt_f64s(rows.iter().map(|r| r.depth)),
            f64s(rows.iter().map(|r| r.sparsity)),
            list_f32(rows.iter().map(|r| r.sparsity_by_layer.as_slice())),
            bools(rows.iter().map(|r| r.reached)),
            opt_f64s(rows.iter().map(|r| r.recall)),
            opt_f64s(rows.iter().map(|r| r.out_rel_err)),
            opt_f64s(rows.iter().map(|r| r.cosine)),
            u32s(rows.iter().map(|r| r.scored)),
            f64s(rows.iter().map(|r| r.nll)),
            f64s(rows.iter().map(|r| r.ppl)),
            f64s(rows.iter().map(|r| r.delta_ppl)),
            f64s(rows.iter().map(|r| r.kl)),
            f64s(rows.iter().map(|r| r.token_accuracy)),
            opt_bools(rows.iter().map(|r| r.exact_match)),
        ],
    )
}

/// Reads `eval` rows.
pub fn eval_rows(batches: &[RecordBatch], path: &Path) -> Result<Vec<EvalRow>> {
    let mut out = Vec::new();
    for b in batches {
        let c = Cols { b, path };
        let (input, method, budget, label) = (
            c.u32("input")?,
            c.str("method")?,
            c.opt_u32("budget")?,
            c.str("budget_label")?,
        );
        let (tokens, depth, sparsity, by_layer, reached) = (
            c.u32("tokens")?,
            c.opt_f64("depth")?,
            c.f64("sparsity")?,
            c.list_f32("sparsity_by_layer")?,
            c.bool("reached")?,
        );
        let (recall, err, cos) = (
            c.opt_f64("recall")?,
            c.opt_f64("out_rel_err")?,
            c.opt_f64("cosine")?,
        );
        let (scored, nll, ppl, dppl) = (
            c.u32("scored")?,
            c.f64("nll")?,
            c.f64("ppl")?,
            c.f64("delta_ppl")?,
        );
        let (kl, acc, em) = (
            c.f64("kl")?,
            c.f64("token_accuracy")?,
            c.opt_bool("exact_match")?,
        );
        for (i, ((m, l), layers)) in method.into_iter().zip(label).zip(by_layer).enumerate() {
            out.push(EvalRow {
                input: input[i],
                method: m,
                budget: budget[i],
                budget_label: l,
                tokens: tokens[i],
                depth: depth[i],
                sparsity: sparsity[i],
                sparsity_by_layer: layers,
                reached: reached[i],
                recall: recall[i],
                out_rel_err: err[i],
                cosine: cos[i],
                scored: scored[i],
                nll: nll[i],
                ppl: ppl[i],
                delta_ppl: dppl[i],
                kl: kl[i],
                token_accuracy: acc[i],
                exact_match: em[i],
            });
        }
    }
    Ok(out)
}
