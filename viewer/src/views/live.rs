//! Live re-selection: pick a layer with captured Q/K, a method, its parameters (PHSA's lambda
//! among them) and a budget; the selection and recall are recomputed on a background thread
//! ([`crate::live::LiveEngine`], owned by the app) whenever a control changes. Without captured
//! Q/K the controls are disabled and say why.

use attnscope_analysis::registry::{self, MethodInfo};
use egui::Ui;
use egui_plot::{Legend, Line, Plot, PlotPoints};

use super::{notice, Focus, Overlay, View};
use crate::data::RunData;
use crate::live::{LiveBudget, LiveRequest};

pub const NAME: &str = "Live";

/// The live view: the request being edited.
#[derive(Debug, Default)]
pub struct Live {
    layer: Option<usize>,
    method: Option<&'static MethodInfo>,
    params: Vec<(String, f64)>,
    /// The method's budget knob (set by calibration, so not offered as a control).
    knob: &'static str,
    sparsity: f64,
    tokens: usize,
    by_tokens: bool,
    auto: bool,
    /// The last request handed to the engine.
    sent: Option<LiveRequest>,
    initialized: bool,
}

impl Live {
    fn init(&mut self, run: &RunData, focus: &Focus) {
        self.initialized = true;
        self.auto = true;
        let layers = run.qkv_layers(focus.input);
        self.layer = layers.first().copied();
        let name = run
            .methods
            .get(focus.method_a)
            .map(|m| m.split('[').next().unwrap_or(m).to_string())
            .unwrap_or_else(|| "phsa".into());
        self.set_method(
            run,
            registry::find(&name)
                .or_else(|_| registry::find("phsa"))
                .ok(),
        );
        let b = run.manifest.budgets.get(focus.budget);
        self.sparsity = match b {
            Some(b) if b.kind == "sparsity" => b.value,
            _ => 0.9,
        };
        self.tokens = match b {
            Some(b) if b.kind == "tokens" => b.value as usize,
            _ => 256,
        };
        self.by_tokens = b.is_some_and(|b| b.kind == "tokens");
    }

    /// Selects a method, with the run's parameter values when the run used it.
    fn set_method(&mut self, run: &RunData, info: Option<&'static MethodInfo>) {
        self.method = info;
        let Some(info) = info else {
            self.params.clear();
            return;
        };
        self.knob = info.build_with(&[]).map_or("", |m| m.knob().name);
        let saved = run.manifest.methods.iter().find(|m| m.name == info.name);
        self.params = info
            .params
            .iter()
            .map(|p| {
                let v = saved
                    .and_then(|m| m.params.get(p.name).copied())
                    .unwrap_or(p.default);
                (p.name.to_string(), v)
            })
            .collect();
    }

    /// The request the controls describe.
    pub fn request(&self, input: usize) -> Option<LiveRequest> {
        Some(LiveRequest {
            input,
            layer: self.layer?,
            method: self.method?.name.to_string(),
            overrides: self.params.clone(),
            budget: if self.by_tokens {
                LiveBudget::Tokens(self.tokens.max(1))
            } else {
                LiveBudget::Sparsity(self.sparsity)
            },
        })
    }
}

impl View for Live {
    fn ui(&mut self, ui: &mut Ui, run: &RunData, focus: &mut Focus) {
        if !self.initialized {
            self.init(run, focus);
        }
        let layers = run.qkv_layers(focus.input);
        let reason = if layers.is_empty() {
            Some(
                "Live re-selection needs captured Q/K, and this bundle has none: run \
                 `attnscope simulate ... --save-qkv L` to keep layer L's post-RoPE Q/K/V.",
            )
        } else {
            None
        };
        if let Some(r) = reason {
            notice(ui, r);
        }
        let enabled = reason.is_none();
        let mut changed = false;
        ui.add_enabled_ui(enabled, |ui| {
            ui.horizontal(|ui| {
                egui::ComboBox::from_label("live layer")
                    .selected_text(self.layer.map_or("-".into(), |l| format!("L{l}")))
                    .show_ui(ui, |ui| {
                        for &l in &layers {
                            changed |= ui
                                .selectable_value(&mut self.layer, Some(l), format!("L{l}"))
                                .changed();
                        }
                    })
                    .response
                    .on_hover_text("layers with captured Q/K");
                let mut pick: Option<&'static str> = self.method.map(|m| m.name);
                egui::ComboBox::from_label("live method")
                    .selected_text(self.method.map_or("-", |m| m.name))
                    .show_ui(ui, |ui| {
                        for m in registry::METHODS {
                            ui.selectable_value(&mut pick, Some(m.name), m.name);
                        }
                    });
                if pick != self.method.map(|m| m.name) {
                    let info = pick.and_then(|p| registry::find(p).ok());
                    self.set_method(run, info);
                    changed = true;
                }
            });
            if let Some(info) = self.method {
                ui.weak(info.rule);
                for (spec, (name, v)) in info.params.iter().zip(self.params.iter_mut()) {
                    if spec.name == self.knob {
                        continue;
                    }
                    let (lo, hi) = (spec.min, spec.max.min(spec.min.max(0.0) + 4096.0));
                    let mut s = egui::Slider::new(v, lo..=hi).text(name.as_str());
                    if spec.integer {
                        s = s.integer();
                    }
                    changed |= ui.add(s).on_hover_text(spec.help).changed();
                }
                ui.weak(format!(
                    "{} (the budget knob) is calibrated to the budget",
                    self.knob
                ));
            }
            ui.horizontal(|ui| {
                changed |= ui
                    .radio_value(&mut self.by_tokens, false, "target sparsity")
                    .changed();
                changed |= ui
                    .radio_value(&mut self.by_tokens, true, "keys per query")
                    .changed();
            });
            if self.by_tokens {
                changed |= ui
                    .add(
                        egui::Slider::new(&mut self.tokens, 1..=run.n_tokens().max(2))
                            .text("keys per query"),
                    )
                    .changed();
            } else {
                changed |= ui
                    .add(egui::Slider::new(&mut self.sparsity, 0.0..=0.995).text("sparsity"))
                    .changed();
            }
            ui.horizontal(|ui| {
                ui.checkbox(&mut self.auto, "recompute on change");
                if ui.button("Recompute").clicked() {
                    self.sent = None;
                    changed = true;
                }
            });
        });
        if enabled && (changed && self.auto || self.sent.is_none()) {
            if let Some(req) = self.request(focus.input) {
                if self.sent.as_ref() != Some(&req) {
                    self.sent = Some(req.clone());
                    focus.live_request = Some(req);
                }
            }
        }
        ui.separator();
        match &focus.live_status {
            s if s.busy => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("computing… {:.1} s", s.running_for));
                });
            }
            s => {
                if let Some(e) = &s.error {
                    notice(ui, &format!("live re-selection failed: {e}"));
                }
            }
        }
        let Some(res) = focus.live.clone() else {
            if enabled {
                ui.weak("No result yet.");
            }
            return;
        };
        ui.strong(res.request.label());
        let timing = if focus.show_timings {
            format!(
                " ({:.2} s; reading Q/K and the exact capture {:.2} s)",
                res.seconds, res.capture_seconds
            )
        } else {
            String::new()
        };
        ui.label(format!(
            "layer {}: mean recall {:.4}, sparsity reached {:.4}{timing}",
            res.request.layer,
            res.mean_recall(),
            res.mean_sparsity(),
        ));
        ui.horizontal(|ui| {
            if ui.button("Show as method B in the head map").clicked() {
                focus.overlay_b = Overlay::Live;
                focus.layer = res.request.layer;
                focus.open_view = super::find(super::head_map::NAME);
            }
        });
        let bundle_m = run.method_index(&res.request.method);
        ui.columns(2, |cols| {
            let ui = &mut cols[0];
            egui::Grid::new("live-heads").striped(true).show(ui, |ui| {
                for h in [
                    "head",
                    "recall",
                    "info loss",
                    "sparsity",
                    "knob",
                    "reached",
                    "bundle recall",
                ] {
                    ui.strong(h);
                }
                ui.end_row();
                for h in &res.heads {
                    ui.label(format!("H{}", h.head));
                    ui.label(format!("{:.4}", h.recall));
                    ui.label(format!("{:.4}", 1.0 - h.recall));
                    ui.label(format!("{:.4}", h.sparsity));
                    ui.label(crate::colormap::fmt_value(h.knob));
                    ui.label(if h.reached { "yes" } else { "no" });
                    let saved = bundle_m.and_then(|m| {
                        run.metric(
                            res.request.input,
                            res.request.layer,
                            h.head,
                            m,
                            focus.budget,
                        )
                    });
                    ui.label(saved.map_or("-".into(), |r| format!("{:.4}", r.recall)));
                    ui.end_row();
                }
            });
            let ui = &mut cols[1];
            ui.strong(format!("recall by query block, H{}", focus.head));
            Plot::new("live-recall")
                .height(ui.available_height().clamp(140.0, 260.0))
                .legend(Legend::default())
                .x_axis_label("query block")
                .include_y(0.0)
                .include_y(1.0)
                .allow_scroll(false)
                .show(ui, |p| {
                    if let Some(h) = res.head(focus.head) {
                        let pts: PlotPoints = h
                            .recall_by_query_block
                            .iter()
                            .enumerate()
                            .map(|(i, &r)| [i as f64, f64::from(r)])
                            .collect();
                        p.line(Line::new("live", pts).width(3.0));
                    }
                    if let Some(r) = run.metric(
                        res.request.input,
                        res.request.layer,
                        focus.head,
                        focus.method_a,
                        focus.budget,
                    ) {
                        let pts: PlotPoints = r
                            .recall_by_query_block
                            .iter()
                            .enumerate()
                            .map(|(i, &x)| [i as f64, f64::from(x)])
                            .collect();
                        p.line(Line::new(
                            format!(
                                "bundle {} @ {}",
                                r.method,
                                run.budgets.get(r.budget).map_or("-", String::as_str)
                            ),
                            pts,
                        ));
                    }
                });
        });
    }
}
