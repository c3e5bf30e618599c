//! Device timing: [`GpuTimer`] (start and stop around work) and [`GpuMark`] (points on the
//! stream for stage profiles), both CUDA events on the device's one stream.

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::CudaEvent;

use super::context::GpuDevice;
use super::error::{driver_err, Result};

impl GpuDevice {
    /// Starts a timer on the device's stream (CUDA events).
    pub fn timer(&self) -> Result<GpuTimer> {
        let mk = || {
            self.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(driver_err("creating an event"))
        };
        let (start, end) = (mk()?, mk()?);
        start
            .record(&self.stream)
            .map_err(driver_err("recording an event"))?;
        Ok(GpuTimer { start, end })
    }

    /// Records an event on the device's stream now (for stage profiles: the elapsed time
    /// between two marks is read later with [`GpuMark::ms_since`], without synchronizing).
    pub fn mark(&self) -> Result<GpuMark> {
        let e = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver_err("creating an event"))?;
        e.record(&self.stream)
            .map_err(driver_err("recording an event"))?;
        Ok(GpuMark(e))
    }
}

/// Elapsed device time between [`GpuDevice::timer`] and [`GpuTimer::stop_ms`].
pub struct GpuTimer {
    start: CudaEvent,
    end: CudaEvent,
}

impl std::fmt::Debug for GpuTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GpuTimer")
    }
}

impl GpuTimer {
    /// Records the end on `dev`'s stream, waits, and returns milliseconds since the start.
    pub fn stop_ms(self, dev: &GpuDevice) -> Result<f32> {
        self.end
            .record(&dev.stream)
            .map_err(driver_err("recording an event"))?;
        self.start
            .elapsed_ms(&self.end)
            .map_err(driver_err("timing (kernels failed?)"))
    }
}

/// A recorded point on the device's stream (see [`GpuDevice::mark`]).
pub struct GpuMark(CudaEvent);

impl std::fmt::Debug for GpuMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GpuMark")
    }
}

impl GpuMark {
    /// Milliseconds from `earlier` to this mark (waits for both).
    pub fn ms_since(&self, earlier: &GpuMark) -> Result<f32> {
        earlier
            .0
            .elapsed_ms(&self.0)
            .map_err(driver_err("timing (kernels failed?)"))
    }
}
