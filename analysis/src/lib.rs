//! attnscope-analysis: sparse-attention selection methods, fidelity metrics, the simulation
//! runner, and the `attnscope` command-line tool.
//!
//! Every method implements [`method::Selector`] and is listed once in [`registry::METHODS`];
//! metrics are computed in [`metrics`] identically for all of them, from the selections and the
//! exact dense statistics captured by `attnscope-core`.
//!
//! ```
//! use attnscope_analysis::registry;
//! let phsa = registry::find("phsa").unwrap();
//! let method = phsa.build_with(&[("lambda".into(), 0.3)]).unwrap();
//! assert_eq!(method.knob().name, "top_k");
//! ```

pub mod bigbuf;
pub mod budget;
pub mod bundle;
pub mod error;
pub mod figures;
pub mod freq;
pub mod gpu_methods;
pub mod logits;
pub mod method;
pub mod methods;
pub mod metrics;
pub mod registry;
pub mod selection;
pub mod sim;
#[doc(hidden)]
pub mod testing;

pub use error::{AnalysisError, Result};
