//! `--preset NAME`: a named protocol's settings ([`attnscope_analysis::preset`]) merged into the
//! options before anything runs; what the command line gives explicitly wins.

use anyhow::Result;
use attnscope_analysis::bundle::{PresetInfo, PresetSetting};
use attnscope_analysis::preset;

use super::Args;

/// Applies `a.preset` to `a` (parameters, budget, scored queries) and describes what it set.
pub(super) fn apply(a: &mut Args) -> Result<Option<PresetInfo>> {
    let Some(name) = a.preset.clone() else {
        return Ok(None);
    };
    let p = preset::find(&name)?;
    let mut values = Vec::new();
    let given: Vec<String> = a
        .run
        .params
        .iter()
        .filter_map(|s| s.split_once('=').map(|(lhs, _)| lhs.trim().to_string()))
        .collect();
    let mut params = Vec::new();
    for v in p.values {
        let name = format!("{}.{}", v.method, v.param);
        let applied = !given.contains(&name);
        if applied {
            params.push(format!("{name}={}", v.value));
        }
        values.push(setting(&name, v.value.to_string(), v.source, applied));
    }
    // The preset's parameters first: an explicit `--param` is read after them.
    params.append(&mut a.run.params);
    a.run.params = params;
    if let Some((tokens, source)) = p.budget_tokens {
        let free = a.sparsity.is_empty() && a.budget_tokens.is_none() && a.top_p.is_none();
        if free {
            a.budget_tokens = Some(tokens);
        }
        values.push(setting("budget_tokens", tokens.to_string(), source, free));
    }
    if let Some((queries, source)) = p.queries {
        let free = a.queries.is_none();
        if free {
            a.queries = Some(queries);
        }
        values.push(setting("queries", queries.to_string(), source, free));
    }
    Ok(Some(PresetInfo {
        name: p.name.to_string(),
        values,
    }))
}

fn setting(name: &str, value: String, source: &str, applied: bool) -> PresetSetting {
    PresetSetting {
        name: name.to_string(),
        value,
        source: source.to_string(),
        applied,
    }
}
