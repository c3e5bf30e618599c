//! One file per selection method (specs: shared/METHODS.md) and the table that lists them all.
//! Adding a method is one file here and one row in [`ALL`].

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

use crate::registry::MethodInfo;

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
