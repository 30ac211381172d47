//! Running the AVX2 kernels on a machine that has AVX-512, for the encoder's and the LLM's tests:
//! the kernels pick AVX-512 at run time wherever the CPU has it, so the AVX2 path only runs under
//! qemu's user-mode emulation of a Haswell CPU (`qemu-x86_64 -cpu Haswell`).

use std::path::PathBuf;

/// Set to make a missing emulator an error instead of a skip (CI sets it: a check that quietly
/// did not run is no check).
pub const REQUIRE_QEMU: &str = "TRIALFORGE_REQUIRE_QEMU";

/// `qemu-x86_64` on `PATH`; `Ok(None)` when there is none (the caller skips), an error when there is
/// none and [`REQUIRE_QEMU`] is set.
pub fn find_qemu() -> Result<Option<PathBuf>, String> {
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("qemu-x86_64"))
            .find(|q| q.is_file())
    });
    match found {
        None if std::env::var_os(REQUIRE_QEMU).is_some() => Err(format!(
            "{REQUIRE_QEMU} is set but qemu-x86_64 is not on PATH (Debian: qemu-user)"
        )),
        found => Ok(found),
    }
}
