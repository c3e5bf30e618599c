//! Large scratch buffers (the packed lower triangles of `n (n + 1) / 2` floats per head, 134 MB
//! at 8k tokens) allocated so that the kernel backs them with transparent huge pages where it
//! can: one page fault per 2 MiB instead of per 4 KiB. On an 8k-token layer this cut the
//! simulator's system time by about 40% (BENCHMARKS.md, Simulator). Elsewhere (other systems,
//! THP off) it is a plain zeroed `Vec`.

/// A zeroed `Vec<f32>` of `len` elements, advised for huge pages before it is touched.
pub fn zeroed_f32(len: usize) -> Vec<f32> {
    let v = vec![0f32; len];
    advise_huge(&v);
    v
}

/// Buffers of at least this many bytes go back to the pool when dropped.
const POOLED_MIN_BYTES: usize = 16 << 20;
/// The pool keeps at most this many bytes; the smallest buffers are freed first.
const POOL_MAX_BYTES: usize = 8 << 30;

/// Large buffers given back, for reuse without new page faults (and the kernel's zeroing).
static POOL: std::sync::Mutex<Vec<Vec<f32>>> = std::sync::Mutex::new(Vec::new());

/// A large `f32` buffer whose memory returns to a process-wide pool when dropped, so that the
/// next buffer of about the same size (the next KV group's, the next layer's) reuses pages that
/// are already mapped. Its contents start unspecified: the caller writes every element.
#[derive(Debug, Default)]
pub struct PooledF32(Vec<f32>);

impl PooledF32 {
    /// A buffer of `len` elements: a pooled one of the same length when there is one, else a new
    /// zeroed one.
    pub fn new(len: usize) -> Self {
        if len * 4 >= POOLED_MIN_BYTES {
            let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(at) = pool.iter().position(|v| v.len() == len) {
                return Self(pool.swap_remove(at));
            }
        }
        Self(zeroed_f32(len))
    }
}

impl Clone for PooledF32 {
    fn clone(&self) -> Self {
        let mut c = Self::new(self.0.len());
        c.0.copy_from_slice(&self.0);
        c
    }
}

impl std::ops::Deref for PooledF32 {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for PooledF32 {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for PooledF32 {
    fn drop(&mut self) {
        let v = std::mem::take(&mut self.0);
        if v.len() * 4 < POOLED_MIN_BYTES {
            return;
        }
        let mut pool = POOL.lock().unwrap_or_else(|e| e.into_inner());
        pool.push(v);
        pool.sort_by_key(|v| std::cmp::Reverse(v.len()));
        let mut total = 0;
        pool.retain(|v| {
            total += v.len() * 4;
            total <= POOL_MAX_BYTES
        });
    }
}

#[cfg(target_os = "linux")]
fn advise_huge(v: &[f32]) {
    const HUGE: usize = 2 << 20;
    let bytes = std::mem::size_of_val(v);
    if bytes < 4 * HUGE {
        return;
    }
    let start = v.as_ptr() as usize;
    let page = 4096;
    let lo = start.div_ceil(page) * page;
    let hi = (start + bytes) / page * page;
    if hi > lo {
        // SAFETY: `lo..hi` lies inside the live allocation of `v` and is page aligned;
        // MADV_HUGEPAGE only changes how the kernel backs the range, never its contents.
        unsafe {
            libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn advise_huge(_v: &[f32]) {}

#[cfg(test)]
mod tests {
    #[test]
    fn pooled_buffers_are_reused_by_length() {
        let len = (super::POOLED_MIN_BYTES / 4) + 123;
        let mut a = super::PooledF32::new(len);
        a[7] = 3.5;
        let ptr = a.as_ptr();
        drop(a);
        let b = super::PooledF32::new(len);
        assert_eq!(b.len(), len);
        // Another test may have taken it meanwhile; when it is the same memory, it kept its data.
        if b.as_ptr() == ptr {
            assert_eq!(b[7], 3.5);
        }
        let c = b.clone();
        assert_eq!(&c[..], &b[..]);
        assert_eq!(super::PooledF32::new(10).len(), 10);
    }

    #[test]
    fn zeroed_and_sized() {
        for len in [0, 1, 1000, 3 << 20] {
            let v = super::zeroed_f32(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
        }
    }
}
