//! Fuzz target `csv`: the MiniImageNet layout's split-file parser (`filename,label`) on
//! arbitrary bytes. See `bda_host::fewshot::miniimagenet::check_csv_invariants` (also run on
//! the kept corpus by `bda-host/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bda_host::fewshot::miniimagenet::check_csv_invariants(data);
});
