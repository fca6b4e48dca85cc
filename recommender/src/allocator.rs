//! The allocator of the `recommender` binary and of the benchmarks that measure it: mimalloc,
//! with large OS pages.
//!
//! Why mimalloc: the service allocates on many threads and frees on others (batches decoded on
//! the blocking pool, merged and dropped by the writer), which glibc's malloc handles badly
//! (BENCHMARKS.md, "Durable ingest").
//!
//! Why large pages: `recommend` and `verify` build hundreds of MiB of objects once. With 4 KiB
//! pages, the kernel's first-touch faults were 40 % of synthesis at 10,000 workloads on a VM
//! (BENCHMARKS.md, "Synthesis and verification at scale"); mimalloc then asks for transparent huge
//! pages (`madvise(MADV_HUGEPAGE)`, honoured when THP is `always` or `madvise`), one fault per
//! 2 MiB.

/// The global allocator: `#[global_allocator] static A: Allocator = Allocator;` in each binary.
pub type Allocator = mimalloc::MiMalloc;

/// Sets mimalloc's options. Call it first thing in `main`, before the program allocates much:
/// memory mimalloc took from the OS earlier keeps the pages it had.
pub fn configure() {
    // SAFETY: `mi_option_set` only stores the value in mimalloc's option table; any option and
    // value is allowed at any time.
    unsafe {
        libmimalloc_sys::mi_option_set(libmimalloc_sys::mi_option_large_os_pages, 1);
    }
}
