//! Interaction through the accessibility tree (no renderer needed): clicking an overview cell
//! opens that head; changing a method changes the head-map overlay; the live view recomputes
//! when a parameter changes; tabs and theme switch.

mod common;

use std::time::Duration;

use attnscope_viewer::views::{self, head_map, head_map::NAME as HEAD_MAP, Overlay, VIEWS};
use common::*;
use egui_kittest::kittest::Queryable;

/// The head map's overlay summary line for `a` and `b` at the focus, computed from the data.
fn overlay_line(app: &attnscope_viewer::ViewerApp, a: &str, b: Option<&str>) -> String {
    let l = app.loaded().expect("loaded");
    let (run, f) = (&l.run, &l.focus);
    let sel = |m: &str| {
        let i = run.method_index(m).expect("method");
        run.selection(f.input, f.layer, f.head, i, f.budget)
    };
    let n = run.head(f.input, f.layer, f.head).expect("head").n_blocks;
    let c = head_map::count_states(&head_map::kept_states(n, 1, sel(a), b.and_then(sel)));
    format!(
        "blocks kept by both {}, only A {}, only B {}",
        c.both, c.only_a, c.only_b
    )
}

fn current_view(h: &egui_kittest::Harness<'_, attnscope_viewer::ViewerApp>) -> &'static str {
    VIEWS[h.state().current].name
}

#[test]
fn clicking_an_overview_cell_opens_that_head() {
    let mut h = harness(app(on_view(views::overview::NAME)));
    h.run();
    h.get_by_label("L10 H4").click();
    h.run();
    let l = h.state().loaded().expect("loaded");
    assert_eq!((l.focus.layer, l.focus.head), (10, 4));
    assert_eq!(current_view(&h), HEAD_MAP);
    // The head map now shows that head.
    h.get_by_label_contains("L10 H4 (KV head 1)");
}

#[test]
fn changing_method_b_changes_the_overlay() {
    let mut o = on_view(HEAD_MAP);
    o.layer = Some(10);
    o.head = Some(4);
    o.method_a = Some("phsa".into());
    o.method_b = Some("infllm-v2".into());
    o.budget = Some(1);
    let mut h = harness(app(o));
    h.run();
    let before = overlay_line(h.state(), "phsa", Some("infllm-v2"));
    h.get_by_label(&before);
    // Pick quest as method B through the combo box.
    h.get_by_label("method B").click();
    h.run();
    h.get_by_label("quest").click();
    h.run();
    let l = h.state().loaded().expect("loaded");
    let quest = l.run.method_index("quest").expect("quest in the fixture");
    assert_eq!(l.focus.overlay_b, Overlay::Saved(quest));
    let after = overlay_line(h.state(), "phsa", Some("quest"));
    assert_ne!(
        before, after,
        "the overlay counts differ between the two B methods"
    );
    h.get_by_label(&after);
    // And turning B off leaves only A.
    h.get_by_label("method B").click();
    h.run();
    h.get_by_label("off").click();
    h.run();
    let off = overlay_line(h.state(), "phsa", None);
    assert!(
        off.contains("both 0,") && off.ends_with("only B 0"),
        "{off}"
    );
    h.get_by_label(&off);
}

#[test]
fn changing_method_a_changes_the_overlay() {
    let mut o = on_view(HEAD_MAP);
    o.layer = Some(2);
    o.method_a = Some("phsa".into());
    o.method_b = Some("off".into());
    o.budget = Some(2);
    let mut h = harness(app(o));
    h.run();
    let before = overlay_line(h.state(), "phsa", None);
    h.get_by_label(&before);
    h.get_by_label("method A").click();
    h.run();
    h.get_by_label("oracle-topk").click();
    h.run();
    let after = overlay_line(h.state(), "oracle-topk", None);
    assert_ne!(before, after);
    h.get_by_label(&after);
}

#[test]
fn tabs_and_theme_switch() {
    let mut h = harness(app(Default::default()));
    h.run();
    for v in VIEWS {
        if v.name == views::live::NAME {
            continue; // computes in the background; covered below
        }
        h.get_by_label(v.name).click();
        h.run();
        assert_eq!(current_view(&h), v.name);
    }
    assert!(h.state().dark);
    h.get_by_label("Light theme").click();
    h.run();
    assert!(!h.state().dark);
    assert_eq!(h.ctx.theme(), egui::Theme::Light);
}

#[test]
fn live_view_recomputes_when_lambda_changes() {
    let mut h = harness(app(on_view(views::live::NAME)));
    h.step();
    h.step();
    assert!(h.state_mut().wait_live(Duration::from_secs(120)));
    h.run();
    let first = h
        .state()
        .loaded()
        .and_then(|l| l.focus.live.clone())
        .expect("first result");
    assert_eq!(first.request.method, "phsa");
    assert_eq!(first.request.layer, 2);
    // Move the lambda slider through the accessibility tree.
    h.get_by_role_and_label(egui::accesskit::Role::Slider, "lambda")
        .set_value_accesskit(0.0);
    h.step();
    h.step();
    assert!(h.state_mut().wait_live(Duration::from_secs(120)));
    h.run();
    let second = h
        .state()
        .loaded()
        .and_then(|l| l.focus.live.clone())
        .expect("second result");
    assert!(second.seq > first.seq);
    let lam = second
        .request
        .overrides
        .iter()
        .find(|(k, _)| k == "lambda")
        .map(|x| x.1);
    assert_eq!(lam, Some(0.0));
    assert!(second.mean_recall() > 0.0 && second.mean_recall() <= 1.0);
    // Show it as method B in the head map.
    h.get_by_label("Show as method B in the head map").click();
    h.run();
    assert_eq!(current_view(&h), HEAD_MAP);
    assert_eq!(
        h.state().loaded().map(|l| l.focus.overlay_b),
        Some(Overlay::Live)
    );
    h.get_by_label_contains("only B: live phsa");
}

#[test]
fn typing_a_path_opens_another_run() {
    let mut h = harness(attnscope_viewer::ViewerApp::default());
    h.run();
    let field = h.get_by_role(egui::accesskit::Role::TextInput);
    field.focus();
    field.type_text(&fixture().display().to_string());
    h.run();
    h.get_by_label("Open").click();
    h.step();
    h.state_mut().wait_loaded(Duration::from_secs(30), true);
    h.run();
    assert!(h.state().loaded().is_some());
    h.get_by_label_contains("smollm2-135m");
}
