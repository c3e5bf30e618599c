//! Progress where stderr is not a terminal (Jupyter): the command line's progress bars draw into
//! [`Line`], and the thread waiting for a long call writes the latest line to Python's
//! `sys.stderr` (which a notebook shows), `\r` first so that it replaces the one before.

use std::sync::Mutex;

use indicatif::{ProgressDrawTarget, TermLike};
use pyo3::prelude::*;

/// The line being drawn and whether it changed since it was last shown.
static LINE: Mutex<(String, bool)> = Mutex::new((String::new(), false));

/// A one-line terminal that keeps what is drawn on it.
#[derive(Debug)]
struct Line;

fn edit(f: impl FnOnce(&mut String)) -> std::io::Result<()> {
    let mut l = LINE.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut l.0);
    l.1 = true;
    Ok(())
}

impl TermLike for Line {
    fn width(&self) -> u16 {
        100
    }
    fn move_cursor_up(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_down(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_right(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn move_cursor_left(&self, _n: usize) -> std::io::Result<()> {
        Ok(())
    }
    fn write_line(&self, s: &str) -> std::io::Result<()> {
        edit(|l| *l = s.to_string())
    }
    fn write_str(&self, s: &str) -> std::io::Result<()> {
        edit(|l| l.push_str(s))
    }
    fn clear_line(&self) -> std::io::Result<()> {
        edit(String::clear)
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
}

fn target() -> ProgressDrawTarget {
    ProgressDrawTarget::term_like_with_hz(Box::new(Line), 2)
}

/// Draws progress into [`Line`] when Python's stderr is not a terminal.
pub fn install(py: Python<'_>) -> PyResult<()> {
    let stderr = py.import("sys")?.getattr("stderr")?;
    let tty = !stderr.is_none() && stderr.call_method0("isatty")?.is_truthy()?;
    if !tty {
        attnscope_cli::commands::model_arg::set_draw_target(target);
    }
    Ok(())
}

/// Writes the line to `sys.stderr` if it changed (errors writing are ignored: progress only).
pub fn show(py: Python<'_>) {
    let line = {
        let mut l = LINE.lock().unwrap_or_else(|e| e.into_inner());
        if !l.1 {
            return;
        }
        l.1 = false;
        l.0.clone()
    };
    if let Ok(stderr) = py.import("sys").and_then(|s| s.getattr("stderr")) {
        let _ = stderr.call_method1("write", (format!("\r{line}"),));
        let _ = stderr.call_method0("flush");
    }
}
