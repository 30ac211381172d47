#!/usr/bin/env python3
"""Side-by-side encoder measurement with sentence-transformers (PyTorch, CPU) on the same model folder,
the same texts as `trialforge bench` and the same number of threads.

    python3 -m venv .venv-st && .venv-st/bin/pip install sentence-transformers   # a few minutes, ~6 GB
    .venv-st/bin/python scripts/bench_encoder.py models/all-minilm-l6-v2 [THREADS] [TEXTS] [--json]

Prints texts/s for three sets of TEXTS texts (default 64, batch 32 as trialforge uses): 12-word and
200-word texts (29 and 256 tokens with MiniLM) and a mixed set of 12- to 200-word texts; each set is
encoded once to warm up, then timed over passes (at least 3 and 2 seconds; the median pass counts). With --json, one JSON object instead.
"""
import json
import sys
import time

import torch
from sentence_transformers import SentenceTransformer

PHRASE = "adults with relapsed myeloma after prior therapy "


def texts_of(words: int, n: int) -> list:
    # The same texts as `trialforge bench` (crates/core/src/bench.rs, `bench_texts`).
    return [f"Trial {i}: " + PHRASE * (words // 7 + 1) for i in range(n)]


def mixed(n: int) -> list:
    return [f"Trial {i}: " + PHRASE * ((12 + (i * 37) % 189) // 7 + 1) for i in range(n)]


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    as_json = "--json" in sys.argv
    path = args[0]
    threads = int(args[1]) if len(args) > 1 else 2
    n = int(args[2]) if len(args) > 2 else 64
    torch.set_num_threads(threads)
    model = SentenceTransformer(path, device="cpu")
    rows = []
    for name, texts in (("12 words", texts_of(12, n)), ("200 words", texts_of(200, n)), ("mixed", mixed(n))):
        tokens = int(model.preprocess([texts[0]])["input_ids"].shape[1])
        model.encode(texts, batch_size=32)
        # Timed passes until at least 3 and 2 seconds; the median pass counts (as trialforge bench).
        rates = []
        started = time.perf_counter()
        while len(rates) < 3 or time.perf_counter() - started < 2.0:
            t = time.perf_counter()
            model.encode(texts, batch_size=32)
            rates.append(n / (time.perf_counter() - t))
        rates.sort()
        rows.append({"set": name, "texts": n, "tokens_first_text": tokens, "passes": len(rates),
                     "texts_per_second": rates[len(rates) // 2]})
    report = {"peer": "sentence-transformers", "torch": torch.__version__, "threads": threads, "encode": rows}
    if as_json:
        print(json.dumps(report))
        return
    print(f"sentence-transformers (torch {torch.__version__}, {threads} threads)")
    for r in rows:
        print(f"  {r['set']:>9} ({r['tokens_first_text']:>3} tokens first text): {r['texts_per_second']:7.1f} texts/s")


if __name__ == "__main__":
    main()
