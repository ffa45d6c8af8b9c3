"""Loader: determinism, resuming at a step, per-process sharding, workers, per-sample params."""
import numpy as np
import pytest

from jflow.data import AugmentParams, Mixture, SyntheticFlow
from jflow.data import loader as loader_mod
from jflow.data.loader import Loader

KEYS = ("image1", "image2", "flow", "valid")


@pytest.fixture(scope="module")
def source():
    return SyntheticFlow(10, 24, 32, seed=2)


def _same(a, b):
    return all(np.array_equal(a[k], b[k]) for k in KEYS)


def _frames(batch):
    return [m["frame"] for m in batch["meta"]]


def test_batches_are_numpy_and_deterministic(source):
    make = lambda: Loader(source, 3, seed=1, crop=(16, 24), num_steps=4)  # noqa: E731
    a, b = list(make()), list(make())
    assert len(a) == 4 and all(_same(x, y) for x, y in zip(a, b))
    batch = a[0]
    assert batch["image1"].shape == (3, 16, 24, 3) and batch["image1"].dtype == np.uint8
    assert batch["flow"].dtype == np.float32 and batch["valid"].dtype == bool
    assert len(batch["meta"]) == 3
    other = list(Loader(source, 3, seed=2, crop=(16, 24), num_steps=4))
    assert not all(_same(x, y) for x, y in zip(a, other))


def test_resume_from_start_step_continues_the_order(source):
    fresh = list(Loader(source, 3, seed=1, crop=(16, 24), num_steps=7))
    resumed = list(Loader(source, 3, seed=1, crop=(16, 24), num_steps=7, start_step=4))
    assert len(resumed) == 3
    assert all(_same(x, y) for x, y in zip(fresh[4:], resumed))
    assert _frames(fresh[4]) == _frames(resumed[0])


def test_epochs_are_permutations(source):
    batches = list(Loader(source, 5, seed=3, augment=False, num_steps=4))
    first, second = sum(map(_frames, batches[:2]), []), sum(map(_frames, batches[2:]), [])
    assert sorted(first) == sorted(second) == list(range(10))
    assert first != second and first != list(range(10))
    ordered = list(Loader(source, 5, augment=False, shuffle=False, num_steps=2))
    assert sum(map(_frames, ordered), []) == list(range(10))


def test_processes_get_disjoint_shards(source):
    shards = [list(Loader(source, 2, seed=5, augment=False, process_index=p, process_count=2,
                          num_steps=2)) for p in range(2)]
    for step in range(2):
        f0, f1 = _frames(shards[0][step]), _frames(shards[1][step])
        assert not set(f0) & set(f1)
    single = list(Loader(source, 4, seed=5, augment=False, num_steps=2))
    for step in range(2):
        assert _frames(single[step]) == _frames(shards[0][step]) + _frames(shards[1][step])


def test_workers_give_the_same_batches(source):
    ref = list(Loader(source, 2, seed=1, crop=(16, 24), num_steps=3, start_step=1))
    par = list(Loader(source, 2, seed=1, crop=(16, 24), num_steps=3, start_step=1,
                      num_workers=2))
    assert len(par) == 2 and all(_same(x, y) for x, y in zip(ref, par))


def test_mixture_uses_each_parts_augmentation(monkeypatch):
    dense = SyntheticFlow(2, 24, 32, seed=0, augment_params=AugmentParams(False, 0, 0.1, True))
    sparse = SyntheticFlow(2, 24, 32, seed=1, augment_params=AugmentParams(True, 0, 0.1, False))
    mix = Mixture([(1, dense), (2, sparse)])
    seen = []
    real = loader_mod.make_augmentor
    monkeypatch.setattr(loader_mod, "make_augmentor",
                        lambda params, crop: seen.append(params) or real(params, crop))
    batch = Loader(mix, 6, seed=0, crop=(16, 24), shuffle=False).batch(0)
    assert [p.sparse for p in seen] == [False, False, True, True, True, True]
    assert batch["image1"].shape == (6, 16, 24, 3)


def test_bad_arguments(source):
    with pytest.raises(ValueError, match="crop"):
        Loader(source, 2, augment=True)
    with pytest.raises(ValueError, match="process_index"):
        Loader(source, 2, crop=(8, 8), process_index=2, process_count=2)
    mixed = Mixture([(1, SyntheticFlow(1, 16, 16)), (1, SyntheticFlow(1, 24, 24))])
    with pytest.raises(ValueError, match="different shapes"):
        Loader(mixed, 2, augment=False, shuffle=False).batch(0)


def test_grain_view_matches(source):
    loader = Loader(source, 2, seed=4, crop=(16, 24), start_step=3, num_steps=5)
    ds = loader.dataset()
    assert len(ds) == 2
    assert _same(ds[1], loader.batch(4))
