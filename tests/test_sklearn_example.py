"""The README's scikit-learn example, run exactly as written, on real features (MobileNetV2 on
the CIFAR-10 JPEGs, a small subset)."""

import pytest

# Kept identical to the README's "projector as a scikit-learn library" block; ``cifar10_dir`` is
# the folder with train/<class>/*.jpg and test/<class>/*.jpg.
README_EXAMPLE = '''
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline

from benchmarks.backbones import build_backbone, extract_features
from benchmarks.data import load_dataset
from projector import RidgeClassifier, SignEncoder, StructuredProjection, ThresholdEncoder

data = load_dataset("cifar10", data_dir=cifar10_dir, image_size=64, train_per_class=30,
                    test_per_class=20, val_fraction=0, progress=False)
backbone = build_backbone("mobilenet_v2", cut="features.14", weights="DEFAULT")
X_train = extract_features(backbone, data.train.images, data.mean, data.std)  # torch (300, 640)
X_test = extract_features(backbone, data.test.images, data.mean, data.std)

model = make_pipeline(SignEncoder(),                               # x > 0 -> 1, as uint8
                      StructuredProjection(n_components=10_000),   # |X R|^2, Hadamard-based
                      RidgeClassifier())                           # alpha by exact leave-one-out
search = GridSearchCV(model, {
    "signencoder": [SignEncoder(), ThresholdEncoder(threshold="median")],
    "structuredprojection__n_components": [2_000, 10_000],
}, cv=3)
search.fit(X_train, data.train.labels)
print(search.best_params_, f"test accuracy {search.score(X_test, data.test.labels):.3f}")
'''


@pytest.mark.slow
def test_readme_example_runs_as_written(cifar10_dir, mobilenet_weights):
    scope = {"cifar10_dir": cifar10_dir}
    exec(compile(README_EXAMPLE, "README.md", "exec"), scope)
    search, data = scope["search"], scope["data"]
    assert len(search.cv_results_["params"]) == 4
    assert search.best_estimator_.named_steps["ridgeclassifier"].cv_ == "loo"
    # 10 classes, 300 training images: far above chance (0.1)
    assert search.best_score_ > 0.3
    assert search.score(scope["X_test"], data.test.labels) > 0.3
