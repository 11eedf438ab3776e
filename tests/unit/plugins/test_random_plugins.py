import numpy as np
import pytest

from plugins.random.rng import draw_random_integer, draw_random_integers, init_rng, split_rng


def test_init_rng_is_a_uint32_key_determined_by_the_seed():
    seed, rng = init_rng(7)
    assert seed == 7
    assert rng.dtype == np.uint32 and rng.shape == (2,)
    assert np.array_equal(rng, init_rng(7)[1])
    assert not np.array_equal(rng, init_rng(8)[1])


def test_negative_seed_draws_a_seed_that_reproduces_the_rng():
    seed, rng = init_rng(-1)
    assert 0 <= seed < 2**31 - 1
    assert np.array_equal(init_rng(seed)[1], rng)


def test_draws_are_deterministic_and_salted_by_index():
    _, rng = init_rng(0)
    first = draw_random_integer(rng, index=1)
    assert first == draw_random_integer(rng, index=1)
    assert first != draw_random_integer(rng, index=2)
    assert isinstance(first, int) and 0 <= first < 2**31 - 1


def test_draw_respects_bounds_and_large_ranges():
    _, rng = init_rng(3)
    values = [draw_random_integer(rng, low=5, high=8, index=i) for i in range(50)]
    assert set(values) == {5, 6, 7}
    big = draw_random_integer(rng, low=2**40, high=2**41)
    assert 2**40 <= big < 2**41
    with pytest.raises(ValueError):
        draw_random_integer(rng, low=3, high=3)


def test_draw_random_integers():
    _, rng = init_rng(1)
    values = draw_random_integers(rng, 0, 10, 1000)
    assert values.shape == (1000,) and values.dtype == np.int64
    assert values.min() == 0 and values.max() == 9
    assert np.array_equal(values, draw_random_integers(rng, 0, 10, 1000))
    assert not np.array_equal(values, draw_random_integers(rng, 0, 10, 1000, index=1))


def test_split_rng_gives_new_keys():
    _, rng = init_rng(0)
    child = split_rng(rng, 1)
    assert child.dtype == np.uint32 and child.shape == (2,)
    assert not np.array_equal(child, rng)
    assert not np.array_equal(child, split_rng(rng, 2))
    assert draw_random_integer(child) != draw_random_integer(rng)


def test_rng_survives_a_round_trip_through_plain_lists():
    _, rng = init_rng(11)
    assert draw_random_integer(rng.tolist(), index=3) == draw_random_integer(rng, index=3)
    with pytest.raises(ValueError):
        draw_random_integer(np.array([1, 2, 3], np.uint32))
    with pytest.raises(ValueError):
        draw_random_integer(np.array([-1, 2]))
