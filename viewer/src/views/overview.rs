//! Overview: a layer x head grid coloured by a chosen metric (recall, information loss, KL,
//! sparsity reached, output error for a chosen method and budget; sink mass, frequency dominance
//! or block entropy per head), with a legend. Every cell is a button in the accessibility tree
//! (`L{layer} H{head}`); clicking one opens that head in the head map.

use std::collections::HashMap;

use egui::{Align2, Color32, FontId, Rect, Sense, Stroke, Ui, Vec2};

use super::{notice, pick, Focus, Metric, View};
use crate::colormap::{fmt_value, legend, viridis, Scale};
use crate::data::{HeadKey, RunData};

pub const NAME: &str = "Overview";

/// The overview view.
#[derive(Debug, Default)]
pub struct Overview {
    /// Block entropy per head, computed on first use (it reads every map).
    entropy: HashMap<HeadKey, f64>,
}

/// The value of `metric` for one head.
pub fn value(
    run: &RunData,
    focus: &Focus,
    entropy: &HashMap<HeadKey, f64>,
    layer: usize,
    head: usize,
) -> Option<f64> {
    let m = || run.metric(focus.input, layer, head, focus.method_a, focus.budget);
    let h = || run.head(focus.input, layer, head);
    let v = match focus.metric {
        Metric::Recall => m()?.recall,
        Metric::InfoLoss => m()?.info_loss,
        Metric::Kl => m()?.kl,
        Metric::Sparsity => m()?.sparsity,
        Metric::OutErr => m()?.out_rel_err,
        Metric::SinkMass => h()?.sink_mass,
        Metric::Dominance => h()?.dominance(),
        Metric::Entropy => *entropy.get(&(focus.input, layer, head))?,
    };
    v.is_finite().then_some(v)
}

impl View for Overview {
    fn ui(&mut self, ui: &mut Ui, run: &RunData, focus: &mut Focus) {
        ui.horizontal_wrapped(|ui| {
            pick::input(ui, run, focus);
            egui::ComboBox::from_label("metric")
                .selected_text(focus.metric.label())
                .show_ui(ui, |ui| {
                    for m in Metric::ALL {
                        ui.selectable_value(&mut focus.metric, m, m.label());
                    }
                });
            ui.add_enabled_ui(focus.metric.per_method(), |ui| {
                pick::method(ui, run, "method", &mut focus.method_a);
                pick::budget(ui, run, &mut focus.budget);
            });
        });
        if run.layers.is_empty() || run.n_heads == 0 {
            notice(ui, "This bundle has no simulated layers or heads to show.");
            return;
        }
        if focus.metric == Metric::Entropy && run.heavy != crate::data::Heavy::Ready {
            notice(ui, "Block entropy needs the pooled maps, which are still being read (or failed: see the head map).");
        }
        if focus.metric == Metric::Entropy
            && self.entropy.is_empty()
            && run.heavy == crate::data::Heavy::Ready
        {
            self.entropy = run
                .heads
                .iter()
                .map(|(k, h)| (*k, h.block_entropy()))
                .collect();
        }
        let values: Vec<Option<f64>> = run
            .layers
            .iter()
            .flat_map(|&l| (0..run.n_heads).map(move |h| (l, h)))
            .map(|(l, h)| value(run, focus, &self.entropy, l, h))
            .collect();
        let scale = Scale::linear_of(values.iter().flatten().copied());
        let what = if focus.metric.per_method() {
            format!(
                "{} of {} at {}",
                focus.metric.label(),
                run.methods.get(focus.method_a).map_or("-", String::as_str),
                run.budgets.get(focus.budget).map_or("-", String::as_str)
            )
        } else {
            focus.metric.label().to_string()
        };
        legend(ui, &scale, &what, 160.0);
        if values.iter().all(Option::is_none) {
            notice(
                ui,
                &format!(
                    "The bundle has no {} values for this choice.",
                    focus.metric.label()
                ),
            );
        }
        let (nl, nh) = (run.layers.len(), run.n_heads);
        let avail = ui.available_size();
        let label_w = 40.0;
        let cell = ((avail.x - label_w - 8.0) / nh as f32)
            .min((avail.y - 30.0) / nl as f32)
            .clamp(6.0, 80.0);
        let (rect, _) = ui.allocate_exact_size(
            Vec2::new(label_w + cell * nh as f32, 16.0 + cell * nl as f32),
            Sense::hover(),
        );
        let painter = ui.painter_at(rect);
        let text = ui.visuals().text_color();
        let font = FontId::proportional((cell * 0.3).clamp(8.0, 12.0));
        let origin = rect.min + Vec2::new(label_w, 16.0);
        let head_step = crate::canvas::nice_step(12.0 / cell) as usize;
        for h in (0..nh).step_by(head_step.max(1)) {
            painter.text(
                origin + Vec2::new((h as f32 + 0.5) * cell, -2.0),
                Align2::CENTER_BOTTOM,
                format!("H{h}"),
                font.clone(),
                text,
            );
        }
        let layer_step = crate::canvas::nice_step(12.0 / cell) as usize;
        for (li, &l) in run.layers.iter().enumerate() {
            if li % layer_step.max(1) == 0 {
                painter.text(
                    origin + Vec2::new(-4.0, (li as f32 + 0.5) * cell),
                    Align2::RIGHT_CENTER,
                    format!("L{l}"),
                    font.clone(),
                    text,
                );
            }
            for h in 0..nh {
                let r = Rect::from_min_size(
                    origin + Vec2::new(h as f32 * cell, li as f32 * cell),
                    Vec2::splat(cell),
                )
                .shrink(0.5);
                let v = values[li * nh + h];
                let fill = v.map_or(ui.visuals().faint_bg_color, |v| {
                    viridis(scale.t(v).unwrap_or(0.0))
                });
                painter.rect_filled(r, 0.0, fill);
                if cell >= 34.0 {
                    if let Some(v) = v {
                        let t = scale.t(v).unwrap_or(0.0);
                        painter.text(
                            r.center(),
                            Align2::CENTER_CENTER,
                            fmt_value(v),
                            font.clone(),
                            if t > 0.6 {
                                Color32::BLACK
                            } else {
                                Color32::WHITE
                            },
                        );
                    }
                }
                if l == focus.layer && h == focus.head {
                    painter.rect_stroke(
                        r,
                        0.0,
                        Stroke::new(2.0, ui.visuals().strong_text_color()),
                        egui::StrokeKind::Inside,
                    );
                }
                let id = ui.scope_id().with(("overview-cell", l, h));
                let resp = ui.interact(r, id, Sense::click());
                let name = format!("L{l} H{h}");
                resp.widget_info(|| {
                    egui::WidgetInfo::labeled(egui::Role::Button, true, name.clone())
                });
                let resp = resp.on_hover_text(format!(
                    "{name}: {} = {}\nclick to open the head map",
                    focus.metric.label(),
                    v.map_or("-".to_string(), fmt_value)
                ));
                if resp.clicked() {
                    focus.open_head(l, h);
                }
            }
        }
    }
}
