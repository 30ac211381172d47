#!/usr/bin/env python3
"""Side-by-side decode measurement with llama.cpp (through llama-cpp-python) on the same GGUF, the
same prompts as `trialforge bench` and the same number of threads.

    python3 -m venv .venv-llamacpp && .venv-llamacpp/bin/pip install llama-cpp-python  # builds llama.cpp, ~5 min
    .venv-llamacpp/bin/python scripts/bench_llamacpp.py models/smollm2-135m-instruct/model.gguf [THREADS]

Prints, for a short and a long prompt: prompt tokens, prefill tokens/s (time to the first generated
token) and decode tokens/s over 128 greedy tokens (end of turn suppressed, as `trialforge bench` runs
a fixed amount of work).
"""
import sys
import time

from llama_cpp import Llama

# SmolLM2's chat template with its default system prompt, as the GGUF's template renders it.
TEMPLATE = (
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
)


def main() -> None:
    path = sys.argv[1]
    threads = int(sys.argv[2]) if len(sys.argv) > 2 else 2
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
        print(
            f"llama.cpp ({threads} threads) prompt {n_prompt:5} tokens: "
            f"prefill {n_prompt / (first - start):7.1f} tok/s, decode {(n - 1) / (end - first):6.1f} tok/s ({n} tokens)"
        )


if __name__ == "__main__":
    main()
