//! Token strip: the input's tokens, with punctuation (PHSA's mask) boxed and needle spans and
//! needle questions underlined, coloured by the selected query's attention: exact per token when
//! the bundle holds the layer's captured Q/K (`--save-qkv`), else per key block from the pooled
//! map. Clicking a token makes it the query.

use std::sync::Arc;

use attnscope_analysis::bundle::qkv::{read_qkv, SavedLayer};
use egui::{Color32, RichText, Sense, Stroke, Ui};

use super::{notice, pick, Focus, View};
use crate::colormap::{fmt_value, legend, swatch, Scale};
use crate::data::RunData;

pub const NAME: &str = "Tokens";

/// Tokens per page.
pub const PAGE: usize = 512;
const PUNCT: Color32 = Color32::from_rgb(255, 140, 0);
const NEEDLE: Color32 = Color32::from_rgb(60, 200, 90);
const NEEDLE_QUERY: Color32 = Color32::from_rgb(80, 140, 255);

/// Captured Q/K/V of one layer, or why there is none.
type LayerQkv = Result<Arc<SavedLayer>, String>;

/// Files up to this size are read at once; larger ones on a background thread.
const SYNC_READ_BYTES: u64 = 16 << 20;

/// A layer's captured Q/K/V: read, or being read.
#[derive(Debug)]
enum QkvState {
    Ready(LayerQkv),
    Reading(std::sync::mpsc::Receiver<LayerQkv>),
}

/// The token strip view.
#[derive(Debug, Default)]
pub struct TokenStrip {
    /// Captured Q/K/V of (input, layer), or why not; large files are read on a thread.
    qkv: Option<((usize, usize), QkvState)>,
    /// Attention of (layer, head, query) over keys `0..=query`.
    attn: Option<((usize, usize, usize), Vec<f32>)>,
    page: Option<usize>,
}

/// Exact attention of query `i` of q-head `h` over keys `0..=i`.
pub fn token_attention(l: &SavedLayer, h: usize, i: usize) -> Vec<f32> {
    let (n, d) = (l.n, l.head_dim);
    if h >= l.n_heads || i >= n || l.n_kv_heads == 0 {
        return Vec::new();
    }
    let kv = h / (l.n_heads / l.n_kv_heads).max(1);
    let q = &l.q[(h * n + i) * d..(h * n + i + 1) * d];
    let scale = 1.0 / (d as f32).sqrt();
    let mut s: Vec<f32> = (0..=i)
        .map(|j| {
            let k = &l.k[(kv * n + j) * d..(kv * n + j + 1) * d];
            q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() * scale
        })
        .collect();
    let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut z = 0.0;
    for x in &mut s {
        *x = (*x - m).exp();
        z += *x;
    }
    for x in &mut s {
        *x /= z;
    }
    s
}

impl TokenStrip {
    /// The captured Q/K/V of a layer; `None` while a large file is still being read.
    fn layer_qkv(&mut self, run: &RunData, input: usize, layer: usize) -> Option<LayerQkv> {
        if self.qkv.as_ref().is_none_or(|(k, _)| *k != (input, layer)) {
            self.attn = None;
            let file = run
                .manifest
                .qkv
                .iter()
                .find(|q| q.input == input)
                .map(|q| run.dir.join(&q.file));
            let state = match file {
                _ if !run.qkv_layers(input).contains(&layer) => QkvState::Ready(Err(format!(
                    "layer {layer} has no captured Q/K (captured: {})",
                    fmt_layers(&run.qkv_layers(input))
                ))),
                None => QkvState::Ready(Err("no Q/K file".into())),
                Some(path) => {
                    let read = move || -> LayerQkv {
                        read_qkv(&path)
                            .map_err(|e| e.to_string())?
                            .into_iter()
                            .find(|l| l.layer == layer)
                            .map(Arc::new)
                            .ok_or_else(|| format!("the Q/K file holds no layer {layer}"))
                    };
                    let size = file_size(run, input);
                    if size <= SYNC_READ_BYTES {
                        QkvState::Ready(read())
                    } else {
                        let (tx, rx) = std::sync::mpsc::channel();
                        std::thread::Builder::new()
                            .name("attnscope-qkv".into())
                            .spawn(move || {
                                let _ = tx.send(read());
                            })
                            .ok();
                        QkvState::Reading(rx)
                    }
                }
            };
            self.qkv = Some(((input, layer), state));
        }
        let (_, state) = self.qkv.as_mut()?;
        if let QkvState::Reading(rx) = state {
            match rx.try_recv() {
                Ok(r) => *state = QkvState::Ready(r),
                Err(std::sync::mpsc::TryRecvError::Empty) => return None,
                Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                    *state = QkvState::Ready(Err("reading the Q/K file failed".into()))
                }
            }
        }
        match state {
            QkvState::Ready(r) => Some(r.clone()),
            QkvState::Reading(_) => None,
        }
    }
}

fn file_size(run: &RunData, input: usize) -> u64 {
    run.manifest
        .qkv
        .iter()
        .find(|q| q.input == input)
        .and_then(|q| std::fs::metadata(run.dir.join(&q.file)).ok())
        .map_or(0, |m| m.len())
}

fn fmt_layers(l: &[usize]) -> String {
    if l.is_empty() {
        "none; simulate --save-qkv L".into()
    } else {
        l.iter()
            .map(|x| x.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl View for TokenStrip {
    fn ui(&mut self, ui: &mut Ui, run: &RunData, focus: &mut Focus) {
        let Some(tokens) = run.tokens.get(focus.input).filter(|t| !t.is_empty()) else {
            notice(ui, "This bundle has no tokens table rows for this input.");
            return;
        };
        let n = tokens.len();
        ui.horizontal_wrapped(|ui| {
            pick::input(ui, run, focus);
            pick::head(ui, run, focus);
            focus.query_token = focus.query_token.min(n - 1);
            ui.add(egui::Slider::new(&mut focus.query_token, 0..=n - 1).text("query token"));
        });
        let q = focus.query_token;
        // Attention of the query: exact per token, or per block from the pooled map.
        let exact = self
            .layer_qkv(run, focus.input, focus.layer)
            .unwrap_or_else(|| {
                ui.ctx()
                    .request_repaint_after(std::time::Duration::from_millis(50));
                Err("reading the captured Q/K…".into())
            });
        let (attn, source): (Vec<f32>, String) = match &exact {
            Ok(l) if l.n == n => {
                let key = (focus.layer, focus.head, q);
                if self.attn.as_ref().is_none_or(|(k, _)| *k != key) {
                    self.attn = Some((key, token_attention(l, focus.head, q)));
                }
                let a = self.attn.as_ref().map(|x| x.1.clone()).unwrap_or_default();
                (a, "exact attention from the captured Q/K".into())
            }
            other => {
                let why = match other {
                    Ok(l) => format!("captured Q/K has {} tokens, the bundle {n}", l.n),
                    Err(e) => e.clone(),
                };
                match run.head(focus.input, focus.layer, focus.head) {
                    Some(h) if h.n_blocks > 0 && h.map.len() >= h.n_blocks * h.n_blocks => {
                        let b = run.block;
                        let qb = (q / b).min(h.n_blocks - 1);
                        let a = (0..=q)
                            .map(|j| {
                                h.map[qb * h.n_blocks + (j / b).min(h.n_blocks - 1)] / b as f32
                            })
                            .collect();
                        (a, format!("block-level mass from the pooled map ({why})"))
                    }
                    _ => (
                        Vec::new(),
                        format!("no attention to show ({why}; no pooled map)"),
                    ),
                }
            }
        };
        let scale = Scale::log_of(attn.iter().copied(), 3.0);
        ui.horizontal_wrapped(|ui| {
            legend(ui, &scale, "attention", 120.0);
            swatch(ui, PUNCT, "punctuation");
            swatch(ui, NEEDLE, "needle");
            swatch(ui, NEEDLE_QUERY, "needle question");
        });
        ui.weak(format!(
            "query token {q} ({:?}) of L{} H{}: {source}",
            tokens[q].piece, focus.layer, focus.head
        ));
        let pages = n.div_ceil(PAGE);
        let mut page = self.page.unwrap_or(q / PAGE).min(pages - 1);
        if pages > 1 {
            ui.horizontal(|ui| {
                if ui
                    .add_enabled(page > 0, egui::Button::new("Previous page"))
                    .clicked()
                {
                    page -= 1;
                }
                ui.label(format!("page {} of {pages}", page + 1));
                if ui
                    .add_enabled(page + 1 < pages, egui::Button::new("Next page"))
                    .clicked()
                {
                    page += 1;
                }
                if ui.button("Page of the query").clicked() {
                    page = q / PAGE;
                }
            });
        }
        self.page = Some(page);
        let dark = ui.visuals().dark_mode;
        egui::ScrollArea::vertical()
            .auto_shrink(false)
            .show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.spacing_mut().item_spacing = egui::vec2(1.0, 3.0);
                    let (lo, hi) = (page * PAGE, ((page + 1) * PAGE).min(n));
                    for t in &tokens[lo..hi] {
                        let j = t.position;
                        let text = t.piece.replace('\n', "¶");
                        let text = if text.is_empty() {
                            "∅".to_string()
                        } else {
                            text
                        };
                        let mut rt = RichText::new(text).monospace();
                        match attn.get(j).and_then(|&a| scale.t(f64::from(a))) {
                            Some(tv) => {
                                rt = rt.background_color(crate::colormap::viridis(tv)).color(
                                    if tv > 0.6 {
                                        Color32::BLACK
                                    } else {
                                        Color32::WHITE
                                    },
                                );
                            }
                            None if j > q => {
                                rt = rt.color(if dark {
                                    Color32::from_gray(110)
                                } else {
                                    Color32::from_gray(150)
                                });
                            }
                            None => {}
                        }
                        let resp = ui.add(egui::Label::new(rt).sense(Sense::click()));
                        let r = resp.rect;
                        if t.is_punct || t.is_newline {
                            ui.painter().rect_stroke(
                                r.expand(0.5),
                                1.0,
                                Stroke::new(1.5, PUNCT),
                                egui::StrokeKind::Outside,
                            );
                        }
                        if t.is_needle || t.is_needle_query {
                            let c = if t.is_needle { NEEDLE } else { NEEDLE_QUERY };
                            ui.painter()
                                .hline(r.x_range(), r.bottom() + 1.5, Stroke::new(3.0, c));
                        }
                        if j == q {
                            ui.painter().rect_stroke(
                                r.expand(2.0),
                                2.0,
                                Stroke::new(2.0, ui.visuals().strong_text_color()),
                                egui::StrokeKind::Outside,
                            );
                        }
                        let resp = resp.on_hover_text(format!(
                            "token {j} id {} {:?}\nattention {}{}{}",
                            t.id,
                            t.piece,
                            attn.get(j).map_or("-".into(), |&a| fmt_value(f64::from(a))),
                            if t.is_punct { "\npunctuation" } else { "" },
                            if t.is_needle { "\nneedle" } else { "" }
                        ));
                        if resp.clicked() {
                            focus.query_token = j;
                            focus.query_block = j / run.block;
                        }
                    }
                });
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_attention_is_a_causal_softmax() {
        let l = SavedLayer {
            layer: 0,
            n_heads: 2,
            n_kv_heads: 1,
            head_dim: 2,
            n: 3,
            q: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
            k: vec![1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            v: vec![0.0; 6],
        };
        let a = token_attention(&l, 0, 2);
        assert_eq!(a.len(), 3);
        assert!((a.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!(a[2] > a[0] && a[0] > a[1] - 1e-6);
        let b = token_attention(&l, 1, 1);
        assert!((b[0] - 0.5).abs() < 1e-6);
        assert!(token_attention(&l, 5, 0).is_empty());
    }
}
