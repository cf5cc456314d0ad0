//! Fuzz target `plot`: `bda plot`'s report reader (`parse_reports`) and its default figure
//! on arbitrary bytes. See `bda_host::plot::invariants::check_plot_invariants` (also run on
//! the kept corpus by `bda-host/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bda_host::plot::invariants::check_plot_invariants(data);
});
