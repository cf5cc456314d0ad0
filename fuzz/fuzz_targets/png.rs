//! Fuzz target `png`: the Omniglot layout's image path on arbitrary bytes — PNG decoding to
//! grey levels, then inversion and area resizing to 28×28. See
//! `bda_host::fewshot::image::check_grey_invariants` (also run on the kept corpus by
//! `bda-host/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bda_host::fewshot::image::check_grey_invariants(data);
});
