//! Where a simulation's time went: the pipeline's stages and layer jobs ([`Pipeline`]), and wall
//! and CPU seconds per method and phase ([`Profile`]).

/// When each stage of [`crate::sim::Simulation::run`] ran, in wall seconds from its start: the calibration pass of
/// methods that fit settings, the forward pass, and each layer job (handed over by the forward
/// pass, started by a worker, finished).
#[derive(Debug, Default, Clone)]
pub struct Pipeline {
    pub workers: usize,
    pub calibration_s: f64,
    pub forward_end_s: f64,
    pub end_s: f64,
    /// `(layer, handed over, started, finished)`.
    pub layers: Vec<(usize, f64, f64, f64)>,
}

impl Pipeline {
    /// One line: the stages and how many layer jobs ran at once on average while any ran.
    pub fn summary(&self) -> String {
        let busy: f64 = self.layers.iter().map(|l| l.3 - l.2).sum();
        let first = self
            .layers
            .iter()
            .map(|l| l.2)
            .fold(f64::INFINITY, f64::min);
        let last = self.layers.iter().map(|l| l.3).fold(0.0, f64::max);
        let wait: f64 = self.layers.iter().map(|l| l.2 - l.1).sum();
        format!(
            "pipeline: calibration {:.1} s, forward pass done at {:.1} s, layer jobs {:.1}-{:.1} s \
             ({} workers, {:.2} busy on average, {:.1} s handed-over layers waited), end {:.1} s",
            self.calibration_s,
            self.forward_end_s,
            if first.is_finite() { first } else { 0.0 },
            last,
            self.workers,
            if last > first { busy / (last - first) } else { 0.0 },
            wait,
            self.end_s
        )
    }
}

/// Process CPU seconds so far (user + system, every thread; Linux `/proc/self/stat`, 10 ms
/// ticks), 0 where unavailable.
pub fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    let Some(rest) = s.rfind(')').map(|p| &s[p + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| f.get(i).and_then(|x| x.parse::<f64>().ok()).unwrap_or(0.0);
    (tick(11) + tick(12)) / 100.0
}

/// Wall and process CPU seconds spent per method (by label) and per phase of the runner
/// (`(capture)`, `(exact attention)`, `(metrics)`, `(iou)`, `(selections table)`,
/// `(frequency)`).
#[derive(Debug, Default, Clone)]
pub struct Profile {
    pub seconds: std::collections::BTreeMap<String, (f64, f64)>,
}

impl Profile {
    /// A start mark: now, in wall and CPU time.
    pub fn mark() -> (std::time::Instant, f64) {
        (std::time::Instant::now(), cpu_seconds())
    }

    /// Adds `wall` seconds to `name` (work that ran beside other work: no CPU seconds of its own).
    pub fn add_wall(&mut self, name: &str, wall: f64) {
        self.seconds.entry(name.to_string()).or_default().0 += wall;
    }

    /// Adds the time since `mark` to `name`.
    pub fn add(&mut self, name: &str, mark: (std::time::Instant, f64)) {
        let e = self.seconds.entry(name.to_string()).or_default();
        e.0 += mark.0.elapsed().as_secs_f64();
        e.1 += cpu_seconds() - mark.1;
    }
}
