import numpy as np
import onnxruntime as ort
import pytest

from kernels.layout import FEATURES, N_FEATURES
from server.models.onnx_build import linear_model
from server.models.runtime import SCORE_FLOOR, ModelError, Scorer, providers


def test_nan_and_inf_scores_sink_and_are_counted():
    weights = np.zeros(N_FEATURES, dtype=np.float32)
    weights[0] = 1.0
    scorer = Scorer(linear_model(weights, 0.0), "t")
    x = np.zeros((4, N_FEATURES), dtype=np.float32)
    x[:, 0] = [1.0, np.nan, np.inf, -2.0]
    scores = scorer.score(x)
    assert scores.tolist() == [1.0, float(SCORE_FLOOR), float(SCORE_FLOOR), -2.0]
    assert scorer.nonfinite == 2


def test_one_score_per_row_in_order_and_empty_input():
    weights = np.arange(N_FEATURES, dtype=np.float32)
    scorer = Scorer(linear_model(weights, 0.5), "t")
    x = np.random.default_rng(0).random((37, N_FEATURES), dtype=np.float32)
    np.testing.assert_allclose(scorer.score(x), x @ weights + 0.5, rtol=1e-5)
    assert scorer.score(np.empty((0, N_FEATURES), dtype=np.float32)).shape == (0,)


def test_models_with_the_wrong_schema_are_refused():
    weights = np.ones(N_FEATURES, dtype=np.float32)
    with pytest.raises(ModelError, match="feature schema"):
        Scorer(linear_model(weights, 0.0), "t", features=FEATURES[:-1])
    with pytest.raises(ModelError, match="cannot be loaded"):
        Scorer(b"not an onnx model", "t")
    with pytest.raises(ModelError, match="width"):
        Scorer(linear_model(np.ones(N_FEATURES + 1, dtype=np.float32), 0.0), "t")


def test_cpu_is_chosen_without_cuda(monkeypatch):
    monkeypatch.delenv("FUNNEL_ORT_PROVIDER", raising=False)
    expected = "CUDAExecutionProvider" if "CUDAExecutionProvider" in ort.get_available_providers() \
        else "CPUExecutionProvider"
    assert providers()[0] == expected
    monkeypatch.setenv("FUNNEL_ORT_PROVIDER", "NoSuchExecutionProvider")
    with pytest.raises(ModelError, match="not available"):
        providers()


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="no CUDA device")
def test_cuda_scores_match_cpu():
    weights = np.random.default_rng(1).random(N_FEATURES, dtype=np.float32)
    x = np.random.default_rng(2).random((300, N_FEATURES), dtype=np.float32)
    scorer = Scorer(linear_model(weights, 0.1), "t")
    assert scorer.session.get_providers()[0] == "CUDAExecutionProvider"
    np.testing.assert_allclose(scorer.score(x), x @ weights + 0.1, rtol=1e-4)
