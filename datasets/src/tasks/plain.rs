//! `text`: the haystack text itself, from a paragraph chosen by the seed, cut to the length.

use super::compose::Plan;
use super::params::{Built, TaskParams};
use crate::error::Result;
use crate::rng::Rng;
use crate::text::Text;

pub(crate) fn build(_p: &TaskParams, _rng: &mut Rng, _hay: &Text) -> Result<Built> {
    Ok(Built {
        plan: Plan::default(),
        question: None,
        answers: Vec::new(),
        params: serde_json::Map::new(),
    })
}
