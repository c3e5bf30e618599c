//! One file per selection method (specs: shared/METHODS.md) and the table that lists them all.
//!
//! Adding a method is one file here and one row in [`ALL`]: the file holds the method's
//! registry row (an [`INFO`](streaming::INFO) constant: name, kind, paper, rule, parameters,
//! constructor) and its [`Selector`](crate::method::Selector). The shared code does the rest:
//! budget calibration to matched sparsity, every metric, the bundle columns, the CLI and viewer
//! lists, and the invariant test matrix (`tests/invariants.rs`, every row of [`ALL`]). A method
//! that can score on the GPU says how in [`Selector::device_scoring`](crate::method::Selector).
//!
//! A complete method, "keep the `k` most recent keys", with its row:
//! ```
//! use attnscope_analysis::budget::{resolve, Budget};
//! use attnscope_analysis::method::{GroupInput, Knob, Prepared, Selector};
//! use attnscope_analysis::method::{MethodInfo, MethodKind, ParamSpec, Params};
//! use attnscope_analysis::selection::Selection;
//!
//! pub const INFO: MethodInfo = MethodInfo {
//!     name: "recent",
//!     kind: MethodKind::Ours,
//!     paper: "none: an example",
//!     rule: "the `k` most recent keys, the query itself among them",
//!     params: &[ParamSpec { name: "k", default: 256.0, min: 1.0, max: 1e9, integer: true,
//!                           help: "recent keys kept" }],
//!     build: |_p: &Params| Box::new(Recent),
//! };
//!
//! #[derive(Debug)]
//! struct Recent;
//!
//! struct Prep { n: usize, heads: usize }
//!
//! impl Prepared for Prep {
//!     fn select(&self, k: f64) -> Vec<Selection> {
//!         let k = k.max(1.0).round() as u32;
//!         let mut b = Selection::builder(self.n, 1);
//!         for i in 0..self.n as u32 {
//!             b.push_ranges([((i + 1).saturating_sub(k), i + 1)]);
//!         }
//!         vec![b.finish(); self.heads]
//!     }
//! }
//!
//! impl Selector for Recent {
//!     fn knob(&self) -> Knob {
//!         Knob::count("k", 1.0, 1)
//!     }
//!     fn prepare<'a>(&'a self, g: &'a GroupInput<'a>) -> Box<dyn Prepared + 'a> {
//!         Box::new(Prep { n: g.n(), heads: g.group_size() })
//!     }
//! }
//!
//! // The registry's row builds it; the shared calibration matches it to 75% sparsity.
//! let method = (INFO.build)(&INFO.params(&[])?);
//! let data = attnscope_analysis::testing::GroupData::random(512, 16, 2, 7);
//! let input = data.input();
//! let prep = method.prepare(&input);
//! let cal = resolve(method.as_ref(), prep.as_ref(), Budget::Sparsity(0.75), input.scored, None);
//! assert!(cal.reached, "sparsity {}", cal.sparsity);
//! # Ok::<(), attnscope_analysis::AnalysisError>(())
//! ```

pub mod a_shape;
pub mod blasst;
pub mod common;
pub mod dsa_proxy;
pub mod fasa;
pub mod flexprefill;
pub mod h2o;
pub mod hisa_proxy;
pub mod infllm_v2;
pub mod minference_vs;
pub mod moba;
pub mod nsa;
pub mod oracle_topk;
pub mod oracle_topk_block;
pub mod oracle_topp;
pub mod phsa;
pub mod phsa_fit;
pub mod quest;
pub mod rtpurbo_proxy;
pub mod seer_oracle;
pub mod snapkv;
pub mod streaming;
pub mod top_p;
pub mod top_set;
pub mod xattention;

use crate::method::MethodInfo;

/// Every method, in report order: the flagship, the published methods, proxies, then oracles.
pub static ALL: &[MethodInfo] = &[
    phsa::INFO,
    phsa_fit::INFO,
    infllm_v2::INFO,
    streaming::INFO,
    nsa::INFO,
    moba::INFO,
    quest::INFO,
    xattention::INFO,
    seer_oracle::INFO,
    dsa_proxy::INFO,
    hisa_proxy::INFO,
    h2o::INFO,
    rtpurbo_proxy::INFO,
    fasa::INFO,
    flexprefill::INFO,
    minference_vs::INFO,
    a_shape::INFO,
    snapkv::INFO,
    blasst::INFO,
    oracle_topk::INFO,
    oracle_topk_block::INFO,
    oracle_topp::INFO,
];
