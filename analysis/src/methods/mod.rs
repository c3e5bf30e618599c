//! One file per selection method (specs: shared/METHODS.md) and the table that lists them all.
//! Adding a method is one file here and one row in [`ALL`].

pub mod common;
pub mod moba;
pub mod nsa;
pub mod quest;
pub mod seer_oracle;
pub mod xattention;
pub mod infllm_v2;
pub mod oracle_topk;
pub mod oracle_topp;
pub mod phsa;
pub mod streaming;

use crate::registry::MethodInfo;

/// Every method, in report order: the flagship, the published methods, proxies, then oracles.
pub static ALL: &[MethodInfo] = &[
    phsa::INFO,
    infllm_v2::INFO,
    streaming::INFO,
    nsa::INFO,
    moba::INFO,
    quest::INFO,
    xattention::INFO,
    seer_oracle::INFO,
    oracle_topk::INFO,
    oracle_topp::INFO,
];
