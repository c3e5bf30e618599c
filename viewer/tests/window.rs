//! The real window (eframe, glow) opens under Xvfb and its own screenshot is non-trivial.
//! Skips with a notice when Xvfb is not installed (CI installs it through .ci/run).

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Kills the child on drop.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Distinct colours and the share of the most common one in an RGBA PNG.
fn colour_stats(path: &std::path::Path) -> (u32, u32, usize, f64) {
    let dec = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).expect("open png"),
    ));
    let mut reader = dec.read_info().expect("png header");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("png data");
    let px = info.line_size / info.width as usize;
    let mut counts = std::collections::HashMap::new();
    for c in buf[..info.buffer_size()].chunks_exact(px) {
        *counts.entry(c[..3].to_vec()).or_insert(0usize) += 1;
    }
    let total: usize = counts.values().sum();
    let top = counts.values().copied().max().unwrap_or(0);
    (
        info.width,
        info.height,
        counts.len(),
        top as f64 / total.max(1) as f64,
    )
}

#[test]
fn window_opens_under_xvfb_with_a_nontrivial_screenshot() {
    let Some(xvfb) = which("Xvfb") else {
        eprintln!("notice: Xvfb is not installed (apt-get install xvfb); skipping the window test");
        return;
    };
    // `-displayfd 1`: Xvfb picks a free display (skipping ones whose lock or socket is left over
    // from a killed server) and prints its number once it accepts connections.
    let mut server = Command::new(xvfb)
        .args([
            "-displayfd",
            "1",
            "-screen",
            "0",
            "1400x900x24",
            "-nolisten",
            "tcp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start Xvfb");
    let out = server.stdout.take().expect("Xvfb stdout");
    let _server = Guard(server);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        let mut line = String::new();
        let _ = std::io::BufReader::new(out).read_line(&mut line);
        let _ = tx.send(line);
    });
    let number = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("Xvfb did not report its display in 20 s");
    let number = number.trim();
    assert!(
        !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()),
        "Xvfb reported no display number ({number:?})"
    );
    let display = format!(":{number}");
    let tmp = tempfile::tempdir().expect("tmp");
    let shot = tmp.path().join("window.png");
    let viewer = Command::new(env!("CARGO_BIN_EXE_attnscope-viewer"))
        .arg(common::fixture())
        .args([
            "--view", "head-map", "--layer", "10", "--head", "4", "--budget", "1",
        ])
        .args(["--size", "1200x800", "--screenshot"])
        .arg(&shot)
        .env("DISPLAY", &display)
        .env("LIBGL_ALWAYS_SOFTWARE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start attnscope-viewer");
    let mut viewer = Guard(viewer);
    let t = Instant::now();
    let status = loop {
        if let Some(s) = viewer.0.try_wait().expect("wait") {
            break Some(s);
        }
        if t.elapsed() > Duration::from_secs(120) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = viewer.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    let status =
        status.unwrap_or_else(|| panic!("the viewer did not exit in 120 s; stderr:\n{err}"));
    assert!(status.success(), "viewer failed ({status}); stderr:\n{err}");
    assert!(shot.is_file(), "no screenshot written; stderr:\n{err}");
    let (w, h, colours, top_share) = colour_stats(&shot);
    eprintln!(
        "window screenshot {w}x{h}: {colours} colours, most common {:.0}%",
        top_share * 100.0
    );
    assert!(w >= 600 && h >= 400, "screenshot {w}x{h}");
    assert!(colours > 64, "only {colours} colours: a blank window?");
    assert!(
        top_share < 0.9,
        "one colour covers {:.0}%",
        top_share * 100.0
    );
}
