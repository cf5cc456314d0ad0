//! `f32` buffers that start on a cache line, for the SIMD kernels' operands.
//!
//! The allocator aligns a `Vec<f32>` to 16 bytes only (a large one from `mmap` starts 16
//! bytes past a page; the `bda` binary, which turns `mmap` off, gets heap addresses), so a
//! kernel's 64-byte row of 16 floats (`W₁`'s packed tiles, the rows
//! of `G_a`) straddles two cache lines: the working set a kernel keeps in L1 doubles.
//! Measured on the hyper-cleaning network's `Uᵀ·G_a` (`examples/mlp_kernels.rs`, Fashion-MNIST
//! training set, 15 interleaved calls, median): 24.7–26.8 ms with the rows on a line
//! against 28.8–30.1 ms 16 bytes off (1 thread), 13.8 against 16.7 ms (2 threads).
//!
//! [`AlignedVec`] stores whole lines (`#[repr(align(64))]` blocks of 16 floats) and shows
//! the first `len` floats as a slice, without `unsafe` (the cast is `bytemuck`'s).

use core::ops::{Deref, DerefMut};

/// Floats per cache line.
const LINE: usize = 16;

/// One cache line of floats.
#[derive(Clone, Copy, Debug, Default, bytemuck::Pod, bytemuck::Zeroable)]
#[repr(C, align(64))]
struct Line([f32; LINE]);

/// A growable `f32` buffer whose first element lies on a 64-byte boundary; derefs to
/// `[f32]`.
///
/// ```
/// use bda_cpu::aligned::AlignedVec;
/// let mut v = AlignedVec::default();
/// v.resize(20, 1.5);
/// assert_eq!(v.len(), 20);
/// assert_eq!(v.as_ptr() as usize % 64, 0);
/// assert!(v.iter().all(|&x| x == 1.5));
/// ```
#[derive(Debug, Default)]
pub struct AlignedVec {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedVec {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        let mut v = AlignedVec::default();
        v.resize(len, 0.0);
        v
    }

    /// A copy of `s`.
    pub fn from_slice(s: &[f32]) -> Self {
        let mut v = AlignedVec::zeros(s.len());
        v.copy_from_slice(s);
        v
    }

    /// As `Vec::resize`: keeps the first `min(len, self.len())` floats, sets the new ones
    /// to `value`.
    pub fn resize(&mut self, len: usize, value: f32) {
        let old = self.len;
        self.lines.resize(len.div_ceil(LINE), Line::default());
        self.len = len;
        if len > old {
            self[old..].fill(value);
        }
    }

    /// Empties the buffer (keeps its allocation).
    pub fn clear(&mut self) {
        self.len = 0;
        self.lines.clear();
    }
}

impl Clone for AlignedVec {
    fn clone(&self) -> Self {
        AlignedVec {
            lines: self.lines.clone(),
            len: self.len,
        }
    }
    /// Reuses the allocation (the reverse sweep copies a cache into a tape slot per step).
    fn clone_from(&mut self, src: &Self) {
        self.lines.clone_from(&src.lines);
        self.len = src.len;
    }
}

impl Deref for AlignedVec {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &bytemuck::cast_slice::<Line, f32>(&self.lines)[..self.len]
    }
}

impl DerefMut for AlignedVec {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut::<Line, f32>(&mut self.lines)[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resize_keeps_the_prefix_and_fills_the_rest_on_a_line() {
        let mut v = AlignedVec::from_slice(&[1.0, 2.0, 3.0]);
        v.resize(40, 7.0);
        assert_eq!(&v[..4], &[1.0, 2.0, 3.0, 7.0]);
        assert!(v[3..].iter().all(|&x| x == 7.0));
        // Shrinking inside a line, then growing: the regrown floats are the new value,
        // not what the line held before.
        v.resize(2, 0.0);
        v.resize(5, -1.0);
        assert_eq!(&v[..], &[1.0, 2.0, -1.0, -1.0, -1.0]);
        for len in [1, 15, 16, 17, 1000, 100_000] {
            v.resize(len, 0.0);
            assert_eq!(v.len(), len);
            assert_eq!(v.as_ptr() as usize % 64, 0, "len {len}");
        }
        v.clear();
        assert!(v.is_empty());
    }
}
