//! The gate between a calibration pass running beside the simulation and the layer jobs that
//! wait for it.

/// How far a calibration pass running beside the simulation has gone: a layer job of a method
/// that fits settings waits until the calibration text has been through its layer.
#[derive(Debug, Default)]
pub(crate) struct CalibrationGate {
    state: std::sync::Mutex<GateState>,
    changed: std::sync::Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    /// Layers `0..passed` are calibrated.
    passed: usize,
    finished: bool,
    failed: bool,
}

impl CalibrationGate {
    fn lock(&self) -> std::sync::MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Layer `layer` and those before it are calibrated.
    pub(crate) fn pass(&self, layer: usize) {
        let mut st = self.lock();
        st.passed = st.passed.max(layer + 1);
        self.changed.notify_all();
    }

    /// The pass ended (successfully or not).
    pub(crate) fn finish(&self, ok: bool) {
        let mut st = self.lock();
        st.finished = true;
        st.failed = !ok;
        self.changed.notify_all();
    }

    /// Waits until `layer` is calibrated or the pass ended; false when it failed.
    pub(crate) fn wait(&self, layer: usize) -> bool {
        let mut st = self.lock();
        while !st.finished && st.passed <= layer {
            st = self.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
        !st.failed
    }

    /// True once the pass failed.
    pub(crate) fn failed(&self) -> bool {
        self.lock().failed
    }
}
