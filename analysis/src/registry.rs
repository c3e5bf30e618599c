//! The one table of methods: name, paper, kind, parameters and constructor. The CLI, the viewer,
//! the export columns and the invariant test matrix all read [`METHODS`].

use crate::error::{AnalysisError, Result};
pub use crate::method::{MethodInfo, MethodKind, ParamSpec, Params};
use crate::methods;

/// Every registered method, in report order.
pub static METHODS: &[MethodInfo] = methods::ALL;

/// The method whose reached sparsity defines a top-p budget (`--top-p P`: every method is
/// matched to the sparsity exact top-p over the true attention reaches at `P`).
pub fn top_p_reference() -> Result<Box<dyn crate::method::Selector>> {
    find("oracle-topp")?.build_with(&[])
}

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
