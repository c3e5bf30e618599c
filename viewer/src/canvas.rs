//! A zoomable, pannable block-map canvas: one texture for the map (one texel per block) and one
//! for the overlay, drawn as two textured quads whose UV rectangle is the visible region, so a
//! frame costs the same for a 16 x 16 map as for a 512 x 512 one.
//!
//! Mouse wheel (or pinch) zooms about the pointer, dragging pans, double-click resets; the
//! hovered block is returned for the readout.

use egui::{
    Color32, ColorImage, Mesh, Pos2, Rect, Response, Sense, Shape, Stroke, TextureHandle,
    TextureOptions, Ui, Vec2,
};

/// The smallest visible span, in blocks.
const MIN_SPAN: f32 = 2.0;

/// State of one map canvas.
pub struct MapCanvas {
    /// Blocks per side.
    n: usize,
    /// Visible region in block coordinates: x = key block, y = query block (down).
    pub view: Rect,
    base: Option<(u64, TextureHandle)>,
    overlay: Option<(u64, TextureHandle)>,
}

impl Default for MapCanvas {
    fn default() -> Self {
        Self {
            n: 0,
            view: Rect::from_min_size(Pos2::ZERO, Vec2::splat(1.0)),
            base: None,
            overlay: None,
        }
    }
}

impl std::fmt::Debug for MapCanvas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MapCanvas")
            .field("n", &self.n)
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

/// Where the pointer is over the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cell {
    pub query_block: usize,
    pub key_block: usize,
}

impl MapCanvas {
    /// Sets the map size; resets the view when it changes.
    pub fn set_size(&mut self, n: usize) {
        if n != self.n {
            self.n = n;
            self.reset();
        }
    }

    /// Shows the whole map.
    pub fn reset(&mut self) {
        self.view = Rect::from_min_size(Pos2::ZERO, Vec2::splat(self.n.max(1) as f32));
    }

    /// Zooms by `factor` (> 1 zooms in) about `center` (block coordinates).
    pub fn zoom(&mut self, factor: f32, center: Pos2) {
        let n = self.n.max(1) as f32;
        let span = (self.view.width() / factor).clamp(MIN_SPAN.min(n), n);
        let f = span / self.view.width();
        let min = center + (self.view.min - center) * f;
        self.view = Rect::from_min_size(min, Vec2::splat(span));
        self.clamp();
    }

    /// Moves the view by `delta` blocks.
    pub fn pan(&mut self, delta: Vec2) {
        self.view = self.view.translate(delta);
        self.clamp();
    }

    fn clamp(&mut self) {
        let n = self.n.max(1) as f32;
        let span = self.view.width().min(n);
        let x = self.view.min.x.clamp(0.0, n - span);
        let y = self.view.min.y.clamp(0.0, n - span);
        self.view = Rect::from_min_size(Pos2::new(x, y), Vec2::splat(span));
    }

    /// Zoom factor relative to the whole map.
    pub fn zoom_level(&self) -> f32 {
        self.n.max(1) as f32 / self.view.width().max(1e-6)
    }

    /// Replaces the map texture when `key` changed; `make` builds an `n x n` image.
    pub fn set_base(&mut self, ui: &Ui, key: u64, make: impl FnOnce() -> ColorImage) {
        if self.base.as_ref().is_some_and(|(k, _)| *k == key) {
            return;
        }
        let img = make();
        match &mut self.base {
            Some((k, tex)) => {
                tex.set(img, TextureOptions::NEAREST);
                *k = key;
            }
            None => {
                let tex = ui
                    .ctx()
                    .load_texture("attnscope-map", img, TextureOptions::NEAREST);
                self.base = Some((key, tex));
            }
        }
    }

    /// Replaces the overlay texture when `key` changed; `make` returns `None` for no overlay.
    pub fn set_overlay(&mut self, ui: &Ui, key: u64, make: impl FnOnce() -> Option<ColorImage>) {
        if self.overlay.as_ref().is_some_and(|(k, _)| *k == key) {
            return;
        }
        match make() {
            None => self.overlay = None,
            Some(img) => match &mut self.overlay {
                Some((k, tex)) => {
                    tex.set(img, TextureOptions::NEAREST);
                    *k = key;
                }
                None => {
                    let tex =
                        ui.ctx()
                            .load_texture("attnscope-overlay", img, TextureOptions::NEAREST);
                    self.overlay = Some((key, tex));
                }
            },
        }
    }

    /// Draws the canvas in a `side x side` square with block ticks, handling zoom and pan;
    /// returns the response and the hovered cell. `row` outlines one query block.
    pub fn show(&mut self, ui: &mut Ui, side: f32, row: Option<usize>) -> (Response, Option<Cell>) {
        let margin = Vec2::new(44.0, 18.0);
        let (outer, _) = ui.allocate_exact_size(Vec2::splat(side) + margin, Sense::hover());
        let rect = Rect::from_min_size(outer.min + margin, Vec2::splat(side));
        let id = ui.scope_id().with("map-canvas");
        let resp = ui.interact(rect, id, Sense::click_and_drag());
        let resp = resp.on_hover_cursor(egui::CursorIcon::Crosshair);
        resp.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Image, true, "attention map"));
        if self.n == 0 {
            return (resp, None);
        }
        let to_map = |p: Pos2, view: Rect| -> Pos2 {
            let t = (p - rect.min) / rect.size();
            view.min + t * view.size()
        };
        // Interaction.
        if resp.double_clicked() {
            self.reset();
        }
        if resp.dragged() {
            let d = resp.drag_delta();
            self.pan(-d / rect.size() * self.view.size());
        }
        if resp.hovered() {
            let (scroll, zoom) = ui.input(|i| (i.smooth_scroll_delta.y, i.zoom_delta()));
            let factor = zoom * (scroll * 0.004).exp();
            if (factor - 1.0).abs() > 1e-4 {
                if let Some(p) = resp.hover_pos() {
                    self.zoom(factor, to_map(p, self.view));
                }
            }
        }
        // Drawing.
        let painter = ui.painter_at(outer);
        painter.rect_filled(rect, 0.0, ui.visuals().extreme_bg_color);
        let n = self.n as f32;
        let uv = Rect::from_min_max(
            (self.view.min.to_vec2() / n).to_pos2(),
            (self.view.max.to_vec2() / n).to_pos2(),
        );
        let draw_layer = |painter: &egui::Painter, tex: &TextureHandle| {
            let mut mesh = Mesh::with_texture(tex.id());
            mesh.add_rect_with_uv(rect, uv, Color32::WHITE);
            painter.with_clip_rect(rect).add(Shape::mesh(mesh));
        };
        if let Some((_, tex)) = &self.base {
            draw_layer(&painter, tex);
        }
        if let Some((_, tex)) = &self.overlay {
            draw_layer(&painter, tex);
        }
        let to_screen = |x: f32, y: f32| -> Pos2 {
            rect.min + (Vec2::new(x, y) - self.view.min.to_vec2()) / self.view.size() * rect.size()
        };
        if let Some(q) = row {
            let r = Rect::from_min_max(to_screen(0.0, q as f32), to_screen(n, q as f32 + 1.0));
            painter.with_clip_rect(rect).rect_stroke(
                r,
                0.0,
                Stroke::new(1.5, ui.visuals().strong_text_color()),
                egui::StrokeKind::Outside,
            );
        }
        painter.rect_stroke(
            rect,
            0.0,
            Stroke::new(1.0, ui.visuals().weak_text_color()),
            egui::StrokeKind::Outside,
        );
        // Ticks: about six per axis at a 1-2-5 step.
        let step = nice_step(self.view.width() / 6.0);
        let font = egui::FontId::proportional(10.0);
        let color = ui.visuals().text_color();
        let mut t = (self.view.min.x / step).ceil() * step;
        while t <= self.view.max.x {
            let p = to_screen(t + 0.5, self.view.min.y);
            if p.x >= rect.left() && p.x <= rect.right() {
                painter.text(
                    Pos2::new(p.x, rect.top() - 2.0),
                    egui::Align2::CENTER_BOTTOM,
                    format!("{}", t as usize),
                    font.clone(),
                    color,
                );
            }
            t += step;
        }
        let mut t = (self.view.min.y / step).ceil() * step;
        while t <= self.view.max.y {
            let p = to_screen(self.view.min.x, t + 0.5);
            if p.y >= rect.top() && p.y <= rect.bottom() {
                painter.text(
                    Pos2::new(rect.left() - 4.0, p.y),
                    egui::Align2::RIGHT_CENTER,
                    format!("{}", t as usize),
                    font.clone(),
                    color,
                );
            }
            t += step;
        }
        let hovered = resp.hover_pos().and_then(|p| {
            let m = to_map(p, self.view);
            let (x, y) = (m.x.floor(), m.y.floor());
            (x >= 0.0 && y >= 0.0 && x < n && y < n).then_some(Cell {
                query_block: y as usize,
                key_block: x as usize,
            })
        });
        (resp, hovered)
    }
}

/// The 1-2-5 step at least `raw` (and at least 1).
pub fn nice_step(raw: f32) -> f32 {
    let raw = raw.max(1.0);
    let p = 10f32.powf(raw.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= raw {
            return m * p;
        }
    }
    10.0 * p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoom_and_pan_stay_inside_the_map() {
        let mut c = MapCanvas::default();
        c.set_size(100);
        c.zoom(4.0, Pos2::new(50.0, 50.0));
        assert!((c.view.width() - 25.0).abs() < 1e-4);
        assert!((c.view.center().x - 50.0).abs() < 1e-3);
        c.pan(Vec2::new(-1000.0, 1000.0));
        assert_eq!(c.view.min.x, 0.0);
        assert_eq!(c.view.max.y, 100.0);
        c.zoom(1000.0, Pos2::new(10.0, 10.0));
        assert!((c.view.width() - MIN_SPAN).abs() < 1e-4);
        c.zoom(0.0001, Pos2::ZERO);
        assert_eq!(c.view.width(), 100.0);
        assert_eq!(nice_step(3.2), 5.0);
        assert_eq!(nice_step(0.2), 1.0);
        assert_eq!(nice_step(120.0), 200.0);
    }
}
