//! Frame-time measurement: a scripted pan and zoom over the head map (wheel zoom in, drag, wheel
//! zoom out, repeated), either headless (egui pass + tessellation, no GPU: what the app itself
//! costs per frame) or fed into the real window by the binary's `--bench-frames`.

use std::time::Instant;

use egui::{Event, Modifiers, MouseWheelUnit, PointerButton, Pos2, RawInput, Rect, Vec2};

use crate::app::ViewerApp;

/// Frame-time summary in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FrameStats {
    pub frames: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

impl FrameStats {
    /// Summarizes frame times (ms).
    pub fn of(mut ms: Vec<f64>) -> Self {
        if ms.is_empty() {
            return Self::default();
        }
        ms.sort_by(f64::total_cmp);
        let pick = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
        Self {
            frames: ms.len(),
            mean_ms: ms.iter().sum::<f64>() / ms.len() as f64,
            p50_ms: pick(0.5),
            p95_ms: pick(0.95),
            max_ms: ms[ms.len() - 1],
        }
    }

    /// Frames per second at the mean frame time.
    pub fn fps(&self) -> f64 {
        if self.mean_ms > 0.0 {
            1e3 / self.mean_ms
        } else {
            f64::INFINITY
        }
    }
}

impl std::fmt::Display for FrameStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} frames: mean {:.2} ms, p50 {:.2} ms, p95 {:.2} ms, max {:.2} ms ({:.0} fps)",
            self.frames,
            self.mean_ms,
            self.p50_ms,
            self.p95_ms,
            self.max_ms,
            self.fps()
        )
    }
}

/// Input events of frame `k` of the pan/zoom script over the map at `rect`: 40 frames of wheel
/// zoom in, 40 of dragging, 40 of wheel zoom out.
pub fn pan_zoom_events(k: usize, rect: Rect) -> Vec<Event> {
    let c = rect.center();
    let phase = k % 120;
    let wheel = |dy: f32| Event::MouseWheel {
        unit: MouseWheelUnit::Point,
        delta: Vec2::new(0.0, dy),
        phase: egui::TouchPhase::Move,
        source: egui::MouseWheelSource::Unknown,
        modifiers: Modifiers::NONE,
    };
    let drag_pos = |i: usize| {
        let t = i as f32 / 40.0 * std::f32::consts::TAU;
        c + Vec2::new(t.cos(), t.sin()) * rect.width() * 0.2
    };
    match phase {
        0..40 => vec![Event::PointerMoved(c), wheel(30.0)],
        40 => vec![
            Event::PointerMoved(drag_pos(0)),
            Event::PointerButton {
                pos: drag_pos(0),
                button: PointerButton::Primary,
                pressed: true,
                modifiers: Modifiers::NONE,
            },
        ],
        41..79 => vec![Event::PointerMoved(drag_pos(phase - 40))],
        79 => vec![Event::PointerButton {
            pos: drag_pos(39),
            button: PointerButton::Primary,
            pressed: false,
            modifiers: Modifiers::NONE,
        }],
        _ => vec![Event::PointerMoved(c), wheel(-30.0)],
    }
}

/// Runs `frames` scripted pan/zoom frames of `app` (which should show the head map) without a
/// window: each frame is one egui pass plus tessellation. Returns the frame times and the
/// number of frames whose visible map region changed (to show the script really panned and
/// zoomed).
pub fn headless_pan_zoom(app: &mut ViewerApp, frames: usize, size: Vec2) -> (FrameStats, usize) {
    let ctx = egui::Context::default();
    let screen = Rect::from_min_size(Pos2::ZERO, size);
    let mut t = 0.0;
    let mut ms = Vec::with_capacity(frames);
    let mut moved = 0;
    let mut last_view = None;
    for k in 0..frames + 5 {
        let map = app
            .loaded()
            .and_then(|l| l.focus.map_rect)
            .unwrap_or(screen.shrink(screen.width() * 0.3));
        let events = if k < 5 {
            Vec::new()
        } else {
            pan_zoom_events(k - 5, map)
        };
        let input = RawInput {
            screen_rect: Some(screen),
            time: Some(t),
            predicted_dt: 1.0 / 60.0,
            events,
            ..RawInput::default()
        };
        let start = Instant::now();
        let mut out = ctx.run_ui(input, |ui| app.ui(ui));
        // No renderer here: the texture uploads are dropped.
        out.textures_delta.clear();
        let prims = ctx.tessellate(out.shapes, out.pixels_per_point);
        std::hint::black_box(prims);
        let dt = start.elapsed().as_secs_f64() * 1e3;
        t += 1.0 / 60.0;
        if k >= 5 {
            ms.push(dt);
            let view = app.loaded().and_then(|l| l.focus.map_view);
            if view != last_view {
                moved += 1;
            }
            last_view = view;
        }
    }
    (FrameStats::of(ms), moved)
}
