"""The scikit-learn example of docs/projector.md, run exactly as written, on real features (MobileNetV2 on
the CIFAR-10 JPEGs, a small subset)."""

from pathlib import Path

import pytest

# The ```python block of docs/projector.md, read from the page itself so the two cannot drift apart;
# ``cifar10_dir`` is the folder with train/<class>/*.jpg and test/<class>/*.jpg.
DOC = Path(__file__).resolve().parent.parent / "docs" / "projector.md"
README_EXAMPLE = DOC.read_text().split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_readme_example_runs_as_written(cifar10_dir, mobilenet_weights):
    scope = {"cifar10_dir": cifar10_dir}
    exec(compile(README_EXAMPLE, str(DOC), "exec"), scope)
    search, data = scope["search"], scope["data"]
    assert len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.named_steps["ridgeclassifier"].cv_ == "loo"
    # 10 classes, 300 training images: far above chance (0.1)
    assert search.best_score_ > 0.3
    assert search.score(scope["X_test"], data.test.labels) > 0.3
