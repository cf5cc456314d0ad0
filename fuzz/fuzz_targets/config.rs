//! Fuzz target `config`: `--config FILE` of every command that takes one
//! (`apply_config_bytes`) on arbitrary bytes. See `bda_host::config::check_config_invariants`
//! (also run on the kept corpus by `bda-host/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bda_host::config::check_config_invariants(data);
});
