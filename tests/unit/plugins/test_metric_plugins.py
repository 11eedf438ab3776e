import numpy as np
import pytest

from plugins.metrics.distance import distance_metrics
from plugins.metrics.performance import classification_accuracy, confusion_matrix, per_class_accuracy
from plugins.metrics.report import accuracy_by_eps, report_metrics

Y_TRUE = np.array([0, 0, 1, 1, 2, 2])
Y_PRED = np.array([0, 1, 1, 1, 0, 2])


def test_accuracy_accepts_labels_scores_and_datasets():
    assert classification_accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    scores = np.eye(3)[Y_PRED] * 5.0
    assert classification_accuracy({"x": np.zeros(6), "y": Y_TRUE}, scores) == pytest.approx(4 / 6)
    assert classification_accuracy([], []) == 0.0
    with pytest.raises(ValueError):
        classification_accuracy(Y_TRUE, Y_PRED[:3])


def test_confusion_matrix_rows_are_true_classes():
    expected = np.array([[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert np.array_equal(confusion_matrix(Y_TRUE, Y_PRED), expected)
    padded = confusion_matrix(Y_TRUE, Y_PRED, num_classes=4)
    assert padded.shape == (4, 4) and padded.sum() == 6


def test_per_class_accuracy_table():
    table = per_class_accuracy(Y_TRUE, Y_PRED, num_classes=4)
    assert table == {
        "class": [0, 1, 2, 3],
        "support": [2, 2, 2, 0],
        "correct": [1, 2, 1, 0],
        "accuracy": [0.5, 1.0, 0.5, None],
    }


def test_distances_per_sample_and_summary():
    clean = np.zeros((3, 2, 2))
    adversarial = np.array([[[0.1, -0.2], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]], [[0.3, 0.4], [0.0, 0.0]]])
    table, summary = distance_metrics(
        {"x": clean, "y": np.zeros(3)}, {"x": adversarial}, ["linf", "l2", "l1"]
    )
    assert table["sample"] == [0, 1, 2]
    assert table["linf"] == pytest.approx([0.2, 0.0, 0.4])
    assert table["l2"] == pytest.approx([np.sqrt(0.05), 0.0, 0.5])
    assert table["l1"] == pytest.approx([0.3, 0.0, 0.7])
    assert summary["linf_mean"] == pytest.approx(0.2)
    assert summary["l1_max"] == pytest.approx(0.7)
    assert set(distance_metrics(clean, adversarial)[1]) == {
        f"{m}_{s}" for m in ("linf", "l2", "l1") for s in ("mean", "max")
    }


def test_cosine_and_errors():
    a = np.array([[1.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 1.0], [0.0, 0.0]])
    table, _ = distance_metrics(a, b, ["cosine"])
    assert table["cosine"] == pytest.approx([0.0, 1.0])
    with pytest.raises(ValueError):
        distance_metrics(a, b, ["nope"])
    with pytest.raises(ValueError):
        distance_metrics(a, b[:1])


def test_report_metrics():
    metrics = report_metrics(
        0.97, 0.4, {"linf_mean": 0.1}, defended_clean_accuracy=0.95, defended_adversarial_accuracy=0.8
    )
    assert metrics == {
        "clean_accuracy": 0.97,
        "adversarial_accuracy": 0.4,
        "distance_linf_mean": 0.1,
        "defended_clean_accuracy": 0.95,
        "defended_adversarial_accuracy": 0.8,
        "recovered_accuracy": pytest.approx(0.4),
    }
    sweep = report_metrics(0.97, accuracy_by_eps([0.05, 0.1], [0.8, 0.5]))
    assert sweep["adversarial_accuracy"] == {"0.05": 0.8, "0.1": 0.5}
    with pytest.raises(ValueError):
        accuracy_by_eps([0.1], [])
