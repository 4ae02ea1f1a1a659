//! The allocator every journey binary runs with, and its one setting, so
//! that the benches and examples measure the engine and the store as the
//! worker runs them.
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: journey_alloc::Allocator = journey_alloc::Allocator;
//!
//! fn main() {
//!     journey_alloc::tune();
//! }
//! ```
//!
//! mimalloc rather than glibc's allocator: glibc spent about half of the
//! worker's CPU time in `malloc`/`free` with librdkafka's threads around
//! (`perf`, BENCHMARKS.md).

// The crate's one exception to the workspace's denial of unsafe code: the
// global allocator and one option, through mimalloc's C interface.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// The global allocator: `#[global_allocator] static GLOBAL:
/// journey_alloc::Allocator = journey_alloc::Allocator;`.
///
/// mimalloc, called as the `mimalloc` crate does but for one thing: a block
/// that needs no more than word alignment (nearly every block: strings,
/// vectors, boxes) goes through `mi_malloc`, whose every block is word
/// aligned, instead of `mi_malloc_aligned`, whose extra checks cost about 4
/// of the 11 instructions of an allocation (callgrind, BENCHMARKS.md).
/// mimalloc's own `mi_realloc_aligned` takes the same shortcut.
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

/// Whether a block of `layout` needs mimalloc's aligned interface: only
/// above the word alignment (`sizeof(uintptr_t)`) every mimalloc block has.
#[inline]
fn needs_aligned(layout: Layout) -> bool {
    layout.align() > std::mem::size_of::<usize>()
}

/// A new block of `layout` from mimalloc's `plain` entry point, or from
/// its `aligned` one when the layout needs it.
///
/// # Safety
///
/// `plain` and `aligned` are a pair of mimalloc's allocation functions
/// (`mi_malloc`/`mi_malloc_aligned`, `mi_zalloc`/`mi_zalloc_aligned`).
#[inline]
unsafe fn allocate(
    layout: Layout,
    plain: unsafe extern "C" fn(usize) -> *mut c_void,
    aligned: unsafe extern "C" fn(usize, usize) -> *mut c_void,
) -> *mut u8 {
    // SAFETY: plain calls into mimalloc; a null result is out of memory.
    unsafe {
        if needs_aligned(layout) {
            aligned(layout.size(), layout.align()).cast()
        } else {
            plain(layout.size()).cast()
        }
    }
}

// SAFETY: every block comes from mimalloc and goes back to it; a block is
// asked of the aligned interface unless its alignment is at most a word,
// which every mimalloc block has.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's pair of allocation functions.
        unsafe { allocate(layout, mi::mi_malloc, mi::mi_malloc_aligned) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's pair of zeroing allocation functions.
        unsafe { allocate(layout, mi::mi_zalloc, mi::mi_zalloc_aligned) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`'s alignment.
        unsafe {
            if needs_aligned(layout) {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            } else {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            }
        }
    }
}

/// `mi_option_purge_delay` in mimalloc v2's `mi_option_e` (`mimalloc.h`);
/// the Rust bindings name no constant for it.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before it returns it to the OS, in
/// milliseconds. Its default, 10 ms, is shorter than a commit cycle: every
/// commit's buffers (the batch, the changelog records, the encoded values)
/// went back to the OS, and the kernel zeroed fresh pages for the next
/// (1.0 GiB purged in the 1M-event store bench, 96 MiB with this;
/// BENCHMARKS.md). An idle process still gives its memory back after a
/// second.
pub const PURGE_DELAY_MS: std::ffi::c_long = 1000;

/// Sets the allocator's options; call it first thing in `main`. An option
/// given in the environment (`MIMALLOC_PURGE_DELAY`) is left as it is.
pub fn tune() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's numeric options, any value of
        // which is valid; mimalloc reads its options atomically.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
    }
}

/// The purge delay in effect (see [`PURGE_DELAY_MS`]).
pub fn purge_delay_ms() -> std::ffi::c_long {
    // SAFETY: reads one of mimalloc's numeric options.
    unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    #[global_allocator]
    static GLOBAL: super::Allocator = super::Allocator;

    #[test]
    fn blocks_have_their_layouts_alignment_and_keep_their_bytes() {
        use std::alloc::{GlobalAlloc, Layout};
        let a = super::Allocator;
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 7, 8, 24, 40, 100, 1000, 70_000] {
                let layout = Layout::from_size_align(size, align).unwrap();
                // SAFETY: non-zero sizes; every block is freed with its layout.
                unsafe {
                    let p = a.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "alloc {size} aligned {align}");
                    p.write_bytes(0xab, size);
                    let q = a.realloc(p, layout, size * 3);
                    assert_eq!(q as usize % align, 0, "realloc {size} aligned {align}");
                    assert!((0..size).all(|i| *q.add(i) == 0xab));
                    a.dealloc(q, Layout::from_size_align(size * 3, align).unwrap());
                    let z = a.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed {size} aligned {align}");
                    assert!((0..size).all(|i| *z.add(i) == 0));
                    a.dealloc(z, layout);
                }
            }
        }
    }

    #[test]
    fn tune_sets_the_purge_delay_unless_the_environment_does() {
        let before = super::purge_delay_ms();
        super::tune();
        match std::env::var("MIMALLOC_PURGE_DELAY") {
            Ok(v) => assert_eq!(super::purge_delay_ms().to_string(), v),
            Err(_) => {
                // mimalloc v2's default, so option 15 is the purge delay.
                assert_eq!(before, 10);
                assert_eq!(super::purge_delay_ms(), super::PURGE_DELAY_MS);
            }
        }
    }
}
