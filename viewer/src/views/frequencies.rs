//! Frequencies: the share of q.k energy of each rotary frequency chunk of the selected
//! head (index 0 = highest frequency), against the layer's mean, and each chunk's top-k
//! agreement with the full scores.

use egui::{Color32, Ui};
use egui_plot::{Bar, BarChart, Legend, Line, Plot, PlotPoints};

use super::{notice, pick, Focus, View};
use crate::data::RunData;

pub const NAME: &str = "Frequencies";

/// The frequencies view.
#[derive(Debug, Default)]
pub struct Frequencies;

/// Mean energy share per chunk over the heads of a layer.
fn layer_mean(run: &RunData, input: usize, layer: usize) -> Vec<f64> {
    let mut acc: Vec<f64> = Vec::new();
    let mut count = 0usize;
    for h in 0..run.n_heads {
        if let Some(x) = run.head(input, layer, h) {
            if acc.len() < x.energy_share.len() {
                acc.resize(x.energy_share.len(), 0.0);
            }
            for (a, &e) in acc.iter_mut().zip(&x.energy_share) {
                *a += f64::from(e);
            }
            count += 1;
        }
    }
    acc.iter().map(|a| a / count.max(1) as f64).collect()
}

impl View for Frequencies {
    fn ui(&mut self, ui: &mut Ui, run: &RunData, focus: &mut Focus) {
        ui.horizontal_wrapped(|ui| {
            pick::input(ui, run, focus);
            pick::head(ui, run, focus);
        });
        let Some(head) = run.head(focus.input, focus.layer, focus.head) else {
            notice(ui, "No per-head statistics for this head in the bundle.");
            return;
        };
        if head.energy_share.is_empty() {
            notice(
                ui,
                "This bundle has no frequency-chunk energy shares for this head.",
            );
            return;
        }
        let mut order: Vec<usize> = (0..head.energy_share.len()).collect();
        order.sort_by(|&a, &b| head.energy_share[b].total_cmp(&head.energy_share[a]));
        let top: Vec<String> = order
            .iter()
            .take(3)
            .map(|&c| format!("chunk {c} ({:.1}%)", 100.0 * head.energy_share[c]))
            .collect();
        ui.label(format!(
            "L{} H{}: dominant chunks {}; {} chunks of 2 dims (0 = highest frequency)",
            focus.layer,
            focus.head,
            top.join(", "),
            head.energy_share.len()
        ));
        let mean = layer_mean(run, focus.input, focus.layer);
        let h = (ui.available_height() * 0.6).max(160.0);
        Plot::new(("energy", focus.layer, focus.head))
            .height(h)
            .legend(Legend::default())
            .x_axis_label("rotary chunk")
            .y_axis_label("energy share")
            .include_y(0.0)
            .allow_scroll(false)
            .show(ui, |p| {
                let bars: Vec<Bar> = head
                    .energy_share
                    .iter()
                    .enumerate()
                    .map(|(c, &e)| Bar::new(c as f64, f64::from(e)).width(0.8))
                    .collect();
                p.bar_chart(
                    BarChart::new(format!("L{} H{}", focus.layer, focus.head), bars)
                        .color(Color32::from_rgb(70, 150, 230)),
                );
                let pts: PlotPoints = mean
                    .iter()
                    .enumerate()
                    .map(|(c, &m)| [c as f64, m])
                    .collect();
                p.line(
                    Line::new(format!("layer {} mean", focus.layer), pts)
                        .color(Color32::from_rgb(240, 150, 40)),
                );
            });
        if !head.agreement.is_empty() {
            Plot::new(("agreement", focus.layer, focus.head))
                .height(ui.available_height().max(120.0))
                .legend(Legend::default())
                .x_axis_label("rotary chunk")
                .y_axis_label("top-k agreement")
                .include_y(0.0)
                .include_y(1.0)
                .allow_scroll(false)
                .show(ui, |p| {
                    let pts: PlotPoints = head
                        .agreement
                        .iter()
                        .enumerate()
                        .map(|(c, &a)| [c as f64, f64::from(a)])
                        .collect();
                    p.line(
                        Line::new("agreement with the full top-k", pts)
                            .color(Color32::from_rgb(90, 180, 90)),
                    );
                });
        }
    }
}
