"""Sampling: greedy / temperature / top-k from logits, seeded generation through the C
core, context cropping, batched greedy generation."""

import numpy as np
import pytest

from pyllmc import GPTConfig, Model
from pyllmc.errors import InvalidArgumentError
from pyllmc.sampling import generate, generate_batch, make_rng, sample_token

CFG = GPTConfig(max_seq_len=16, vocab_size=50, padded_vocab_size=128, num_layers=1, num_heads=2, channels=32)


@pytest.fixture(scope="module")
def model():
    with Model.from_config(CFG, max_batch=4, threads=1, seed=11) as m:
        yield m


def test_greedy_and_top1():
    logits = np.array([0.1, 2.0, -1.0, 1.9], dtype=np.float32)
    assert sample_token(logits, temperature=0) == 1
    rng = make_rng(0)
    assert all(sample_token(logits, temperature=5.0, top_k=1, rng=rng) == 1 for _ in range(50))


def test_temperature_distribution_and_top_k():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    rng = make_rng(123)
    n = 20000
    counts = np.bincount([sample_token(logits, rng=rng) for _ in range(n)], minlength=4) / n
    np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.015)
    counts2 = np.bincount([sample_token(logits, top_k=2, rng=rng) for _ in range(5000)], minlength=4) / 5000
    assert counts2[2] == 0 and counts2[3] == 0
    np.testing.assert_allclose(counts2[:2], [0.5 / 0.8, 0.3 / 0.8], atol=0.03)
    # high temperature flattens the distribution
    hot = np.bincount([sample_token(logits, temperature=100.0, rng=rng) for _ in range(8000)], minlength=4) / 8000
    np.testing.assert_allclose(hot, 0.25, atol=0.03)


def test_generate_is_seeded_and_matches_forward(model):
    a = generate(model, [1, 2, 3], 10, temperature=1.0, seed=5)
    b = generate(model, [1, 2, 3], 10, temperature=1.0, seed=5)
    c = generate(model, [1, 2, 3], 10, temperature=1.0, seed=6)
    assert a == b and a != c and len(a) == 10 and all(0 <= t < 50 for t in a)
    g = generate(model, [1, 2, 3], 1, temperature=0)
    model.forward(np.array([[1, 2, 3]]))
    assert g == [int(np.argmax(model.logits()[0, -1]))]


def test_generate_crops_context_and_stops(model):
    out = generate(model, [4], 40, temperature=0.7, seed=1)  # longer than max_seq 16
    assert len(out) == 40
    first = generate(model, [4], 3, temperature=0)
    out = generate(model, [4], 20, temperature=0, stop_token=first[1])
    assert out == first[: first.index(first[1]) + 1]


def test_generate_batch_equals_single(model):
    prompts = np.array([[1, 2, 3], [7, 8, 9], [3, 3, 3], [0, 1, 0], [9, 9, 1]])  # 5 rows > max_batch 4
    out = generate_batch(model, prompts, 4)
    assert out.shape == (5, 4)
    for row, o in zip(prompts, out):
        assert list(o) == generate(model, list(row), 4, temperature=0)


def test_bad_prompts(model):
    with pytest.raises(InvalidArgumentError):
        generate(model, [], 3)
    with pytest.raises(InvalidArgumentError, match="vocabulary"):
        generate(model, [50], 3)
