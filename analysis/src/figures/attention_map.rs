//! The pooled attention map of one head (log scale), and the same map in grey with two methods'
//! kept blocks overlaid: where only the first keeps a block, where only the second does, and
//! where both do.

use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::heatmaps::colour_bar;
use super::{font, subtitle, title, viridis, Dr, Figure, FigureOptions, OKABE_ITO};
use crate::bundle::Bundle;

/// The chart of one map panel (token coordinates, y downwards).
type MapChart<'a, DB> = ChartContext<'a, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// Cells per side at most (larger maps are pooled by an integer factor).
const MAX_CELLS: usize = 160;

pub(crate) struct AttentionMap {
    n_tokens: usize,
    /// Tokens per cell.
    cell: usize,
    nb: usize,
    /// log10 of the mean block mass, row-major `[query cell, key cell]`; NaN where zero.
    log: Vec<f64>,
    range: (f64, f64),
    /// Kept fraction of each cell by the two methods (0: not kept).
    kept: Option<(Vec<f32>, Vec<f32>)>,
    names: (String, String),
    layer: usize,
    head: usize,
    budget_label: String,
    sub: String,
}

/// The two methods compared: `o.compare`, else phsa and infllm-v2, else the first two methods.
pub(super) fn pick_compare(b: &Bundle, o: &FigureOptions) -> Option<(String, String)> {
    if let Some(c) = &o.compare {
        return Some(c.clone());
    }
    let has = |m: &str| b.manifest.methods.iter().any(|x| x.name == m);
    if has("phsa") && has("infllm-v2") {
        return Some(("phsa".into(), "infllm-v2".into()));
    }
    let m = &b.manifest.methods;
    (m.len() >= 2).then(|| (m[0].name.clone(), m[1].name.clone()))
}

impl AttentionMap {
    pub fn new(
        b: &Bundle,
        o: &FigureOptions,
        default_budget: usize,
    ) -> Result<(Self, Vec<String>), String> {
        let mut notes = Vec::new();
        let compare = pick_compare(b, o);
        let sel_budgets = &b.manifest.selection_budgets;
        let budget = match o.budget {
            Some(x) if sel_budgets.contains(&x) => x,
            Some(x) => {
                notes.push(format!(
                    "the run saved selections of budgets {sel_budgets:?}, not {x} (simulate \
                     --selections); the attention map shows budget {}",
                    sel_budgets.first().map_or("none".into(), |v| v.to_string())
                ));
                sel_budgets.first().copied().unwrap_or(x)
            }
            None if sel_budgets.contains(&default_budget) => default_budget,
            None => sel_budgets.first().copied().unwrap_or(default_budget),
        };
        let (layer, head) = match o.head {
            Some(h) => h,
            None => {
                default_head(b, o.input, budget, compare.as_ref()).ok_or("no head statistics")?
            }
        };
        let row = b
            .results
            .heads
            .iter()
            .find(|h| h.input == o.input && h.layer == layer && h.head == head)
            .ok_or_else(|| {
                format!(
                    "no pooled map of input {}, layer {layer}, head {head}",
                    o.input
                )
            })?;
        let n0 = row.n_blocks;
        if n0 == 0 || row.pooled.len() != n0 * n0 {
            return Err(format!(
                "the pooled map of layer {layer}, head {head} is empty"
            ));
        }
        let f = n0.div_ceil(MAX_CELLS).max(1);
        let nb = n0.div_ceil(f);
        let mut sum = vec![0.0f64; nb * nb];
        let mut cnt = vec![0usize; nb * nb];
        for q in 0..n0 {
            for k in 0..n0 {
                let i = (q / f) * nb + k / f;
                sum[i] += f64::from(row.pooled[q * n0 + k]);
                cnt[i] += 1;
            }
        }
        let log: Vec<f64> = sum
            .iter()
            .zip(&cnt)
            .map(|(&s, &c)| {
                let v = s / c.max(1) as f64;
                if v > 0.0 {
                    v.log10()
                } else {
                    f64::NAN
                }
            })
            .collect();
        let hi = log
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(f64::NEG_INFINITY, f64::max);
        let lo = log
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .fold(f64::INFINITY, f64::min);
        let range = if hi.is_finite() {
            (lo.max(hi - 5.0), hi)
        } else {
            (-5.0, 0.0)
        };
        let kept_of = |m: &str| -> Option<Vec<f32>> {
            let s = b.results.selections.iter().find(|s| {
                s.input == o.input
                    && s.layer == layer
                    && s.head == head
                    && s.method == m
                    && s.budget == budget
            })?;
            // Selections are at the capture block; the map may be at a multiple of it.
            let g = (b.manifest.map_block() / b.manifest.capture_block.max(1)).max(1);
            let mut k = vec![0f32; nb * nb];
            for q in 0..s.n_query_blocks().min(n0 * g) {
                for (&kb, &fr) in s.blocks_of(q).iter().zip(s.fraction_of(q)) {
                    let kb = kb as usize / g;
                    if kb < n0 {
                        let c = &mut k[(q / g / f) * nb + kb / f];
                        *c = c.max(fr);
                    }
                }
            }
            Some(k)
        };
        let names = compare.clone().unwrap_or_default();
        let kept = match &compare {
            Some((a, c)) => match (kept_of(a), kept_of(c)) {
                (Some(x), Some(y)) => Some((x, y)),
                _ => {
                    notes.push(format!(
                        "no saved selections of {a} and {c} at budget {budget}: the attention map \
                         has no overlay"
                    ));
                    None
                }
            },
            None => None,
        };
        let block = b.manifest.map_block();
        Ok((
            Self {
                n_tokens: b.manifest.n_tokens.max(n0 * block / 2),
                cell: block * f,
                nb,
                log,
                range,
                kept,
                names,
                layer,
                head,
                budget_label: b
                    .manifest
                    .budgets
                    .get(budget)
                    .map_or_else(String::new, |x| x.label.clone()),
                sub: subtitle(b),
            },
            notes,
        ))
    }

    fn draw_map<DB: DrawingBackend>(
        &self,
        area: &DrawingArea<DB, Shift>,
        caption: &str,
        grey: bool,
    ) -> std::result::Result<MapChart<'_, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
        let n = self.n_tokens as f64;
        let mut chart = ChartBuilder::on(area)
            .caption(caption, font(24))
            .margin(20)
            .x_label_area_size(70)
            .y_label_area_size(100)
            .build_cartesian_2d(0f64..n, n..0f64)?;
        let desc_x = format!("key position (tokens; blocks of {})", self.cell);
        let desc_y = format!("query position (tokens; blocks of {})", self.cell);
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc(desc_x)
            .y_desc(desc_y)
            .label_style(font(18))
            .axis_desc_style(font(21))
            .x_labels(6)
            .y_labels(6)
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v:.0}"))
            .draw()?;
        let (lo, hi) = self.range;
        let c = self.cell as f64;
        chart.draw_series((0..self.nb * self.nb).filter_map(|i| {
            let v = self.log[i];
            let t = (v - lo) / (hi - lo).max(1e-12);
            let colour = if !v.is_finite() {
                return None;
            } else if grey {
                let g = (235.0 - 185.0 * t.clamp(0.0, 1.0)) as u8;
                RGBColor(g, g, g)
            } else {
                viridis(t)
            };
            let (q, k) = ((i / self.nb) as f64, (i % self.nb) as f64);
            Some(Rectangle::new(
                [
                    (k * c, q * c),
                    (((k + 1.0) * c).min(n), ((q + 1.0) * c).min(n)),
                ],
                colour.filled(),
            ))
        }))?;
        Ok(chart)
    }
}

/// The head where the two methods' information loss differs most (else the last layer's head 0).
fn default_head(
    b: &Bundle,
    input: usize,
    budget: usize,
    compare: Option<&(String, String)>,
) -> Option<(usize, usize)> {
    if let Some((x, y)) = compare {
        let il = |m: &str, l: usize, h: usize| {
            b.results
                .metrics
                .iter()
                .find(|r| {
                    r.input == input
                        && r.budget == budget
                        && r.method == m
                        && r.layer == l
                        && r.head == h
                })
                .map(|r| r.info_loss)
        };
        let best = b
            .results
            .heads
            .iter()
            .filter(|h| h.input == input)
            .filter_map(|h| {
                Some((
                    (il(x, h.layer, h.head)? - il(y, h.layer, h.head)?).abs(),
                    (h.layer, h.head),
                ))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        if let Some((_, lh)) = best {
            return Some(lh);
        }
    }
    let last = b
        .results
        .heads
        .iter()
        .filter(|h| h.input == input)
        .map(|h| h.layer)
        .max()?;
    Some((last, 0))
}

impl Figure for AttentionMap {
    fn name(&self) -> String {
        "attention_map".into()
    }
    fn size(&self) -> (u32, u32) {
        (2000, 1000)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Dr<DB> {
        let body = title(
            root,
            &format!(
                "Pooled attention, layer {} head {} — {}",
                self.layer, self.head, self.sub
            ),
        )?;
        let (left, right) = body.split_horizontally(1000);
        let (map, bar) = left.split_horizontally(830);
        self.draw_map(&map, "attention mass per block (log10)", false)?;
        colour_bar(
            root,
            &bar,
            self.range,
            "log10 mean attention mass per block",
            20 + 34,
            20 + 70,
            &|t| viridis(t),
        )?;
        let Some((ka, kb)) = &self.kept else {
            self.draw_map(&right, "no saved selections to overlay", true)?;
            return Ok(());
        };
        let caption = format!(
            "kept blocks at {}: {} vs {}",
            self.budget_label, self.names.0, self.names.1
        );
        let mut chart = self.draw_map(&right, &caption, true)?;
        let (a_only, b_only, both) = (OKABE_ITO[0], OKABE_ITO[1], OKABE_ITO[2]);
        let (c, n) = (self.cell as f64, self.n_tokens as f64);
        chart.draw_series((0..self.nb * self.nb).filter_map(|i| {
            let (fa, fb) = (ka[i], kb[i]);
            let colour = match (fa > 0.0, fb > 0.0) {
                (true, true) => both,
                (true, false) => a_only,
                (false, true) => b_only,
                _ => return None,
            };
            // Shade: the share of the block's causal (query, key) pairs kept.
            let alpha = 0.22 + 0.6 * f64::from(fa.max(fb)).clamp(0.0, 1.0);
            let (q, k) = ((i / self.nb) as f64, (i % self.nb) as f64);
            Some(Rectangle::new(
                [
                    (k * c, q * c),
                    (((k + 1.0) * c).min(n), ((q + 1.0) * c).min(n)),
                ],
                colour.mix(alpha).filled(),
            ))
        }))?;
        // Legend in the empty (non-causal) upper-right triangle.
        let items = [
            (a_only, format!("{} only", self.names.0)),
            (b_only, format!("{} only", self.names.1)),
            (both, "both".to_string()),
        ];
        let (x0, y0) = chart.backend_coord(&(n * 0.55, n * 0.04));
        root.draw(&Text::new(
            "shade: share of the block's pairs kept".to_string(),
            (x0, y0 + 34 * 3 + 6),
            font(17).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
        for (j, (colour, label)) in items.iter().enumerate() {
            let y = y0 + 34 * j as i32;
            root.draw(&Rectangle::new(
                [(x0, y), (x0 + 24, y + 24)],
                colour.mix(0.8).filled(),
            ))?;
            root.draw(&Text::new(
                label.clone(),
                (x0 + 34, y + 12),
                font(20).pos(Pos::new(HPos::Left, VPos::Center)),
            ))?;
        }
        Ok(())
    }
}
