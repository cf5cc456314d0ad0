//! Stack high-water mark by painting.
//!
//! cortex-m-rt's `paint-stack` feature fills `[_stack_end, _stack_start)` with
//! [`STACK_PAINT_VALUE`] in the reset handler, before `main`. [`repaint`] does the same again
//! for the part below the current stack pointer, so that each phase of the program can be
//! measured on its own; [`used`] scans up from `_stack_end` to the first word that is no
//! longer paint and returns the distance to the top of the stack. That is a high-water mark:
//! a frame that reserves space it never writes is only counted if something deeper was
//! written.
//!
//! This is the only `unsafe` in the firmware; the kernel forbids it.

use core::arch::asm;
use core::ptr;

use cortex_m_rt::STACK_PAINT_VALUE;

unsafe extern "C" {
    /// Lowest address the stack may reach: the end of `.bss`/`.uninit` (cortex-m-rt's link.x).
    static _stack_end: u32;
    /// Initial stack pointer: the top of RAM.
    static _stack_start: u32;
}

/// Left unpainted below the stack pointer of [`repaint`]'s own frame.
const GUARD: usize = 64;

/// `(bottom, top)` of the stack region.
fn bounds() -> (usize, usize) {
    (
        &raw const _stack_end as usize,
        &raw const _stack_start as usize,
    )
}

/// Bytes between `_stack_end` and `_stack_start`: all the stack there is.
pub fn capacity() -> usize {
    let (bottom, top) = bounds();
    top - bottom
}

/// Paint the free stack again, from `_stack_end` up to `GUARD` bytes below the current stack
/// pointer, with interrupts masked (an exception frame pushed meanwhile would be overwritten).
#[inline(never)]
pub fn repaint() {
    cortex_m::interrupt::free(|_| {
        let sp: usize;
        // SAFETY: reads the stack pointer; no memory access, no side effect.
        unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
        let (bottom, _) = bounds();
        let limit = sp.saturating_sub(GUARD) & !3;
        let mut p = bottom as *mut u32;
        while (p as usize) < limit {
            // SAFETY: `[_stack_end, sp − GUARD)` lies below every live frame and above every
            // static (link.x places `_stack_end` after `.bss`/`.uninit`); nothing refers to
            // it, and with interrupts masked nothing else can push there meanwhile.
            unsafe {
                ptr::write_volatile(p, STACK_PAINT_VALUE);
                p = p.add(1);
            }
        }
    });
}

/// Stack used since the last paint (at reset or [`repaint`]), in bytes from the top of RAM.
#[inline(never)]
pub fn used() -> usize {
    let (bottom, top) = bounds();
    let mut p = bottom as *const u32;
    // SAFETY: aligned reads of RAM inside the stack region (the loop stops at `top`).
    while (p as usize) < top && unsafe { ptr::read_volatile(p) } == STACK_PAINT_VALUE {
        p = unsafe { p.add(1) };
    }
    top - p as usize
}
