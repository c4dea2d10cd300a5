import math

import pytest

from aspo.metrics import avg_at_k, pass_at_k, repeated_ngrams, repetition_rate


def test_repetition_rate_hand_computed():
    assert repetition_rate([1, 2, 1, 2, 1, 2], 2) == 3 / 5  # (1,2) (2,1) then 3 repeats
    assert repetition_rate([1, 1, 1, 1], 2) == 2 / 3  # overlapping occurrences count
    assert repetition_rate([1, 2, 3, 4], 2) == 0.0
    assert repetition_rate([7, 7, 7], 1) == 2 / 3
    assert repetition_rate("the cat the cat".split(), 2) == 1 / 3  # words work too
    assert repetition_rate((5, 6, 5, 6), 3) == 0.0


def test_repetition_rate_short_and_invalid():
    assert repetition_rate([1], 2) == 0.0
    assert repetition_rate([], 1) == 0.0
    with pytest.raises(ValueError):
        repetition_rate([1, 2], 0)


def test_repeated_ngrams_spans():
    assert repeated_ngrams([1, 2, 1, 2, 1, 2], 2) == [(2, 6)]  # overlapping occurrences merged
    assert repeated_ngrams([1, 1, 1, 1], 2) == [(1, 4)]
    ids = [1, 2, 3, 9, 1, 2, 8, 8, 3, 9]
    assert repeated_ngrams(ids, 2) == [(4, 6), (8, 10)]
    assert repetition_rate(ids, 2) == 2 / 9
    assert repeated_ngrams([1, 2, 3], 2) == [] and repeated_ngrams([1], 5) == []


def test_pass_at_k_known_values():
    assert pass_at_k(10, 0, 5) == 0.0
    assert pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0  # every draw of 10 contains the correct one
    assert math.isclose(pass_at_k(10, 3, 1), 0.3)
    assert math.isclose(pass_at_k(5, 2, 2), 0.7)  # 1 - C(3,2)/C(5,2)
    assert math.isclose(pass_at_k(4, 1, 2), 0.5)  # 1 - C(3,2)/C(4,2)
    for n in range(1, 12):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert math.isclose(pass_at_k(n, c, k), exact, abs_tol=1e-12)


def test_pass_at_k_errors_and_avg():
    for args in [(0, 0, 1), (3, 4, 1), (3, -1, 1), (3, 1, 0), (3, 1, 4)]:
        with pytest.raises(ValueError):
            pass_at_k(*args)
    assert avg_at_k(8, 2) == 0.25
    assert avg_at_k(8, 2) == pass_at_k(8, 2, 1)
    with pytest.raises(ValueError):
        avg_at_k(2, 3)
