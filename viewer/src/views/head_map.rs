//! Head map: the pooled attention map of one head (log colour scale, zoom and pan, hover
//! readout), with the kept blocks of method A and method B (a saved method or the live
//! re-selection) overlaid and their difference marked, and one query block's row as a bar chart
//! of true mass with kept and missed blocks marked.

use std::hash::{Hash, Hasher};

use attnscope_analysis::results::SelectionRow;
use egui::{Color32, ColorImage, Ui};
use egui_plot::{Bar, BarChart, Legend, Plot};

use super::{notice, pick, Focus, Overlay, View};
use crate::canvas::{Cell, MapCanvas};
use crate::colormap::{fmt_value, legend, swatch, viridis_lut, Scale};
use crate::data::RunData;
use crate::live::LiveResult;

pub const NAME: &str = "Head map";

/// Colours of the overlay categories.
pub const ONLY_A: Color32 = Color32::from_rgb(0, 200, 255);
pub const ONLY_B: Color32 = Color32::from_rgb(255, 60, 200);
pub const BOTH: Color32 = Color32::from_rgb(240, 240, 240);
const BOTH_BAR: Color32 = Color32::from_rgb(90, 180, 90);
const MISSED_BAR: Color32 = Color32::from_gray(140);

/// What the overlay shows, counted over the whole map (the interaction tests read it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OverlayCounts {
    pub both: usize,
    pub only_a: usize,
    pub only_b: usize,
}

/// The head map view.
#[derive(Debug)]
pub struct HeadMap {
    canvas: MapCanvas,
    decades: f64,
    hover: Option<Cell>,
    /// Kept states of the current overlay and the key they were computed for.
    states: (u64, Vec<u8>),
    /// Overlay counts of the current frame.
    pub counts: OverlayCounts,
}

impl Default for HeadMap {
    fn default() -> Self {
        Self {
            canvas: MapCanvas::default(),
            decades: 4.0,
            hover: None,
            states: (0, Vec::new()),
            counts: OverlayCounts::default(),
        }
    }
}

fn hash_of(x: impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

/// Kept state of each (query block, key block) of an `n`-block map whose blocks are `g`
/// selection blocks each: bit 0 = A keeps a key in it, bit 1 = B does.
pub fn kept_states(
    n: usize,
    g: usize,
    a: Option<&SelectionRow>,
    b: Option<&SelectionRow>,
) -> Vec<u8> {
    let g = g.max(1);
    let mut s = vec![0u8; n * n];
    for (bit, sel) in [(1u8, a), (2u8, b)] {
        let Some(sel) = sel else { continue };
        for q in 0..sel.n_query_blocks().min(n * g) {
            for (&k, &f) in sel.blocks_of(q).iter().zip(sel.fraction_of(q)) {
                let k = k as usize / g;
                if k < n && f > 0.0 {
                    s[(q / g) * n + k] |= bit;
                }
            }
        }
    }
    s
}

/// Counts the categories of [`kept_states`].
pub fn count_states(s: &[u8]) -> OverlayCounts {
    let mut c = OverlayCounts::default();
    for &x in s {
        match x {
            1 => c.only_a += 1,
            2 => c.only_b += 1,
            3 => c.both += 1,
            _ => {}
        }
    }
    c
}

/// The map image: log colour scale, non-causal blocks transparent.
fn map_image(map: &[f32], n: usize, scale: &Scale) -> ColorImage {
    let lut = viridis_lut();
    let zero = Color32::from_gray(16);
    let mut px = vec![Color32::TRANSPARENT; n * n];
    for q in 0..n {
        for k in 0..=q {
            let v = map[q * n + k];
            px[q * n + k] = match scale.t(f64::from(v)) {
                Some(t) => lut[(t * 255.0).round() as usize],
                None => zero,
            };
        }
    }
    ColorImage::new([n, n], px)
}

/// The overlay image: outlines per block when blocks are large enough on screen, tints else.
fn overlay_image(states: &[u8], n: usize) -> ColorImage {
    let s = (1024 / n.max(1)).clamp(1, 16);
    let w = n * s;
    let mut px = vec![Color32::TRANSPARENT; w * w];
    let outline = s >= 4;
    let border = (s / 6).max(1);
    for q in 0..n {
        for k in 0..n {
            let st = states[q * n + k];
            if st == 0 {
                continue;
            }
            let c = match st {
                1 => ONLY_A,
                2 => ONLY_B,
                _ => BOTH,
            };
            let fill = match st {
                3 => c.gamma_multiply(0.35),
                _ => c.gamma_multiply(0.75),
            };
            for y in 0..s {
                for x in 0..s {
                    let edge = x < border || y < border || x >= s - border || y >= s - border;
                    let color = if outline {
                        if edge {
                            c
                        } else {
                            continue;
                        }
                    } else {
                        fill
                    };
                    px[(q * s + y) * w + k * s + x] = color;
                }
            }
        }
    }
    ColorImage::new([w, w], px)
}

/// What an overlay is looked up for: input, layer, head, budget.
#[derive(Debug, Clone, Copy)]
struct At {
    input: usize,
    layer: usize,
    head: usize,
    budget: usize,
}

/// An overlay source: its selection (None when off), its recall per query block, its label; or
/// why it cannot be shown.
type Source<'a> = Result<(Option<&'a SelectionRow>, Option<&'a [f32]>, String), String>;

/// The selection row and per-query-block recall of an overlay source.
fn overlay_source<'a>(
    run: &'a RunData,
    live: Option<&'a LiveResult>,
    focus: At,
    which: Overlay,
) -> Source<'a> {
    match which {
        Overlay::Off => Ok((None, None, "off".into())),
        Overlay::Saved(m) => {
            let label = run.methods.get(m).cloned().unwrap_or_default();
            let recall = run
                .metric(focus.input, focus.layer, focus.head, m, focus.budget)
                .map(|r| r.recall_by_query_block.as_slice());
            match run.selection(focus.input, focus.layer, focus.head, m, focus.budget) {
                Some(s) => Ok((Some(s), recall, label)),
                None if run.selection_budgets.is_empty() => Err(format!(
                    "{label}: the bundle has no selections (simulate --selections)"
                )),
                None => Err(format!(
                    "{label}: no selection saved for this head at {} (saved budgets: {})",
                    run.budgets.get(focus.budget).map_or("-", String::as_str),
                    run.selection_budgets
                        .iter()
                        .map(|&b| run.budgets.get(b).cloned().unwrap_or_default())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
        Overlay::Live => {
            let Some(live) = live else {
                return Err("live: nothing computed yet (Live view)".into());
            };
            let r = &live.request;
            if r.input != focus.input || r.layer != focus.layer {
                return Err(format!(
                    "live: computed for layer {} (this is layer {})",
                    r.layer, focus.layer
                ));
            }
            match live.head(focus.head) {
                Some(h) => Ok((
                    Some(&h.selection),
                    Some(h.recall_by_query_block.as_slice()),
                    format!("live {}", r.label()),
                )),
                None => Err("live: no such head".into()),
            }
        }
    }
}

impl View for HeadMap {
    fn ui(&mut self, ui: &mut Ui, run: &RunData, focus: &mut Focus) {
        ui.horizontal_wrapped(|ui| {
            pick::input(ui, run, focus);
            pick::head(ui, run, focus);
            pick::method(ui, run, "method A", &mut focus.method_a);
            let b_text = match focus.overlay_b {
                Overlay::Off => "off".to_string(),
                Overlay::Saved(m) => run.methods.get(m).cloned().unwrap_or_default(),
                Overlay::Live => "live".to_string(),
            };
            egui::ComboBox::from_label("method B")
                .selected_text(b_text)
                .show_ui(ui, |ui| {
                    ui.selectable_value(&mut focus.overlay_b, Overlay::Off, "off");
                    for (i, name) in run.methods.iter().enumerate() {
                        ui.selectable_value(&mut focus.overlay_b, Overlay::Saved(i), name);
                    }
                    ui.selectable_value(&mut focus.overlay_b, Overlay::Live, "live");
                });
            pick::budget(ui, run, &mut focus.budget);
        });
        let Some(head) = run.head(focus.input, focus.layer, focus.head) else {
            notice(
                ui,
                &format!(
                    "No statistics for layer {} head {} in this bundle.",
                    focus.layer, focus.head
                ),
            );
            return;
        };
        match &run.heavy {
            crate::data::Heavy::Loading => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label("Reading the pooled maps and selections…");
                });
                return;
            }
            crate::data::Heavy::Failed(e) => {
                notice(
                    ui,
                    &format!("The pooled maps and selections could not be read: {e}"),
                );
                return;
            }
            crate::data::Heavy::Ready => {}
        }
        let n = head.n_blocks;
        if n == 0 || head.map.len() < n * n {
            notice(
                ui,
                "This bundle has no pooled attention maps (the maps table is empty), so there \
                 is no map to show. The other views still work.",
            );
            return;
        }
        focus.query_block = focus.query_block.min(n - 1);
        self.canvas.set_size(n);
        let scale = Scale::log_of(head.map.iter().copied(), self.decades);
        let base_key = hash_of((focus.input, focus.layer, focus.head, self.decades.to_bits()));
        self.canvas
            .set_base(ui, base_key, || map_image(&head.map, n, &scale));
        let live = focus.live.clone();
        let at = At {
            input: focus.input,
            layer: focus.layer,
            head: focus.head,
            budget: focus.budget,
        };
        let a = overlay_source(run, live.as_deref(), at, Overlay::Saved(focus.method_a));
        let b = overlay_source(run, live.as_deref(), at, focus.overlay_b);
        let sel_a = a.as_ref().ok().and_then(|x| x.0);
        let sel_b = b.as_ref().ok().and_then(|x| x.0);
        let live_seq = focus.live.as_ref().map_or(0, |l| l.seq);
        let overlay_key = hash_of((
            base_key,
            focus.method_a,
            format!("{:?}", focus.overlay_b),
            focus.budget,
            live_seq,
            sel_a.is_some(),
            sel_b.is_some(),
        ));
        if self.states.0 != overlay_key || self.states.1.len() != n * n {
            let g = run.block / run.capture_block.max(1);
            self.states = (overlay_key, kept_states(n, g, sel_a, sel_b));
            self.counts = count_states(&self.states.1);
        }
        let states = &self.states.1;
        self.canvas.set_overlay(ui, overlay_key, || {
            (sel_a.is_some() || sel_b.is_some()).then(|| overlay_image(states, n))
        });

        ui.horizontal_top(|ui| {
            let avail = ui.available_size();
            let side = (avail.x - 320.0).min(avail.y - 250.0).clamp(160.0, 4096.0);
            let (resp, hover) = self.canvas.show(ui, side, Some(focus.query_block));
            self.hover = hover;
            focus.map_rect = Some(resp.rect);
            focus.map_view = Some(self.canvas.view);
            ui.vertical(|ui| {
                ui.set_max_width(300.0);
                ui.strong(format!("L{} H{} (KV head {})", focus.layer, focus.head, head.kv_head));
                legend(ui, &scale, "mass", 120.0);
                ui.add(
                    egui::Slider::new(&mut self.decades, 1.0..=8.0)
                        .step_by(1.0)
                        .text("decades"),
                );
                ui.horizontal(|ui| {
                    if ui.button("Zoom in").clicked() {
                        let c = self.canvas.view.center();
                        self.canvas.zoom(2.0, c);
                    }
                    if ui.button("Zoom out").clicked() {
                        let c = self.canvas.view.center();
                        self.canvas.zoom(0.5, c);
                    }
                    if ui.button("Reset view").clicked() {
                        self.canvas.reset();
                    }
                });
                ui.label(format!("zoom x{:.1}", self.canvas.zoom_level()));
                ui.separator();
                match &a {
                    Ok((_, _, label)) => swatch(ui, ONLY_A, &format!("only A: {label}")),
                    Err(e) => notice(ui, e),
                }
                match &b {
                    Ok((Some(_), _, label)) => swatch(ui, ONLY_B, &format!("only B: {label}")),
                    Ok((None, _, _)) => {
                        ui.label("B: off");
                    }
                    Err(e) => notice(ui, e),
                }
                if sel_a.is_some() && sel_b.is_some() {
                    swatch(ui, BOTH, "kept by both");
                }
                ui.label(format!(
                    "blocks kept by both {}, only A {}, only B {}",
                    self.counts.both, self.counts.only_a, self.counts.only_b
                ));
                ui.separator();
                match self.hover {
                    Some(c) => {
                        let v = head.map[c.query_block * n + c.key_block];
                        let b = run.block;
                        ui.label(format!(
                            "query block {} (tokens {}..{})\nkey block {} (tokens {}..{})\nmass {}",
                            c.query_block,
                            c.query_block * b,
                            (c.query_block + 1) * b,
                            c.key_block,
                            c.key_block * b,
                            (c.key_block + 1) * b,
                            if c.key_block > c.query_block {
                                "- (not causal)".to_string()
                            } else {
                                fmt_value(f64::from(v))
                            }
                        ));
                        let st = states[c.query_block * n + c.key_block];
                        ui.label(match st {
                            1 => "kept by A only",
                            2 => "kept by B only",
                            3 => "kept by both",
                            _ => "kept by neither",
                        });
                    }
                    None => {
                        ui.weak("Hover the map for block mass. Wheel: zoom, drag: pan, double-click: reset.");
                    }
                }
            });
        });
        ui.separator();
        // The query-block row as a bar chart.
        let qb = &mut focus.query_block;
        ui.add(egui::Slider::new(qb, 0..=n - 1).text("query block"));
        let q = *qb;
        let row = &head.map[q * n..q * n + n];
        // Recall is per selection block: the map block's is the mean of its selection blocks'.
        let g = (run.block / run.capture_block.max(1)).max(1);
        let recall_of = |x: &Source<'_>| {
            x.as_ref().ok().and_then(|(_, r, _)| {
                let r = (*r)?;
                let r = r.get((q * g).min(r.len())..((q + 1) * g).min(r.len()))?;
                (!r.is_empty()).then(|| r.iter().sum::<f32>() / r.len() as f32)
            })
        };
        ui.horizontal(|ui| {
            ui.label(format!(
                "row mass {}",
                fmt_value(row.iter().map(|&x| f64::from(x)).sum())
            ));
            if let Some(r) = recall_of(&a) {
                ui.label(format!("A recall on this block {:.3}", r));
            }
            if let Some(r) = recall_of(&b) {
                ui.label(format!("B recall on this block {:.3}", r));
            }
        });
        let mut cats: [(Vec<Bar>, &str, Color32); 4] = [
            (Vec::new(), "kept by both", BOTH_BAR),
            (Vec::new(), "only A", ONLY_A),
            (Vec::new(), "only B", ONLY_B),
            (Vec::new(), "missed", MISSED_BAR),
        ];
        for k in 0..=q {
            let i = match states[q * n + k] {
                3 => 0,
                1 => 1,
                2 => 2,
                _ => 3,
            };
            let bar = Bar::new(k as f64, f64::from(row[k])).width(0.9);
            cats[i].0.push(bar.fill(cats[i].2));
        }
        Plot::new(("row-chart", focus.layer, focus.head))
            .height(ui.available_height().clamp(120.0, 220.0))
            .legend(Legend::default())
            .x_axis_label("key block")
            .y_axis_label("true mass")
            .allow_scroll(false)
            .include_y(0.0)
            .show(ui, |p| {
                for (bars, name, color) in cats {
                    if !bars.is_empty() {
                        p.bar_chart(BarChart::new(name, bars).color(color));
                    }
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_mark_the_difference() {
        let mut a = SelectionRow::new(0, 0, 0, 0, "a".into(), 0, 4);
        a.push_query_block(&[0], &[1.0]);
        a.push_query_block(&[0, 1], &[1.0, 1.0]);
        let mut b = SelectionRow::new(0, 0, 0, 0, "b".into(), 0, 4);
        b.push_query_block(&[0], &[1.0]);
        b.push_query_block(&[1], &[0.5]);
        let s = kept_states(2, 1, Some(&a), Some(&b));
        assert_eq!(s, vec![3, 0, 1, 3]);
        assert_eq!(
            count_states(&s),
            OverlayCounts {
                both: 2,
                only_a: 1,
                only_b: 0
            }
        );
        let img = overlay_image(&s, 2);
        assert_eq!(img.size, [32, 32]);
    }
}
