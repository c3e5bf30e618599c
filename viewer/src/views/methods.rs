//! Methods: recall and information loss per method (bars, with the sparsity each reached), recall
//! vs sparsity over the run's budgets, recall vs the swept parameter for sweeps
//! (`phsa[lambda=0.25]`), and the IoU matrix of the methods' selections.

use egui::{Align2, Color32, FontId, Rect, Sense, Ui, Vec2};
use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints, Points};

use super::{notice, pick, Focus, View};
use crate::colormap::{fmt_value, viridis};
use crate::data::RunData;

pub const NAME: &str = "Methods";

/// The methods view.
#[derive(Debug, Default)]
pub struct Methods {
    /// Restrict to the focused layer (else all layers).
    one_layer: bool,
}

/// Colour of method `i` in plots.
pub fn method_color(i: usize) -> Color32 {
    const C: [Color32; 8] = [
        Color32::from_rgb(70, 150, 230),
        Color32::from_rgb(240, 150, 40),
        Color32::from_rgb(90, 180, 90),
        Color32::from_rgb(220, 80, 80),
        Color32::from_rgb(160, 110, 210),
        Color32::from_rgb(140, 100, 80),
        Color32::from_rgb(230, 120, 190),
        Color32::from_rgb(130, 130, 130),
    ];
    C[i % C.len()]
}

/// `phsa[lambda=0.25]` -> (`phsa`, `lambda`, 0.25).
pub fn sweep_member(label: &str) -> Option<(&str, &str, f64)> {
    let (base, rest) = label.split_once('[')?;
    let inner = rest.strip_suffix(']')?;
    let (param, value) = inner.split_once('=')?;
    Some((base, param, value.parse().ok()?))
}

/// Mean IoU of two methods at a budget (over layers or one layer, and KV heads).
fn iou(
    run: &RunData,
    input: usize,
    budget: usize,
    layer: Option<usize>,
    a: &str,
    b: &str,
) -> Option<f64> {
    if a == b {
        return Some(1.0);
    }
    let v: Vec<f64> = run
        .iou
        .iter()
        .filter(|r| {
            r.input == input
                && r.budget == budget
                && layer.is_none_or(|l| l == r.layer)
                && ((r.method_a == a && r.method_b == b) || (r.method_a == b && r.method_b == a))
        })
        .map(|r| r.iou)
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl View for Methods {
    fn ui(&mut self, ui: &mut Ui, run: &RunData, focus: &mut Focus) {
        ui.horizontal_wrapped(|ui| {
            pick::input(ui, run, focus);
            pick::budget(ui, run, &mut focus.budget);
            ui.checkbox(&mut self.one_layer, format!("only layer {}", focus.layer));
            if self.one_layer {
                pick::head(ui, run, focus);
            }
        });
        if run.methods.is_empty() {
            notice(ui, "This bundle has no metric rows.");
            return;
        }
        let layer = self.one_layer.then_some(focus.layer);
        let b = focus.budget;
        let rows: Vec<(usize, f64, f64, f64)> = (0..run.methods.len())
            .filter_map(|m| {
                let recall = run.mean_over(m, b, layer, |r| r.recall)?;
                let il = run.mean_over(m, b, layer, |r| r.info_loss)?;
                let sp = run.mean_over(m, b, layer, |r| r.sparsity)?;
                Some((m, recall, il, sp))
            })
            .collect();
        let half = (ui.available_height() * 0.45).max(150.0);
        ui.columns(2, |cols| {
            let ui = &mut cols[0];
            ui.strong(format!(
                "recall and information loss at {}",
                run.budgets.get(b).map_or("-", String::as_str)
            ));
            let names: Vec<String> = rows
                .iter()
                .map(|&(m, _, _, sp)| format!("{}\nsparsity {:.3}", run.methods[m], sp))
                .collect();
            Plot::new("method-bars")
                .height(half)
                .legend(Legend::default())
                .include_y(0.0)
                .include_y(1.0)
                .allow_scroll(false)
                .x_axis_formatter(move |mark, _| {
                    let i = mark.value.round();
                    if (mark.value - i).abs() < 1e-6 && i >= 0.0 {
                        names.get(i as usize).cloned().unwrap_or_default()
                    } else {
                        String::new()
                    }
                })
                .show(ui, |p| {
                    let rec: Vec<Bar> = rows
                        .iter()
                        .enumerate()
                        .map(|(i, &(_, r, _, _))| Bar::new(i as f64 - 0.2, r).width(0.38))
                        .collect();
                    let il: Vec<Bar> = rows
                        .iter()
                        .enumerate()
                        .map(|(i, &(_, _, l, _))| Bar::new(i as f64 + 0.2, l).width(0.38))
                        .collect();
                    p.bar_chart(BarChart::new("recall", rec).color(method_color(0)));
                    p.bar_chart(BarChart::new("information loss", il).color(method_color(3)));
                });
            let ui = &mut cols[1];
            ui.strong("recall vs sparsity reached (one point per budget)");
            Plot::new("recall-vs-sparsity")
                .height(half)
                .legend(Legend::default())
                .x_axis_label("sparsity reached")
                .y_axis_label("recall")
                .allow_scroll(false)
                .show(ui, |p| {
                    for (m, name) in run.methods.iter().enumerate() {
                        let mut pts: Vec<[f64; 2]> = (0..run.budgets.len())
                            .filter_map(|bb| {
                                Some([
                                    run.mean_over(m, bb, layer, |r| r.sparsity)?,
                                    run.mean_over(m, bb, layer, |r| r.recall)?,
                                ])
                            })
                            .collect();
                        pts.sort_by(|x, y| x[0].total_cmp(&y[0]));
                        let c = method_color(m);
                        p.line(Line::new(name.clone(), PlotPoints::from(pts.clone())).color(c));
                        p.points(
                            Points::new(name.clone(), PlotPoints::from(pts))
                                .color(c)
                                .radius(3.0),
                        );
                    }
                });
        });
        // Sweeps: recall vs the swept parameter at this budget.
        let mut families: Vec<(String, String, Vec<[f64; 2]>)> = Vec::new();
        for (m, label) in run.methods.iter().enumerate() {
            if let Some((base, param, v)) = sweep_member(label) {
                if let Some(r) = run.mean_over(m, b, layer, |r| r.recall) {
                    match families.iter_mut().find(|f| f.0 == base && f.1 == param) {
                        Some(f) => f.2.push([v, r]),
                        None => families.push((base.into(), param.into(), vec![[v, r]])),
                    }
                }
            }
        }
        ui.columns(2, |cols| {
            let ui = &mut cols[0];
            ui.strong("IoU of the selections (mean over layers and KV heads)");
            self.iou_matrix(ui, run, focus.input, b, layer);
            let ui = &mut cols[1];
            if families.is_empty() {
                ui.strong("sweeps");
                ui.weak("No sweep in this run (simulate --sweep METHOD.PARAM=v1,v2,...).");
            } else {
                ui.strong("recall vs swept parameter");
                Plot::new("sweeps")
                    .height(ui.available_height().max(140.0))
                    .legend(Legend::default())
                    .y_axis_label("recall")
                    .allow_scroll(false)
                    .show(ui, |p| {
                        for (i, (base, param, mut pts)) in families.into_iter().enumerate() {
                            pts.sort_by(|x, y| x[0].total_cmp(&y[0]));
                            let name = format!("{base} vs {param}");
                            p.line(
                                Line::new(name.clone(), PlotPoints::from(pts.clone()))
                                    .color(method_color(i)),
                            );
                            p.points(
                                Points::new(name, PlotPoints::from(pts))
                                    .color(method_color(i))
                                    .radius(3.0),
                            );
                        }
                    });
            }
        });
    }
}

impl Methods {
    fn iou_matrix(
        &self,
        ui: &mut Ui,
        run: &RunData,
        input: usize,
        budget: usize,
        layer: Option<usize>,
    ) {
        let m = run.methods.len();
        if run.iou.is_empty() {
            ui.weak("The bundle has no IoU rows.");
            return;
        }
        let label_w = 110.0;
        let avail = ui.available_size();
        let cell = ((avail.x - label_w) / m as f32)
            .min((avail.y - 20.0) / m as f32)
            .clamp(14.0, 64.0);
        let (rect, _) = ui.allocate_exact_size(
            Vec2::new(label_w + cell * m as f32, 14.0 + cell * m as f32),
            Sense::hover(),
        );
        let painter = ui.painter_at(rect);
        let font = FontId::proportional((cell * 0.28).clamp(8.0, 12.0));
        let text = ui.visuals().text_color();
        let origin = rect.min + Vec2::new(label_w, 14.0);
        for i in 0..m {
            painter.text(
                origin + Vec2::new(-4.0, (i as f32 + 0.5) * cell),
                Align2::RIGHT_CENTER,
                &run.methods[i],
                font.clone(),
                text,
            );
            painter.text(
                origin + Vec2::new((i as f32 + 0.5) * cell, -2.0),
                Align2::CENTER_BOTTOM,
                format!("{i}"),
                font.clone(),
                text,
            );
            for j in 0..m {
                let r = Rect::from_min_size(
                    origin + Vec2::new(j as f32 * cell, i as f32 * cell),
                    Vec2::splat(cell),
                )
                .shrink(0.5);
                let v = iou(run, input, budget, layer, &run.methods[i], &run.methods[j]);
                let fill = v.map_or(ui.visuals().faint_bg_color, |v| viridis(v as f32));
                painter.rect_filled(r, 0.0, fill);
                if let Some(v) = v {
                    if cell >= 28.0 {
                        painter.text(
                            r.center(),
                            Align2::CENTER_CENTER,
                            fmt_value(v),
                            font.clone(),
                            if v > 0.6 {
                                Color32::BLACK
                            } else {
                                Color32::WHITE
                            },
                        );
                    }
                }
                let resp = ui.interact(r, ui.scope_id().with(("iou", i, j)), Sense::hover());
                resp.on_hover_text(format!(
                    "IoU {} vs {}: {}",
                    run.methods[i],
                    run.methods[j],
                    v.map_or("-".into(), fmt_value)
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_labels_parse() {
        assert_eq!(
            sweep_member("phsa[lambda=0.25]"),
            Some(("phsa", "lambda", 0.25))
        );
        assert_eq!(sweep_member("phsa"), None);
    }
}
