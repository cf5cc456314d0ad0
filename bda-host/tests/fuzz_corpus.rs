//! Replays the kept fuzz corpus (fuzz/corpus/idx) through the fuzz target's invariants, so
//! every test run re-checks what the fuzzer once explored (cargo-fuzz needs nightly and
//! minutes; this needs neither).

#[test]
fn kept_fuzz_corpus_still_passes() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/idx");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/idx exists") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let ok = std::panic::catch_unwind(|| bda_host::data::idx::check_invariants(&bytes));
        assert!(ok.is_ok(), "{} breaks an invariant", path.display());
        n += 1;
    }
    assert!(n > 100, "only {n} corpus files");
}
