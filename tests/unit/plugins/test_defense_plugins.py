import numpy as np
import pytest

from plugins.attacks.fgm import fgm_attack
from plugins.defenses.adversarial_training import adversarial_train_classifier
from plugins.defenses.squeezing import bit_depth_squeeze, median_smooth
from plugins.models.classifiers import init_mlp_classifier
from plugins.models.predict import evaluate_classifier
from plugins.models.train import train_classifier

VALUES = np.array([0.0, 0.1, 0.49, 0.5, 0.51, 1.0], np.float32)


def test_bit_depth_one_rounds_half_to_even():
    assert np.array_equal(bit_depth_squeeze(VALUES, 1), [0, 0, 0, 0, 1, 1])


def test_bit_depth_two_has_four_levels():
    out = bit_depth_squeeze(VALUES, 2)
    assert out.dtype == np.float32
    assert np.allclose(out, [0, 0, 1 / 3, 2 / 3, 2 / 3, 1])


def test_bit_depth_keeps_representable_values_and_uses_the_range():
    exact = np.arange(256, dtype=np.float32) / 255
    assert np.allclose(bit_depth_squeeze(exact, 8), exact, atol=1e-7)
    out = bit_depth_squeeze(np.array([-1.0, -0.2, 0.2, 2.0], np.float32), 1, clip_min=-1.0, clip_max=1.0)
    assert np.array_equal(out, [-1, -1, 1, 1])


def test_bit_depth_on_a_dataset_changes_only_x():
    data = {"x": VALUES.reshape(1, 2, 3), "y": np.array([4])}
    out = bit_depth_squeeze(data, 1)
    assert out["y"] is data["y"] and out["x"].shape == (1, 2, 3)
    with pytest.raises(ValueError):
        bit_depth_squeeze(data, 0)


def test_median_smoothing_matches_hand_computed_reflect_borders():
    image = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4)
    expected = np.array([[2, 3, 4, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 13, 14, 15]], np.float32)
    assert np.array_equal(median_smooth(image, 3)[0], expected)


def test_median_smoothing_removes_salt_and_filters_images_independently():
    images = np.full((2, 5, 5), 0.5, np.float32)
    images[0, 2, 2] = 1.0
    images[1] = 0.0
    out = median_smooth({"x": images, "y": np.array([0, 1])}, window_size=3)
    assert np.array_equal(out["x"][0], np.full((5, 5), 0.5))
    assert np.array_equal(out["x"][1], np.zeros((5, 5)))
    assert np.array_equal(median_smooth(images, 1), images)


def test_median_smoothing_channels_last():
    image = np.arange(1, 17, dtype=np.float32).reshape(1, 4, 4, 1)
    both = np.concatenate([image, image * 10], axis=-1)
    out = median_smooth(both, 3, channels_last=True)
    assert np.array_equal(out[..., 1], out[..., 0] * 10)
    with pytest.raises(ValueError):
        median_smooth(both, 3)


def test_adversarial_training_improves_robustness(digits_split):
    train, test = digits_split
    model = init_mlp_classifier(seed=0)
    plain = train_classifier(model, train, seed=0, epochs=15)
    robust = adversarial_train_classifier(model, train, seed=0, epochs=15, eps=0.1, ratio=0.5)
    again = adversarial_train_classifier(model, train, seed=0, epochs=15, eps=0.1, ratio=0.5)
    assert np.array_equal(robust["params"]["layers"][0]["w"], again["params"]["layers"][0]["w"])
    plain_adv = evaluate_classifier(plain, fgm_attack(plain, test, eps=0.1))[0]
    robust_adv = evaluate_classifier(robust, fgm_attack(robust, test, eps=0.1))[0]
    assert evaluate_classifier(robust, test)[0] >= 0.9
    assert robust_adv > plain_adv + 0.2, (plain_adv, robust_adv)
