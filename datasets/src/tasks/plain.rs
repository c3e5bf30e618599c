//! `text`: the haystack text itself, cut to the length. It starts at `TaskParams::offset`
//! (characters) when given, else at the top of the text for seed 0, else at a paragraph chosen by
//! the seed (the rules: [`super::TaskParams::offset`]); the sample records the start it used and
//! whether the text was repeated (`Sample::start_char`, `Sample::repeated`).

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
