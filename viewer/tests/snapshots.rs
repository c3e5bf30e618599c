//! Image snapshots of every view on the committed fixture bundle, rendered through wgpu on a
//! software driver (Mesa lavapipe on CI). `UPDATE_SNAPSHOTS=1 cargo test --workspace` rewrites
//! them; without a renderer each test prints a notice and skips.

mod common;

use std::time::Duration;

use attnscope_viewer::views::{self, VIEWS};
use common::*;

/// Renders `view` (dark or light) after the UI settles and compares with `tests/snapshots/NAME.png`.
fn snapshot_view(
    view: &str,
    name: &str,
    dark: bool,
    tweak: impl FnOnce(&mut attnscope_viewer::OpenOptions),
) {
    let mut o = on_view(view);
    tweak(&mut o);
    let Some(mut h) = render_harness(app(o), dark) else {
        return;
    };
    h.run();
    h.snapshot(name);
}

#[test]
fn overview_snapshot() {
    snapshot_view(views::overview::NAME, "overview", true, |_| {});
}

#[test]
fn overview_light_snapshot() {
    snapshot_view(views::overview::NAME, "overview_light", false, |_| {});
}

#[test]
fn head_map_snapshot() {
    snapshot_view(views::head_map::NAME, "head_map", true, |o| {
        o.layer = Some(10);
        o.head = Some(4);
        o.method_a = Some("phsa".into());
        o.method_b = Some("quest".into());
        o.budget = Some(1);
        o.query_block = Some(20);
    });
}

#[test]
fn tokens_snapshot() {
    snapshot_view(views::tokens::NAME, "tokens", true, |o| {
        o.layer = Some(2);
        o.head = Some(1);
        o.query_block = Some(25);
    });
}

#[test]
fn methods_snapshot() {
    snapshot_view(views::methods::NAME, "methods", true, |o| {
        o.budget = Some(1)
    });
}

#[test]
fn frequencies_snapshot() {
    snapshot_view(views::frequencies::NAME, "frequencies", true, |o| {
        o.layer = Some(10);
        o.head = Some(2);
    });
}

#[test]
fn live_snapshot() {
    let Some(mut h) = render_harness(app(on_view(views::live::NAME)), true) else {
        return;
    };
    h.step();
    h.step();
    assert!(
        h.state_mut().wait_live(Duration::from_secs(120)),
        "live result in time"
    );
    h.run();
    let l = h.state().loaded().expect("loaded");
    assert!(l.focus.live.is_some(), "the live view computed a result");
    h.snapshot("live");
}

#[test]
fn error_panel_snapshot() {
    let Some(mut h) = render_harness(
        attnscope_viewer::ViewerApp::open_now("/nonexistent/run".as_ref(), Default::default()),
        true,
    ) else {
        return;
    };
    h.run();
    h.snapshot("error_missing_bundle");
}

#[test]
fn every_view_has_a_snapshot() {
    // Keeps this file in step with the registry.
    let covered = [
        "Overview",
        "Head map",
        "Tokens",
        "Methods",
        "Frequencies",
        "Live",
    ];
    for v in VIEWS {
        assert!(
            covered.contains(&v.name),
            "no snapshot test for view {}",
            v.name
        );
    }
}
