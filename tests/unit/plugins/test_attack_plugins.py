import numpy as np
import pytest

from plugins.attacks.fgm import fgm_attack
from plugins.attacks.gradients import normalize_direction, parse_norm, project, random_in_ball
from plugins.attacks.pgd import pgd_attack
from plugins.models.classifiers import init_cnn_classifier, init_mlp_classifier
from plugins.models.predict import evaluate_classifier, predict_classes

ATOL = 1e-6


def per_sample(delta, norm):
    flat = np.abs(delta.reshape(len(delta), -1).astype(np.float64))
    return {"inf": flat.max(axis=1), "1": flat.sum(axis=1), "2": np.sqrt((flat**2).sum(axis=1))}[norm]


@pytest.mark.parametrize("init", [init_mlp_classifier, init_cnn_classifier])
def test_input_gradient_matches_central_differences(init):
    import jax

    from plugins.attacks.gradients import input_gradient
    from plugins.models.networks import forward_of

    model = init(seed=0)
    forward = forward_of(model)
    rng = np.random.default_rng(0)
    x = rng.uniform(0.0, 1.0, (3, 8, 8))
    labels = np.array([1, 4, 7], np.int32)
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), model["params"])

        @jax.jit
        def loss(inputs):
            log_probs = jax.nn.log_softmax(forward(params, inputs))
            return -log_probs[np.arange(3), labels].sum()

        grad = np.asarray(input_gradient(forward, params, x, labels))
        h = 1e-6
        for index in [(0, 0, 0), (0, 3, 4), (1, 5, 2), (2, 7, 7), (2, 4, 4)]:
            bump = np.zeros_like(x)
            bump[index] = h
            numeric = (float(loss(x + bump)) - float(loss(x - bump))) / (2 * h)
            assert grad[index] == pytest.approx(numeric, rel=1e-5, abs=1e-8)


def test_fgm_inf_is_eps_times_the_gradient_sign(trained_mlp, attack_batch):
    import jax.numpy as jnp

    from plugins.attacks.gradients import input_gradient
    from plugins.models.networks import forward_of, to_device

    eps = 0.1
    adv = fgm_attack(trained_mlp, attack_batch, eps=eps, norm="inf")
    x = attack_batch["x"]
    delta = adv["x"] - x
    assert np.array_equal(adv["y"], attack_batch["y"])
    assert np.all(np.abs(delta) <= eps + ATOL)
    assert adv["x"].min() >= 0.0 and adv["x"].max() <= 1.0
    labels = predict_classes(trained_mlp, x)
    grad = np.asarray(
        input_gradient(
            forward_of(trained_mlp), to_device(trained_mlp["params"]), jnp.asarray(x), jnp.asarray(labels)
        )
    )
    interior = (x + eps < 1.0) & (x - eps > 0.0)
    assert interior.sum() > 100
    assert np.allclose(delta[interior], eps * np.sign(grad[interior]), atol=ATOL)
    # at the borders, moves that would leave [0, 1] are clipped, never reversed
    assert np.all(delta * np.sign(grad) >= -ATOL)


@pytest.mark.parametrize("norm", ["2", "1"])
def test_fgm_l1_l2_use_the_full_budget_before_clipping(trained_mlp, attack_batch, norm):
    eps = 0.8
    x = attack_batch["x"]
    raw = fgm_attack(trained_mlp, attack_batch, eps=eps, norm=norm, clip_min=-1e9, clip_max=1e9)
    assert np.allclose(per_sample(raw["x"] - x, norm), eps, rtol=1e-4)
    clipped = fgm_attack(trained_mlp, attack_batch, eps=eps, norm=int(norm))
    assert np.all(per_sample(clipped["x"] - x, norm) <= eps * (1 + 1e-5))
    assert clipped["x"].min() >= 0.0 and clipped["x"].max() <= 1.0


def test_fgm_lowers_accuracy_as_eps_grows(trained_mlp, digits_split):
    test = digits_split[1]
    accuracies = [
        evaluate_classifier(trained_mlp, fgm_attack(trained_mlp, test, eps=e))[0] for e in (0.0, 0.05, 0.2)
    ]
    assert accuracies[0] > accuracies[1] > accuracies[2]
    assert accuracies[2] < 0.3


def test_fgm_targeted_pushes_toward_the_target(trained_mlp, attack_batch):
    adv = fgm_attack(trained_mlp, attack_batch, eps=0.3, targeted=True, target="next")
    target = (attack_batch["y"] + 1) % 10
    assert np.array_equal(adv["target"], target)
    hits = np.mean(predict_classes(trained_mlp, adv) == target)
    assert hits > 0.3
    with pytest.raises(ValueError):
        fgm_attack(trained_mlp, attack_batch, targeted=True)


def test_fgm_minimal_finds_the_smallest_step(trained_mlp, attack_batch):
    eps, eps_step = 0.3, 0.02
    x = attack_batch["x"]
    labels = predict_classes(trained_mlp, x)
    minimal = fgm_attack(trained_mlp, attack_batch, eps=eps, eps_step=eps_step, minimal=True)
    sizes = per_sample(minimal["x"] - x, "inf")
    assert np.all(sizes <= eps + ATOL)
    fooled = predict_classes(trained_mlp, minimal) != labels
    assert fooled.mean() > 0.8
    for i in np.flatnonzero(fooled):
        k = round(sizes[i] / eps_step)
        # the step actually used is a multiple of eps_step, and one step less did not succeed
        full = fgm_attack(trained_mlp, x[i : i + 1], eps=k * eps_step)
        assert np.allclose(full, minimal["x"][i : i + 1], atol=ATOL)
        if k > 1:
            smaller = fgm_attack(trained_mlp, x[i : i + 1], eps=(k - 1) * eps_step)
            assert predict_classes(trained_mlp, smaller)[0] == labels[i]
    # samples that never flip end at the largest step tried
    assert np.allclose(sizes[~fooled], eps, atol=1e-5)


def test_fgm_minimal_with_a_step_larger_than_eps_changes_nothing(trained_mlp, attack_batch):
    out = fgm_attack(trained_mlp, attack_batch, eps=0.05, eps_step=0.1, minimal=True)
    assert np.array_equal(out["x"], attack_batch["x"])


@pytest.mark.parametrize("norm,eps", [("inf", 0.1), ("2", 1.0), ("1", 4.0)])
def test_pgd_stays_in_the_eps_ball_and_data_range(trained_mlp, attack_batch, norm, eps):
    x = attack_batch["x"]
    adv = pgd_attack(trained_mlp, attack_batch, eps=eps, eps_step=eps / 4, max_iter=10, norm=norm, seed=1)
    assert np.all(per_sample(adv["x"] - x, norm) <= eps * (1 + 1e-5))
    assert adv["x"].min() >= 0.0 and adv["x"].max() <= 1.0
    again = pgd_attack(trained_mlp, attack_batch, eps=eps, eps_step=eps / 4, max_iter=10, norm=norm, seed=1)
    assert np.array_equal(adv["x"], again["x"])


def test_pgd_is_at_least_as_strong_as_fgm(trained_mlp, digits_split):
    test = digits_split[1]
    fgm_acc = evaluate_classifier(trained_mlp, fgm_attack(trained_mlp, test, eps=0.1))[0]
    pgd_acc = evaluate_classifier(
        trained_mlp, pgd_attack(trained_mlp, test, eps=0.1, eps_step=0.02, max_iter=20)
    )[0]
    assert pgd_acc <= fgm_acc


def test_pgd_seed_changes_the_random_start(trained_mlp, attack_batch):
    a = pgd_attack(trained_mlp, attack_batch, eps=0.1, eps_step=0.01, max_iter=1, seed=0)
    b = pgd_attack(trained_mlp, attack_batch, eps=0.1, eps_step=0.01, max_iter=1, seed=1)
    c = pgd_attack(trained_mlp, attack_batch, eps=0.1, eps_step=0.01, max_iter=1, random_init=False)
    assert not np.array_equal(a["x"], b["x"])
    assert np.allclose(c["x"], fgm_attack(trained_mlp, attack_batch, eps=0.01)["x"], atol=ATOL)


@pytest.mark.parametrize("norm", ["inf", "1", "2"])
def test_random_start_and_projection_stay_in_the_ball(norm):
    import jax

    eps = 0.5
    sample = np.asarray(random_in_ball(jax.random.PRNGKey(0), (200, 8, 8), eps, norm, np.float32))
    sizes = per_sample(sample, norm)
    assert np.all(sizes <= eps * (1 + 1e-5)) and sizes.mean() > eps * 0.5
    big = np.random.default_rng(0).normal(size=(5, 8, 8)).astype(np.float32) * 10
    projected = np.asarray(project(big, eps, norm))
    assert np.allclose(per_sample(projected, norm), eps, rtol=1e-5)
    small = big * 1e-4
    assert np.allclose(np.asarray(project(small, eps, norm)), small)


def test_normalize_direction_norms():
    grad = np.array([[3.0, -4.0, 0.0]], np.float32)
    assert np.array_equal(np.asarray(normalize_direction(grad, "inf")), [[1.0, -1.0, 0.0]])
    assert np.allclose(np.asarray(normalize_direction(grad, "2")), [[0.6, -0.8, 0.0]])
    assert np.allclose(np.asarray(normalize_direction(grad, "1")), [[3 / 7, -4 / 7, 0.0]])
    assert np.array_equal(
        np.asarray(normalize_direction(np.zeros((1, 3), np.float32), "2")), np.zeros((1, 3))
    )


def test_parse_norm_spellings():
    assert {parse_norm(v) for v in ("inf", np.inf, float("inf"), "linf", "Inf")} == {"inf"}
    assert {parse_norm(v) for v in (1, "1", "l1", 1.0)} == {"1"}
    assert {parse_norm(v) for v in (2, "2", "L2", 2.0)} == {"2"}
    with pytest.raises(ValueError):
        parse_norm(3)
