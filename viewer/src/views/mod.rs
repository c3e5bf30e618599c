//! One trait for every view and one registry of views ([`VIEWS`]). A view reads only the loaded
//! [`RunData`] and the shared [`Focus`] (what is selected: head, methods, budget, query); it
//! writes the focus to steer the others (clicking an overview cell opens that head in the head
//! map). Adding a view is one file and one row of [`VIEWS`].

pub mod frequencies;
pub mod head_map;
pub mod live;
pub mod methods;
pub mod overview;
pub mod tokens;

use std::sync::Arc;

use egui::Ui;

use crate::data::RunData;
use crate::live::{LiveRequest, LiveResult};

/// A view of a run.
pub trait View {
    /// Draws the view into `ui`.
    fn ui(&mut self, ui: &mut Ui, run: &RunData, focus: &mut Focus);
}

/// One row of the view registry.
#[derive(Debug, Clone, Copy)]
pub struct ViewEntry {
    /// Tab title, also the `--view` name (case-insensitive, spaces or dashes).
    pub name: &'static str,
    /// What the view shows (tab tooltip).
    pub about: &'static str,
    pub build: fn() -> Box<dyn View>,
}

/// Every view, in tab order.
pub static VIEWS: &[ViewEntry] = &[
    ViewEntry {
        name: overview::NAME,
        about: "layer x head grid coloured by a metric for a method; click a cell to open the head",
        build: || Box::new(overview::Overview::default()),
    },
    ViewEntry {
        name: head_map::NAME,
        about: "pooled attention map with the kept blocks of two methods and a query-block row",
        build: || Box::new(head_map::HeadMap::default()),
    },
    ViewEntry {
        name: tokens::NAME,
        about: "the input's tokens with punctuation, needles and the selected query's attention",
        build: || Box::new(tokens::TokenStrip::default()),
    },
    ViewEntry {
        name: methods::NAME,
        about: "recall and information loss per method, recall vs sparsity, IoU matrix",
        build: || Box::new(methods::Methods::default()),
    },
    ViewEntry {
        name: frequencies::NAME,
        about: "energy share and top-k agreement per rotary frequency chunk of the head",
        build: || Box::new(frequencies::Frequencies),
    },
    ViewEntry {
        name: live::NAME,
        about: "re-run a method on the captured Q/K with new parameters or budget",
        build: || Box::new(live::Live::default()),
    },
];

/// The registry index of a view name (case-insensitive; `-` and `_` match spaces).
pub fn find(name: &str) -> Option<usize> {
    let norm = |s: &str| s.to_ascii_lowercase().replace(['-', '_'], " ");
    VIEWS.iter().position(|v| norm(v.name) == norm(name))
}

/// Where a head-map overlay comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlay {
    /// Nothing.
    Off,
    /// A method of the bundle (index into [`RunData::methods`]).
    Saved(usize),
    /// The latest live re-selection.
    Live,
}

/// The metric the overview colours cells by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    Recall,
    InfoLoss,
    Kl,
    Sparsity,
    OutErr,
    SinkMass,
    Dominance,
    Entropy,
}

impl Metric {
    pub const ALL: [Metric; 8] = [
        Metric::Recall,
        Metric::InfoLoss,
        Metric::Kl,
        Metric::Sparsity,
        Metric::OutErr,
        Metric::SinkMass,
        Metric::Dominance,
        Metric::Entropy,
    ];

    /// Label in menus and legends.
    pub fn label(self) -> &'static str {
        match self {
            Metric::Recall => "recall",
            Metric::InfoLoss => "information loss",
            Metric::Kl => "KL (nats)",
            Metric::Sparsity => "sparsity reached",
            Metric::OutErr => "output rel. error",
            Metric::SinkMass => "sink mass",
            Metric::Dominance => "frequency dominance",
            Metric::Entropy => "block entropy (nats)",
        }
    }

    /// True when the metric depends on the method and budget.
    pub fn per_method(self) -> bool {
        !matches!(self, Metric::SinkMass | Metric::Dominance | Metric::Entropy)
    }
}

/// What is selected, shared by every view.
#[derive(Debug, Clone)]
pub struct Focus {
    pub input: usize,
    pub layer: usize,
    pub head: usize,
    /// Method A (index into [`RunData::methods`]).
    pub method_a: usize,
    pub overlay_b: Overlay,
    pub budget: usize,
    pub metric: Metric,
    /// Query block of the head map's row chart.
    pub query_block: usize,
    /// Query token of the token strip.
    pub query_token: usize,
    /// A view a view asks to switch to (registry index).
    pub open_view: Option<usize>,
    /// The latest live re-selection result.
    pub live: Option<Arc<LiveResult>>,
    /// A live request a view asks the app to compute.
    pub live_request: Option<LiveRequest>,
    /// The live worker's state, refreshed by the app every frame.
    pub live_status: LiveStatus,
    /// Screen rectangle of the head map's canvas and its visible region (block coordinates),
    /// written by the head map each frame (benchmarks drive pan and zoom there).
    pub map_rect: Option<egui::Rect>,
    pub map_view: Option<egui::Rect>,
    /// Show wall-clock timings (off in image snapshots, which must not change between runs).
    pub show_timings: bool,
}

/// What the live worker is doing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LiveStatus {
    pub busy: bool,
    pub running_for: f64,
    pub error: Option<String>,
}

impl Focus {
    /// The initial focus for a run: its first input, first layer and head, the first two
    /// methods, budget 0.
    pub fn for_run(run: &RunData) -> Self {
        let b = if run.methods.len() > 1 {
            Overlay::Saved(1)
        } else {
            Overlay::Off
        };
        // Prefer a budget that has selections, so the head map shows overlays at once.
        let budget = run.selection_budgets.first().copied().unwrap_or(0);
        Self {
            input: run.input_indices().first().copied().unwrap_or(0),
            layer: run.layers.first().copied().unwrap_or(0),
            head: 0,
            method_a: 0,
            overlay_b: b,
            budget,
            metric: Metric::Recall,
            query_block: 0,
            query_token: 0,
            open_view: None,
            live: None,
            live_request: None,
            live_status: LiveStatus::default(),
            map_rect: None,
            map_view: None,
            show_timings: true,
        }
    }

    /// Opens head `(layer, head)` in the head map.
    pub fn open_head(&mut self, layer: usize, head: usize) {
        self.layer = layer;
        self.head = head;
        self.open_view = find(head_map::NAME);
    }
}

/// Shared pickers: layer, head, method, budget combo boxes.
pub mod pick {
    use super::*;

    /// Layer and head pickers.
    pub fn head(ui: &mut Ui, run: &RunData, focus: &mut Focus) {
        egui::ComboBox::from_label("layer")
            .selected_text(format!("L{}", focus.layer))
            .show_ui(ui, |ui| {
                for &l in &run.layers {
                    ui.selectable_value(&mut focus.layer, l, format!("L{l}"));
                }
            });
        egui::ComboBox::from_label("head")
            .selected_text(format!("H{}", focus.head))
            .show_ui(ui, |ui| {
                for h in 0..run.n_heads {
                    ui.selectable_value(&mut focus.head, h, format!("H{h}"));
                }
            });
    }

    /// A method picker over the bundle's methods.
    pub fn method(ui: &mut Ui, run: &RunData, label: &str, m: &mut usize) {
        egui::ComboBox::from_label(label)
            .selected_text(run.methods.get(*m).map_or("-", String::as_str))
            .show_ui(ui, |ui| {
                for (i, name) in run.methods.iter().enumerate() {
                    ui.selectable_value(m, i, name);
                }
            });
    }

    /// The budget picker.
    pub fn budget(ui: &mut Ui, run: &RunData, b: &mut usize) {
        egui::ComboBox::from_label("budget")
            .selected_text(run.budgets.get(*b).map_or("-", String::as_str))
            .show_ui(ui, |ui| {
                for (i, name) in run.budgets.iter().enumerate() {
                    ui.selectable_value(b, i, name);
                }
            });
    }

    /// The input picker (only when the run has several inputs).
    pub fn input(ui: &mut Ui, run: &RunData, focus: &mut Focus) {
        let inputs = run.input_indices();
        if inputs.len() > 1 {
            egui::ComboBox::from_label("input")
                .selected_text(format!(
                    "{}: {}",
                    focus.input,
                    run.describe_input(focus.input)
                ))
                .show_ui(ui, |ui| {
                    for i in inputs {
                        ui.selectable_value(
                            &mut focus.input,
                            i,
                            format!("{i}: {}", run.describe_input(i)),
                        );
                    }
                });
        }
    }
}

/// A framed notice explaining why something is not shown.
pub fn notice(ui: &mut Ui, text: &str) {
    egui::Frame::group(ui.style()).show(ui, |ui| {
        ui.colored_label(ui.visuals().warn_fg_color, text);
    });
}
