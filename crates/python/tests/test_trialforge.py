"""The Python package against the bundled data and the CLI (TRIALFORGE_BIN: the trialforge
binary of the same checkout). Run from the repository root by crates/cli/tests/python.rs."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import trialforge as tf

ROOT = pathlib.Path(__file__).resolve().parents[3]
TOP = ROOT / "data" / "top"
BIN = os.environ.get("TRIALFORGE_BIN", str(ROOT / "target" / "release" / "trialforge"))


def cli(*args, cwd=ROOT):
    out = subprocess.run([BIN, *args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_read_trials_gives_the_top_columns_with_lists_and_post_hoc_apart():
    df = tf.read_trials(TOP / "phase_I_train.csv")
    assert len(df) == 1044
    assert list(df.columns[:8]) == tf.TOP_COLUMNS
    assert {"split", "title", "post_hoc_status", "post_hoc_why_stop"} <= set(df.columns)
    assert "status" not in df.columns and "why_stop" not in df.columns
    assert set(df["split"]) == {"train"}
    assert set(df["label"].dropna()) <= {0, 1}
    row = df.iloc[0]
    assert isinstance(row["diseases"], list) and isinstance(row["drugs"], list)
    assert isinstance(row["icdcodes"], list) and all(isinstance(c, list) for c in row["icdcodes"])
    assert len(row["smiless"]) == len(row["drugs"])
    studies = tf.read_trials(ROOT / "data" / "ctgov-samples" / "v2")
    assert len(studies) == 10 and studies["nctid"].str.startswith("NCT").all()


@pytest.fixture(scope="module")
def notebook():
    """The README's Python example, run once as written: its output and the model it saved."""
    example = (ROOT / "crates" / "python" / "examples" / "notebook.py").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "```python\n" + example + "```" in readme, "the README's Python example is examples/notebook.py"
    out = subprocess.run([sys.executable, "crates/python/examples/notebook.py"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout, tf.Model.load(ROOT / "runs" / "python-tfidf-lr")


def test_the_notebook_example_matches_the_cli_to_1e_6(notebook, tmp_path):
    stdout, model = notebook
    line = [l for l in stdout.splitlines() if l.startswith("tfidf-lr, TOP phase I test")][0]
    printed_pr = float(line.split("PR-AUC ")[1].split(",")[0])

    # The same model through the CLI: train on the files, evaluate on the test file.
    model_dir = tmp_path / "cli-model"
    cli("train", "--model", "tfidf-lr", "--train", str(TOP / "phase_I_train.csv"),
        "--valid", str(TOP / "phase_I_valid.csv"), "-o", str(model_dir))
    e = json.loads(cli("evaluate", "--json", "--model", str(model_dir), "--corpus",
                       str(TOP / "phase_I_test.csv"), "--resamples", "20", "--seed", "0"))

    test = tf.read_trials(TOP / "phase_I_test.csv")
    p = model.predict_proba(test)
    s = tf.score(test["label"], p, resamples=20, seed=0)
    assert abs(s["pr_auc"]["mean"] - e["pr_auc"]["mean"]) < 1e-6
    assert abs(s["roc_auc"]["mean"] - e["roc_auc"]["mean"]) < 1e-6
    assert abs(printed_pr - round(e["pr_auc"]["mean"], 3)) < 1e-9

    # The CLI's model in Python, Python's model in the CLI: the same probabilities.
    cli_model = tf.Model.load(model_dir)
    assert cli_model.name == "tfidf-lr"
    np.testing.assert_allclose(cli_model.predict_proba(test), p, atol=1e-6)
    cli_rows = json.loads(cli("predict", "--json", "--model", str(ROOT / "runs" / "python-tfidf-lr"),
                              str(TOP / "phase_I_test.csv")))
    np.testing.assert_allclose([r["probability"] for r in cli_rows], p, atol=1e-6)
    assert model.trained_on["train_trials"] == 1044
    model.save(tmp_path / "copy")
    assert (tmp_path / "copy" / "weights.safetensors").is_file()


def test_a_model_never_reads_post_hoc_columns(notebook):
    _, model = notebook
    test = tf.read_trials(TOP / "phase_I_test.csv").head(50)
    leaked = test.copy()
    leaked["post_hoc_status"] = np.where(leaked["label"] == 1, "completed", "terminated")
    np.testing.assert_array_equal(model.predict_proba(test), model.predict_proba(leaked))


def test_errors_are_python_exceptions_with_the_rust_message(tmp_path):
    with pytest.raises(tf.TrialforgeError, match="no-such-file.csv"):
        tf.read_trials(tmp_path / "no-such-file.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("nctid,status,why_stop,label,phase,diseases,icdcodes,drugs,smiless,criteria\n"
                   "NCT00000001,,,2,phase 1,['x'],[],['d'],[''],crit\n")
    with pytest.raises(tf.TrialforgeError, match=r"bad.csv:2: field `label`"):
        tf.read_trials(bad)
    with pytest.raises(tf.TrialforgeError, match="unknown model"):
        tf.Model("no-such-model")
    df = tf.read_trials(TOP / "phase_I_valid.csv").head(20).copy()
    df.loc[3, "phase"] = "phase 9"
    with pytest.raises(tf.TrialforgeError, match=r"row 3: field `phase`"):
        tf.Model("tfidf-lr").fit(df)
    with pytest.raises(tf.TrialforgeError, match="not fitted"):
        tf.Model("tfidf-lr").predict_proba(df)
    with pytest.raises(TypeError):
        tf.Model("tfidf-lr", learning_rate=3)


def test_benchmark_top_has_a_row_per_model_and_hint():
    df = tf.benchmark_top(phase="I", models=["tfidf-lr"], resamples=5)
    assert list(df["model"]) == ["tfidf-lr", "HINT (shipped predictions)"]
    assert df["pr_auc_mean"].between(0.5, 1.0).all()
    assert df.attrs["report"]["resamples"] == 5


def test_embed_gives_unit_float32_rows():
    v = tf.embed(["metastatic breast cancer", "type 2 diabetes in adults"])
    assert v.dtype == np.float32 and v.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-4)
    assert float(v[0] @ v[1]) < 0.9


def test_analyze_returns_the_analysis_json(tmp_path):
    # A set from "another tool": 40 real train rows under new ids, written as a TOP CSV.
    import csv
    df = tf.read_trials(TOP / "phase_I_train.csv").head(40)
    synthetic = tmp_path / "other-tool.csv"
    with open(synthetic, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["nctid", "status", "why_stop", "label", "phase", "diseases", "icdcodes",
                    "drugs", "smiless", "criteria"])
        for i, r in enumerate(df.itertuples()):
            w.writerow([f"SYN{i:05d}", "", "", int(r.label), r.phase, repr(r.diseases),
                        repr([repr(c) for c in r.icdcodes]), repr(r.drugs), repr(r.smiless),
                        r.criteria])
    a = tf.analyze(TOP / "phase_I_valid.csv", synthetic, tmp_path / "report", gallery=1)
    assert a["synthetic_trials"] == 40 and a["real_trials"] == 117
    for key in ("similarity", "privacy", "detection", "realism", "coverage_real"):
        assert key in a
    assert (tmp_path / "report" / "report.html").is_file()
    assert json.loads((tmp_path / "report" / "analysis.json").read_text())["synthetic_trials"] == 40


def test_generate_runs_and_ctrl_c_interrupts_it_at_once(tmp_path):
    corpus = tmp_path / "corpus.jsonl"
    cli("data", "import", str(TOP / "phase_I_train.csv"), str(TOP / "phase_I_valid.csv"), "-o", str(corpus))
    s = tf.generate(corpus, 1, tmp_path / "synthetic.jsonl", max_attempts=1, seed=3)
    assert s["cells"] == 1 and s["attempts"] == 1
    assert (tmp_path / "synthetic.log.jsonl").is_file()

    # A longer run in a child process, interrupted with SIGINT: KeyboardInterrupt within seconds.
    # The child takes SIGINT as Python does at an interactive prompt, even where this process was
    # started with SIGINT ignored (a background job of a non-interactive shell).
    code = ("import signal, sys\n"
            "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
            "import trialforge as tf\n"
            "try:\n"
            f"    tf.generate({str(corpus)!r}, 50, {str(tmp_path / 'long.jsonl')!r}, max_attempts=2)\n"
            "except KeyboardInterrupt:\n"
            "    print('interrupted'); sys.exit(3)\n")
    child = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    time.sleep(8)
    sent = time.monotonic()
    child.send_signal(signal.SIGINT)
    try:
        out, _ = child.communicate(timeout=60)
    finally:
        child.kill()  # never leave a generation running behind a failed test
    assert child.returncode == 3 and "interrupted" in out
    assert time.monotonic() - sent < 5
