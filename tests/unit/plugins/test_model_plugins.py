import time

import numpy as np

from plugins.models.classifiers import init_cnn_classifier, init_mlp_classifier
from plugins.models.predict import evaluate_classifier, predict_classes, predict_logits
from plugins.models.train import train_classifier


def leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_init_is_seeded_and_plain_data():
    a, b, c = init_mlp_classifier(seed=1), init_mlp_classifier(seed=1), init_mlp_classifier(seed=2)
    assert a["kind"] == "mlp" and a["config"]["hidden_sizes"] == [128, 64]
    assert all(isinstance(leaf, np.ndarray) and leaf.dtype == np.float32 for leaf in leaves(a["params"]))
    assert all(np.array_equal(x, y) for x, y in zip(leaves(a["params"]), leaves(b["params"])))
    assert not np.array_equal(a["params"]["layers"][0]["w"], c["params"]["layers"][0]["w"])
    cnn = init_cnn_classifier(seed=0)
    assert [layer["w"].shape for layer in cnn["params"]["conv"]] == [(3, 3, 1, 16), (3, 3, 16, 32)]
    assert cnn["params"]["dense"][0]["w"].shape == (2 * 2 * 32, 64)


def test_training_is_deterministic(digits_split):
    train, test = digits_split
    model = init_mlp_classifier(seed=0, hidden_sizes=[32])
    first = train_classifier(model, train, seed=5, epochs=2)
    second = train_classifier(model, train, seed=5, epochs=2)
    other = train_classifier(model, train, seed=6, epochs=2)
    assert all(np.array_equal(x, y) for x, y in zip(leaves(first["params"]), leaves(second["params"])))
    assert not np.array_equal(first["params"]["layers"][0]["w"], other["params"]["layers"][0]["w"])
    assert evaluate_classifier(first, test)[:2] == evaluate_classifier(second, test)[:2]
    assert len(first["history"]["loss"]) == 2


def test_mlp_reaches_95_percent_on_digits_quickly(digits_split):
    train, test = digits_split
    start = time.perf_counter()
    model = train_classifier(init_mlp_classifier(seed=0), train, seed=0)
    elapsed = time.perf_counter() - start
    accuracy, loss, predictions = evaluate_classifier(model, test)
    assert accuracy >= 0.95, accuracy
    assert elapsed < 20, elapsed
    assert predictions.shape == test["y"].shape and loss < 0.3


def test_cnn_reaches_95_percent_on_digits(digits_split):
    train, test = digits_split
    model = train_classifier(init_cnn_classifier(seed=0), train, seed=0)
    assert evaluate_classifier(model, test)[0] >= 0.95


def test_predict_logits_and_classes_agree(trained_mlp, digits_split):
    test = digits_split[1]
    logits = predict_logits(trained_mlp, test)
    assert logits.shape == (len(test["y"]), 10) and logits.dtype == np.float32
    classes = predict_classes(trained_mlp, test["x"])
    assert np.array_equal(classes, np.argmax(logits, axis=1))
    assert np.array_equal(classes, evaluate_classifier(trained_mlp, test)[2])
