#!/usr/bin/env python3
"""trialforge's engines beside their peers, in one run, each given the same threads and model files:
the encoder beside sentence-transformers (scripts/bench_encoder.py), the LLM beside llama.cpp
(scripts/bench_llamacpp.py), and batched generation beside llama.cpp's own server with parallel
slots (scripts/bench_llama_server.py: the same job of 8 requests at batch 1 and 4). Rounds alternate
between the two sides; the medians and the ratios (trialforge / peer: above 1 is faster) are
printed, and written as JSON with --json FILE.

    python3 scripts/bench_peers.py [--rounds 3] [--threads 2] [--parts encoder,llm,generation] [--json FILE]

Needs a release build (`cargo build --release -p trialforge-cli`), the models (`trialforge models
fetch`), and the peers' environments, which it makes when missing (they are benchmarks, not tests,
so the README's test command does not install them):
  .venv-st        sentence-transformers from PyPI (PyTorch CPU; a few minutes, about 6 GB)
  .venv-llamacpp  llama-cpp-python, as scripts/setup.sh builds it (about 6 minutes)
  .peers/llama-server  llama.cpp's server, built from the llama.cpp inside llama-cpp-python's sdist
                  (PyPI) with cmake and ninja from PyPI, AVX2 without a native build (about 10 minutes)
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ST_VENV = ROOT / ".venv-st"
LLAMA_VENV = ROOT / ".venv-llamacpp"
PEERS = ROOT / ".peers"
LLAMA_CPP_PYTHON = "0.3.36"


def run_json(cmd, env=None):
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, env=env, cwd=ROOT).stdout
    return json.loads(out)


def ensure_venv(venv, probe, install, what):
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", f"import {probe}"], capture_output=True).returncode == 0:
        return python
    print(f"== making {venv.name} ({what})", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([python, "-m", "pip", "install", "-q", *install], check=True, env=install_env(venv))
    return python


def install_env(venv):
    env = dict(os.environ)
    if venv == LLAMA_VENV:
        # No native build: on CPUs with AMX/AVX-512 it dies with an illegal instruction.
        env["CMAKE_ARGS"] = "-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
    return env


def ensure_llama_server():
    """llama.cpp's `llama-server`, built once into .peers/ from the sources in llama-cpp-python's sdist."""
    server = PEERS / "llama.cpp" / "build" / "bin" / "llama-server"
    if server.exists():
        return server
    PEERS.mkdir(exist_ok=True)
    sdist = PEERS / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
    if not sdist.exists():
        print("== downloading llama-cpp-python's sdist (it holds llama.cpp's sources)", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", PEERS], check=True)
    src = PEERS / "llama.cpp"
    if not src.exists():
        subprocess.run(["tar", "xzf", sdist, "-C", PEERS], check=True)
        (PEERS / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp").rename(src)
    tools = PEERS / "venv-cmake"
    if not (tools / "bin" / "cmake").exists():
        subprocess.run([sys.executable, "-m", "venv", tools], check=True)
        subprocess.run([tools / "bin" / "pip", "install", "-q", "cmake", "ninja"], check=True)
    print("== building llama-server (about 10 minutes)", file=sys.stderr)
    subprocess.run([tools / "bin" / "cmake", "-S", src, "-B", src / "build", "-G", "Ninja",
                    f"-DCMAKE_MAKE_PROGRAM={tools / 'bin' / 'ninja'}", "-DCMAKE_BUILD_TYPE=Release",
                    # No native build: on CPUs with AMX/AVX-512 it dies with an illegal instruction.
                    "-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
                    "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_OPENSSL=OFF",
                    "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([tools / "bin" / "cmake", "--build", src / "build", "--target", "llama-server", "-j"],
                   check=True, stdout=subprocess.DEVNULL)
    return server


def median(values):
    return statistics.median(values) if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--texts", type=int, default=64)
    ap.add_argument("--parts", default="encoder,llm")
    ap.add_argument("--json", dest="json_out", type=Path)
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    binary = ROOT / "target" / "release" / "trialforge"
    if not binary.exists():
        sys.exit("no target/release/trialforge: run `cargo build --release -p trialforge-cli` first")
    models = Path(os.environ.get("TRIALFORGE_MODELS", ROOT / "models"))
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))

    ours = {"encode": {}, "decode": {}, "generation": {}}
    peers = {"encode": {}, "decode": {}, "generation": {}}
    st_python = ensure_venv(ST_VENV, "sentence_transformers", ["sentence-transformers"], "sentence-transformers") if "encoder" in parts else None
    llama_python = ensure_venv(LLAMA_VENV, "llama_cpp", ["llama-cpp-python[server]==0.3.36"], "llama.cpp") if "llm" in parts else None
    llama_server = ensure_llama_server() if "generation" in parts else None
    versions = {}
    for r in range(args.rounds):
        print(f"== round {r + 1} of {args.rounds}", file=sys.stderr)
        cmd = [str(binary), "--json", "bench", "--parts", args.parts, "--texts", str(args.texts)]
        report = run_json(cmd, env)
        for row in report["encode"]:
            ours["encode"].setdefault(row["set"], []).append(row["texts_per_second"])
        for row in report.get("generation", []):
            ours["generation"].setdefault(row["batch"], []).append(row["completion_tokens_per_second"])
        for row in report["decode"]:
            key = row["prompt_tokens"]
            ours["decode"].setdefault(key, {"prefill": [], "decode": []})
            ours["decode"][key]["prefill"].append(row["prefill_tokens_per_second"])
            ours["decode"][key]["decode"].append(row["decode_tokens_per_second"])
        if st_python:
            st = run_json([str(st_python), "scripts/bench_encoder.py", str(models / "all-minilm-l6-v2"), str(args.threads), str(args.texts), "--json"])
            versions["sentence-transformers"] = f"torch {st['torch']}"
            for row in st["encode"]:
                peers["encode"].setdefault(row["set"], []).append(row["texts_per_second"])
        if llama_python:
            lc = run_json([str(llama_python), "scripts/bench_llamacpp.py", str(models / "smollm2-135m-instruct" / "model.gguf"), str(args.threads), "--json"])
            versions["llama.cpp"] = f"llama-cpp-python {lc['version']}"
            for row in lc["decode"]:
                key = row["prompt_tokens"]
                peers["decode"].setdefault(key, {"prefill": [], "decode": []})
                peers["decode"][key]["prefill"].append(row["prefill_tokens_per_second"])
                peers["decode"][key]["decode"].append(row["decode_tokens_per_second"])

        if llama_server:
            ls = run_json([sys.executable, "scripts/bench_llama_server.py", str(llama_server),
                           str(models / "smollm2-135m-instruct" / "model.gguf"), "--threads", str(args.threads),
                           "--parallel", ",".join(str(b) for b in sorted(ours["generation"])), "--json"])
            versions["llama-server"] = f"llama.cpp of llama-cpp-python {LLAMA_CPP_PYTHON}"
            for row in ls["generation"]:
                peers["generation"].setdefault(row["parallel"], []).append(row["completion_tokens_per_second"])

    result = {"threads": args.threads, "rounds": args.rounds, "peers": versions, "encoder": [], "llm": [], "generation": []}
    if st_python:
        print(f"encoder (all-MiniLM-L6-v2, {args.threads} threads, {args.texts} texts, medians of {args.rounds}) vs sentence-transformers ({versions['sentence-transformers']})")
        for name, values in ours["encode"].items():
            a, b = median(values), median(peers["encode"].get(name, []))
            result["encoder"].append({"set": name, "trialforge": a, "peer": b, "ratio": a / b})
            print(f"  {name:>9}: trialforge {a:7.1f} texts/s, sentence-transformers {b:7.1f}: {a / b:.2f}x")
    if llama_python:
        print(f"LLM (SmolLM2-135M GGUF, {args.threads} threads, medians of {args.rounds}) vs {versions['llama.cpp']}")
        # Prompt lengths differ by a token or two between the tokenisers' templates: pair them in order.
        for (ka, a), (kb, b) in zip(sorted(ours["decode"].items()), sorted(peers["decode"].items())):
            row = {"prompt_tokens": ka, "peer_prompt_tokens": kb}
            for what in ("prefill", "decode"):
                x, y = median(a[what]), median(b[what])
                row[what] = {"trialforge": x, "peer": y, "ratio": x / y}
            result["llm"].append(row)
            print(
                f"  prompt {ka:>5} tokens: prefill {row['prefill']['trialforge']:6.1f} vs {row['prefill']['peer']:6.1f} tok/s ({row['prefill']['ratio']:.2f}x), "
                f"decode {row['decode']['trialforge']:6.1f} vs {row['decode']['peer']:6.1f} tok/s ({row['decode']['ratio']:.2f}x)"
            )
    if llama_server:
        print(f"generation job (8 requests, 128 tokens at most, {args.threads} threads, medians of {args.rounds}) vs llama-server with parallel slots")
        one = median(ours["generation"].get(1, []))
        for batch, values in sorted(ours["generation"].items()):
            a, b = median(values), median(peers["generation"].get(batch, []))
            result["generation"].append({"batch": batch, "trialforge": a, "peer": b, "ratio": a / b, "vs_batch_1": a / one})
            print(f"  batch {batch}: trialforge {a:6.1f} completion tok/s ({a / one:.2f}x its batch 1), llama-server -np {batch} {b:6.1f}: {a / b:.2f}x")
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
