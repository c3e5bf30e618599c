//! The application shell: opening runs (argument, path field, drag and drop) on a background
//! thread, the view tabs, the theme, the status bar, the error panel, and the live worker.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egui::{RichText, Ui};

use crate::data::{Heavy, HeavyTables, LoadError, RunData};
use crate::live::{LiveEngine, LiveSource};
use crate::views::{Focus, LiveStatus, View, VIEWS};

/// Settings applied when a run opens (command-line options).
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Registry index of the view to show.
    pub view: Option<usize>,
    pub layer: Option<usize>,
    pub head: Option<usize>,
    /// Method A and B by label.
    pub method_a: Option<String>,
    pub method_b: Option<String>,
    pub budget: Option<usize>,
    pub query_block: Option<usize>,
}

/// What the loader thread sends: the run (small tables), then its large tables.
#[allow(clippy::large_enum_variant)]
pub enum LoadMsg {
    Summary(Result<RunData, LoadError>),
    Heavy(Result<HeavyTables, String>),
}

/// A run being shown.
pub struct Loaded {
    pub run: Arc<RunData>,
    pub focus: Focus,
    pub views: Vec<Box<dyn View>>,
    engine: Option<LiveEngine>,
    /// The loader, while the maps and selections are still coming.
    heavy_rx: Option<Receiver<LoadMsg>>,
}

/// What the app is showing.
pub enum AppState {
    /// No run yet.
    Empty,
    Loading {
        dir: PathBuf,
        rx: Receiver<LoadMsg>,
        since: Instant,
    },
    Failed(LoadError),
    Loaded(Box<Loaded>),
}

/// The viewer.
pub struct ViewerApp {
    pub state: AppState,
    /// Registry index of the current view.
    pub current: usize,
    pub dark: bool,
    applied_dark: Option<bool>,
    path_field: String,
    pub options: OpenOptions,
}

impl std::fmt::Debug for ViewerApp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewerApp")
            .field("current", &self.current)
            .field("dark", &self.dark)
            .finish_non_exhaustive()
    }
}

impl Default for ViewerApp {
    fn default() -> Self {
        Self {
            state: AppState::Empty,
            current: 0,
            dark: true,
            applied_dark: None,
            path_field: String::new(),
            options: OpenOptions::default(),
        }
    }
}

impl Loaded {
    fn new(run: RunData, options: &OpenOptions) -> Self {
        let mut focus = Focus::for_run(&run);
        if let Some(l) = options.layer.filter(|l| run.layers.contains(l)) {
            focus.layer = l;
        }
        if let Some(h) = options.head.filter(|&h| h < run.n_heads) {
            focus.head = h;
        }
        if let Some(m) = options
            .method_a
            .as_deref()
            .and_then(|m| run.method_index(m))
        {
            focus.method_a = m;
        }
        if let Some(m) = options.method_b.as_deref() {
            focus.overlay_b = match m {
                "off" => crate::views::Overlay::Off,
                "live" => crate::views::Overlay::Live,
                m => run
                    .method_index(m)
                    .map_or(focus.overlay_b, crate::views::Overlay::Saved),
            };
        }
        if let Some(b) = options.budget.filter(|&b| b < run.budgets.len().max(1)) {
            focus.budget = b;
        }
        if let Some(q) = options.query_block {
            focus.query_block = q;
            focus.query_token = q * run.block;
        }
        Self {
            run: Arc::new(run),
            focus,
            views: VIEWS.iter().map(|v| (v.build)()).collect(),
            engine: None,
            heavy_rx: None,
        }
    }

    /// Installs the large tables when the loader has sent them; true when they arrived.
    fn poll_heavy(&mut self) -> bool {
        let Some(rx) = &self.heavy_rx else {
            return false;
        };
        let heavy = match rx.try_recv() {
            Ok(LoadMsg::Heavy(h)) => h,
            Ok(LoadMsg::Summary(_)) => return false,
            Err(std::sync::mpsc::TryRecvError::Empty) => return false,
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                Err("the loader stopped before reading the maps".to_string())
            }
        };
        self.heavy_rx = None;
        match Arc::get_mut(&mut self.run) {
            Some(run) => run.install(heavy),
            None => {
                // Views hold no clone of the run between frames, so this does not happen; if it
                // did, copy the run rather than lose the maps.
                let mut run = (*self.run).clone();
                run.install(heavy);
                self.run = Arc::new(run);
            }
        }
        true
    }
}

impl ViewerApp {
    /// An app that opens `dir` in the background (`None`: start empty).
    pub fn new(dir: Option<PathBuf>, options: OpenOptions) -> Self {
        let mut app = Self {
            options,
            ..Self::default()
        };
        if let Some(v) = app.options.view {
            app.current = v;
        }
        if let Some(d) = dir {
            app.open(d);
        }
        app
    }

    /// An app with `dir` already loaded (or failed), for tests and benchmarks.
    pub fn open_now(dir: &Path, options: OpenOptions) -> Self {
        let mut app = Self {
            options,
            ..Self::default()
        };
        if let Some(v) = app.options.view {
            app.current = v;
        }
        app.path_field = dir.display().to_string();
        app.state = match RunData::open(dir) {
            Ok(run) => AppState::Loaded(Box::new(Loaded::new(run, &app.options))),
            Err(e) => AppState::Failed(e),
        };
        app
    }

    /// Starts opening `dir` on a background thread.
    pub fn open(&mut self, dir: PathBuf) {
        let dir = if dir.file_name().is_some_and(|f| f == "manifest.json") {
            dir.parent().map(Path::to_path_buf).unwrap_or(dir)
        } else {
            dir
        };
        self.path_field = dir.display().to_string();
        let (tx, rx) = channel();
        let d = dir.clone();
        std::thread::Builder::new()
            .name("attnscope-open".into())
            .spawn(move || {
                let r =
                    std::panic::catch_unwind(|| RunData::open_summary(&d)).unwrap_or_else(|_| {
                        Err(LoadError {
                            dir: d.clone(),
                            message: "reading the bundle failed (internal error)".into(),
                        })
                    });
                let manifest = r.as_ref().ok().map(|r| r.manifest.clone());
                if tx.send(LoadMsg::Summary(r)).is_err() {
                    return;
                }
                // The run is on screen; now the large tables.
                if let Some(m) = manifest {
                    let h = std::panic::catch_unwind(|| RunData::read_heavy(&d, &m))
                        .unwrap_or_else(|_| Err("reading the maps failed (internal error)".into()));
                    let _ = tx.send(LoadMsg::Heavy(h));
                }
            })
            .ok();
        self.state = AppState::Loading {
            dir,
            rx,
            since: Instant::now(),
        };
    }

    /// Blocks until a background open has shown the run, up to `timeout`; with `heavy`, also
    /// until its maps and selections are in (tests, benchmarks).
    pub fn wait_loaded(&mut self, timeout: Duration, heavy: bool) {
        let t = Instant::now();
        while t.elapsed() < timeout {
            self.poll_loading();
            let done = match &self.state {
                AppState::Loading { .. } => false,
                AppState::Loaded(l) => !heavy || l.heavy_rx.is_none(),
                _ => true,
            };
            if done {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn poll_loading(&mut self) {
        if let AppState::Loaded(l) = &mut self.state {
            l.poll_heavy();
            return;
        }
        let AppState::Loading { rx, dir, .. } = &self.state else {
            return;
        };
        match rx.try_recv() {
            Ok(LoadMsg::Summary(Ok(run))) => {
                let dir = dir.clone();
                let AppState::Loading { rx, .. } = std::mem::replace(
                    &mut self.state,
                    AppState::Failed(LoadError {
                        dir,
                        message: String::new(),
                    }),
                ) else {
                    return;
                };
                let mut l = Loaded::new(run, &self.options);
                l.heavy_rx = Some(rx);
                self.state = AppState::Loaded(Box::new(l));
            }
            Ok(LoadMsg::Summary(Err(e))) => self.state = AppState::Failed(e),
            Ok(LoadMsg::Heavy(_)) => {}
            Err(std::sync::mpsc::TryRecvError::Empty) => {}
            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                self.state = AppState::Failed(LoadError {
                    dir: dir.clone(),
                    message: "the loader stopped".into(),
                })
            }
        }
    }

    /// The loaded run and focus, if any.
    pub fn loaded(&self) -> Option<&Loaded> {
        match &self.state {
            AppState::Loaded(l) => Some(l),
            _ => None,
        }
    }

    /// The loaded run and focus, mutably.
    pub fn loaded_mut(&mut self) -> Option<&mut Loaded> {
        match &mut self.state {
            AppState::Loaded(l) => Some(l),
            _ => None,
        }
    }

    /// Blocks until the live worker is idle (tests), then takes its result into the focus.
    pub fn wait_live(&mut self, timeout: Duration) -> bool {
        let Some(l) = self.loaded_mut() else {
            return true;
        };
        let Some(e) = l.engine.as_mut() else {
            return true;
        };
        let idle = e.wait_idle(timeout);
        l.focus.live = e.latest.clone();
        idle
    }

    /// Draws the whole app into `ui` (the eframe root ui, or a test harness's).
    pub fn ui(&mut self, ui: &mut Ui) {
        if self.applied_dark != Some(self.dark) {
            ui.ctx().set_theme(if self.dark {
                egui::Theme::Dark
            } else {
                egui::Theme::Light
            });
            self.applied_dark = Some(self.dark);
        }
        self.poll_loading();
        let pending = match &self.state {
            AppState::Loading { .. } => true,
            AppState::Loaded(l) => l.heavy_rx.is_some(),
            _ => false,
        };
        if pending {
            ui.ctx().request_repaint_after(Duration::from_millis(30));
        }
        let dropped: Option<PathBuf> = ui
            .ctx()
            .input(|i| i.raw.dropped_files.first().map(|f| f.path().to_path_buf()));
        if let Some(p) = dropped {
            self.open(p);
        }
        self.top_bar(ui);
        self.status_bar(ui);
        egui::CentralPanel::default().show(ui, |ui| self.central(ui));
    }

    fn top_bar(&mut self, ui: &mut Ui) {
        egui::Panel::top("attnscope-top").show(ui, |ui| {
            ui.horizontal(|ui| {
                ui.heading("attnscope");
                let field = ui.add(
                    egui::TextEdit::singleline(&mut self.path_field)
                        .hint_text("run directory")
                        .desired_width(260.0),
                );
                let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
                if ui.button("Open").clicked() || enter {
                    let p = PathBuf::from(self.path_field.trim());
                    self.open(p);
                }
                ui.separator();
                let enabled = matches!(self.state, AppState::Loaded(_));
                for (i, v) in VIEWS.iter().enumerate() {
                    let r = ui
                        .add_enabled(enabled, egui::Button::selectable(self.current == i, v.name))
                        .on_hover_text(v.about);
                    if r.clicked() {
                        self.current = i;
                    }
                }
                ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                    let label = if self.dark {
                        "Light theme"
                    } else {
                        "Dark theme"
                    };
                    if ui.button(label).clicked() {
                        self.dark = !self.dark;
                    }
                });
            });
        });
    }

    fn status_bar(&mut self, ui: &mut Ui) {
        egui::Panel::bottom("attnscope-status").show(ui, |ui| {
            ui.horizontal(|ui| match &self.state {
                AppState::Empty => {
                    ui.label("No run open: type a run directory above or drop one on the window.");
                }
                AppState::Loading { dir, since, .. } => {
                    ui.spinner();
                    ui.label(format!(
                        "opening {} … {:.1} s",
                        dir.display(),
                        since.elapsed().as_secs_f32()
                    ));
                }
                AppState::Failed(e) => {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!("could not open {}", e.dir.display()),
                    );
                }
                AppState::Loaded(l) => {
                    let m = &l.run.manifest;
                    ui.label(format!(
                        "model {} ({}, {} layers, {}/{} heads)",
                        m.model.spec,
                        m.model.architecture,
                        m.model.n_layers,
                        m.model.n_heads,
                        m.model.n_kv_heads
                    ));
                    ui.separator();
                    ui.label(format!("input {}", l.run.describe_input(l.focus.input)));
                    ui.separator();
                    ui.label(format!("{} tokens", m.n_tokens));
                    ui.separator();
                    ui.label(format!(
                        "device {}",
                        if m.device.is_empty() { "-" } else { &m.device }
                    ));
                    match &l.run.heavy {
                        Heavy::Loading => {
                            ui.separator();
                            ui.spinner();
                            ui.label("reading maps and selections");
                        }
                        Heavy::Failed(_) => {
                            ui.separator();
                            ui.colored_label(ui.visuals().error_fg_color, "maps unreadable");
                        }
                        Heavy::Ready if l.focus.show_timings => {
                            ui.separator();
                            ui.label(format!(
                                "read in {:.2} s + maps {:.2} s",
                                l.run.load_seconds, l.run.heavy_seconds
                            ));
                        }
                        Heavy::Ready => {}
                    }
                    if l.focus.live_status.busy {
                        ui.separator();
                        ui.spinner();
                        ui.label("live: computing");
                    }
                }
            });
        });
    }

    fn central(&mut self, ui: &mut Ui) {
        match &mut self.state {
            AppState::Empty => {
                ui.vertical_centered(|ui| {
                    ui.add_space(40.0);
                    ui.heading("attnscope viewer");
                    ui.label(
                        "Open a run bundle written by `attnscope simulate --out RUN_DIR`: type its \
                         folder in the field above and press Open, or drop the folder on the window.",
                    );
                });
            }
            AppState::Loading { .. } => {
                ui.centered_and_justified(|ui| {
                    ui.spinner();
                });
            }
            AppState::Failed(e) => {
                let msg = e.message.clone();
                let dir = e.dir.display().to_string();
                egui::Frame::group(ui.style()).show(ui, |ui| {
                    ui.heading(RichText::new("Could not open the run").color(ui.visuals().error_fg_color));
                    ui.label(format!("folder: {dir}"));
                    ui.label(RichText::new(msg).monospace());
                    ui.add_space(8.0);
                    ui.label(
                        "Pick another run directory in the field above (or drop one on the window). \
                         A run directory holds manifest.json and the tables `attnscope simulate` writes.",
                    );
                });
            }
            AppState::Loaded(l) => {
                let l = &mut **l;
                // The live worker: start on first request, poll every frame.
                if let Some(req) = l.focus.live_request.take() {
                    let engine = l.engine.get_or_insert_with(|| {
                        let ctx = ui.ctx().clone();
                        LiveEngine::start(LiveSource::of(&l.run), move || ctx.request_repaint())
                    });
                    engine.submit(req);
                }
                if let Some(e) = l.engine.as_mut() {
                    if e.poll() {
                        l.focus.live = e.latest.clone();
                    }
                    l.focus.live_status = LiveStatus {
                        busy: e.busy(),
                        running_for: e.running_for().unwrap_or(0.0),
                        error: e.error.clone(),
                    };
                    if e.busy() {
                        ui.ctx().request_repaint_after(Duration::from_millis(100));
                    }
                }
                let i = self.current.min(l.views.len().saturating_sub(1));
                let run = Arc::clone(&l.run);
                if let Some(v) = l.views.get_mut(i) {
                    v.ui(ui, &run, &mut l.focus);
                }
                if let Some(v) = l.focus.open_view.take() {
                    self.current = v;
                    ui.ctx().request_repaint();
                }
            }
        }
    }
}
