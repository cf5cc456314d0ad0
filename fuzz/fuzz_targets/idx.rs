//! Fuzz target `idx`: the IDX parsers and the gzip path on arbitrary bytes.
//!
//! Each input is parsed as images and as labels both as it is and after going through
//! `decode_idx_bytes`, the entry point the file readers use (gunzip when the bytes start
//! with the gzip magic). Besides "never panics, never allocates absurdly" it checks what a
//! successful parse promises, and that every error message is one line: see
//! `bda_host::data::idx::check_invariants`, which `bda-host/tests/fuzz_corpus.rs` also runs
//! on the kept corpus in every test run.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bda_host::data::idx::check_invariants(data);
});
