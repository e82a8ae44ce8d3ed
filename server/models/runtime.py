"""ONNX Runtime sessions for ranking models.

CUDA is used when onnxruntime-gpu sees a device (``CUDAExecutionProvider``),
CPU otherwise. Sessions are cached by model sha256, so tenants and surfaces that
share a model share one session. A model is accepted only if its single input is
float32 [N, len(features)] for the feature schema it was deployed with; the
server validates that pair when it loads the model (never in a request).
"""

from __future__ import annotations

import os
import threading

import numpy as np
import onnxruntime as ort

from kernels.layout import FEATURES, N_FEATURES

SCORE_FLOOR = np.float32(-1e9)


class ModelError(RuntimeError):
    pass


def providers() -> list[str]:
    wanted = os.environ.get("FUNNEL_ORT_PROVIDER", "").strip()
    available = ort.get_available_providers()
    if wanted:
        if wanted not in available:
            raise ModelError(f"FUNNEL_ORT_PROVIDER={wanted} is not available (have: {', '.join(available)})")
        return [wanted, "CPUExecutionProvider"] if wanted != "CPUExecutionProvider" else [wanted]
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class Scorer:
    """One loaded model. ``score`` returns exactly one float32 per row, in input
    order; NaN/inf become SCORE_FLOOR and are counted in ``nonfinite``."""

    def __init__(self, model_bytes: bytes, version: str, features: tuple[str, ...] = FEATURES,
                 intra_op_threads: int = 1):
        features = tuple(features)
        unknown = [name for name in features if name not in FEATURES]
        if not features or unknown or len(set(features)) != len(features):
            raise ModelError(f"model {version}: feature schema {list(features)} is not a list of distinct "
                             f"server features ({', '.join(FEATURES)})")
        self.features = features
        # a model may read any subset of the assembled columns, in its own order; the
        # column gather (one small copy per call) is skipped for the full schema
        self.columns = None if features == FEATURES else np.array([FEATURES.index(f) for f in features],
                                                                     dtype=np.intp)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = intra_op_threads  # one request = one core; workers scale out
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        try:
            self.session = ort.InferenceSession(model_bytes, sess_options=opts, providers=providers())
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelError(f"model {version}: cannot be loaded ({exc})") from None
        inputs = self.session.get_inputs()
        width = len(features)
        if len(inputs) != 1 or inputs[0].type != "tensor(float)" or len(inputs[0].shape) != 2 \
                or inputs[0].shape[-1] != width:
            raise ModelError(f"model {version}: expects one float32 input of width {width} (its feature "
                             f"schema has {width} names), got {[(i.name, i.type, i.shape) for i in inputs]}")
        outputs = self.session.get_outputs()
        out_shape = outputs[0].shape
        if not (len(out_shape) == 1 or (len(out_shape) == 2 and out_shape[1] == 1)):
            raise ModelError(f"model {version}: output {outputs[0].name} has shape {out_shape}, expected [N] or [N, 1]")
        self.input_name = inputs[0].name
        self.output_name = self.session.get_outputs()[0].name
        self.version = version
        self.nonfinite = 0
        self._lock = threading.Lock()
        # warm-up: the first run allocates and plans; never do that inside a request
        probe = np.zeros((8, N_FEATURES), dtype=np.float32)
        out = self.score(probe)
        if out.shape != (8,):
            raise ModelError(f"model {version}: returns shape {out.shape} for 8 rows, expected (8,)")

    def score(self, features: np.ndarray) -> np.ndarray:
        return self.score_counted(features)[0]

    def score_counted(self, features: np.ndarray) -> tuple[np.ndarray, int]:
        """``features`` is the assembled float32 [N, N_FEATURES] matrix; returns the
        scores (NaN/inf sunk) and how many were NaN/inf. A failing run raises ModelError."""
        if features.shape[0] == 0:
            return np.empty(0, dtype=np.float32), 0
        if self.columns is not None:
            features = features[:, self.columns]
        try:
            out = self.session.run([self.output_name], {self.input_name: features})[0]
        except Exception as exc:  # onnxruntime raises several unrelated types
            raise ModelError(f"model {self.version}: run failed ({type(exc).__name__}: {str(exc)[:200]})") from None
        scores = np.asarray(out, dtype=np.float32).reshape(-1)
        if scores.shape[0] != features.shape[0]:
            raise ModelError(f"model {self.version}: {scores.shape[0]} scores for {features.shape[0]} rows")
        bad = ~np.isfinite(scores)
        n_bad = 0
        if bad.any():
            n_bad = int(bad.sum())
            with self._lock:
                self.nonfinite += n_bad
            scores = np.where(bad, SCORE_FLOOR, scores)
        return scores, n_bad


_cache: dict[tuple[str, tuple[str, ...]], Scorer] = {}  # (sha256, feature schema) -> one session per process
_cache_lock = threading.Lock()


def nonfinite_total() -> int:
    """NaN/inf scores sunk so far by every model this process loaded (a metric)."""
    with _cache_lock:
        return sum(s.nonfinite for s in _cache.values())


def load_scorer(path: str, sha256: str, features=FEATURES) -> Scorer:
    """The model at ``path`` (checked against ``sha256``), loaded at most once per process."""
    key = (sha256, tuple(features))
    with _cache_lock:
        scorer = _cache.get(key)
        if scorer is not None:
            return scorer
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ModelError(f"model {sha256[:12]}: cannot read {path} ({exc.strerror})") from None
    import hashlib

    if hashlib.sha256(data).hexdigest() != sha256:
        raise ModelError(f"model {sha256[:12]}: file {path} does not match its sha256")
    scorer = Scorer(data, sha256[:12], tuple(features))
    with _cache_lock:
        scorer = _cache.setdefault(key, scorer)
    return scorer
