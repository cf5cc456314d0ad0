//! Fuzz target `jpeg`: the MiniImageNet layout's image path on arbitrary bytes — JPEG (or
//! PNG, by signature) decoding to RGB, then area resizing of each channel to 84×84. See
//! `bda_host::fewshot::image::check_rgb_invariants` (also run on the kept corpus by
//! `bda-host/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bda_host::fewshot::image::check_rgb_invariants(data);
});
