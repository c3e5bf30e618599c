//! Heatmaps with a colour bar: sink mass (layer x head), IoU matrix (method x method),
//! frequency-chunk energy share (head x RoPE chunk).

use std::collections::BTreeMap;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{centered, font, ink_on, subtitle, title, viridis, Dr, Figure};
use crate::bundle::stats::mean_iou;
use crate::bundle::Bundle;

/// A matrix of values drawn as coloured cells (NaN: grey), rows from the top.
pub(crate) struct Heatmap {
    pub name: &'static str,
    pub title: String,
    pub values: Vec<Vec<f64>>,
    pub rows: Vec<String>,
    pub cols: Vec<String>,
    pub x_desc: String,
    pub y_desc: String,
    pub bar_desc: String,
    pub range: (f64, f64),
    pub annotate: bool,
    pub rotate_x: bool,
    pub size: (u32, u32),
}

fn text_px(s: &str, size: u32) -> u32 {
    (s.chars().count() as u32 * size * 6) / 10
}

impl Heatmap {
    fn color(&self, v: f64) -> RGBColor {
        if !v.is_finite() {
            return RGBColor(225, 225, 225);
        }
        let (lo, hi) = self.range;
        viridis((v - lo) / (hi - lo).max(1e-12))
    }
}

/// Draws a vertical colour bar for `range` in `area`, aligned with a plot of the given margins.
pub(crate) fn colour_bar<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    area: &DrawingArea<DB, Shift>,
    range: (f64, f64),
    desc: &str,
    top: u32,
    bottom: u32,
    map: &dyn Fn(f64) -> RGBColor,
) -> Dr<DB> {
    let (lo, hi) = (
        range.0,
        if range.1 > range.0 {
            range.1
        } else {
            range.0 + 1.0
        },
    );
    let mut chart = ChartBuilder::on(area)
        .margin_top(top)
        .margin_bottom(bottom)
        .margin_left(10)
        .margin_right(60)
        .right_y_label_area_size(80)
        .build_cartesian_2d(0f64..1f64, lo..hi)?;
    chart
        .configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.2}"))
        .label_style(font(18))
        .draw()?;
    let n = 120;
    chart.draw_series((0..n).map(|i| {
        let (a, b) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
        Rectangle::new(
            [(0.0, lo + (hi - lo) * a), (1.0, lo + (hi - lo) * b)],
            map((a + b) / 2.0).filled(),
        )
    }))?;
    let (bx, by) = area.get_base_pixel();
    let (bw, bh) = area.dim_in_pixel();
    root.draw(&Text::new(
        desc.to_string(),
        (bx + bw as i32 - 22, by + bh as i32 / 2),
        font(20)
            .transform(FontTransform::Rotate90)
            .pos(Pos::new(HPos::Center, VPos::Center)),
    ))?;
    Ok(())
}

impl Figure for Heatmap {
    fn name(&self) -> String {
        self.name.into()
    }
    fn size(&self) -> (u32, u32) {
        self.size
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Dr<DB> {
        let body = title(root, &self.title)?;
        let (w, _) = body.dim_in_pixel();
        let (main, bar) = body.split_horizontally(w.saturating_sub(200));
        let (nr, nc) = (self.rows.len(), self.cols.len());
        let longest = |v: &[String]| v.iter().map(|s| text_px(s, 18)).max().unwrap_or(0);
        let desc = if self.x_desc.is_empty() { 20 } else { 60 };
        let x_area = if self.rotate_x {
            longest(&self.cols) * 8 / 10 + desc
        } else {
            30 + desc
        };
        let y_area = longest(&self.rows) + 70;
        let mut chart = ChartBuilder::on(&main)
            .margin(20)
            .x_label_area_size(x_area)
            .y_label_area_size(y_area)
            .build_cartesian_2d(0f64..nc.max(1) as f64, 0f64..nr.max(1) as f64)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc(self.x_desc.as_str())
            .y_desc(self.y_desc.as_str())
            .axis_desc_style(font(22))
            .draw()?;
        for (r, row) in self.values.iter().enumerate() {
            let y = (nr - 1 - r) as f64;
            chart.draw_series(row.iter().enumerate().map(|(c, &v)| {
                Rectangle::new(
                    [(c as f64, y), (c as f64 + 1.0, y + 1.0)],
                    self.color(v).filled(),
                )
            }))?;
        }
        if self.annotate {
            let px = chart.backend_coord(&(1.0, 0.0)).0 - chart.backend_coord(&(0.0, 0.0)).0;
            let size = ((px as f64 * 0.28) as u32).clamp(11, 22);
            for (r, row) in self.values.iter().enumerate() {
                let y = (nr - 1 - r) as f64 + 0.5;
                for (c, &v) in row.iter().enumerate().filter(|(_, v)| v.is_finite()) {
                    let p = chart.backend_coord(&(c as f64 + 0.5, y));
                    root.draw(&Text::new(
                        format!("{v:.2}"),
                        p,
                        centered(size).color(&ink_on(self.color(v))),
                    ))?;
                }
            }
        }
        let stride = |n: usize| n.div_ceil(40).max(1);
        for r in (0..nr).step_by(stride(nr)) {
            let (x, y) = chart.backend_coord(&(0.0, (nr - 1 - r) as f64 + 0.5));
            root.draw(&Text::new(
                self.rows[r].clone(),
                (x - 8, y),
                font(18).pos(Pos::new(HPos::Right, VPos::Center)),
            ))?;
        }
        for c in (0..nc).step_by(stride(nc)) {
            let (x, y) = chart.backend_coord(&(c as f64 + 0.5, 0.0));
            let style = if self.rotate_x {
                font(18)
                    .transform(FontTransform::Rotate270)
                    .pos(Pos::new(HPos::Right, VPos::Center))
            } else {
                font(18).pos(Pos::new(HPos::Center, VPos::Top))
            };
            root.draw(&Text::new(self.cols[c].clone(), (x, y + 8), style))?;
        }
        let (lo, hi) = self.range;
        colour_bar(
            root,
            &bar,
            (lo, hi),
            &self.bar_desc,
            20,
            20 + x_area,
            &|t| viridis(t),
        )
    }
}

/// Sink mass per (layer, head), mean over inputs.
pub(crate) fn sink_mass(b: &Bundle) -> Heatmap {
    let mut acc: BTreeMap<(usize, usize), (f64, usize)> = BTreeMap::new();
    for h in &b.results.heads {
        let e = acc.entry((h.layer, h.head)).or_default();
        e.0 += h.sink_mass;
        e.1 += 1;
    }
    let layers: Vec<usize> = {
        let mut v: Vec<usize> = acc.keys().map(|k| k.0).collect();
        v.dedup();
        v
    };
    let n_heads = acc.keys().map(|k| k.1 + 1).max().unwrap_or(0);
    let values: Vec<Vec<f64>> = layers
        .iter()
        .map(|&l| {
            (0..n_heads)
                .map(|h| acc.get(&(l, h)).map_or(f64::NAN, |(s, c)| s / *c as f64))
                .collect()
        })
        .collect();
    let (nr, nc) = (layers.len(), n_heads);
    Heatmap {
        name: "sink_mass",
        title: format!("Sink mass per layer and head — {}", subtitle(b)),
        annotate: nr * nc <= 300,
        rows: layers.iter().map(|l| format!("L{l}")).collect(),
        cols: (0..n_heads).map(|h| h.to_string()).collect(),
        values,
        x_desc: "query head".into(),
        y_desc: "layer".into(),
        bar_desc: "sink mass (fraction of attention on the first 4 tokens)".into(),
        range: (0.0, 1.0),
        rotate_x: false,
        size: (1400, (300 + 40 * nr as u32).clamp(700, 1600)),
    }
}

/// Mean IoU between methods at one budget.
pub(crate) fn iou_matrix(b: &Bundle, budget: usize) -> Heatmap {
    let names: Vec<String> = b.manifest.methods.iter().map(|m| m.name.clone()).collect();
    let values = names
        .iter()
        .map(|x| {
            names
                .iter()
                .map(|y| mean_iou(&b.results.iou, budget, x, y).unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    let label = b
        .manifest
        .budgets
        .get(budget)
        .map_or_else(String::new, |x| x.label.clone());
    let n = names.len() as u32;
    Heatmap {
        name: "iou",
        title: format!("Selection overlap (IoU) at {label} — {}", subtitle(b)),
        values,
        rows: names.clone(),
        cols: names,
        x_desc: String::new(),
        y_desc: String::new(),
        bar_desc: "IoU of kept keys (0 = disjoint, 1 = identical)".into(),
        range: (0.0, 1.0),
        annotate: n <= 24,
        rotate_x: true,
        size: (
            (700 + 50 * n).clamp(1100, 2200),
            (600 + 50 * n).clamp(1000, 2100),
        ),
    }
}

/// Energy share of each RoPE frequency chunk per (layer, head), mean over inputs.
pub(crate) fn freq_energy(b: &Bundle) -> Heatmap {
    let mut acc: BTreeMap<(usize, usize), (Vec<f64>, usize)> = BTreeMap::new();
    for h in &b.results.heads {
        let e = acc
            .entry((h.layer, h.head))
            .or_insert_with(|| (vec![0.0; h.energy_share.len()], 0));
        for (s, &x) in e.0.iter_mut().zip(&h.energy_share) {
            *s += f64::from(x);
        }
        e.1 += 1;
    }
    let n_chunks = acc.values().map(|v| v.0.len()).max().unwrap_or(0);
    let values: Vec<Vec<f64>> = acc
        .values()
        .map(|(s, c)| {
            (0..n_chunks)
                .map(|i| s.get(i).map_or(f64::NAN, |x| x / *c as f64))
                .collect()
        })
        .collect();
    let hi = values
        .iter()
        .flatten()
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0, f64::max);
    let nr = acc.len() as u32;
    Heatmap {
        name: "freq_energy",
        title: format!("RoPE frequency-chunk energy per head — {}", subtitle(b)),
        rows: acc.keys().map(|(l, h)| format!("L{l}.h{h}")).collect(),
        cols: (0..n_chunks).map(|c| c.to_string()).collect(),
        values,
        x_desc: "RoPE frequency chunk (0 = highest frequency)".into(),
        y_desc: "layer.head".into(),
        bar_desc: "share of q·k energy".into(),
        range: (0.0, hi.max(1e-6)),
        annotate: false,
        rotate_x: false,
        size: (1600, (260 + 22 * nr).clamp(800, 2400)),
    }
}
