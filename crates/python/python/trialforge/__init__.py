"""trialforge from Python: clinical trials as pandas DataFrames in the TOP benchmark's columns,
outcome models with fit / predict_proba, the TOP benchmark, embeddings, retrieval-reasoning
generation of synthetic trials, and the judge of a synthetic set.

Everything runs in trialforge's Rust library (the same code as the ``trialforge`` command line,
reading and writing the same files); long work releases the GIL and Ctrl-C interrupts it.
Models and bundled data are found as the command line finds them: ``$TRIALFORGE_MODELS``,
``./models`` or the checkout's ``models/``; ``./data`` or the checkout's ``data/``.

>>> import trialforge as tf
>>> train = tf.read_trials("data/top/phase_I_train.csv")
>>> model = tf.Model("tfidf-lr").fit(train, tf.read_trials("data/top/phase_I_valid.csv"))
>>> p = model.predict_proba(tf.read_trials("data/top/phase_I_test.csv"))
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from typing import Any, Dict, Iterable, List, Optional, Sequence

import numpy as np
import pandas as pd

from . import _native
from ._native import TrialforgeError

__version__ = _native.__version__

__all__ = [
    "TrialforgeError",
    "read_trials",
    "Model",
    "benchmark_top",
    "score",
    "embed",
    "generate",
    "analyze",
    "TOP_COLUMNS",
    "POST_HOC_COLUMNS",
]

#: The TOP benchmark's columns (status and stop reason excepted: see POST_HOC_COLUMNS).
TOP_COLUMNS = ["nctid", "label", "phase", "diseases", "icdcodes", "drugs", "smiless", "criteria"]
#: Known only after a trial ran: kept for people, never read back by a model.
POST_HOC_COLUMNS = ["post_hoc_status", "post_hoc_why_stop"]
_ALL_COLUMNS = TOP_COLUMNS + ["title", "split"] + POST_HOC_COLUMNS
_LIST_COLUMNS = ["diseases", "icdcodes", "drugs", "smiless"]


def _path(p: "os.PathLike[str] | str") -> str:
    return os.fspath(p)


def read_trials(path: "os.PathLike[str] | str", format: str = "auto") -> pd.DataFrame:
    """Every trial of a TOP CSV file, ClinicalTrials.gov records (API v2 or legacy), a trialforge
    corpus or a folder of them, one row per trial.

    Columns: the TOP columns (``nctid``, ``label`` (0, 1 or missing), ``phase``, ``diseases``,
    ``icdcodes`` (a list per disease), ``drugs``, ``smiless`` (aligned with ``drugs``, ``""``
    where a drug has none), ``criteria``), then ``title`` and ``split`` (train, valid, test or
    none, from TOP file names), then ``post_hoc_status`` and ``post_hoc_why_stop``, which
    :class:`Model` never reads.

    ``format``: ``auto``, ``top``, ``ctgov``, ``corpus`` or ``legacy``. Errors name the file,
    line and field.
    """
    rows = json.loads(_native.read_trials(_path(path), format))
    df = pd.DataFrame(rows, columns=_ALL_COLUMNS)
    df["label"] = df["label"].astype("Int64")
    return df


def _none_if_missing(v: Any) -> Any:
    if v is None:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.ndarray):
        return [_none_if_missing(x) for x in v.tolist()]
    if isinstance(v, (list, tuple)):
        return [_none_if_missing(x) for x in v]
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return float(v)
    return v


def _rows(df: Optional[pd.DataFrame], name: str) -> str:
    """A DataFrame in the TOP columns as JSON rows; post-hoc columns are dropped here, so they
    cannot reach a model."""
    if df is None:
        return "[]"
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name}: expected a pandas DataFrame, found {type(df).__name__}")
    missing = [c for c in ("nctid", "phase") if c not in df.columns]
    if missing:
        raise ValueError(
            f"{name}: missing column(s) {missing}; expected the TOP columns {TOP_COLUMNS} (as read_trials gives)"
        )
    keep = [c for c in df.columns if c in TOP_COLUMNS or c in ("title", "split")]
    rows = []
    for rec in df[keep].to_dict("records"):
        row = {k: _none_if_missing(v) for k, v in rec.items()}
        row = {k: v for k, v in row.items() if v is not None or k == "label"}
        rows.append(row)
    return json.dumps(rows)


class Model:
    """An outcome model: ``Model(name, **params)``, then ``fit`` and ``predict_proba``.

    ``name`` is any model the command line knows: ``tfidf-lr``, ``embed-mlp``, ``encoder-ft``,
    ``cladmop``, ``cladmop-zero-shot``, with ablation suffixes (``cladmop-no-grouping``, ...)
    or ``-admet``. ``params``: ``seed`` (0), ``encoder`` (a model folder or .gguf; default the
    fetched MiniLM), ``admet`` (the ADMET folder of ``-admet`` models).

    A fitted model is a folder with ``config.json``, ``weights.safetensors`` and
    ``trained_on.json``: :meth:`save` writes it, :meth:`load` reads it, and ``trialforge
    predict --model DIR`` reads it too (and ``Model.load`` reads what ``trialforge train``
    wrote).
    """

    def __init__(self, name: str, **params: Any) -> None:
        self.name = _native.model_name(name)
        unknown = set(params) - {"seed", "encoder", "admet"}
        if unknown:
            raise TypeError(f"unknown parameter(s) {sorted(unknown)}; expected seed, encoder, admet")
        self.params = {k: (os.fspath(v) if k in ("encoder", "admet") else v) for k, v in params.items()}
        self._dir: Optional[str] = None
        self._owned: Optional[tempfile.TemporaryDirectory] = None

    def __repr__(self) -> str:
        state = f"fitted, {self._dir}" if self._dir else "not fitted"
        return f"Model({self.name!r}, {state})"

    def fit(
        self,
        train_df: pd.DataFrame,
        valid_df: Optional[pd.DataFrame] = None,
        unlabelled_df: Optional[pd.DataFrame] = None,
    ) -> "Model":
        """Trains on the labelled rows of ``train_df``; ``valid_df`` is for early stopping and
        model selection only; ``unlabelled_df`` (cladmop) are protocols to pre-train on (never
        test trials). Returns the model."""
        owned = tempfile.TemporaryDirectory(prefix="trialforge-model-")
        out = os.path.join(owned.name, "model")
        _native.train(
            self.name,
            json.dumps(self.params),
            _rows(train_df, "train_df"),
            _rows(valid_df, "valid_df"),
            _rows(unlabelled_df, "unlabelled_df"),
            out,
        )
        self._owned, self._dir = owned, out
        return self

    def _require(self) -> str:
        if self._dir is None:
            raise TrialforgeError("the model is not fitted: call fit() or Model.load(dir)")
        return self._dir

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        """The probability of success of each row, as a float64 array."""
        p = _native.predict(self._require(), _rows(df, "df"), self.params.get("encoder"))
        return np.asarray(p, dtype=np.float64)

    def save(self, dir: "os.PathLike[str] | str") -> None:
        """Writes the model folder (config.json, weights.safetensors, trained_on.json)."""
        shutil.copytree(self._require(), _path(dir), dirs_exist_ok=True)

    @classmethod
    def load(cls, dir: "os.PathLike[str] | str", **params: Any) -> "Model":
        """A model folder written by :meth:`save` or ``trialforge train``."""
        m = cls(_native.saved_model_name(_path(dir)), **params)
        m._dir = _path(dir)
        return m

    @property
    def trained_on(self) -> Optional[Dict[str, Any]]:
        """What the model was trained on (its trained_on.json), if it says."""
        path = os.path.join(self._require(), "trained_on.json")
        if not os.path.exists(path):
            return None
        with open(path) as f:
            return json.load(f)


def score(labels: Iterable[int], scores: Iterable[float], resamples: int = 20, seed: int = 0) -> Dict[str, Any]:
    """PR-AUC, ROC-AUC, F1 at 0.5 and Brier as ``trialforge evaluate`` computes them: mean and
    std over ``resamples`` bootstrap resamples (HINT's protocol), and ``point``, the figures on
    all rows."""
    y = [int(x) for x in labels]
    s = [float(x) for x in scores]
    return json.loads(_native.score(y, s, int(resamples), int(seed)))


def benchmark_top(
    phase: str = "I",
    models: Sequence[str] = ("all",),
    resamples: int = 20,
    seeds: int = 1,
    seed: int = 0,
    data: "Optional[os.PathLike[str] | str]" = None,
    encoder: "Optional[os.PathLike[str] | str]" = None,
    available_data: bool = False,
) -> pd.DataFrame:
    """The TOP benchmark, as ``trialforge benchmark top``: train on the phase's train split,
    select on valid, score test over bootstrap resamples; one row per model and the row of
    HINT's shipped predictions on the same resamples. ``models``: names, ``all`` or
    ``ablations``. ``available_data``: train on every non-test file instead (not TOP's
    protocol). Columns ``ece``/``ece_platt`` and ``f1_valid_threshold`` are the calibration
    figures; the new-disease figures are in ``df.attrs["report"]``."""
    if isinstance(models, str):
        models = [models]
    report = json.loads(
        _native.benchmark_top(
            phase,
            ",".join(models),
            int(resamples),
            int(seeds),
            int(seed),
            None if data is None else _path(data),
            None if encoder is None else _path(encoder),
            bool(available_data),
        )
    )
    rows = []
    for r in report["rows"] + [report["reference"]]:
        s = r.get("scores") or {}
        row = {"model": r["model"], "status": r["status"]}
        for metric in ("pr_auc", "roc_auc", "f1", "brier"):
            m = s.get(metric) or {}
            row[f"{metric}_mean"] = m.get("mean")
            row[f"{metric}_std"] = m.get("std")
        c = r.get("calibration") or {}
        for metric in ("ece", "ece_platt", "f1_valid_threshold"):
            row[metric] = (c.get(metric) or {}).get("mean")
        row["train_seconds"] = r.get("train_seconds")
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["report"] = report
    return df


def embed(texts: Sequence[str], encoder: "Optional[os.PathLike[str] | str]" = None) -> np.ndarray:
    """Embeddings of texts (float32, one row per text) with the fetched MiniLM or ``encoder``,
    through trialforge's embedding cache."""
    if isinstance(texts, str):
        raise TypeError("embed takes a list of texts, not one string")
    data, rows, dim = _native.embed([str(t) for t in texts], None if encoder is None else _path(encoder))
    return np.frombuffer(bytes(data), dtype="<f4").reshape(rows, dim).copy()


def generate(
    corpus: "os.PathLike[str] | str",
    n: int,
    out: "os.PathLike[str] | str",
    backend: str = "local",
    **options: Any,
) -> Dict[str, Any]:
    """Retrieval-reasoning generation of ``n`` labelled synthetic trials from the real trials of
    ``corpus`` into ``out`` (JSONL, with the attempt log and the realism gate beside it); as
    ``trialforge generate``, resumable: call it again after an interrupt and it goes on.
    ``backend``: ``local`` (options ``llm``: a GGUF, ``batch``: cells decoded together) or ``openai`` (``base_url``, ``model_name``,
    ``api_key_env``, ``structured_output``, ``concurrency``, ...). Other options: ``seed``,
    ``temperature``, ``k``, ``reasons``, ``max_attempts``, ``min_per_label``, ``plan``,
    ``encoder``, ``icd``, ``no_gate``, ``conditions_from_examples``, ``response_cache``,
    ``exclude_split``. Returns the run summary."""
    return json.loads(_native.generate(_path(corpus), int(n), _path(out), backend, json.dumps(options)))


def analyze(
    real: "os.PathLike[str] | str",
    synthetic: "os.PathLike[str] | str",
    out: "os.PathLike[str] | str",
    augment: bool = False,
    **options: Any,
) -> Dict[str, Any]:
    """Judges a synthetic set against real trials, as ``trialforge analyze``: writes
    ``out/report.html``, ``out/figures/*.png`` and ``out/analysis.json``, and returns the
    analysis (the content of analysis.json). Options: ``seed``, ``gallery``, ``encoder``,
    ``icd``, ``labels`` and ``skip_bad`` (for a folder of legacy records)."""
    return json.loads(
        _native.analyze(_path(real), _path(synthetic), _path(out), bool(augment), json.dumps(options))
    )
