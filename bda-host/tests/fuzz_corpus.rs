//! Replays the kept fuzz corpora (`fuzz/corpus/<target>/`) through each fuzz target's
//! invariants, so every test run re-checks what the fuzzer once explored (cargo-fuzz needs
//! nightly and minutes; this needs neither).

use std::path::Path;

/// Runs `check` on every file of `fuzz/corpus/<target>` and returns how many there were.
fn replay(target: &str, check: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let ok = std::panic::catch_unwind(|| check(&bytes));
        assert!(ok.is_ok(), "{} breaks an invariant", path.display());
        n += 1;
    }
    n
}

#[test]
fn kept_idx_corpus_still_passes() {
    let n = replay("idx", bda_host::data::idx::check_invariants);
    assert!(n > 100, "only {n} corpus files");
}

#[test]
fn kept_png_corpus_still_passes() {
    let n = replay("png", bda_host::fewshot::image::check_grey_invariants);
    assert!(n > 50, "only {n} corpus files");
}

#[test]
fn kept_jpeg_corpus_still_passes() {
    let n = replay("jpeg", bda_host::fewshot::image::check_rgb_invariants);
    assert!(n > 50, "only {n} corpus files");
}

#[test]
fn kept_csv_corpus_still_passes() {
    let n = replay("csv", bda_host::fewshot::miniimagenet::check_csv_invariants);
    assert!(n > 50, "only {n} corpus files");
}

#[test]
fn kept_checkpoint_corpus_still_passes() {
    let n = replay(
        "checkpoint",
        bda_host::fewshot::checkpoint::check_checkpoint_invariants,
    );
    assert!(n >= 10, "only {n} corpus files");
}

#[test]
fn kept_config_corpus_still_passes() {
    let n = replay("config", bda_host::config::check_config_invariants);
    assert!(n >= 10, "only {n} corpus files");
}

#[test]
fn kept_plot_corpus_still_passes() {
    let n = replay("plot", bda_host::plot::invariants::check_plot_invariants);
    assert!(n >= 10, "only {n} corpus files");
}
