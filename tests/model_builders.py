"""ONNX models for the registry and deployment tests: good ones, and ones broken in a
particular way (built with onnx.helper, like server/models/onnx_build.py does)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from kernels.layout import FEATURES, N_FEATURES
from server.models.onnx_build import IR_VERSION, OPSET, linear_model


def weights(seed: int, n: int = N_FEATURES) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=n).astype(np.float32)


def good_model(seed: int = 1) -> bytes:
    """A linear model over every feature (different bytes per seed)."""
    return linear_model(weights(seed), 0.1 * seed)


def _graph(nodes, inits, width: int, out_shape=("N",)) -> bytes:
    graph = helper.make_graph(
        nodes, "test_model",
        inputs=[helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", width])],
        outputs=[helper.make_tensor_value_info("score", TensorProto.FLOAT, list(out_shape))],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=IR_VERSION)
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def nan_everywhere_model() -> bytes:
    """score = sqrt(-1 - |x @ w|): NaN for every row."""
    inits = [numpy_helper.from_array(weights(3).reshape(-1, 1), "W"),
             numpy_helper.from_array(np.array([-1.0], dtype=np.float32), "minus_one"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    nodes = [helper.make_node("MatMul", ["features", "W"], ["z"]),
             helper.make_node("Abs", ["z"], ["a"]),
             helper.make_node("Sub", ["minus_one", "a"], ["neg"]),
             helper.make_node("Sqrt", ["neg"], ["logits"]),
             helper.make_node("Squeeze", ["logits", "axes"], ["score"])]
    return _graph(nodes, inits, N_FEATURES)


def two_output_columns_model() -> bytes:
    """Output [N, 2]: not one score per row."""
    inits = [numpy_helper.from_array(np.ones((N_FEATURES, 2), dtype=np.float32), "W")]
    return _graph([helper.make_node("MatMul", ["features", "W"], ["score"])], inits, N_FEATURES, ("N", 2))


def saturated_affinity_model(seed: int = 5) -> bytes:
    """A plausible linear model plus log(1 - category_affinity): -inf exactly when the
    candidate's category is the only one in the user's history (affinity 1.0), which
    real users produce often and a probe sampling [0, 1) uniformly never does."""
    col = FEATURES.index("category_affinity")
    inits = [numpy_helper.from_array(weights(seed).reshape(-1, 1), "W"),
             numpy_helper.from_array(np.array([0.0], dtype=np.float32), "B"),
             numpy_helper.from_array(np.array([1.0], dtype=np.float32), "one"),
             numpy_helper.from_array(np.array([col], dtype=np.int64), "start"),
             numpy_helper.from_array(np.array([col + 1], dtype=np.int64), "end"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    nodes = [helper.make_node("Gemm", ["features", "W", "B"], ["linear"]),
             helper.make_node("Slice", ["features", "start", "end", "axes"], ["affinity"]),
             helper.make_node("Sub", ["one", "affinity"], ["rest"]),
             helper.make_node("Log", ["rest"], ["penalty"]),
             helper.make_node("Add", ["linear", "penalty"], ["logits"]),
             helper.make_node("Squeeze", ["logits", "axes"], ["score"])]
    return _graph(nodes, inits, N_FEATURES)


def batch_multiple_model(multiple: int = 8, seed: int = 9) -> bytes:
    """A linear model that runs only when the batch size is a multiple of ``multiple``:
    it reshapes the batch to [N / multiple, multiple * width] and back, which ONNX
    Runtime refuses for any other N. The registry's probe (PROBE_ROWS + 8 rows = 264)
    passes; the ranker's usual 300 candidates fail at run time."""
    inits = [numpy_helper.from_array(np.array([-1, multiple * N_FEATURES], dtype=np.int64), "packed_shape"),
             numpy_helper.from_array(np.array([-1, N_FEATURES], dtype=np.int64), "row_shape"),
             numpy_helper.from_array(weights(seed).reshape(-1, 1), "W"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    nodes = [helper.make_node("Reshape", ["features", "packed_shape"], ["packed"]),
             helper.make_node("Reshape", ["packed", "row_shape"], ["rows"]),
             helper.make_node("MatMul", ["rows", "W"], ["logits"]),
             helper.make_node("Squeeze", ["logits", "axes"], ["score"])]
    return _graph(nodes, inits, N_FEATURES)


def slow_model(width: int = 1024, layers: int = 12, seed: int = 11) -> bytes:
    """Finite, plausible scores after ``layers`` dense [width x width] products per row
    (about 2 * layers * width**2 FLOPs a row: tens of milliseconds for 300 rows), for
    a latency guardrail to catch."""
    rng = np.random.default_rng(seed)
    scale = 1.0 / np.sqrt(width)
    inits = [numpy_helper.from_array((rng.normal(size=(N_FEATURES, width)) * scale).astype(np.float32), "W_in"),
             numpy_helper.from_array((rng.normal(size=(width, width)) * scale).astype(np.float32), "W_hidden"),
             numpy_helper.from_array((rng.normal(size=(width, 1)) * scale).astype(np.float32), "W_out"),
             numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")]
    nodes = [helper.make_node("MatMul", ["features", "W_in"], ["h0"])]
    for k in range(layers):
        nodes += [helper.make_node("MatMul", [f"h{k}", "W_hidden"], [f"z{k}"]),
                  helper.make_node("Tanh", [f"z{k}"], [f"h{k + 1}"])]
    nodes += [helper.make_node("MatMul", [f"h{layers}", "W_out"], ["logits"]),
              helper.make_node("Squeeze", ["logits", "axes"], ["score"])]
    return _graph(nodes, inits, N_FEATURES)


def upload(stub, amd, blob, kind="rank", features=FEATURES, chunk=64 << 10, **first):
    """Admin.UploadModel of ``blob`` for tenant "demo", streamed in ``chunk``-byte pieces."""
    from protos import funnel_pb2

    def chunks():
        yield funnel_pb2.ModelChunk(tenant_id="demo", kind=kind, features=features, data=blob[:chunk], **first)
        for start in range(chunk, len(blob), chunk):
            yield funnel_pb2.ModelChunk(data=blob[start:start + chunk])
    return stub.UploadModel(chunks(), metadata=amd, timeout=60)
