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

// The crate's one exception to the workspace's denial of unsafe code: an
// option set through mimalloc's C interface.
#![allow(unsafe_code)]

/// The global allocator: `#[global_allocator] static GLOBAL:
/// journey_alloc::Allocator = journey_alloc::Allocator;`.
pub use mimalloc::MiMalloc as Allocator;

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
