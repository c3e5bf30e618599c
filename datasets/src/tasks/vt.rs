//! `vt`: variable tracking in the spirit of RULER. A chain `VAR A = 12345.`, `VAR B = A.`,
//! `VAR C = B.`, ... is spread through the haystack in order; the question asks for every variable
//! that holds the value. Extra chains (other values) are distractors.

use super::compose::{NeedleSpec, Plan};
use super::niah::distinct_absent;
use super::params::{Built, TaskParams};
use crate::error::{DatasetError, Result};
use crate::rng::Rng;
use crate::text::Text;

const PREFIX: &str =
    "Memorize and track the chain(s) of variable assignment hidden in the following text.\n\n";

pub(crate) fn build(p: &TaskParams, rng: &mut Rng, hay: &Text) -> Result<Built> {
    let hops = p.hops.unwrap_or(4);
    let chains = p.chains.unwrap_or(1);
    if hops == 0 || hops > 64 || chains == 0 || chains > 16 {
        return Err(DatasetError::Param(format!(
            "vt: --hops {hops} must be 1..=64 and --chains {chains} 1..=16"
        )));
    }
    let names = distinct_absent(chains * (hops + 1), hay, rng, &mut |r| r.upper_word(5))?;
    let values = distinct_absent(chains, hay, rng, &mut |r| r.number(5))?;
    let mut needles = Vec::new();
    for c in 0..chains {
        let vars = &names[c * (hops + 1)..(c + 1) * (hops + 1)];
        // Positions in order along the haystack: evenly from --depth for the target chain when
        // given, else sorted uniform draws.
        let depths: Vec<f64> = match (c, p.depth) {
            (0, Some(d)) => (0..=hops)
                .map(|i| d + (1.0 - d) * i as f64 / (hops + 1) as f64)
                .collect(),
            _ => {
                let mut v: Vec<f64> = (0..=hops).map(|_| rng.unit()).collect();
                v.sort_by(f64::total_cmp);
                v
            }
        };
        for (i, var) in vars.iter().enumerate() {
            let rhs = if i == 0 {
                values[c].clone()
            } else {
                vars[i - 1].clone()
            };
            needles.push(NeedleSpec {
                text: format!("VAR {var} = {rhs}."),
                key: var.clone(),
                value: rhs,
                target: c == 0,
                depth: depths[i],
                answer_part: var.clone(),
            });
        }
    }
    let value = &values[0];
    let question =
        format!("Find all variables that are assigned the value {value} in the text above.");
    let suffix = format!(
        "\nQuestion: {question} Answer: According to the chain(s) of variable assignment in the \
         text above, {} variables are assigned the value {value}, they are:",
        hops + 1
    );
    let mut params = serde_json::Map::new();
    params.insert("hops".into(), hops.into());
    params.insert("chains".into(), chains.into());
    params.insert("depth".into(), p.depth.into());
    Ok(Built {
        plan: Plan {
            prefix: PREFIX.into(),
            suffix,
            needles,
        },
        question: Some(question),
        answers: names[..=hops].to_vec(),
        params,
    })
}
