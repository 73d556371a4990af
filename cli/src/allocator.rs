//! The process's allocator: mimalloc, with its options fixed here.
//!
//! Why mimalloc: the engine's workers, the ledger writer and sled's threads allocate on one
//! thread and free on another all the time, and glibc's malloc spent about 30% of a run's
//! CPU on that (perf, 100k-row benchmark). With mimalloc the 100k-row pipeline takes about
//! a quarter less user CPU (docs/benchmarks.md, *End-to-end pipeline*).
//!
//! Why these options, set in code rather than left to `MIMALLOC_*` environment variables:
//! with mimalloc's defaults the same run peaked at 220-290 MB against the 150 MB budget,
//! because it commits its first arena eagerly and returns freed pages only after a delay;
//! with both turned off it peaked at about 120 MB for the same CPU. A user's environment
//! should not decide whether a run fits its memory budget.
//!
//! They must be set before mimalloc reserves its first arena, which happens before `main`
//! (setting them at the start of `main` gave 165 MB: the eager arena was already there).
//! So [`configure`] runs as an ELF constructor of priority 100, ahead of mimalloc's own
//! (101) and of every allocation; on other targets it runs at the start of `main`, which
//! still fixes the purge delay.

use libmimalloc_sys::mi_option_t;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in mimalloc v3's `mimalloc.h` (`mi_option_e`), the
/// version libmimalloc-sys builds by default; the crate does not name it. Default 2.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay`, likewise: milliseconds before freed memory is returned to
/// the OS. Default 1000 in the bundled v3 (`src/options.c`).
const PURGE_DELAY: mi_option_t = 15;

/// Runs [`configure`] before mimalloc initialises: `.init_array.00100` sorts before
/// mimalloc's `constructor(101)` and after Rust's own start-up entry (99), which does
/// not allocate.
#[cfg(all(target_os = "linux", not(test)))]
#[used]
#[link_section = ".init_array.00100"]
static CONFIGURE_EARLY: extern "C" fn() = configure_early;

#[cfg(all(target_os = "linux", not(test)))]
extern "C" fn configure_early() {
    configure();
}

/// Fixes the options above. Idempotent: `main` calls it too, for targets without the
/// constructor.
pub fn configure() {
    // SAFETY: mi_option_set only stores a value in mimalloc's option table; any option
    // number below `_mi_option_last` is valid, and these two are.
    unsafe {
        libmimalloc_sys::mi_option_set(ARENA_EAGER_COMMIT, 0);
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 0);
    }
}

/// For commands that read a ledger rather than run a pipeline (`replay`): puts the purge
/// delay back to mimalloc's default. Verification allocates and frees its rebuilt state
/// in waves; with freed pages returned to the OS at once, each wave faulted them back in
/// (about 150,000 page faults and a quarter of the CPU of a 100k-row `replay
/// --verify-only`). The run's memory budget does not apply to these commands.
pub fn keep_freed_pages() {
    // SAFETY: as in `configure`.
    unsafe {
        libmimalloc_sys::mi_option_set(PURGE_DELAY, 1000);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option numbers are copied from mimalloc's header: their defaults
    /// show they name the options meant (a renumbering would show other values), and
    /// `configure` then sets them. Environment overrides would change the defaults seen.
    #[test]
    fn the_option_numbers_name_eager_commit_and_purge_delay() {
        let from_env = |name: &str| std::env::var_os(name).is_some();
        // SAFETY: reads mimalloc's option table.
        let get = |o| unsafe { libmimalloc_sys::mi_option_get(o) };
        if !from_env("MIMALLOC_ARENA_EAGER_COMMIT") && !from_env("MIMALLOC_PURGE_DELAY") {
            assert_eq!(get(ARENA_EAGER_COMMIT), 2, "arena_eager_commit's default");
            assert_eq!(get(PURGE_DELAY), 1000, "purge_delay's default");
        }
        configure();
        assert_eq!(get(ARENA_EAGER_COMMIT), 0);
        assert_eq!(get(PURGE_DELAY), 0);
    }
}
