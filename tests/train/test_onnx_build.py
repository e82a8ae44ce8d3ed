import numpy as np
import onnx
import onnxruntime as ort
import pytest

from kernels.layout import FEATURES, N_FEATURES
from server.models.onnx_build import linear_from_weight_map, linear_model, mlp_model, model_sha256


def run(model: bytes, X: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, out.name) == ("features", "score")
    return session.run(None, {"features": X})[0]


def test_linear_model_matches_numpy():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((37, N_FEATURES)).astype(np.float32)
    w = rng.standard_normal(N_FEATURES).astype(np.float32)
    scores = run(linear_model(w, 0.25), X)
    assert scores.shape == (37,) and scores.dtype == np.float32
    np.testing.assert_allclose(scores, X @ w + 0.25, rtol=1e-5, atol=1e-5)


def test_model_format_is_loadable_by_older_runtimes():
    model = onnx.load_from_string(linear_model(np.ones(N_FEATURES, np.float32), 0.0))
    assert model.ir_version <= 8
    assert [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    dims = model.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and dims[1].dim_value == N_FEATURES


def test_empty_batch_scores_nothing():
    assert run(linear_model(np.ones(N_FEATURES, np.float32), 1.0), np.zeros((0, N_FEATURES), np.float32)).shape == (0,)


def test_weight_map_orders_weights_by_feature():
    X = np.eye(N_FEATURES, dtype=np.float32)
    scores = run(linear_from_weight_map({"item_popularity": 2.0, "cf_score": -1.0}, bias=0.5), X)
    expected = np.full(N_FEATURES, 0.5, np.float32)
    expected[FEATURES.index("item_popularity")] += 2.0
    expected[FEATURES.index("cf_score")] -= 1.0
    np.testing.assert_allclose(scores, expected)


def test_weight_map_rejects_unknown_features_by_name():
    with pytest.raises(ValueError, match="bogus.*popularity_typo|popularity_typo"):
        linear_from_weight_map({"cf_score": 1.0, "bogus": 1.0, "popularity_typo": 2.0})
    with pytest.raises(ValueError, match="bogus"):
        linear_from_weight_map({"bogus": 1.0})


def test_mlp_matches_numpy_forward_pass():
    rng = np.random.default_rng(1)
    layers = [(rng.standard_normal((N_FEATURES, 32)), rng.standard_normal(32)),
              (rng.standard_normal((32, 16)), rng.standard_normal(16)),
              (rng.standard_normal((16, 1)), rng.standard_normal(1))]
    X = rng.standard_normal((50, N_FEATURES)).astype(np.float32)
    h = X.astype(np.float64)
    for k, (W, b) in enumerate(layers):
        h = h @ W + b
        if k < len(layers) - 1:
            h = np.maximum(h, 0.0)
    scores = run(mlp_model(layers), X)
    assert scores.shape == (50,)
    np.testing.assert_allclose(scores, h[:, 0], rtol=1e-4, atol=1e-4)


def test_mlp_rejects_bad_shapes():
    with pytest.raises(ValueError, match="chain"):
        mlp_model([(np.ones((12, 4)), np.ones(4)), (np.ones((5, 1)), np.ones(1))])
    with pytest.raises(ValueError, match="one output"):
        mlp_model([(np.ones((12, 4)), np.ones(4))])
    with pytest.raises(ValueError, match="activation"):
        mlp_model([(np.ones((12, 1)), np.ones(1))], activation="gelu")


def test_sha256_is_content_address():
    model = linear_model(np.ones(N_FEATURES, np.float32), 0.0)
    assert model_sha256(model) == model_sha256(bytes(model)) and len(model_sha256(model)) == 64
    assert model_sha256(model) != model_sha256(linear_model(np.ones(N_FEATURES, np.float32), 1.0))
