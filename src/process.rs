//! Process-wide settings made once at start, before any thread is spawned.

/// Turns transparent huge pages off for this process (Linux; elsewhere a no-op). Returns
/// whether they are off.
///
/// mimalloc asks for huge pages on its arenas (`madvise(MADV_HUGEPAGE)`), so under a write
/// storm the kernel zeroes (and compacts for) a 2 MiB page on the fault path, inside whichever
/// thread touched it first: the writer, in the middle of a group commit. That is the latency
/// spike databases warn about when they ask for THP to be disabled. With them off, a storm of
/// 200 000 new alerts in batches of 100 had a p99 of 56–62 ms instead of 71–111 ms
/// (BENCHMARKS.md). Called by the binary and the load tool at the top of `main`: the setting
/// applies to every later page fault of the process, whatever was mapped before, and is
/// inherited by the commands it runs (which do not care).
pub fn disable_transparent_huge_pages() -> bool {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: PR_SET_THP_DISABLE takes plain integer arguments and touches no memory of
        // ours; it only sets a flag on this process.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0 }
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// mimalloc's index of its `purge_delay` option (`mi_option_purge_delay`: the same in the
/// v2 and v3 sources that libmimalloc-sys 0.1.49 builds; its bindings name no constant for
/// it). A test checks it by the option's default in the v3 sources (`src/options.c`: 1000 ms;
/// the header's comment still says 10).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc (the binary's allocator) give freed pages back to the kernel at once rather
/// than a second later (mimalloc 3's default). Under a write storm sled frees and reallocates
/// I/O buffers and tree nodes all the time; with the delay, a storm of 360 000 new alerts held
/// 450 MB at its peak, without it 348 MB, at the same intake speed (BENCHMARKS.md). Called by
/// the binary and the load tool at the top of `main`; the option is read at every purge.
pub fn return_freed_memory_promptly() {
    // SAFETY: mi_option_set only stores an integer in mimalloc's option table.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_purge_delay_option_is_the_one_set() {
        // SAFETY: reading and storing an option of mimalloc's table (the test binary links
        // mimalloc even though its allocator is the system's).
        let before = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert!(
            before == 1000 || before == 0,
            "index {} is not purge_delay (default 1000 ms): {before}",
            super::MI_OPTION_PURGE_DELAY
        );
        super::return_freed_memory_promptly();
        let after = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, 0);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn huge_pages_are_off_for_the_process_afterwards() {
        // Read in a child (which inherits the flag), so the check sees what the kernel applies.
        let thp = || {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg("grep THP_enabled /proc/self/status")
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout).to_string()
        };
        let before = thp();
        assert!(super::disable_transparent_huge_pages());
        let after = thp();
        if before.contains("THP_enabled") {
            assert!(after.contains("THP_enabled:\t0"), "{before:?} → {after:?}");
        }
    }
}
