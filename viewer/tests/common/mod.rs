//! Shared test support: the committed fixture bundle, damaged copies of it, and a kittest harness
//! with a software renderer when one can be had.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use attnscope_analysis::bundle::Bundle;
use attnscope_viewer::app::{OpenOptions, ViewerApp};
use attnscope_viewer::views;
use egui_kittest::Harness;

/// The committed bundle: SmolLM2-135M on 448 tokens of Alice, layers 2 and 10, four methods at
/// three sparsities, Q/K/V of layer 2 (made by `attnscope simulate`, see tests/fixtures/README.md).
/// The path is relative (tests run in the crate folder), so snapshots showing it do not depend on
/// where the repository is checked out.
pub fn fixture() -> PathBuf {
    let rel = Path::new("tests/fixtures/run");
    if rel.join("manifest.json").is_file() {
        rel.to_path_buf()
    } else {
        Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }
}

/// Window size of the snapshots.
pub const SIZE: egui::Vec2 = egui::vec2(1280.0, 820.0);

/// Options opening `view` (a registry name).
pub fn on_view(view: &str) -> OpenOptions {
    OpenOptions {
        view: views::find(view),
        ..OpenOptions::default()
    }
}

/// The app with the fixture loaded.
pub fn app(options: OpenOptions) -> ViewerApp {
    ViewerApp::open_now(&fixture(), options)
}

/// A harness around `app`, without a renderer (accessibility-tree tests).
pub fn harness(app: ViewerApp) -> Harness<'static, ViewerApp> {
    Harness::builder()
        .with_size(SIZE)
        .build_ui_state(|ui, app: &mut ViewerApp| app.ui(ui), app)
}

/// A wgpu renderer on Vulkan (Mesa's lavapipe on CI, installed by .ci/run), or `None` with a
/// printed notice when there is none: then snapshot tests skip. Other backends (wgpu's GL path)
/// are not used: their pixels differ from the committed snapshots.
pub fn renderer() -> Option<egui_kittest::wgpu::WgpuTestRenderer> {
    let mut setup = egui_kittest::wgpu::default_wgpu_setup();
    if let egui_wgpu::WgpuSetup::CreateNew(c) = &mut setup {
        c.instance_descriptor.backends = egui_wgpu::wgpu::Backends::VULKAN;
    }
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
        egui_kittest::wgpu::WgpuTestRenderer::from_setup(setup)
    }));
    std::panic::set_hook(prev);
    match r {
        Ok(r) => Some(r),
        Err(_) => {
            eprintln!(
                "notice: no Vulkan adapter for wgpu (install Mesa's lavapipe: apt-get install \
                 mesa-vulkan-drivers); skipping the image snapshot"
            );
            None
        }
    }
}

/// A rendering harness around `app`, or `None` (skip) without a renderer.
pub fn render_harness(app: ViewerApp, dark: bool) -> Option<Harness<'static, ViewerApp>> {
    let r = renderer()?;
    let mut app = app;
    app.dark = dark;
    // Timings change from run to run; snapshots must not.
    if let Some(l) = app.loaded_mut() {
        l.focus.show_timings = false;
    }
    Some(
        Harness::builder()
            .with_size(SIZE)
            .with_theme(if dark {
                egui::Theme::Dark
            } else {
                egui::Theme::Light
            })
            .renderer(r)
            .build_ui_state(|ui, app: &mut ViewerApp| app.ui(ui), app),
    )
}

/// A copy of the fixture in a temporary folder, changed by `edit` (the bundle in memory) before
/// it is written; `keep_qkv` copies the Q/K/V file too.
pub fn damaged_copy(
    edit: impl FnOnce(&mut Bundle),
    keep_qkv: bool,
) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("run");
    let mut b = Bundle::read(&fixture()).expect("fixture reads");
    if !keep_qkv {
        b.manifest.qkv.clear();
    }
    b.dir = dir.clone();
    edit(&mut b);
    b.write(false).expect("copy writes");
    if keep_qkv {
        for q in &b.manifest.qkv {
            std::fs::copy(fixture().join(&q.file), dir.join(&q.file)).expect("copy qkv");
        }
    }
    (tmp, dir)
}
