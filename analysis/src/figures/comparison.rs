//! Figures of one method against another and of parameter sweeps: the relative
//! information-loss reduction of A over B at every budget (with its bootstrap 95% interval, as
//! `attnscope report` prints it) and per layer, and a method's information loss against a swept
//! parameter (`--sweep phsa.lambda=0,0.25,...`), one line per budget.

use std::collections::{BTreeMap, BTreeSet};

use plotters::coord::Shift;
use plotters::prelude::*;

use super::lines::{draw_lines, legend_column, Line};
use super::{method_style, subtitle, title, Dr, Figure};
use crate::bundle::stats::{il_by_layer, relative_reduction, Unit};
use crate::bundle::Bundle;
use crate::metrics::relative_il_reduction;
use crate::results::summarize;

/// Bootstrap of the intervals drawn: the report's defaults (2000 resamples by head, seed 0).
const RESAMPLES: usize = 2000;

/// One budget's point: sparsity reached (mean of A and B, %), reduction and its interval (%).
struct Point {
    sparsity: f64,
    reduction: f64,
    ci: Option<(f64, f64)>,
}

/// The relative information-loss reduction of A over B, `(IL_B - IL_A) / IL_B`, against the
/// sparsity reached (every budget) and per layer (one budget).
pub(crate) struct Reduction {
    pair: (String, String),
    points: Vec<Point>,
    per_layer: Vec<Line>,
    label: String,
    sub: String,
}

impl Reduction {
    /// `None` when the run lacks either method.
    pub fn new(b: &Bundle, (a, bm): (&str, &str), budget: usize) -> Option<Self> {
        let m = &b.manifest;
        let all = summarize(&b.results.metrics);
        let sparsity = |name: &str, budget: usize| {
            all.iter()
                .find(|s| s.name == name && s.budget == budget)
                .map(|s| s.sparsity)
        };
        let points: Vec<Point> = m
            .budgets
            .iter()
            .filter_map(|bi| {
                let r = relative_reduction(
                    &b.results.metrics,
                    bi.index,
                    a,
                    bm,
                    Unit::Head,
                    RESAMPLES,
                    0,
                    m.scored_queries(),
                    m.capture_block,
                )?;
                let s = (sparsity(a, bi.index)? + sparsity(bm, bi.index)?) / 2.0;
                Some(Point {
                    sparsity: s * 100.0,
                    reduction: r.reduction * 100.0,
                    ci: r.ci95.map(|(lo, hi)| (lo * 100.0, hi * 100.0)),
                })
            })
            .filter(|p| p.sparsity.is_finite() && p.reduction.is_finite())
            .collect();
        if points.is_empty() {
            return None;
        }
        let il_a = il_by_layer(&b.results.metrics, budget, a);
        let il_b: BTreeMap<usize, f64> = il_by_layer(&b.results.metrics, budget, bm)
            .into_iter()
            .collect();
        let (color, marker) = method_style(0);
        let per_layer = vec![Line {
            name: format!("{a} over {bm}"),
            color,
            marker,
            points: il_a
                .iter()
                .filter_map(|&(l, x)| {
                    let y = il_b.get(&l)?;
                    Some((l as f64, relative_il_reduction(x, *y) * 100.0))
                })
                .filter(|p| p.1.is_finite())
                .collect(),
        }];
        Some(Self {
            pair: (a.to_string(), bm.to_string()),
            points,
            per_layer,
            label: m
                .budgets
                .get(budget)
                .map_or_else(String::new, |x| x.label.clone()),
            sub: subtitle(b),
        })
    }
}

/// Lower and upper ends of `values`, widened to hold zero, with a margin.
fn span_with_zero(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values.fold((0.0f64, 0.0f64), |(a, b), x| (a.min(x), b.max(x)));
    let pad = ((hi - lo) * 0.1).max(0.5);
    (lo - pad, hi + pad)
}

impl Figure for Reduction {
    fn name(&self) -> String {
        "reduction".into()
    }
    fn size(&self) -> (u32, u32) {
        (2000, 800)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Dr<DB> {
        let (a, b) = &self.pair;
        let body = title(
            root,
            &format!(
                "Relative information-loss reduction of {a} over {b} — {}",
                self.sub
            ),
        )?;
        let (w, _) = body.dim_in_pixel();
        let (left, right) = body.split_horizontally(w / 2);
        self.draw_budgets(&left)?;
        let (x0, x1) = self
            .per_layer
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.0))
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
                (a.min(x), b.max(x))
            });
        if x0.is_finite() {
            let (pw, _) = right.dim_in_pixel();
            let (plot, legend) = right.split_horizontally(pw.saturating_sub(300));
            let y = span_with_zero(
                self.per_layer
                    .iter()
                    .flat_map(|l| l.points.iter().map(|p| p.1)),
            );
            draw_lines(
                &plot,
                &format!("per layer at {}", self.label),
                "layer",
                "reduction (% of B's information loss)",
                &self.per_layer,
                (x0 - 0.5, x1 + 0.5),
                y,
                true,
            )?;
            legend_column(&legend, &self.per_layer)?;
        }
        Ok(())
    }
}

impl Reduction {
    /// Reduction against sparsity, one point per budget with its 95% interval as a whisker.
    fn draw_budgets<DB: DrawingBackend>(&self, area: &DrawingArea<DB, Shift>) -> Dr<DB> {
        let xs = self.points.iter().map(|p| p.sparsity);
        let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
        let pad = ((x1 - x0) * 0.08).max(0.5);
        let x = (x0 - pad, (x1 + pad).min(100.0));
        let ends = self.points.iter().flat_map(|p| {
            let (lo, hi) = p.ci.unwrap_or((p.reduction, p.reduction));
            [p.reduction, lo, hi]
        });
        let y = span_with_zero(ends);
        let color = method_style(0).0;
        let points: Vec<(f64, f64)> = self
            .points
            .iter()
            .map(|p| (p.sparsity, p.reduction))
            .collect();
        let mut chart = ChartBuilder::on(area)
            .margin(20)
            .x_label_area_size(70)
            .y_label_area_size(100)
            .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
        chart
            .configure_mesh()
            .light_line_style(RGBColor(246, 246, 246))
            .bold_line_style(RGBColor(215, 215, 215))
            .x_desc("sparsity reached (%)")
            .y_desc("reduction (% of B's information loss)")
            .label_style(super::font(20))
            .axis_desc_style(super::font(22))
            .draw()?;
        chart.draw_series(LineSeries::new(
            [(x.0, 0.0), (x.1, 0.0)],
            RGBColor(120, 120, 120).stroke_width(2),
        ))?;
        let cap = (x.1 - x.0) * 0.008;
        for p in &self.points {
            if let Some((lo, hi)) = p.ci {
                let s = color.stroke_width(2);
                chart.draw_series(LineSeries::new([(p.sparsity, lo), (p.sparsity, hi)], s))?;
                for v in [lo, hi] {
                    chart.draw_series(LineSeries::new(
                        [(p.sparsity - cap, v), (p.sparsity + cap, v)],
                        s,
                    ))?;
                }
            }
        }
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            color.stroke_width(3),
        ))?;
        chart.draw_series(points.iter().map(|&p| Circle::new(p, 7, color.filled())))?;
        Ok(())
    }
}

/// A method's information loss against one swept parameter, one line per budget: every run of
/// the method whose label is `base[param=value]`, with the base run itself at its own value.
pub(crate) struct Sweep {
    base: String,
    param: String,
    lines: Vec<Line>,
    sub: String,
}

impl Sweep {
    /// Every (method, parameter) swept in the run, in label order.
    pub fn all(b: &Bundle) -> Vec<Self> {
        let mut swept: BTreeSet<(String, String)> = BTreeSet::new();
        for m in &b.manifest.methods {
            if let Some((base, param, _)) = swept_label(&m.name) {
                swept.insert((base.to_string(), param.to_string()));
            }
        }
        swept
            .into_iter()
            .filter_map(|(base, param)| Self::new(b, &base, &param))
            .collect()
    }

    fn new(b: &Bundle, base: &str, param: &str) -> Option<Self> {
        let runs: Vec<(String, f64)> = b
            .manifest
            .methods
            .iter()
            .filter_map(|m| match swept_label(&m.name) {
                Some((mb, p, v)) if mb == base && p == param => Some((m.name.clone(), v)),
                None if m.name == base => Some((m.name.clone(), *m.params.get(param)?)),
                _ => None,
            })
            .collect();
        if runs.len() < 2 {
            return None;
        }
        let all = summarize(&b.results.metrics);
        let lines: Vec<Line> = b
            .manifest
            .budgets
            .iter()
            .enumerate()
            .map(|(i, bi)| {
                let (color, marker) = method_style(i);
                let mut points: Vec<(f64, f64)> = runs
                    .iter()
                    .filter_map(|(name, v)| {
                        let s = all
                            .iter()
                            .find(|s| &s.name == name && s.budget == bi.index)?;
                        Some((*v, s.info_loss * 100.0))
                    })
                    .filter(|p| p.1.is_finite())
                    .collect();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                points.dedup_by(|a, b| a.0 == b.0);
                Line {
                    name: bi.label.clone(),
                    color,
                    marker,
                    points,
                }
            })
            .filter(|l| l.points.len() >= 2)
            .collect();
        (!lines.is_empty()).then(|| Self {
            base: base.to_string(),
            param: param.to_string(),
            lines,
            sub: subtitle(b),
        })
    }

    /// The file stem: `sweep_<method>_<param>` with characters other than letters, digits and
    /// `_` as `_`.
    pub fn stem(&self) -> String {
        let clean = |s: &str| {
            s.chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        };
        format!("sweep_{}_{}", clean(&self.base), clean(&self.param))
    }
}

/// `base[param=value]` as its parts.
fn swept_label(label: &str) -> Option<(&str, &str, f64)> {
    let inner = label.strip_suffix(']')?;
    let (base, rest) = inner.split_once('[')?;
    let (param, value) = rest.split_once('=')?;
    Some((base, param, value.parse().ok()?))
}

impl Figure for Sweep {
    fn name(&self) -> String {
        self.stem()
    }
    fn size(&self) -> (u32, u32) {
        (1600, 850)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Dr<DB> {
        let body = title(
            root,
            &format!(
                "{} information loss against {} — {}",
                self.base, self.param, self.sub
            ),
        )?;
        let (w, _) = body.dim_in_pixel();
        let (plot, legend) = body.split_horizontally(w.saturating_sub(300));
        let pts = || self.lines.iter().flat_map(|l| l.points.iter());
        let (x0, x1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.0), b.max(p.0))
        });
        let (y0, y1) = pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
            (a.min(p.1), b.max(p.1))
        });
        let xpad = ((x1 - x0) * 0.05).max(1e-3);
        let ypad = ((y1 - y0) * 0.15).max(0.05);
        draw_lines(
            &plot,
            "",
            &self.param,
            "information loss (% of attention mass)",
            &self.lines,
            (x0 - xpad, x1 + xpad),
            ((y0 - ypad).max(0.0), y1 + ypad),
            false,
        )?;
        legend_column(&legend, &self.lines)
    }
}

#[cfg(test)]
mod tests {
    use super::swept_label;

    #[test]
    fn swept_labels_split_into_method_parameter_and_value() {
        assert_eq!(
            swept_label("phsa[lambda=0.25]"),
            Some(("phsa", "lambda", 0.25))
        );
        assert_eq!(
            swept_label("infllm-v2[coarse_lse=1]"),
            Some(("infllm-v2", "coarse_lse", 1.0))
        );
        assert_eq!(swept_label("phsa"), None);
        assert_eq!(swept_label("phsa[block=16,local_blocks=1]"), None);
    }
}
