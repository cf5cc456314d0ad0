//! The process's memory: its peak, for reports (`max_rss_mib`), and how freed memory is
//! kept (`keep_freed_memory`).

/// Keep freed memory in the process instead of handing it back to the kernel (glibc on
/// Linux; elsewhere nothing). The `bda` binary calls it first thing.
///
/// Why: a few-shot meta-step allocates and frees several hundred MB of maps (64 MB per
/// block buffer at the default shapes). glibc serves blocks over 32 MB with `mmap` and
/// returns them with `munmap` whatever its thresholds, so every meta-step paid for fresh
/// zeroed pages (page faults) and, with two threads, TLB-shootdown interrupts: `perf` put
/// 16–18 % of a `bda fewshot bench` in the kernel (`smp_call_function_many_cond`,
/// `native_write_msr`). With `mmap` off and trimming off (the heap keeps its high-water
/// mark, which the peak RSS already is), the same binary measured 1.07–1.10 s per
/// meta-step against 1.43–1.54 s, back to back (2 threads, 3 steps, 2 pairs).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any thread
    // is started, with parameters glibc documents for these options.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// The peak resident set size of this process in MiB (Linux's `VmHWM`), or `None` where
/// `/proc/self/status` does not say.
pub fn max_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_peak_grows_with_what_was_touched() {
        let Some(before) = super::max_rss_mib() else {
            return; // not Linux
        };
        let big = vec![1u8; 64 << 20];
        std::hint::black_box(&big);
        let after = super::max_rss_mib().unwrap();
        assert!(after >= before.max(64.0), "{before} → {after}");
    }
}
