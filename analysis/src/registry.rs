//! The one table of methods: name, paper, kind, parameters and constructor. The CLI, the viewer,
//! the export columns and the invariant test matrix all read [`METHODS`].

use std::collections::BTreeMap;

use crate::error::{AnalysisError, Result};
use crate::method::Selector;
use crate::methods;

/// Where a method comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MethodKind {
    /// A published method, implemented from its paper and public code.
    Published,
    /// A stand-in for a method whose trained parts do not exist here (named `*-proxy`).
    Proxy,
    /// An upper bound computed from the true attention.
    Oracle,
    /// A variant of our own (labelled as ours everywhere).
    Ours,
}

/// One numeric method parameter (booleans are 0/1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParamSpec {
    pub name: &'static str,
    pub default: f64,
    pub min: f64,
    pub max: f64,
    pub integer: bool,
    pub help: &'static str,
}

/// One row of the method table.
#[derive(Debug, Clone, Copy)]
pub struct MethodInfo {
    pub name: &'static str,
    pub kind: MethodKind,
    /// Paper reference (authors, title, venue/arXiv id).
    pub paper: &'static str,
    /// The selection rule in one line.
    pub rule: &'static str,
    pub params: &'static [ParamSpec],
    pub build: fn(&Params) -> Box<dyn Selector>,
}

/// Resolved parameter values of one method (defaults overridden by the user).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Params {
    values: BTreeMap<&'static str, f64>,
}

impl Params {
    /// The value of parameter `name` (0 for a name the method does not declare: a method bug).
    pub fn get(&self, name: &str) -> f64 {
        self.values.get(name).copied().unwrap_or(0.0)
    }

    /// The value as a count.
    pub fn count(&self, name: &str) -> usize {
        self.get(name).max(0.0).round() as usize
    }

    /// The value as a flag.
    pub fn flag(&self, name: &str) -> bool {
        self.get(name) != 0.0
    }

    /// All values, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, f64)> + '_ {
        self.values.iter().map(|(k, v)| (*k, *v))
    }
}

/// Every registered method, in report order.
pub static METHODS: &[MethodInfo] = methods::ALL;

/// Looks a method up by name.
pub fn find(name: &str) -> Result<&'static MethodInfo> {
    METHODS
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| AnalysisError::UnknownMethod {
            name: name.to_string(),
            valid: names().join(", "),
        })
}

/// All method names.
pub fn names() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.name).collect()
}

impl MethodInfo {
    /// Parameters at their defaults, with `overrides` applied and checked.
    pub fn params(&self, overrides: &[(String, f64)]) -> Result<Params> {
        let mut values: BTreeMap<&'static str, f64> =
            self.params.iter().map(|p| (p.name, p.default)).collect();
        for (k, v) in overrides {
            let spec = self.params.iter().find(|p| p.name == k).ok_or_else(|| {
                let valid: Vec<&str> = self.params.iter().map(|p| p.name).collect();
                AnalysisError::Param {
                    method: self.name.into(),
                    msg: format!("unknown parameter '{k}'; valid: {}", valid.join(", ")),
                }
            })?;
            if !(spec.min..=spec.max).contains(v) || (spec.integer && v.fract() != 0.0) {
                return Err(AnalysisError::Param {
                    method: self.name.into(),
                    msg: format!(
                        "{k} = {v} is out of range [{}, {}]{}",
                        spec.min,
                        spec.max,
                        if spec.integer { " (integer)" } else { "" }
                    ),
                });
            }
            values.insert(spec.name, *v);
        }
        Ok(Params { values })
    }

    /// Builds the method with `overrides` applied.
    pub fn build_with(&self, overrides: &[(String, f64)]) -> Result<Box<dyn Selector>> {
        Ok((self.build)(&self.params(overrides)?))
    }
}

/// Parses `"all"` or a comma-separated list of method names.
pub fn parse_list(spec: &str) -> Result<Vec<&'static MethodInfo>> {
    if spec == "all" {
        return Ok(METHODS.iter().collect());
    }
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(find)
        .collect()
}
