//! attnscope-viewer: an egui desktop viewer for `attnscope simulate` run bundles.
//!
//! The app ([`app::ViewerApp`]) loads a bundle into an indexed [`data::RunData`] on a background
//! thread and shows it through one registry of views ([`views::VIEWS`]: overview, head map,
//! tokens, methods, frequencies, live re-selection), each one file behind the
//! [`views::View`] trait. Live re-selection ([`live`]) re-runs a registered method on the
//! bundle's captured Q/K on a worker thread.
//!
//! ```
//! use attnscope_viewer::app::{OpenOptions, ViewerApp};
//! let mut app = ViewerApp::open_now("tests/fixtures/run".as_ref(), OpenOptions::default());
//! let run = &app.loaded().expect("the fixture opens").run;
//! assert_eq!(run.layers, vec![2, 10]);
//! assert_eq!(run.qkv_layers(0), vec![2]);
//! // One frame without a window (what the tests and benchmarks do):
//! let ctx = egui::Context::default();
//! let mut out = ctx.run_ui(egui::RawInput::default(), |ui| app.ui(ui));
//! out.textures_delta.clear(); // no renderer to upload the textures to
//! ```

pub mod app;
pub mod bench;
pub mod canvas;
pub mod colormap;
pub mod data;
pub mod live;
#[doc(hidden)]
pub mod synthetic;
pub mod views;

pub use app::{OpenOptions, ViewerApp};
