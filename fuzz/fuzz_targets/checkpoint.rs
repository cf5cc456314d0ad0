//! Fuzz target `checkpoint`: the few-shot checkpoint reader (`Checkpoint::parse`, what
//! `--resume` and `fewshot eval --checkpoint` read) on arbitrary bytes. See
//! `bda_host::fewshot::checkpoint::check_checkpoint_invariants` (also run on the kept corpus
//! by `bda-host/tests/fuzz_corpus.rs`).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    bda_host::fewshot::checkpoint::check_checkpoint_invariants(data);
});
