//! Colour scales (a perceptually ordered viridis-like ramp, linear or logarithmic) and their
//! legends, shared by every view.

use egui::{Color32, Pos2, Rect, Sense, Stroke, Ui, Vec2};

/// Stops of the viridis colour map (matplotlib), evenly spaced.
const VIRIDIS: [[u8; 3]; 9] = [
    [68, 1, 84],
    [71, 44, 122],
    [59, 81, 139],
    [44, 113, 142],
    [33, 144, 141],
    [39, 173, 129],
    [92, 200, 99],
    [170, 220, 50],
    [253, 231, 37],
];

/// The colour of `t` in [0, 1] (clamped) on the viridis ramp.
pub fn viridis(t: f32) -> Color32 {
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let x = t * (VIRIDIS.len() - 1) as f32;
    let i = (x.floor() as usize).min(VIRIDIS.len() - 2);
    let f = x - i as f32;
    let (a, b) = (VIRIDIS[i], VIRIDIS[i + 1]);
    let mix = |c: usize| (a[c] as f32 + (b[c] as f32 - a[c] as f32) * f).round() as u8;
    Color32::from_rgb(mix(0), mix(1), mix(2))
}

/// A 256-entry lookup table of [`viridis`], for filling large images quickly.
pub fn viridis_lut() -> [Color32; 256] {
    std::array::from_fn(|i| viridis(i as f32 / 255.0))
}

/// A value-to-colour mapping over a range, linear or logarithmic.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    pub min: f64,
    pub max: f64,
    pub log: bool,
}

impl Scale {
    /// A linear scale over the finite values of `values` (0..1 when there are none).
    pub fn linear_of(values: impl Iterator<Item = f64>) -> Self {
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for v in values.filter(|v| v.is_finite()) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if !lo.is_finite() {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo < 1e-12 {
            hi = lo + 1e-6;
        }
        Self {
            min: lo,
            max: hi,
            log: false,
        }
    }

    /// A log scale from `max / 10^decades` to the largest positive value of `values`.
    pub fn log_of(values: impl Iterator<Item = f32>, decades: f64) -> Self {
        let hi = values
            .filter(|v| v.is_finite() && *v > 0.0)
            .fold(0f32, f32::max) as f64;
        let hi = if hi > 0.0 { hi } else { 1.0 };
        Self {
            min: hi / 10f64.powf(decades),
            max: hi,
            log: true,
        }
    }

    /// Position of `v` on the scale, 0..1 (clamped); `None` for values below a log scale.
    pub fn t(&self, v: f64) -> Option<f32> {
        if !v.is_finite() {
            return None;
        }
        if self.log {
            if v <= 0.0 {
                return None;
            }
            let t = (v.max(self.min) / self.min).log10() / (self.max / self.min).log10();
            Some(t.clamp(0.0, 1.0) as f32)
        } else {
            Some(((v - self.min) / (self.max - self.min)).clamp(0.0, 1.0) as f32)
        }
    }

    /// The value at position `t` (0..1).
    pub fn value_at(&self, t: f64) -> f64 {
        if self.log {
            self.min * (self.max / self.min).powf(t)
        } else {
            self.min + (self.max - self.min) * t
        }
    }

    /// The colour of `v`; `below` for values a log scale cannot show (zero mass).
    pub fn color(&self, v: f64, below: Color32) -> Color32 {
        self.t(v).map_or(below, viridis)
    }
}

/// Formats a value compactly for legends and readouts.
pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "-".into()
    } else if a == 0.0 {
        "0".into()
    } else if v.fract() == 0.0 && a < 1e6 {
        format!("{v:.0}")
    } else if !(1e-3..1e4).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// Draws a horizontal colour bar with min, middle and max labels and a title.
pub fn legend(ui: &mut Ui, scale: &Scale, title: &str, width: f32) {
    ui.horizontal(|ui| {
        ui.label(title);
        let (rect, _) = ui.allocate_exact_size(Vec2::new(width, 14.0), Sense::hover());
        let painter = ui.painter_at(rect);
        let steps = 64;
        let w = rect.width() / steps as f32;
        for i in 0..steps {
            let t = (i as f32 + 0.5) / steps as f32;
            let r = Rect::from_min_size(
                Pos2::new(rect.left() + i as f32 * w, rect.top()),
                Vec2::new(w + 0.5, rect.height()),
            );
            painter.rect_filled(r, 0.0, viridis(t));
        }
        painter.rect_stroke(
            rect,
            0.0,
            Stroke::new(1.0, ui.visuals().weak_text_color()),
            egui::StrokeKind::Inside,
        );
        let mid = scale.value_at(0.5);
        ui.label(format!(
            "{} … {} … {}{}",
            fmt_value(scale.min),
            fmt_value(mid),
            fmt_value(scale.max),
            if scale.log { " (log)" } else { "" }
        ));
    });
}

/// A small filled square with a label, for categorical legends.
pub fn swatch(ui: &mut Ui, color: Color32, label: &str) {
    ui.horizontal(|ui| {
        let (rect, _) = ui.allocate_exact_size(Vec2::splat(12.0), Sense::hover());
        ui.painter().rect_filled(rect, 2.0, color);
        ui.label(label);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_map_ends_and_clamp() {
        let s = Scale::linear_of([0.0, 2.0, f64::NAN].into_iter());
        assert_eq!(s.t(0.0), Some(0.0));
        assert_eq!(s.t(2.0), Some(1.0));
        assert_eq!(s.t(5.0), Some(1.0));
        let l = Scale::log_of([0.0f32, 0.1, 1.0].into_iter(), 4.0);
        assert_eq!(l.t(0.0), None);
        assert_eq!(l.t(1.0), Some(1.0));
        assert!((l.t(1e-2).unwrap_or(0.0) - 0.5).abs() < 1e-6);
        assert_eq!(viridis(0.0), Color32::from_rgb(68, 1, 84));
        assert_eq!(viridis(1.0), Color32::from_rgb(253, 231, 37));
        assert_eq!(fmt_value(0.12345), "0.123");
        assert_eq!(fmt_value(16.0), "16");
        assert_eq!(fmt_value(2.5), "2.50");
    }
}
