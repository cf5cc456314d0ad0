//! The process's peak memory, for reports (`max_rss_mib`).

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
