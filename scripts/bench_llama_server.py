#!/usr/bin/env python3
"""The generation job of `trialforge bench --parts generation` through llama.cpp's own server
(`llama-server`, continuous batching over parallel slots), for scripts/bench_peers.py.

    python3 scripts/bench_llama_server.py LLAMA_SERVER MODEL.gguf [--threads 2] [--parallel 1,4]
                                          [--requests 8] [--tokens 128] [--json]

For each slot count: starts `llama-server -np N` on a free port, sends the job's requests (the same
texts as trialforge's job, greedy, at most --tokens tokens, repetition penalty 1.1 over the last 64
tokens as trialforge's default) from N client threads at once, and prints the completion tokens per
second of the whole job (wall time from the first request to the last answer).
"""
import argparse
import concurrent.futures
import json
import socket
import subprocess
import sys
import time
import urllib.request

# The same drugs and text as `job_prompt` in crates/core/src/bench.rs.
DRUGS = ["metformin", "lenalidomide", "pembrolizumab", "atorvastatin", "rituximab", "sitagliptin", "ibrutinib", "apixaban"]


def job_prompt(i: int) -> str:
    return f"Write the eligibility criteria and the design of a phase {i % 3 + 1} clinical trial of {DRUGS[i % len(DRUGS)]}."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=600) as r:
        return json.loads(r.read())


def run_job(server: str, model: str, threads: int, parallel: int, requests: int, tokens: int) -> dict:
    port = free_port()
    proc = subprocess.Popen(
        [server, "-m", model, "-np", str(parallel), "-c", str(1024 * parallel), "-t", str(threads),
         "-tb", str(threads), "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except Exception:
                pass
            if time.time() > deadline or proc.poll() is not None:
                raise RuntimeError("llama-server did not come up")
            time.sleep(0.3)

        def one(i: int) -> dict:
            return post(f"{base}/v1/chat/completions", {
                "messages": [{"role": "user", "content": job_prompt(i)}],
                "max_tokens": tokens, "temperature": 0.0, "repeat_penalty": 1.1, "repeat_last_n": 64,
            })["usage"]

        one(0)  # warm-up
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(parallel) as pool:
            usage = list(pool.map(one, range(requests)))
        seconds = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait()
    completion = sum(u["completion_tokens"] for u in usage)
    return {
        "parallel": parallel,
        "requests": requests,
        "prompt_tokens": sum(u["prompt_tokens"] for u in usage),
        "completion_tokens": completion,
        "seconds": seconds,
        "completion_tokens_per_second": completion / seconds,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("server")
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--parallel", default="1,4")
    ap.add_argument("--requests", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=128)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    rows = [run_job(args.server, args.model, args.threads, int(p), args.requests, args.tokens) for p in args.parallel.split(",")]
    if args.json:
        print(json.dumps({"peer": "llama-server", "threads": args.threads, "generation": rows}))
    else:
        for r in rows:
            print(f"llama-server -np {r['parallel']:>2}: {r['completion_tokens_per_second']:6.1f} completion tok/s "
                  f"({r['requests']} requests, {r['prompt_tokens']} prompt + {r['completion_tokens']} completion tokens in {r['seconds']:.1f}s)")


if __name__ == "__main__":
    sys.exit(main())
