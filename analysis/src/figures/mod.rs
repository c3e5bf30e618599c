//! Publication figures of a run bundle, as PNG and SVG (plotters): recall and information loss
//! vs sparsity, information loss per layer, sink-mass heatmap, IoU matrix, frequency-chunk energy
//! per head, the relative information-loss reduction of one method over another (per budget with
//! its bootstrap interval, and per layer), information loss against each swept parameter, a
//! pooled attention map with two methods' kept blocks overlaid, and for `attnscope eval` runs the
//! perplexity change against recall and the needle tasks' exact match by depth.
//!
//! Text uses DejaVu Sans, embedded (`assets/fonts`, Bitstream Vera license), so figures render
//! the same everywhere without system fonts. Lines use the Okabe-Ito palette (with marker
//! shapes), heatmaps viridis: both colour-blind safe.
//!
//! ```no_run
//! use attnscope_analysis::bundle::Bundle;
//! use attnscope_analysis::figures::{render_all, FigureOptions};
//! let run = Bundle::read("runs/quickstart".as_ref())?;
//! let files = render_all(&run, "figs".as_ref(), &FigureOptions::default())?;
//! # Ok::<(), attnscope_analysis::AnalysisError>(())
//! ```

mod attention_map;
mod comparison;
mod eval;
mod heatmaps;
mod lines;

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::bundle::io::write_atomic;
use crate::bundle::Bundle;
use crate::error::{AnalysisError, Result};

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
pub(crate) const FAMILY: &str = "sans-serif";

fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The embedded font is a valid TrueType file; a failure would only lose text.
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Image formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    Png,
    Svg,
}

impl ImageFormat {
    fn ext(self) -> &'static str {
        match self {
            ImageFormat::Png => "png",
            ImageFormat::Svg => "svg",
        }
    }
}

/// What to draw.
#[derive(Debug, Clone)]
pub struct FigureOptions {
    /// Budget index of the per-budget figures (default: the last budget).
    pub budget: Option<usize>,
    /// Input index of the attention map (default 0).
    pub input: usize,
    /// (layer, q-head) of the attention map (default: where the two methods differ most).
    pub head: Option<(usize, usize)>,
    /// The two methods of the attention-map overlay (default: phsa and infllm-v2, else the first
    /// two methods).
    pub compare: Option<(String, String)>,
    pub formats: Vec<ImageFormat>,
}

impl Default for FigureOptions {
    fn default() -> Self {
        Self {
            budget: None,
            input: 0,
            head: None,
            compare: None,
            formats: vec![ImageFormat::Png, ImageFormat::Svg],
        }
    }
}

pub(crate) type Dr<DB> =
    std::result::Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

/// One figure: its file stem, pixel size and drawing.
pub(crate) trait Figure {
    /// The file stem.
    fn name(&self) -> String;
    fn size(&self) -> (u32, u32);
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Dr<DB>;
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> AnalysisError {
    AnalysisError::File {
        path: path.to_path_buf(),
        msg: format!("drawing the figure failed: {e}"),
    }
}

/// Renders `fig` into `dir` in each format; returns the files written.
pub(crate) fn save(fig: &impl Figure, dir: &Path, formats: &[ImageFormat]) -> Result<Vec<PathBuf>> {
    register_font();
    let (w, h) = fig.size();
    let mut out = Vec::new();
    for &f in formats {
        let path = dir.join(format!("{}.{}", fig.name(), f.ext()));
        match f {
            ImageFormat::Png => {
                let mut buf = vec![255u8; (w * h * 3) as usize];
                {
                    let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
                    root.fill(&WHITE).map_err(|e| draw_err(&path, e))?;
                    fig.draw(&root).map_err(|e| draw_err(&path, e))?;
                    root.present().map_err(|e| draw_err(&path, e))?;
                }
                let mut png_bytes = Vec::new();
                {
                    let mut enc = png::Encoder::new(&mut png_bytes, w, h);
                    enc.set_color(png::ColorType::Rgb);
                    enc.set_depth(png::BitDepth::Eight);
                    enc.set_compression(png::Compression::Best);
                    enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
                    let mut wr = enc.write_header().map_err(|e| draw_err(&path, e))?;
                    wr.write_image_data(&buf).map_err(|e| draw_err(&path, e))?;
                }
                write_atomic(&path, &png_bytes)?;
            }
            ImageFormat::Svg => {
                let mut s = String::new();
                {
                    let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
                    root.fill(&WHITE).map_err(|e| draw_err(&path, e))?;
                    fig.draw(&root).map_err(|e| draw_err(&path, e))?;
                    root.present().map_err(|e| draw_err(&path, e))?;
                }
                write_atomic(&path, s.as_bytes())?;
            }
        }
        out.push(path);
    }
    Ok(out)
}

/// Renders every figure of `b` into `dir` (created); returns the files written and warnings
/// (figures skipped for lack of data).
pub fn render_all(b: &Bundle, dir: &Path, o: &FigureOptions) -> Result<Vec<PathBuf>> {
    Ok(render_all_with_notes(b, dir, o)?.0)
}

/// As [`render_all`], also returning notes about figures that were skipped or reduced.
pub fn render_all_with_notes(
    b: &Bundle,
    dir: &Path,
    o: &FigureOptions,
) -> Result<(Vec<PathBuf>, Vec<String>)> {
    std::fs::create_dir_all(dir).map_err(|e| AnalysisError::File {
        path: dir.to_path_buf(),
        msg: e.to_string(),
    })?;
    let n_budgets = b.manifest.budgets.len();
    let budget = match o.budget {
        Some(x) if x >= n_budgets => {
            return Err(AnalysisError::Input(format!(
                "budget {x} is out of range: the run has budgets 0..{}",
                n_budgets.saturating_sub(1)
            )))
        }
        Some(x) => x,
        None => n_budgets.saturating_sub(1),
    };
    let mut files = Vec::new();
    let mut notes = Vec::new();
    if b.results.metrics.is_empty() {
        notes.push("no metrics: line figures skipped".into());
    } else {
        files.extend(save(&lines::RecallVsSparsity::new(b), dir, &o.formats)?);
        files.extend(save(
            &lines::InfoLossPerLayer::new(b, budget),
            dir,
            &o.formats,
        )?);
    }
    if b.results.heads.is_empty() {
        notes.push("no head statistics: sink-mass and frequency figures skipped".into());
    } else {
        files.extend(save(&heatmaps::sink_mass(b), dir, &o.formats)?);
        files.extend(save(&heatmaps::freq_energy(b), dir, &o.formats)?);
    }
    if b.manifest.methods.len() < 2 {
        notes.push("fewer than two methods: IoU matrix skipped".into());
    } else if b.results.iou.is_empty() {
        notes.push("no IoU rows: IoU matrix skipped".into());
    } else {
        files.extend(save(&heatmaps::iou_matrix(b, budget), dir, &o.formats)?);
    }
    let reduction = attention_map::pick_compare(b, o)
        .and_then(|(a, m)| comparison::Reduction::new(b, (&a, &m), budget));
    match reduction {
        Some(fig) => files.extend(save(&fig, dir, &o.formats)?),
        None => notes.push("no metrics of two methods to compare: reduction figure skipped".into()),
    }
    for fig in comparison::Sweep::all(b) {
        files.extend(save(&fig, dir, &o.formats)?);
    }
    if !b.results.eval.is_empty() {
        match eval::PplVsRecall::new(b) {
            Some(fig) => files.extend(save(&fig, dir, &o.formats)?),
            None => notes.push("no eval rows with recall: perplexity figure skipped".into()),
        }
        if let Some(fig) = eval::needle_accuracy(b) {
            files.extend(save(&fig, dir, &o.formats)?);
        }
    }
    match attention_map::AttentionMap::new(b, o, budget) {
        Ok((fig, mut n)) => {
            notes.append(&mut n);
            files.extend(save(&fig, dir, &o.formats)?);
        }
        Err(e) => notes.push(format!("attention map skipped: {e}")),
    }
    Ok((files, notes))
}

// ---------- shared style ----------

/// Okabe-Ito colours, in the order methods take them (yellow last: weak on white).
pub(crate) const OKABE_ITO: [RGBColor; 8] = [
    RGBColor(213, 94, 0),    // vermillion
    RGBColor(0, 114, 178),   // blue
    RGBColor(0, 158, 115),   // bluish green
    RGBColor(230, 159, 0),   // orange
    RGBColor(204, 121, 167), // reddish purple
    RGBColor(86, 180, 233),  // sky blue
    RGBColor(0, 0, 0),       // black
    RGBColor(240, 228, 66),  // yellow
];

/// Colour and marker shape of the i-th method (8 colours x 4 markers).
pub(crate) fn method_style(i: usize) -> (RGBColor, usize) {
    (OKABE_ITO[i % 8], (i / 8 + i) % 4)
}

/// Viridis (matplotlib), sampled at 11 points and interpolated linearly.
pub(crate) fn viridis(t: f64) -> RGBColor {
    const P: [(u8, u8, u8); 11] = [
        (68, 1, 84),
        (72, 36, 117),
        (65, 68, 135),
        (53, 95, 141),
        (42, 120, 142),
        (33, 145, 140),
        (34, 168, 132),
        (68, 191, 112),
        (122, 209, 81),
        (189, 223, 38),
        (253, 231, 37),
    ];
    let t = if t.is_finite() {
        t.clamp(0.0, 1.0)
    } else {
        0.0
    } * 10.0;
    let i = (t.floor() as usize).min(9);
    let f = t - i as f64;
    let lerp = |a: u8, b: u8| (f64::from(a) + (f64::from(b) - f64::from(a)) * f).round() as u8;
    RGBColor(
        lerp(P[i].0, P[i + 1].0),
        lerp(P[i].1, P[i + 1].1),
        lerp(P[i].2, P[i + 1].2),
    )
}

/// Black or white, whichever reads better on `c`.
pub(crate) fn ink_on(c: RGBColor) -> RGBColor {
    let l = 0.2126 * f64::from(c.0) + 0.7152 * f64::from(c.1) + 0.0722 * f64::from(c.2);
    if l > 140.0 {
        BLACK
    } else {
        WHITE
    }
}

pub(crate) fn font(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().color(&BLACK)
}

pub(crate) fn centered(size: u32) -> TextStyle<'static> {
    font(size).pos(Pos::new(HPos::Center, VPos::Center))
}

/// Draws a figure title centred at the top of `root`; returns the area below it.
pub(crate) fn title<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    text: &str,
) -> std::result::Result<DrawingArea<DB, Shift>, DrawingAreaErrorKind<DB::ErrorType>> {
    let (w, _) = root.dim_in_pixel();
    root.draw(&Text::new(
        text.to_string(),
        (w as i32 / 2, 16),
        font(30).pos(Pos::new(HPos::Center, VPos::Top)),
    ))?;
    Ok(root.margin(64, 0, 0, 0))
}

/// The model and input line shown under titles.
pub(crate) fn subtitle(b: &Bundle) -> String {
    let m = &b.manifest;
    let n = m.data.inputs.len().max(1);
    format!(
        "{}, {} tokens{}",
        m.model.spec,
        m.n_tokens,
        if n > 1 {
            format!(", mean of {n} inputs")
        } else {
            String::new()
        }
    )
}
