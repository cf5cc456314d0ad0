//! Fuzz target `idx`: the IDX parsers and the gzip path on arbitrary bytes.
//!
//! Each input is parsed as images and as labels both as it is and after going through
//! `decode_idx_bytes`, the entry point the file readers use (gunzip when the bytes start
//! with the gzip magic). Besides "never panics, never allocates absurdly" it checks what a
//! successful parse promises, and that every error message is one line.
#![no_main]

use bda_host::data::{decode_idx_bytes, parse_images, parse_labels};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check(data);
    match decode_idx_bytes(data.to_vec()) {
        Ok(decoded) => check(&decoded),
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
});

fn check(bytes: &[u8]) {
    match parse_images(bytes) {
        Ok(img) => {
            assert_eq!(img.pixels.len(), img.n * img.rows * img.cols);
            assert_eq!(bytes.len(), 16 + img.pixels.len());
            assert_eq!(img.image(img.n), None);
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
    match parse_labels(bytes) {
        Ok(labels) => {
            assert_eq!(bytes.len(), 8 + labels.len());
            assert!(labels.iter().all(|&y| y <= 9));
        }
        Err(e) => assert!(!e.to_string().contains('\n')),
    }
}
