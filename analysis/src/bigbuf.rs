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
    fn zeroed_and_sized() {
        for len in [0, 1, 1000, 3 << 20] {
            let v = super::zeroed_f32(len);
            assert_eq!(v.len(), len);
            assert!(v.iter().all(|&x| x == 0.0));
        }
    }
}
