//! attnscope-analysis: sparse-attention selection methods, fidelity metrics, the simulation
//! runner and run bundles, with reports and figures. The `attnscope` command line
//! (`attnscope-cli`) and the viewer are built on this library.
//!
//! The way through, bottom to top:
//! - [`selection`]: what a method keeps; [`method`]: the [`method::Selector`] trait every method
//!   implements, its registry row ([`method::MethodInfo`]) and its device scoring;
//!   [`budget`]: calibration to matched sparsity.
//! - [`methods`]: one file per method, listed once in [`registry::METHODS`]; [`preset`]: named
//!   protocols (a paper's settings, each with its source).
//! - [`metrics`], [`freq`], [`logits`]: the measurements, the same for every method.
//! - [`device`]: methods that declare a device scoring, run on the GPU.
//! - [`input`], [`results`]: what a run reads and the rows it produces; [`shard`]: a sweep of
//!   inputs split into disjoint parts.
//! - [`sim`]: the main job, [`sim::Simulation`].
//! - [`bundle`]: the run folder, written by [`bundle::BundleWriter`], read by [`bundle::Bundle`];
//!   [`bundle::merge`] joins the bundles of a sweep's parts; [`figures`] draws it.
//!
//! Simulate three methods on a tiny model and write the bundle:
//! ```
//! use attnscope_analysis::budget::Budget;
//! use attnscope_analysis::bundle::{BundleWriter, InputInfo, Manifest, OutMode};
//! use attnscope_analysis::input::SimInput;
//! use attnscope_analysis::registry;
//! use attnscope_analysis::results::summarize;
//! use attnscope_analysis::sim::{SimConfig, Simulation};
//!
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../core/tests/fixtures/tiny/llama");
//! let model = attnscope_core::Model::load(dir.as_ref())?;
//! let methods = ["phsa", "quest", "oracle-topk"]
//!     .iter()
//!     .map(|m| registry::find(m)?.configure(&[]))
//!     .collect::<Result<Vec<_>, _>>()?;
//! let config = SimConfig::new(methods, vec![Budget::Sparsity(0.5)]);
//! let sim = Simulation::new(&model, config)?;
//!
//! // 256 tokens; every tenth one is a full stop.
//! let ids: Vec<u32> = (0..256).map(|i| (i * 7 % 128) as u32).collect();
//! let pieces = (0..256).map(|i| if i % 10 == 9 { ".".into() } else { format!(" w{i}") });
//! let input = SimInput::from_tokens("example", ids, pieces.collect());
//! let results = sim.run(&input)?;
//!
//! let out = tempfile::tempdir()?;
//! let manifest = Manifest::for_simulation(&sim, dir, input.len(), false);
//! let plan = vec![InputInfo { index: 0, text: "example".into(), ..InputInfo::default() }];
//! let options = serde_json::json!({ "sparsity": 0.5 });
//! let mut writer =
//!     BundleWriter::try_new(&out.path().join("run"), manifest, plan, options, OutMode::Fresh)?;
//! writer.write_input(0, &input, results, 0.0)?;
//! let bundle = writer.close()?;
//! for m in summarize(&bundle.results.metrics) {
//!     assert!(m.recall > 0.0 && m.recall <= 1.0 + 1e-9, "{}: recall {}", m.name, m.recall);
//! }
//! assert_eq!(bundle.manifest.methods.len(), 3);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Adding a method is one file in `methods/` implementing [`method::Selector`] and one row in
//! `methods::ALL` (see [`methods`]); the CLI, the viewer, the bundle columns and the invariant
//! test matrix read the registry.

pub mod bigbuf;
pub mod budget;
pub mod bundle;
pub mod device;
pub mod error;
pub mod eval;
pub mod figures;
pub mod freq;
pub mod input;
pub mod logits;
pub mod method;
pub mod methods;
pub mod metrics;
pub mod preset;
pub mod registry;
pub mod results;
pub mod selection;
pub mod shard;
pub mod sim;
#[doc(hidden)]
pub mod testing;
pub mod timing;

pub use error::{AnalysisError, Result};
