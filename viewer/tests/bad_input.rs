//! Bad input never crashes: a missing or corrupt bundle shows an error panel; a bundle without
//! maps or without Q/K shows the reason where the map or the live controls would be.

mod common;

use attnscope_viewer::views::{self, VIEWS};
use attnscope_viewer::{app::AppState, ViewerApp};
use common::*;
use egui_kittest::kittest::{NodeT, Queryable};

/// Draws every view of `app` once (no panic) and returns the harness.
fn every_view(app: ViewerApp) -> egui_kittest::Harness<'static, ViewerApp> {
    let mut h = harness(app);
    h.run();
    for i in 0..VIEWS.len() {
        h.state_mut().current = i;
        h.run_steps(2);
    }
    h
}

#[test]
fn missing_bundle_shows_an_error_panel() {
    let h = every_view(ViewerApp::open_now(
        "/nonexistent/run".as_ref(),
        Default::default(),
    ));
    assert!(matches!(h.state().state, AppState::Failed(_)));
    h.get_by_label("Could not open the run");
    h.get_by_label_contains("no such run directory");
}

#[test]
fn corrupt_manifest_and_truncated_table_show_an_error_panel() {
    let (_t, dir) = damaged_copy(|_| {}, false);
    std::fs::write(dir.join("manifest.json"), b"{ not json").expect("write");
    let h = every_view(ViewerApp::open_now(&dir, Default::default()));
    assert!(matches!(h.state().state, AppState::Failed(_)));
    h.get_by_label("Could not open the run");

    // A truncated metrics table: nothing to show.
    let (_t2, dir2) = damaged_copy(|_| {}, false);
    let metrics = dir2.join("metrics.parquet");
    let bytes = std::fs::read(&metrics).expect("read");
    std::fs::write(&metrics, &bytes[..bytes.len() / 2]).expect("truncate");
    let h = every_view(ViewerApp::open_now(&dir2, Default::default()));
    assert!(matches!(h.state().state, AppState::Failed(_)));
    h.get_by_label_contains("metrics.parquet");
}

#[test]
fn truncated_maps_leave_the_rest_of_the_run_usable() {
    // The maps are read after the run is shown: a truncated maps table is reported where the
    // map would be, and the overview still works.
    let (_t, dir) = damaged_copy(|_| {}, false);
    let maps = dir.join("maps.parquet");
    let bytes = std::fs::read(&maps).expect("read");
    std::fs::write(&maps, &bytes[..bytes.len() / 2]).expect("truncate");
    let mut h = every_view(ViewerApp::open_now(&dir, on_view(views::head_map::NAME)));
    assert!(h.state().loaded().is_some());
    h.state_mut().current = views::find(views::head_map::NAME).unwrap_or(1);
    h.run();
    h.get_by_label_contains("could not be read");
    h.get_by_label_contains("maps.parquet");
    h.state_mut().current = views::find(views::overview::NAME).unwrap_or(0);
    h.run();
    h.get_by_label("L2 H0");
}

#[test]
fn bundle_without_maps_says_so() {
    let (_t, dir) = damaged_copy(
        |b| {
            for h in &mut b.results.heads {
                h.pooled.clear();
                h.n_blocks = 0;
            }
        },
        false,
    );
    let mut o = on_view(views::head_map::NAME);
    o.layer = Some(2);
    let h = every_view(ViewerApp::open_now(&dir, o));
    assert!(h.state().loaded().is_some());
    let mut h = h;
    h.state_mut().current = views::find(views::head_map::NAME).unwrap_or(1);
    h.run();
    h.get_by_label_contains("no pooled attention maps");
}

#[test]
fn bundle_without_qkv_disables_live_with_the_reason() {
    let (_t, dir) = damaged_copy(|_| {}, false);
    let mut h = harness(ViewerApp::open_now(&dir, on_view(views::live::NAME)));
    h.run();
    h.get_by_label_contains("needs captured Q/K");
    let recompute = h.get_by_label("Recompute");
    assert!(
        recompute.accesskit_node().is_disabled(),
        "Recompute is disabled"
    );
    // Tokens fall back to block-level mass and say why.
    h.state_mut().current = views::find(views::tokens::NAME).unwrap_or(2);
    h.run();
    h.get_by_label_contains("block-level mass from the pooled map");
}

#[test]
fn missing_qkv_file_is_an_error_message_not_a_crash() {
    // The manifest lists Q/K/V, but the file is gone.
    let (_t, dir) = damaged_copy(|_| {}, true);
    std::fs::remove_file(dir.join("qkv-input0.safetensors")).expect("remove");
    let mut h = harness(ViewerApp::open_now(&dir, on_view(views::live::NAME)));
    h.step();
    h.step();
    assert!(h.state_mut().wait_live(std::time::Duration::from_secs(60)));
    h.run();
    h.get_by_label_contains("live re-selection failed");
}
