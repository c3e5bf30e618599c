//! Line figures: recall and information loss vs sparsity per method, information loss per layer.

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{font, method_style, subtitle, title, Dr, Figure};
use crate::bundle::stats::il_by_layer;
use crate::bundle::Bundle;
use crate::results::summarize;

/// One method's line.
pub(crate) struct Line {
    pub name: String,
    pub color: RGBColor,
    pub marker: usize,
    pub points: Vec<(f64, f64)>,
}

/// Marker outline `k` (circle, triangle, square, diamond) around the origin, radius `r` pixels.
fn shape(k: usize, r: f64) -> Vec<(i32, i32)> {
    let poly = |n: usize, phase: f64, r: f64| -> Vec<(i32, i32)> {
        (0..n)
            .map(|i| {
                let a = phase + std::f64::consts::TAU * i as f64 / n as f64;
                ((r * a.cos()).round() as i32, (r * a.sin()).round() as i32)
            })
            .collect()
    };
    match k % 4 {
        0 => poly(16, 0.0, r),
        1 => poly(3, -std::f64::consts::FRAC_PI_2, r * 1.3),
        2 => poly(4, std::f64::consts::FRAC_PI_4, r * 1.25),
        _ => poly(4, 0.0, r * 1.35),
    }
}

fn padded(lo: f64, hi: f64, frac: f64) -> (f64, f64) {
    let span = (hi - lo).abs().max(1e-9);
    (lo - span * frac, hi + span * frac)
}

/// Draws lines in `area` with labelled axes and a legend.
pub(crate) fn draw_lines<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    x_desc: &str,
    y_desc: &str,
    lines: &[Line],
    x: (f64, f64),
    y: (f64, f64),
    x_integer: bool,
) -> Dr<DB> {
    let mut chart = ChartBuilder::on(area)
        .caption(caption, font(24))
        .margin(20)
        .x_label_area_size(70)
        .y_label_area_size(100)
        .build_cartesian_2d(x.0..x.1, y.0..y.1)?;
    chart
        .configure_mesh()
        .light_line_style(RGBColor(246, 246, 246))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style(font(20))
        .axis_desc_style(font(22))
        .x_labels(8)
        .y_labels(8)
        .x_label_formatter(&|v| tick(*v, if x_integer { 100.0 } else { x.1 - x.0 }))
        .y_label_formatter(&|v| tick(*v, y.1 - y.0))
        .draw()?;
    for l in lines {
        let (c, k) = (l.color, l.marker);
        chart.draw_series(LineSeries::new(l.points.iter().copied(), c.stroke_width(3)))?;
        chart.draw_series(
            l.points
                .iter()
                .map(|&p| EmptyElement::at(p) + Polygon::new(shape(k, 7.0), c.filled())),
        )?;
    }
    Ok(())
}

/// A tick label with as many decimals as the axis span needs.
fn tick(v: f64, span: f64) -> String {
    let d = if span >= 8.0 {
        0
    } else if span >= 0.8 {
        1
    } else {
        2
    };
    format!("{v:.d$}")
}

/// The legend as a column of entries in `area` (outside the plots).
pub(crate) fn legend_column<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    lines: &[Line],
) -> Dr<DB> {
    let top = 90;
    for (j, l) in lines.iter().enumerate() {
        let y = top + 34 * j as i32;
        let (c, k) = (l.color, l.marker);
        area.draw(&PathElement::new(vec![(10, y), (50, y)], c.stroke_width(3)))?;
        area.draw(&(EmptyElement::at((30, y)) + Polygon::new(shape(k, 7.0), c.filled())))?;
        area.draw(&Text::new(
            l.name.clone(),
            (60, y),
            font(20).pos(Pos::new(HPos::Left, VPos::Center)),
        ))?;
    }
    Ok(())
}

fn legend_width(lines: &[Line]) -> u32 {
    let longest = lines
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(0) as u32;
    (longest * 12 + 90).clamp(160, 420)
}

fn method_lines(b: &Bundle, f: impl Fn(&crate::results::MethodSummary) -> (f64, f64)) -> Vec<Line> {
    let all = summarize(&b.results.metrics);
    b.manifest
        .methods
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let (color, marker) = method_style(i);
            let mut points: Vec<(f64, f64)> = all
                .iter()
                .filter(|s| s.name == m.name)
                .map(&f)
                .filter(|p| p.0.is_finite() && p.1.is_finite())
                .collect();
            points.sort_by(|a, b| a.0.total_cmp(&b.0));
            Line {
                name: m.name.clone(),
                color,
                marker,
                points,
            }
        })
        .filter(|l| !l.points.is_empty())
        .collect()
}

fn bounds(lines: &[Line], axis: usize) -> (f64, f64) {
    let v = lines.iter().flat_map(|l| {
        l.points
            .iter()
            .map(move |p| if axis == 0 { p.0 } else { p.1 })
    });
    let (lo, hi) = v.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
        (a.min(x), b.max(x))
    });
    if lo.is_finite() {
        (lo, hi)
    } else {
        (0.0, 1.0)
    }
}

/// Recall and information loss vs the sparsity each method reached, one line per method.
pub(crate) struct RecallVsSparsity {
    recall: Vec<Line>,
    loss: Vec<Line>,
    sub: String,
}

impl RecallVsSparsity {
    pub fn new(b: &Bundle) -> Self {
        Self {
            recall: method_lines(b, |s| (s.sparsity * 100.0, s.recall * 100.0)),
            loss: method_lines(b, |s| (s.sparsity * 100.0, s.info_loss * 100.0)),
            sub: subtitle(b),
        }
    }
}

impl Figure for RecallVsSparsity {
    fn name(&self) -> String {
        "recall_vs_sparsity".into()
    }
    fn size(&self) -> (u32, u32) {
        (2000, 800)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Dr<DB> {
        let body = title(
            root,
            &format!("Recall and information loss vs sparsity — {}", self.sub),
        )?;
        let (w, _) = body.dim_in_pixel();
        let lw = legend_width(&self.recall);
        let (plots, legend) = body.split_horizontally(w.saturating_sub(lw));
        let (left, right) = plots.split_horizontally((w.saturating_sub(lw)) / 2);
        let (x0, x1) = bounds(&self.recall, 0);
        let x = padded(x0, x1, 0.05);
        let x = (x.0.max(0.0), x.1.min(100.0));
        let (y0, _) = bounds(&self.recall, 1);
        let y = (padded(y0, 100.0, 0.05).0.max(0.0), 100.5);
        draw_lines(
            &left,
            "recall",
            "sparsity reached (%)",
            "recall (% of attention mass kept)",
            &self.recall,
            x,
            y,
            false,
        )?;
        let (_, l1) = bounds(&self.loss, 1);
        draw_lines(
            &right,
            "information loss",
            "sparsity reached (%)",
            "information loss (% of attention mass)",
            &self.loss,
            x,
            (0.0, (l1 * 1.1).max(1e-6)),
            false,
        )?;
        legend_column(&legend, &self.recall)
    }
}

/// Information loss per layer per method at one budget.
pub(crate) struct InfoLossPerLayer {
    lines: Vec<Line>,
    label: String,
    sub: String,
}

impl InfoLossPerLayer {
    pub fn new(b: &Bundle, budget: usize) -> Self {
        let lines = b
            .manifest
            .methods
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let (color, marker) = method_style(i);
                Line {
                    name: m.name.clone(),
                    color,
                    marker,
                    points: il_by_layer(&b.results.metrics, budget, &m.name)
                        .into_iter()
                        .map(|(l, v)| (l as f64, v * 100.0))
                        .collect(),
                }
            })
            .filter(|l| !l.points.is_empty())
            .collect();
        Self {
            lines,
            label: b
                .manifest
                .budgets
                .get(budget)
                .map_or_else(String::new, |x| x.label.clone()),
            sub: subtitle(b),
        }
    }
}

impl Figure for InfoLossPerLayer {
    fn name(&self) -> String {
        "info_loss_per_layer".into()
    }
    fn size(&self) -> (u32, u32) {
        (1600, 850)
    }
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Dr<DB> {
        let body = title(
            root,
            &format!(
                "Information loss per layer at {} — {}",
                self.label, self.sub
            ),
        )?;
        let (w, _) = body.dim_in_pixel();
        let (plot, legend) = body.split_horizontally(w.saturating_sub(legend_width(&self.lines)));
        let (x0, x1) = bounds(&self.lines, 0);
        let x = (x0 - 0.5, x1 + 0.5);
        let (_, y1) = bounds(&self.lines, 1);
        draw_lines(
            &plot,
            "",
            "layer",
            "information loss (% of attention mass)",
            &self.lines,
            x,
            (0.0, (y1 * 1.15).max(1e-6)),
            true,
        )?;
        legend_column(&legend, &self.lines)
    }
}
