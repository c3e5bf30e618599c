//! Figures of `attnscope eval` runs (the `eval` table): the change in perplexity against the
//! recall of the sparse layers, one point per (method, budget), and the needle tasks' exact-match
//! accuracy by depth (and length), one row per (method, budget) as in the RULER heatmaps. The
//! numbers are the report's ([`crate::eval::summarize_eval`], [`crate::eval::accuracy_by_depth`]).

use plotters::coord::Shift;
use plotters::prelude::*;

use super::heatmaps::Heatmap;
use super::lines::{draw_lines, legend_column, Line};
use super::{method_style, subtitle, title, Dr, Figure};
use crate::bundle::Bundle;
use crate::eval::{accuracy_by_depth, summarize_eval};

/// Δppl against recall: one line per method through its budgets (dense is the origin of Δppl).
pub(crate) struct PplVsRecall {
    lines: Vec<Line>,
    sub: String,
}

impl PplVsRecall {
    /// `None` when no row has both a recall and a perplexity (no fidelity metrics, or no eval).
    pub fn new(b: &Bundle) -> Option<Self> {
        let s = summarize_eval(&b.results.eval);
        let mut methods: Vec<&str> = Vec::new();
        for r in &s {
            if r.recall.is_some() && !methods.contains(&r.method.as_str()) {
                methods.push(&r.method);
            }
        }
        let lines: Vec<Line> = methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (color, marker) = method_style(i);
                let mut points: Vec<(f64, f64)> = s
                    .iter()
                    .filter(|r| r.method == *m)
                    .filter_map(|r| Some((r.recall? * 100.0, r.delta_ppl)))
                    .filter(|p| p.0.is_finite() && p.1.is_finite())
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                Line {
                    name: m.to_string(),
                    color,
                    marker,
                    points,
                }
            })
            .filter(|l| !l.points.is_empty())
            .collect();
        (!lines.is_empty()).then(|| Self {
            lines,
            sub: subtitle(b),
        })
    }
}

impl Figure for PplVsRecall {
    fn name(&self) -> String {
        "delta_ppl_vs_recall".into()
    }
    fn size(&self) -> (u32, u32) {
        (1600, 850)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Dr<DB> {
        let body = title(
            root,
            &format!("Perplexity change against recall — {}", self.sub),
        )?;
        let (w, _) = body.dim_in_pixel();
        let (plot, legend) = body.split_horizontally(w.saturating_sub(320));
        let pts = || self.lines.iter().flat_map(|l| l.points.iter());
        let fold = |f: fn(&(f64, f64)) -> f64| {
            pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(f(p)), b.max(f(p)))
            })
        };
        let (x0, x1) = fold(|p| p.0);
        let (y0, y1) = fold(|p| p.1);
        let (y0, y1) = (y0.min(0.0), y1.max(0.0));
        let xpad = ((x1 - x0) * 0.05).max(0.5);
        let ypad = ((y1 - y0) * 0.08).max(1e-3);
        draw_lines(
            &plot,
            "",
            "recall of the sparse layers (% of attention mass kept)",
            "perplexity minus dense",
            &self.lines,
            (x0 - xpad, (x1 + xpad).min(100.5)),
            (y0 - ypad, y1 + ypad),
            false,
        )?;
        legend_column(&legend, &self.lines)
    }
}

/// Exact-match accuracy of the needle tasks: rows (method at budget), columns (depth, and the
/// length when the run has several). `None` without task rows.
pub(crate) fn needle_accuracy(b: &Bundle) -> Option<Heatmap> {
    let acc = accuracy_by_depth(&b.results.eval);
    if acc.is_empty() {
        return None;
    }
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut cols: Vec<(usize, u64)> = Vec::new();
    for a in &acc {
        let r = (a.method.clone(), a.budget_label.clone());
        if !rows.contains(&r) {
            rows.push(r);
        }
        let c = (a.tokens, a.depth.to_bits());
        if !cols.contains(&c) {
            cols.push(c);
        }
    }
    cols.sort_by(|x, y| {
        x.0.cmp(&y.0)
            .then(f64::from_bits(x.1).total_cmp(&f64::from_bits(y.1)))
    });
    let lengths = {
        let mut l: Vec<usize> = cols.iter().map(|c| c.0).collect();
        l.dedup();
        l.len()
    };
    let values = rows
        .iter()
        .map(|(m, bl)| {
            cols.iter()
                .map(|&(t, d)| {
                    acc.iter()
                        .find(|a| {
                            &a.method == m
                                && &a.budget_label == bl
                                && a.tokens == t
                                && a.depth.to_bits() == d
                        })
                        .map_or(f64::NAN, |a| a.accuracy)
                })
                .collect()
        })
        .collect();
    let col_label = |&(t, d): &(usize, u64)| {
        let depth = format!("{:.0}%", f64::from_bits(d) * 100.0);
        if lengths > 1 {
            format!("{depth} @ {t}")
        } else {
            depth
        }
    };
    let row_label = |(m, bl): &(String, String)| {
        if bl == crate::eval::DENSE {
            m.clone()
        } else {
            format!("{m} @ {bl}")
        }
    };
    let (nr, nc) = (rows.len() as u32, cols.len() as u32);
    Some(Heatmap {
        name: "needle_accuracy",
        title: format!("Needle exact match by depth — {}", subtitle(b)),
        values,
        rows: rows.iter().map(row_label).collect(),
        cols: cols.iter().map(col_label).collect(),
        x_desc: if lengths > 1 {
            "needle depth @ tokens".into()
        } else {
            "needle depth".into()
        },
        y_desc: String::new(),
        bar_desc: "exact match (share of inputs)".into(),
        range: (0.0, 1.0),
        annotate: nr * nc <= 400,
        rotate_x: lengths > 1,
        size: (
            (900 + 70 * nc).clamp(1200, 2400),
            (400 + 44 * nr).clamp(800, 2000),
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::EvalRow;

    fn row(method: &str, budget: &str, depth: f64, hit: bool, recall: f64, dppl: f64) -> EvalRow {
        EvalRow {
            input: 0,
            method: method.into(),
            budget: (method != "dense").then_some(0),
            budget_label: budget.into(),
            tokens: 256,
            depth: Some(depth),
            sparsity: 0.9,
            sparsity_by_layer: Vec::new(),
            reached: true,
            recall: (method != "dense").then_some(recall),
            out_rel_err: None,
            cosine: None,
            scored: 4,
            nll: 1.0,
            ppl: 1.0 + dppl,
            delta_ppl: dppl,
            kl: 0.0,
            token_accuracy: 1.0,
            exact_match: Some(hit),
        }
    }

    #[test]
    fn needle_matrix_holds_the_accuracy_of_each_method_and_depth() {
        let mut b = Bundle {
            dir: Default::default(),
            manifest: Default::default(),
            results: Default::default(),
            tokens: Vec::new(),
        };
        b.results.eval = vec![
            row("dense", "dense", 0.1, true, 1.0, 0.0),
            row("dense", "dense", 0.9, true, 1.0, 0.0),
            row("streaming", "sparsity=0.9", 0.1, false, 0.7, 3.0),
            row("streaming", "sparsity=0.9", 0.9, true, 0.7, 3.0),
            row("streaming", "sparsity=0.9", 0.9, false, 0.6, 5.0),
        ];
        let h = needle_accuracy(&b).expect("task rows");
        assert_eq!(h.rows, vec!["dense", "streaming @ sparsity=0.9"]);
        assert_eq!(h.cols, vec!["10%", "90%"]);
        assert_eq!(h.values, vec![vec![1.0, 1.0], vec![0.0, 0.5]]);
        let f = PplVsRecall::new(&b).expect("recalls");
        assert_eq!(f.lines.len(), 1, "dense has no recall");
        let &[(recall, dppl)] = f.lines[0].points.as_slice() else {
            panic!("one point: {:?}", f.lines[0].points)
        };
        assert!((recall - 200.0 / 3.0).abs() < 1e-9 && (dppl - 11.0 / 3.0).abs() < 1e-12);
    }
}
