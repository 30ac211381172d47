#!/usr/bin/env python3
"""Side-by-side decode measurement with llama.cpp (through llama-cpp-python) on the same GGUF, the
same prompts as `trialforge bench` and the same number of threads.

    python3 -m venv .venv-llamacpp && .venv-llamacpp/bin/pip install llama-cpp-python  # builds llama.cpp, ~5 min
    .venv-llamacpp/bin/python scripts/bench_llamacpp.py models/smollm2-135m-instruct/model.gguf [THREADS] [--json]

Prints, for a short and a long prompt: prompt tokens, prefill tokens/s (time to the first generated
token) and decode tokens/s over 128 greedy tokens (end of turn suppressed, as `trialforge bench` runs
a fixed amount of work). With --json, one JSON object instead (scripts/bench_peers.py reads it).
"""
import json
import sys
import time

import llama_cpp
from llama_cpp import Llama

# SmolLM2's chat template with its default system prompt, as the GGUF's template renders it.
TEMPLATE = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
)


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    as_json = "--json" in sys.argv
    path = args[0]
    threads = int(args[1]) if len(args) > 1 else 2
    rows = []
    llm = Llama(model_path=path, n_ctx=4096, n_threads=threads, n_threads_batch=threads, verbose=False)
    stop_ids = [llm.token_eos()] + llm.tokenize(b"<|im_end|>", add_bos=False, special=True)
    for words in (20, 1500):
        # The same filler as `trialforge bench --prompt-words 20,1500`.
        filler = "The patients were followed for safety and tolerability. " * (words // 8 + 1)
        prompt = TEMPLATE.format(user=f"{filler}\nWrite a long essay about clinical trial design.")
        n_prompt = len(llm.tokenize(prompt.encode(), add_bos=False, special=True))
        llm.reset()
        start = time.perf_counter()
        first = None
        n = 0
        for _ in llm.create_completion(
            prompt,
            max_tokens=128,
            temperature=0.0,
            stream=True,
            logit_bias={t: -1e9 for t in stop_ids},
        ):
            if first is None:
                first = time.perf_counter()
            n += 1
        end = time.perf_counter()
        row = {
            "prompt_tokens": n_prompt,
            "completion_tokens": n,
            "prefill_tokens_per_second": n_prompt / (first - start),
            "decode_tokens_per_second": (n - 1) / (end - first),
        }
        rows.append(row)
        if not as_json:
            print(
                f"llama.cpp ({threads} threads) prompt {n_prompt:5} tokens: "
                f"prefill {row['prefill_tokens_per_second']:7.1f} tok/s, "
                f"decode {row['decode_tokens_per_second']:6.1f} tok/s ({n} tokens)"
            )
    if as_json:
        print(json.dumps({"peer": "llama.cpp", "version": llama_cpp.__version__, "threads": threads, "decode": rows}))


if __name__ == "__main__":
    main()
