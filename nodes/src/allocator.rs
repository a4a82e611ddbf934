//! Tuning of the C allocator (glibc's malloc) for a broker's traffic.
//!
//! A node allocates a frame-sized buffer (up to MiBs) for every produce request it reads and
//! every peer append it receives, and frees it once the batches are written. By default glibc
//! serves an allocation above a moving threshold (128 KiB, raised to the largest freed mmapped
//! block) with a fresh `mmap`, and gives a heap's free top back to the kernel once it exceeds
//! twice that threshold; so, under `brook bench cluster`, frame buffers kept coming back as fresh
//! pages and every 4 KiB of every frame paid a page fault, a zeroed page and a memory-cgroup
//! charge: ~16% of the three nodes' CPU samples in `perf`, against ~7% with the settings below.
//! Serving buffers up to [`MMAP_THRESHOLD_BYTES`] from the heap and keeping up to
//! [`TRIM_THRESHOLD_BYTES`] of free heap for reuse removes most of that. The price: the process
//! keeps its peak heap (bounded by the request budget and the per-partition bounds) instead of
//! returning it at once.

/// Allocations at least this large get their own `mmap` (glibc's maximum for this setting on
/// 64-bit, which also fixes it: no moving threshold).
pub const MMAP_THRESHOLD_BYTES: i32 = 32 * 1024 * 1024;
/// Free memory at the top of a heap beyond this is given back to the kernel.
pub const TRIM_THRESHOLD_BYTES: i32 = 256 * 1024 * 1024;

/// Apply the settings above (glibc only; elsewhere nothing). Call once, first thing in `main`,
/// before any thread starts. Returns whether both settings were taken.
pub fn keep_freed_memory_for_reuse() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only changes malloc's tuning parameters; it is called before any
        // other thread exists, as glibc asks.
        let mmap = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) };
        // SAFETY: as above.
        let trim = unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES) };
        mmap == 1 && trim == 1
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// glibc takes both values (mallopt answers 1 on success, 0 on a refused value).
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_takes_the_settings() {
        assert!(keep_freed_memory_for_reuse());
    }
}
