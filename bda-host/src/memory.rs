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
///
/// One arena: the work runs on the rayon pool's threads, and glibc gives each thread an
/// arena of its own, made of 64 MB heaps that it maps and unmaps as they fill and empty
/// (the options above govern the main arena only). At MiniImageNet shapes a meta-step's
/// maps are hundreds of MB: `perf` still put about 20 % of a two-thread `bda fewshot
/// bench --image-size 84 --in-channels 3 --channels 32 --meta-batch 4` in page faults and
/// TLB-shootdown interrupts. With every thread on the main arena (`M_ARENA_MAX` 1, tried
/// as `MALLOC_ARENA_MAX=1`): 0.47–0.49 s per meta-step against 0.77–0.80 s, the default
/// shapes 0.51–0.52 s against 0.55–0.56 s, hyper-cleaning's network unchanged
/// (1.40–1.48 s against 1.42–1.45 s), 2 threads, 2026-12-05.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only changes allocator parameters; it is called before any thread
    // is started, with parameters glibc documents for these options.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_ARENA_MAX, 1);
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
