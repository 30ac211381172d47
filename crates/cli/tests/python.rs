//! The Python package's tests (pytest, `crates/python/tests`), run in the virtual environment
//! `scripts/setup.sh` builds (`.venv-python`: the wheel built by maturin from this checkout,
//! installed with numpy, pandas and pytest), against this build's `trialforge` binary. Skipped
//! with a note when the environment is missing, unless TRIALFORGE_REQUIRE_PYTHON=1 (as in CI).

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_python_package_passes_its_tests() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv-python/bin/python");
    if !python.is_file() {
        assert!(
            std::env::var_os("TRIALFORGE_REQUIRE_PYTHON").is_none(),
            "TRIALFORGE_REQUIRE_PYTHON is set but .venv-python is missing (run scripts/setup.sh)"
        );
        eprintln!(".venv-python missing: the Python package was not tested (run scripts/setup.sh)");
        return;
    }
    let out = Command::new(&python)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "crates/python/tests",
        ])
        .current_dir(&root)
        .env("TRIALFORGE_BIN", env!("CARGO_BIN_EXE_trialforge"))
        .output()
        .expect("run pytest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "pytest failed:\n{text}");
}
