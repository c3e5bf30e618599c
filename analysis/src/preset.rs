//! Named protocols (`attnscope simulate --preset NAME`): the settings of a paper's experiment,
//! each value with its source, so that a claim is checked at the paper's own setting. A preset
//! sets method parameters (an explicit `--param` of the same parameter wins), the budget when none
//! is given, and the scored queries when `--queries` is not given. The manifest records the
//! preset and every value it set.

use crate::selection::Queries;

/// One method parameter a preset sets.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PresetValue {
    pub method: &'static str,
    pub param: &'static str,
    pub value: f64,
    /// Where the value comes from.
    pub source: &'static str,
}

/// A named protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Preset {
    pub name: &'static str,
    pub description: &'static str,
    pub values: &'static [PresetValue],
    /// Keys per query when no budget is given, and its source.
    pub budget_tokens: Option<(usize, &'static str)>,
    /// Scored queries when `--queries` is not given, and its source.
    pub queries: Option<(Queries, &'static str)>,
}

const PAPER: &str = "PHSA paper (no public code; values from its text)";
const BLOCK: &str = "PHSA paper: block size 16";
const INIT: &str = "PHSA paper: init window of 128 tokens at 32k = 8 blocks of 16";
const LOCAL: &str =
    "PHSA paper: local window of 512 tokens at 32k = the query's own block and 31 before it";
const SAME: &str = "matched to phsa: the same block and forced keys for a like-for-like comparison";

/// PHSA (punctuation-aware hybrid sparse attention) against InfLLM v2 as the paper compares them.
pub const PHSA_PAPER: Preset = Preset {
    name: "phsa-paper",
    description: "the PHSA paper's setting: block 16, 128 init + 512 local tokens, top-k 16 \
                  blocks (896 keys per query: 97.3% sparsity for a query at the end of 32k \
                  tokens), lambda 0.5, the last 512 queries scored; phsa, phsa-fit and infllm-v2 \
                  with the same block and forced keys",
    values: &[
        PresetValue { method: "phsa", param: "block", value: 16.0, source: BLOCK },
        PresetValue { method: "phsa", param: "init_blocks", value: 8.0, source: INIT },
        PresetValue { method: "phsa", param: "local_blocks", value: 31.0, source: LOCAL },
        PresetValue { method: "phsa", param: "lambda", value: 0.5, source: "PHSA paper: lambda fixed at 0.5" },
        PresetValue { method: "phsa-fit", param: "block", value: 16.0, source: BLOCK },
        PresetValue { method: "phsa-fit", param: "init_blocks", value: 8.0, source: INIT },
        PresetValue { method: "phsa-fit", param: "local_blocks", value: 31.0, source: LOCAL },
        PresetValue { method: "infllm-v2", param: "block", value: 16.0, source: SAME },
        PresetValue { method: "infllm-v2", param: "init_blocks", value: 8.0, source: SAME },
        PresetValue { method: "infllm-v2", param: "local_blocks", value: 31.0, source: SAME },
    ],
    budget_tokens: Some((
        896,
        "PHSA paper: 128 init + 512 local + top-k 16 blocks of 16 = 896 keys, 97.3% sparsity at 32k",
    )),
    queries: Some((
        Queries::Last(512),
        "PHSA paper: sparsity per query at full context (decode accounting); 512 queries scored",
    )),
};

/// Every preset.
pub const PRESETS: &[Preset] = &[PHSA_PAPER];

/// The preset called `name`.
pub fn find(name: &str) -> crate::error::Result<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name).ok_or_else(|| {
        let names: Vec<&str> = PRESETS.iter().map(|p| p.name).collect();
        crate::AnalysisError::Input(format!(
            "unknown preset '{name}' (presets: {}; {PAPER})",
            names.join(", ")
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every value names a registered method's parameter within its range, and the budget is the
    /// forced keys plus 16 blocks of 16: 896 keys, 2.73% of 32,768.
    #[test]
    fn presets_name_real_parameters_and_the_paper_budget() {
        for p in PRESETS {
            for v in p.values {
                let info = crate::registry::find(v.method).expect("registered");
                let spec = info.params.iter().find(|s| s.name == v.param);
                let spec =
                    spec.unwrap_or_else(|| panic!("{}: no {}.{}", p.name, v.method, v.param));
                assert!((spec.min..=spec.max).contains(&v.value), "{v:?}");
                assert_ne!(
                    v.param, "top_k",
                    "{}: the knob is set by the budget",
                    p.name
                );
            }
        }
        let (tokens, _) = PHSA_PAPER.budget_tokens.expect("a budget");
        assert_eq!(tokens, 128 + 512 + 16 * 16);
        let method = crate::registry::find("phsa")
            .expect("registered")
            .build_with(&[
                ("block".into(), 16.0),
                ("init_blocks".into(), 8.0),
                ("local_blocks".into(), 31.0),
            ])
            .expect("builds");
        assert_eq!(method.knob_for_tokens(tokens), Some(16.0));
        assert!(find("nope").is_err());
    }
}
