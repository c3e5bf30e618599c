//! The options of `attnscope simulate` turned into library values, each checked with a message
//! that names the option, the value and what is allowed.

use anyhow::{bail, Context, Result};
use attnscope_analysis::budget::Budget;
use attnscope_analysis::registry;
use attnscope_analysis::sim::MethodRun;

use super::Args;

/// `--layers` / `--save-qkv`: `all` or a list like `0,3,10-12`, each within the model's layers.
pub fn parse_layers(option: &str, spec: &str, n_layers: usize) -> Result<Option<Vec<usize>>> {
    if spec.trim() == "all" {
        return Ok(None);
    }
    let range = format!("the model has layers 0..{}", n_layers.saturating_sub(1));
    let number = |x: &str| -> Result<usize> {
        x.trim().parse::<usize>().with_context(|| {
            format!(
                "{option}: '{x}' is not a layer number (all, or a list like 0,3,10-12; {range})"
            )
        })
    };
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) if !a.trim().is_empty() => (number(a)?, number(b)?),
            _ => {
                let x = number(part)?;
                (x, x)
            }
        };
        if a > b || b >= n_layers {
            bail!("{option}: '{part}' is out of range; {range}");
        }
        out.extend(a..=b);
    }
    if out.is_empty() {
        bail!("{option}: no layers given (all, or a list like 0,3,10-12; {range})");
    }
    out.sort_unstable();
    out.dedup();
    Ok(Some(out))
}

pub(super) fn budgets(a: &Args) -> Result<Vec<Budget>> {
    if let Some(k) = a.budget_tokens {
        if k == 0 {
            bail!("--budget-tokens must be at least 1");
        }
        if k > a.input.len {
            bail!(
                "--budget-tokens {k} is larger than the input of {} tokens (--len)",
                a.input.len
            );
        }
        return Ok(vec![Budget::Tokens(k)]);
    }
    if let Some(p) = a.top_p {
        if !(0.0..=1.0).contains(&p) {
            bail!("--top-p {p} is outside [0, 1]");
        }
        return Ok(vec![Budget::TopP(p)]);
    }
    let s = if a.sparsity.is_empty() {
        vec![0.9]
    } else {
        a.sparsity.clone()
    };
    if let Some(bad) = s.iter().find(|x| !(0.0..1.0).contains(*x)) {
        bail!("--sparsity {bad} is outside [0, 1)");
    }
    if let Some((i, x)) = s.iter().enumerate().find(|(i, x)| s[..*i].contains(x)) {
        bail!(
            "--sparsity {x} is listed twice (positions {} and {})",
            s[..i].iter().position(|y| y == x).unwrap_or(0) + 1,
            i + 1
        );
    }
    Ok(s.into_iter().map(Budget::Sparsity).collect())
}

/// Refuses a parameter that is the method's budget knob: calibration sets it for every budget,
/// so a value given would be recorded but not used.
pub fn not_the_knob(option: &str, method: &MethodRun, name: &str) -> Result<()> {
    let knob = method.selector.knob().name;
    if name == knob {
        bail!(
            "{option} {}.{name}: {name} is {}'s budget knob, which calibration sets to reach each \
             budget; drop it, or give keys per query with --budget-tokens",
            method.info.name,
            method.info.name
        );
    }
    Ok(())
}

/// Expands `--sweep method.param=v1,v2,...` into one run per value, labelled
/// `method[param=value]`, each with the method's other `--param` overrides.
pub(super) fn sweep_runs(
    sweeps: &[String],
    ov: &[(String, String, f64)],
) -> Result<Vec<MethodRun>> {
    let mut runs = Vec::new();
    for sw in sweeps {
        let (lhs, values) = sw
            .split_once('=')
            .with_context(|| format!("--sweep '{sw}': expected method.param=v1,v2,..."))?;
        let (m, name) = lhs
            .split_once('.')
            .with_context(|| format!("--sweep '{sw}': expected method.param=v1,v2,..."))?;
        let info = registry::find(m)?;
        for v in values.split(',').map(str::trim).filter(|v| !v.is_empty()) {
            let x: f64 = v
                .parse()
                .with_context(|| format!("--sweep '{sw}': '{v}' is not a number"))?;
            let mut mine: Vec<(String, f64)> = ov
                .iter()
                .filter(|(om, k, _)| om == m && k != name)
                .map(|(_, k, v)| (k.clone(), *v))
                .collect();
            mine.push((name.to_string(), x));
            let run = MethodRun {
                label: format!("{m}[{name}={v}]"),
                info,
                selector: info.build_with(&mine)?,
                overrides: mine,
            };
            not_the_knob("--sweep", &run, name)?;
            runs.push(run);
        }
    }
    Ok(runs)
}

/// Splits `method.name=value` overrides by method, checking method names.
pub fn overrides(params: &[String]) -> Result<Vec<(String, String, f64)>> {
    params
        .iter()
        .map(|p| {
            let (lhs, v) = p
                .split_once('=')
                .with_context(|| format!("--param '{p}': expected method.name=value"))?;
            let (m, name) = lhs
                .split_once('.')
                .with_context(|| format!("--param '{p}': expected method.name=value"))?;
            registry::find(m)?;
            let v: f64 = v
                .parse()
                .with_context(|| format!("--param '{p}': '{v}' is not a number"))?;
            Ok((m.to_string(), name.to_string(), v))
        })
        .collect()
}

/// `--selections`: budget indices, `all` or `none`.
pub(super) fn selection_budgets(spec: &str, n_budgets: usize) -> Result<Vec<usize>> {
    match spec.trim() {
        "all" => Ok((0..n_budgets).collect()),
        "none" | "" => Ok(Vec::new()),
        s => s
            .split(',')
            .map(|x| {
                let i: usize = x.trim().parse().with_context(|| {
                    format!("--selections '{x}': expected budget indices, all or none")
                })?;
                if i >= n_budgets {
                    bail!("--selections {i}: the run has budgets 0..{}", n_budgets - 1);
                }
                Ok(i)
            })
            .collect(),
    }
}
