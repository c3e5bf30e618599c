//! `attnscope._native`: the extension module under the `attnscope` Python package. It calls the
//! same library as the `attnscope` command line: [`attnscope_cli::run_args`] for the command
//! line and `simulate` (same options, defaults and messages), the bundle reader for bundles
//! (handed to pyarrow through the Arrow C data interface), the forward pass for `capture`, and
//! the method registry for rules written in Python (`rule.rs`).
//!
//! Long calls run on a thread of their own while the calling thread waits without the GIL,
//! shows progress (where stderr is no terminal, as in Jupyter, through Python's `sys.stderr`:
//! `progress.rs`) and looks for Ctrl-C: an interrupt asks the simulation to stop before its next
//! layer ([`attnscope_analysis::sim::request_stop`]), and the inputs already saved can be
//! resumed.
//! Library errors become exceptions of a few classes (`errors.rs`); a panic becomes an
//! `AttnscopeError`, never an abort.

use std::sync::mpsc;
use std::time::Duration;

use attnscope_analysis::bundle::{read_table, Bundle};
use attnscope_analysis::registry;
use numpy::IntoPyArray;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

mod capture;
mod dlpack;
mod errors;
mod progress;
mod rule;

/// mimalloc, as the `attnscope` binary: the simulator's threads allocate and free large
/// buffers at a high rate (BENCHMARKS.md, Simulator).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` (see the binary's `main.rs`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Runs `job` on a thread of its own; the caller waits without the GIL, checking for Ctrl-C
/// every 100 ms. An interrupt asks running simulations to stop and raises KeyboardInterrupt
/// once the job has ended.
fn run_interruptible<T: Send + 'static>(
    py: Python<'_>,
    job: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> PyResult<T> {
    attnscope_analysis::sim::clear_stop();
    if let Ok(mut last) = rule::LAST_FAILURE.lock() {
        *last = None;
    }
    let (tx, rx) = mpsc::channel();
    let rx = std::sync::Mutex::new(rx);
    let spawned = std::thread::Builder::new()
        .name("attnscope".into())
        .stack_size(64 << 20)
        .spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let _ = tx.send(r);
        });
    if let Err(e) = spawned {
        return Err(errors::AttnscopeError::new_err(format!(
            "could not start a thread: {e}"
        )));
    }
    let mut interrupt: Option<PyErr> = None;
    let result = loop {
        let got = py.detach(|| match rx.lock() {
            Ok(r) => r.recv_timeout(Duration::from_millis(100)),
            Err(_) => Err(mpsc::RecvTimeoutError::Disconnected),
        });
        match got {
            Ok(r) => break r,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                progress::show(py);
                if let Err(e) = py.check_signals() {
                    if interrupt.is_none() {
                        eprintln!("interrupted: stopping before the next layer");
                        attnscope_analysis::sim::request_stop();
                        interrupt = Some(e);
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err(errors::AttnscopeError::new_err(
                    "internal error: the worker thread ended without a result",
                ))
            }
        }
    };
    progress::show(py);
    attnscope_analysis::sim::clear_stop();
    match result {
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            Err(errors::AttnscopeError::new_err(format!(
                "internal error (a bug in attnscope; please report it): {msg}"
            )))
        }
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            let class = errors::classify(&e);
            if class == errors::Class::Rule {
                let err = errors::raise(class, format!("{e:#}"));
                let cause = rule::LAST_FAILURE.lock().ok().and_then(|mut l| l.take());
                err.set_cause(py, cause);
                return Err(err);
            }
            if let Some(i) = interrupt {
                return Err(i);
            }
            Err(errors::to_py(&e))
        }
    }
}

/// Runs the `attnscope` command line in this process (`argv[0]` is the program name).
#[pyfunction]
fn run_cli(py: Python<'_>, argv: Vec<String>) -> PyResult<()> {
    run_interruptible(py, move || match attnscope_cli::run_args(argv) {
        Ok(()) => Ok(()),
        Err(attnscope_cli::ArgsError::Usage(e)) => Err(anyhow::anyhow!("{}", e.render())),
        Err(attnscope_cli::ArgsError::Failed(e)) => Err(e),
    })
}

/// The help text of a subcommand's options (for docstrings).
#[pyfunction]
fn cli_help(command: &str) -> String {
    use clap::CommandFactory;
    let mut cmd = attnscope_cli::Cli::command();
    match cmd.find_subcommand_mut(command) {
        Some(sub) => sub.render_long_help().to_string(),
        None => String::new(),
    }
}

/// The method registry: one dict per method (built-in, then registered rules).
#[pyfunction]
fn methods(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let out = PyList::empty(py);
    for m in registry::all() {
        let d = PyDict::new(py);
        let knob = m
            .build_with(&[])
            .map(|s| s.knob().name)
            .map_err(errors::analysis)?;
        d.set_item("name", m.name)?;
        d.set_item("family", m.kind.as_str())?;
        d.set_item("paper", m.paper)?;
        d.set_item("rule", m.rule)?;
        d.set_item("knob", knob)?;
        d.set_item("devices", m.devices())?;
        let params = PyDict::new(py);
        for p in m.params {
            params.set_item(p.name, p.default)?;
        }
        d.set_item("params", params)?;
        out.append(d)?;
    }
    Ok(out)
}

/// A bundle read and verified (manifest, checksums, row counts, rows against the manifest).
#[pyclass(name = "NativeBundle", module = "attnscope._native", frozen)]
struct NativeBundle {
    bundle: Bundle,
    /// Each table's record batches, decoded on its first `table()` and shared afterwards (Arrow
    /// buffers are reference-counted: every later `table()` hands over the same memory).
    decoded: std::sync::Mutex<std::collections::HashMap<String, Vec<arrow_array::RecordBatch>>>,
}

impl NativeBundle {
    /// The decoded tables (a poisoned lock still holds whole entries: inserts are single calls).
    fn cache(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Vec<arrow_array::RecordBatch>>>
    {
        self.decoded.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[pymethods]
impl NativeBundle {
    #[new]
    fn open(py: Python<'_>, path: std::path::PathBuf) -> PyResult<Self> {
        let bundle = py
            .detach(|| Bundle::read(&path))
            .map_err(errors::analysis)?;
        Ok(Self {
            bundle,
            decoded: Default::default(),
        })
    }

    /// The manifest as JSON text.
    fn manifest_json(&self) -> PyResult<String> {
        serde_json::to_string(&self.bundle.manifest)
            .map_err(|e| errors::BundleError::new_err(format!("manifest: {e}")))
    }

    /// Table names, in the manifest's order.
    fn tables(&self) -> Vec<String> {
        self.bundle
            .manifest
            .tables
            .iter()
            .map(|t| t.name.clone())
            .collect()
    }

    /// One table as a `pyarrow.Table` (its record batches handed over without a copy).
    fn table<'py>(&self, py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
        use arrow_pyarrow::IntoPyArrow;
        let m = &self.bundle.manifest;
        let Some(info) = m.tables.iter().find(|t| t.name == name) else {
            return Err(errors::BadInput::new_err(format!(
                "no table '{name}' in {}; tables: {}",
                self.bundle.dir.display(),
                self.tables().join(", ")
            )));
        };
        let path = self.bundle.dir.join(&info.file);
        let format = m.format;
        let cached = self.cache().get(name).cloned();
        let batches = match cached {
            Some(b) => b,
            None => {
                let b = py
                    .detach(|| read_table(&path, format))
                    .map_err(errors::analysis)?;
                self.cache().insert(name.to_string(), b.clone());
                b
            }
        };
        let schema = match batches.first() {
            Some(b) => b.schema(),
            None => attnscope_analysis::bundle::Table::ALL
                .into_iter()
                .find(|t| t.name() == name)
                .map(attnscope_analysis::bundle::schema::schema)
                .unwrap_or_else(|| std::sync::Arc::new(arrow_schema::Schema::empty())),
        };
        let table = arrow_pyarrow::Table::try_new(batches, schema)
            .map_err(|e| errors::BundleError::new_err(format!("{}: {e}", path.display())))?;
        table.into_pyarrow(py)
    }

    /// `attnscope report RUN --json` of this bundle, as JSON text.
    fn report_json(&self, py: Python<'_>) -> PyResult<String> {
        let v = py.detach(|| attnscope_cli::commands::report::json(&self.bundle));
        serde_json::to_string(&v).map_err(|e| errors::BundleError::new_err(e.to_string()))
    }

    /// The bundle's folder.
    fn dir(&self) -> std::path::PathBuf {
        self.bundle.dir.clone()
    }
}

/// Captures layers; `argv` are `attnscope simulate`'s model and input options plus `--layers`.
/// Returns `(layers, ids, pieces, punct, newline)` with layers as `(layer, q, k, lse)`.
#[pyfunction(name = "capture")]
fn capture_layers(py: Python<'_>, argv: Vec<String>) -> PyResult<Bound<'_, PyAny>> {
    use clap::Parser;
    let args = capture::Args::try_parse_from(&argv)
        .map_err(|e| errors::BadInput::new_err(e.render().to_string()))?;
    let c = run_interruptible(py, move || capture::run(args))?;
    let layers = PyList::empty(py);
    for l in c.layers {
        layers.append((
            l.layer,
            l.q.into_pyarray(py),
            l.k.into_pyarray(py),
            l.lse.into_pyarray(py),
        ))?;
    }
    // GPU captures: DLPack capsules of the device tensors (torch.from_dlpack takes them).
    for l in c.device_layers {
        let [q, k, lse] = l.tensors;
        layers.append((
            l.layer,
            dlpack::capsule(py, q)?,
            dlpack::capsule(py, k)?,
            dlpack::capsule(py, lse)?,
        ))?;
    }
    let out = (
        layers,
        c.ids.into_pyarray(py),
        c.pieces,
        c.punct.into_pyarray(py),
        c.newline.into_pyarray(py),
    );
    Ok(out.into_pyobject(py)?.into_any())
}

/// Registers a rule written in Python (see `attnscope.block_method`).
#[pyfunction]
#[pyo3(signature = (name, kind, invoke, knob, block, init_blocks, local_blocks, params, summary, origin, code))]
fn register_rule(
    name: String,
    kind: &str,
    invoke: Py<PyAny>,
    knob: String,
    block: usize,
    init_blocks: usize,
    local_blocks: usize,
    params: Vec<(String, f64)>,
    summary: String,
    origin: String,
    code: String,
) -> PyResult<()> {
    let kind = match kind {
        "block" => rule::RuleKind::Block,
        "token" => rule::RuleKind::Token,
        other => {
            return Err(errors::BadInput::new_err(format!(
                "rule kind '{other}': block or token"
            )))
        }
    };
    if block == 0 {
        return Err(errors::BadInput::new_err(format!(
            "method '{name}': block must be at least 1 token"
        )));
    }
    let spec = rule::RuleSpec {
        name,
        kind,
        knob,
        block,
        init_blocks,
        local_blocks,
        params,
        summary,
        source: attnscope_analysis::method::MethodSource {
            language: "python".into(),
            origin,
            code,
        },
    };
    rule::register(spec, invoke).map_err(errors::analysis)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // SAFETY: sets a plain integer option of the allocator; any value is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    // As the binary: matrix products are split over rayon's threads, so matrixmultiply's own
    // pool would only contend with them.
    if std::env::var_os("MATMUL_NUM_THREADS").is_none() {
        std::env::set_var("MATMUL_NUM_THREADS", "1");
    }
    errors::add(m)?;
    progress::install(m.py())?;
    m.add_class::<NativeBundle>()?;
    m.add_function(wrap_pyfunction!(run_cli, m)?)?;
    m.add_function(wrap_pyfunction!(cli_help, m)?)?;
    m.add_function(wrap_pyfunction!(methods, m)?)?;
    m.add_function(wrap_pyfunction!(capture_layers, m)?)?;
    m.add_function(wrap_pyfunction!(register_rule, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
