"""ONNX graph builders for ranking models.

Every model built here has one input ``features`` float32 [N, F] (N dynamic) and
one output ``score`` float32 [N]; opset 17 with IR version 8, which onnxruntime
1.17 and later load. Models are stored content-addressed, see :func:`model_sha256`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kernels.layout import FEATURES

OPSET = 17
IR_VERSION = 8
INPUT_NAME = "features"
OUTPUT_NAME = "score"
ACTIVATIONS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid"}


def model_sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _finish(nodes: list, initializers: list, n_features: int, name: str) -> bytes:
    # the last node writes "logits" [N, 1]; Squeeze turns it into score [N]
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "squeeze_axes")
    nodes = nodes + [helper.make_node("Squeeze", ["logits", "squeeze_axes"], [OUTPUT_NAME])]
    graph = helper.make_graph(
        nodes, name,
        inputs=[helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["N", n_features])],
        outputs=[helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["N"])],
        initializer=initializers + [axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="funnel", ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def linear_model(weights, bias: float) -> bytes:
    """score = features @ weights + bias; ``weights`` is float32[F]."""
    w = np.asarray(weights, dtype=np.float32).reshape(-1)
    if w.size == 0 or not np.all(np.isfinite(w)) or not np.isfinite(bias):
        raise ValueError("linear model weights and bias must be finite and non-empty")
    inits = [numpy_helper.from_array(w.reshape(-1, 1), "W"),
             numpy_helper.from_array(np.array([bias], dtype=np.float32), "B")]
    nodes = [helper.make_node("Gemm", [INPUT_NAME, "W", "B"], ["logits"])]
    return _finish(nodes, inits, w.size, "funnel_linear")


def mlp_model(layers, activation: str = "relu") -> bytes:
    """Fully connected network: h = act(h @ W_k + b_k) for every layer but the last,
    which is linear and must have one output. ``layers`` is [(W float32[in, out],
    b float32[out]), ...] with matching widths."""
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation {activation!r} is not one of {', '.join(ACTIVATIONS)}")
    if not layers:
        raise ValueError("an MLP needs at least one layer")
    nodes, inits = [], []
    prev, width = INPUT_NAME, None
    for k, (W, b) in enumerate(layers):
        W = np.asarray(W, dtype=np.float32)
        b = np.asarray(b, dtype=np.float32).reshape(-1)
        if W.ndim != 2 or b.shape != (W.shape[1],) or (width is not None and W.shape[0] != width):
            raise ValueError(f"layer {k}: shapes W{W.shape}, b{b.shape} do not chain")
        if not (np.all(np.isfinite(W)) and np.all(np.isfinite(b))):
            raise ValueError(f"layer {k}: weights must be finite")
        width = W.shape[1]
        last = k == len(layers) - 1
        inits += [numpy_helper.from_array(W, f"W{k}"), numpy_helper.from_array(b, f"b{k}")]
        out = "logits" if last else f"z{k}"
        nodes.append(helper.make_node("Gemm", [prev, f"W{k}", f"b{k}"], [out]))
        if not last:
            nodes.append(helper.make_node(ACTIVATIONS[activation], [out], [f"h{k}"]))
            prev = f"h{k}"
    if width != 1:
        raise ValueError(f"the last layer must have one output, has {width}")
    n_features = np.asarray(layers[0][0]).shape[0]
    return _finish(nodes, inits, n_features, "funnel_mlp")


def linear_from_weight_map(weight_map: dict[str, float], features=FEATURES, bias: float = 0.0) -> bytes:
    """Linear model from a {feature name: weight} map (missing features weigh 0).
    Raises ValueError naming every key that is not a feature."""
    features = tuple(features)
    unknown = sorted(set(weight_map) - set(features))
    if unknown:
        raise ValueError(f"unknown feature(s): {', '.join(unknown)}; known: {', '.join(features)}")
    weights = np.array([float(weight_map.get(name, 0.0)) for name in features], dtype=np.float32)
    return linear_model(weights, bias)
