//! `attnscope-viewer [RUN_DIR]`: the desktop viewer (eframe, glow renderer).
//!
//! Besides the window, two scripted modes for documentation and benchmarks:
//! `--screenshot PATH` saves the window as PNG once the run is shown and exits, and
//! `--bench-frames N` drives N frames of pan and zoom over the head map and prints frame times.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use attnscope_viewer::app::{OpenOptions, ViewerApp};
use attnscope_viewer::bench::{pan_zoom_events, FrameStats};
use attnscope_viewer::data::Heavy;
use attnscope_viewer::views;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "attnscope-viewer",
    version,
    about = "Explore attnscope run bundles: attention maps, per-head sparsity, method selections"
)]
struct Args {
    /// Run directory written by `attnscope simulate --out RUN_DIR`.
    run: Option<PathBuf>,
    /// View to open: overview, head-map, tokens, methods, frequencies, live.
    #[arg(long)]
    view: Option<String>,
    #[arg(long)]
    layer: Option<usize>,
    #[arg(long)]
    head: Option<usize>,
    /// Method A (a method label of the run).
    #[arg(long)]
    method_a: Option<String>,
    /// Method B: a method label, `live` or `off`.
    #[arg(long)]
    method_b: Option<String>,
    /// Budget index.
    #[arg(long)]
    budget: Option<usize>,
    #[arg(long)]
    query_block: Option<usize>,
    /// `dark` or `light`.
    #[arg(long, default_value = "dark")]
    theme: String,
    /// Window size in points, e.g. `1400x900`.
    #[arg(long, default_value = "1400x900")]
    size: String,
    /// Save a PNG of the window once the run is shown, then exit.
    #[arg(long)]
    screenshot: Option<PathBuf>,
    /// Frames to draw after the run is shown before the screenshot.
    #[arg(long, default_value_t = 20)]
    screenshot_after: usize,
    /// Drive N frames of pan and zoom over the head map, print frame times, exit.
    #[arg(long)]
    bench_frames: Option<usize>,
}

/// The eframe app: the viewer plus the scripted modes.
struct Shell {
    app: ViewerApp,
    started: Instant,
    shown_at: Option<f64>,
    opened_at: Option<f64>,
    frames_shown: usize,
    screenshot: Option<PathBuf>,
    screenshot_after: usize,
    shot_requested: bool,
    shot_done: Arc<AtomicBool>,
    bench: Option<usize>,
    bench_frame: usize,
    frame_ms: Vec<f64>,
    cpu_ms: Vec<f64>,
    last: Option<Instant>,
}

impl eframe::App for Shell {
    fn raw_input_hook(&mut self, _ctx: &egui::Context, raw: &mut egui::RawInput) {
        if self.bench.is_some() && self.opened_at.is_some() {
            if let Some(rect) = self.app.loaded().and_then(|l| l.focus.map_rect) {
                raw.events.extend(pan_zoom_events(self.bench_frame, rect));
            }
        }
    }

    fn ui(&mut self, ui: &mut egui::Ui, frame: &mut eframe::Frame) {
        let ctx = ui.ctx().clone();
        self.app.ui(ui);
        if let Some(l) = self.app.loaded() {
            if self.shown_at.is_none() {
                let t = self.started.elapsed().as_secs_f64();
                self.shown_at = Some(t);
                eprintln!(
                    "attnscope-viewer: {} on screen at {:.2} s (small tables read in {:.2} s)",
                    l.run.dir.display(),
                    t,
                    l.run.load_seconds
                );
            }
            if self.opened_at.is_none() && l.run.heavy != Heavy::Loading {
                let t = self.started.elapsed().as_secs_f64();
                self.opened_at = Some(t);
                eprintln!(
                    "attnscope-viewer: maps and selections in at {:.2} s (read in {:.2} s)",
                    t, l.run.heavy_seconds
                );
            }
        }
        if matches!(self.app.state, attnscope_viewer::app::AppState::Failed(_))
            && (self.screenshot.is_some() || self.bench.is_some())
            && self.opened_at.is_none()
        {
            // Screenshot the error panel too; benchmarks stop.
            if self.bench.is_some() {
                eprintln!("attnscope-viewer: the run did not open");
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            self.opened_at = Some(self.started.elapsed().as_secs_f64());
        }
        if self.opened_at.is_none() {
            return;
        }
        self.frames_shown += 1;
        if let Some(n) = self.bench {
            let now = Instant::now();
            if let Some(t) = self.last {
                self.frame_ms.push((now - t).as_secs_f64() * 1e3);
            }
            self.last = Some(now);
            if let Some(cpu) = frame.info().cpu_usage {
                self.cpu_ms.push(f64::from(cpu) * 1e3);
            }
            self.bench_frame += 1;
            if self.bench_frame > n {
                let wall = FrameStats::of(std::mem::take(&mut self.frame_ms));
                let cpu = FrameStats::of(std::mem::take(&mut self.cpu_ms));
                println!("window frame interval: {wall}");
                println!("window cpu per frame (ui + tessellation): {cpu}");
                if let Some(v) = self.app.loaded().and_then(|l| l.focus.map_view) {
                    println!("final map view (blocks): {v:?}");
                }
                self.bench = None;
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            }
            ctx.request_repaint();
        }
        if let Some(path) = self.screenshot.clone() {
            if self.shot_done.load(Ordering::SeqCst) {
                ctx.send_viewport_cmd(egui::ViewportCommand::Close);
            } else if !self.shot_requested && self.frames_shown >= self.screenshot_after {
                self.shot_requested = true;
                let done = Arc::clone(&self.shot_done);
                let c2 = ctx.clone();
                ctx.send_viewport_cmd(egui::ViewportCommand::Screenshot(
                    egui::ScreenshotCallback::new(move |img| {
                        match save_png(&path, &img) {
                            Ok(()) => eprintln!("attnscope-viewer: saved {}", path.display()),
                            Err(e) => eprintln!("attnscope-viewer: {e:#}"),
                        }
                        done.store(true, Ordering::SeqCst);
                        c2.request_repaint();
                    }),
                ));
            }
            ctx.request_repaint();
        }
    }
}

fn save_png(path: &std::path::Path, img: &egui::ColorImage) -> anyhow::Result<()> {
    let f = std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let [w, h] = img.size;
    let mut enc = png::Encoder::new(std::io::BufWriter::new(f), w as u32, h as u32);
    enc.set_color(png::ColorType::Rgba);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header()?;
    let bytes: Vec<u8> = img.pixels.iter().flat_map(|c| c.to_array()).collect();
    wr.write_image_data(&bytes)?;
    Ok(())
}

fn egui_glow_options(vsync: bool) -> eframe::egui_glow::GlowConfiguration {
    eframe::egui_glow::GlowConfiguration {
        vsync,
        ..Default::default()
    }
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let args = Args::parse();
    let view = match &args.view {
        Some(v) => Some(views::find(v).with_context(|| {
            let names: Vec<&str> = views::VIEWS.iter().map(|v| v.name).collect();
            format!("unknown view '{v}'; views: {}", names.join(", "))
        })?),
        None if args.bench_frames.is_some() => views::find(views::head_map::NAME),
        None => None,
    };
    let dark = match args.theme.as_str() {
        "dark" => true,
        "light" => false,
        t => bail!("unknown theme '{t}': dark or light"),
    };
    let (w, h) = args
        .size
        .split_once('x')
        .and_then(|(w, h)| Some((w.parse::<f32>().ok()?, h.parse::<f32>().ok()?)))
        .with_context(|| format!("--size {}: expected WIDTHxHEIGHT", args.size))?;
    let options = OpenOptions {
        view,
        layer: args.layer,
        head: args.head,
        method_a: args.method_a.clone(),
        method_b: args.method_b.clone(),
        budget: args.budget,
        query_block: args.query_block,
    };
    let mut app = ViewerApp::new(args.run.clone(), options);
    app.dark = dark;
    let shell = Shell {
        app,
        started,
        shown_at: None,
        opened_at: None,
        frames_shown: 0,
        screenshot: args.screenshot.clone(),
        screenshot_after: args.screenshot_after.max(1),
        shot_requested: false,
        shot_done: Arc::new(AtomicBool::new(false)),
        bench: args.bench_frames,
        bench_frame: 0,
        frame_ms: Vec::new(),
        cpu_ms: Vec::new(),
        last: None,
    };
    let native = eframe::NativeOptions {
        renderer: eframe::Renderer::Glow,
        viewport: egui::ViewportBuilder::default()
            .with_title("attnscope viewer")
            .with_inner_size([w, h]),
        // Benchmarks measure frame time, not the display's refresh.
        glow_options: egui_glow_options(args.bench_frames.is_none()),
        ..eframe::NativeOptions::default()
    };
    eframe::run_native(
        "attnscope viewer",
        native,
        Box::new(move |_cc| Ok(Box::new(shell))),
    )
    .map_err(|e| anyhow::anyhow!("could not open a window: {e}"))
}
