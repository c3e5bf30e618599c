//! `attnscope figures` on a small real run (SmolLM2, fetched when missing): every figure is
//! written as PNG and SVG, and each PNG is a valid, non-trivial image (expected size, many
//! colours, ink on a good share of the pixels).

mod common;

use common::attnscope;

use std::collections::HashSet;
use std::path::Path;

use attnscope_analysis::bundle::Bundle;
use attnscope_analysis::figures::{render_all_with_notes, FigureOptions, ImageFormat};

const FIGURES: [&str; 8] = [
    "recall_vs_sparsity",
    "info_loss_per_layer",
    "reduction",
    "sweep_phsa_lambda",
    "sink_mass",
    "iou",
    "freq_energy",
    "attention_map",
];

/// Decodes a PNG; returns (width, height, distinct colours, share of non-white pixels).
fn png_stats(path: &Path) -> (u32, u32, usize, f64) {
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("open png"),
    ));
    let mut reader = dec.read_info().expect("png header");
    let mut buf = vec![0u8; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png data");
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    let px: Vec<[u8; 3]> = buf[..info.buffer_size()]
        .chunks_exact(3)
        .map(|c| [c[0], c[1], c[2]])
        .collect();
    let colours: HashSet<[u8; 3]> = px.iter().copied().collect();
    let ink = px.iter().filter(|p| **p != [255, 255, 255]).count() as f64 / px.len() as f64;
    (info.width, info.height, colours.len(), ink)
}

#[test]
fn figures_of_a_small_run_are_valid_images() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let run = tmp.path().join("run");
    let run_s = run.to_str().expect("utf-8");
    let (ok, _, err) = attnscope(&[
        "simulate",
        "--model",
        "smollm2-135m",
        "--text",
        "alice29",
        "--len",
        "320",
        "--layers",
        "3,20",
        "--methods",
        "phsa,infllm-v2,streaming,oracle-topk",
        "--sweep",
        "phsa.lambda=0,1",
        "--sparsity",
        "0.5,0.7",
        "--selections",
        "all",
        "--out",
        run_s,
        "--quiet",
    ]);
    assert!(ok, "simulate failed: {err}");
    let figs = tmp.path().join("figs");
    let (ok, out, err) = attnscope(&["figures", run_s, "--out", figs.to_str().expect("utf-8")]);
    assert!(ok, "figures failed: {err}");
    assert_eq!(out.lines().count(), 16, "{out}");
    for name in FIGURES {
        let png = figs.join(format!("{name}.png"));
        let (w, h, colours, ink) = png_stats(&png);
        assert!(w >= 1000 && h >= 600, "{name}: {w}x{h}");
        assert!(colours >= 30, "{name}: only {colours} colours");
        assert!(
            (0.03..0.97).contains(&ink),
            "{name}: {:.1}% non-white",
            ink * 100.0
        );
        let svg = std::fs::read_to_string(figs.join(format!("{name}.svg"))).expect("svg");
        assert!(
            svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
            "{name}.svg"
        );
        assert!(
            svg.contains("<text") && svg.len() > 3000,
            "{name}.svg has no text"
        );
    }
    // Options: one format, a chosen head, budget by label, methods to compare.
    let figs2 = tmp.path().join("figs2");
    let (ok, out, err) = attnscope(&[
        "figures",
        run_s,
        "--out",
        figs2.to_str().expect("utf-8"),
        "--format",
        "svg",
        "--head",
        "3:4",
        "--budget",
        "sparsity=0.5",
        "--compare",
        "streaming,oracle-topk",
    ]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 8, "{out}");
    let svg = std::fs::read_to_string(figs2.join("reduction.svg")).expect("svg");
    assert!(
        svg.contains("streaming over oracle-topk"),
        "the reduction figure follows --compare"
    );
    let svg = std::fs::read_to_string(figs2.join("sweep_phsa_lambda.svg")).expect("svg");
    assert!(
        svg.contains("phsa information loss against lambda") && svg.contains("sparsity=0.7"),
        "sweep figure: title and one line per budget"
    );
    let svg = std::fs::read_to_string(figs2.join("attention_map.svg")).expect("svg");
    assert!(
        svg.contains("layer 3 head 4") && svg.contains("streaming only"),
        "attention map labels"
    );
    for (args, want) in [
        (
            vec!["--budget", "sparsity=0.9"],
            "sparsity=0.5, sparsity=0.7",
        ),
        (vec!["--compare", "phsa,nope"], "no method 'nope'"),
        (vec!["--head", "7"], "LAYER:HEAD"),
        (vec!["--format", "gif"], "png or svg"),
    ] {
        let mut a = vec!["figures", run_s, "--out", figs2.to_str().expect("utf-8")];
        a.extend(args);
        let (ok, _, err) = attnscope(&a);
        assert!(
            !ok && err.contains(want),
            "{a:?}: expected '{want}' in {err}"
        );
    }
    // Without saved selections the map is drawn without an overlay, and says so.
    let mut b = Bundle::read(&run).expect("read");
    b.results.selections.clear();
    let o = FigureOptions {
        formats: vec![ImageFormat::Png],
        ..FigureOptions::default()
    };
    let (files, notes) = render_all_with_notes(&b, &tmp.path().join("figs3"), &o).expect("render");
    assert_eq!(files.len(), 8);
    assert!(notes.iter().any(|n| n.contains("no overlay")), "{notes:?}");
}
