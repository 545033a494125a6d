import collections

import pytest

from mtst.features import TaskSampler, task_probabilities

SIZES = {"cls": 9_600, "ner": 14_041}


def _mix(strategy, steps=20_000, **kw):
    sampler = TaskSampler(SIZES, strategy, seed=0, **kw)
    counts = collections.Counter(t for _ in range(steps) for t in sampler.next())
    return {t: counts[t] / steps for t in SIZES}, sampler


def test_both_takes_every_task_every_step():
    sampler = TaskSampler(SIZES, "both")
    assert all(sampler.next() == ("cls", "ner") for _ in range(10))


def test_round_robin_alternates():
    sampler = TaskSampler(SIZES, "round_robin")
    assert [sampler.next()[0] for _ in range(6)] == ["cls", "ner"] * 3


def test_proportional_matches_dataset_sizes():
    mix, _ = _mix("proportional")
    assert mix["cls"] == pytest.approx(9_600 / 23_641, abs=0.01)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 5.0])
def test_temperature_matches_definition(temperature):
    mix, _ = _mix("temperature", temperature=temperature)
    a, b = 9_600 ** (1 / temperature), 14_041 ** (1 / temperature)
    assert mix["cls"] == pytest.approx(a / (a + b), abs=0.01)


def test_high_temperature_tends_to_uniform():
    assert task_probabilities(SIZES, "temperature", 1e6)["cls"] == pytest.approx(0.5, abs=1e-4)


def test_state_round_trip_continues_the_same_sequence():
    a = TaskSampler(SIZES, "proportional", seed=3)
    for _ in range(17):
        a.next()
    b = TaskSampler(SIZES, "proportional", seed=99)
    b.load_state_dict(a.state_dict())
    assert [a.next() for _ in range(50)] == [b.next() for _ in range(50)]


def test_unknown_strategy():
    with pytest.raises(ValueError, match="sampling must be one of"):
        TaskSampler(SIZES, "random")
