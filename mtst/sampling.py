"""Which task's batch comes next.

``both`` is the reference design: every step takes one AG News batch and one CoNLL batch and
sums their losses. The others take one task per step: ``round_robin`` alternates,
``proportional`` draws a task with probability proportional to its dataset size, and
``temperature`` with probability proportional to ``size ** (1 / T)`` (T=1 is proportional,
T -> inf is uniform).
"""

import numpy as np

STRATEGIES = ("both", "round_robin", "proportional", "temperature")


def task_probabilities(sizes: dict[str, int], strategy: str, temperature: float = 2.0) -> dict[str, float]:
    """The long-run share of steps each task gets under ``strategy``."""
    if strategy in ("both", "round_robin"):
        return {task: 1 / len(sizes) for task in sizes}
    power = 1.0 if strategy == "proportional" else 1.0 / temperature
    weights = {task: n ** power for task, n in sizes.items()}
    total = sum(weights.values())
    return {task: w / total for task, w in weights.items()}


class TaskSampler:
    """Yields the tasks of each step; its state (step count, RNG) is saved for resuming.

    Args:
        sizes: examples per task, e.g. ``{"cls": 9600, "ner": 14041}``.
        strategy: one of ``STRATEGIES``.
        temperature: T for the ``temperature`` strategy.
        seed: seeds the random strategies.
    """

    def __init__(self, sizes: dict[str, int], strategy: str = "both", temperature: float = 2.0,
                 seed: int = 0):
        if strategy not in STRATEGIES:
            raise ValueError(f"sampling must be one of {STRATEGIES}, got {strategy!r}")
        if strategy == "temperature" and temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.tasks = tuple(sizes)
        self.strategy = strategy
        self.probs = task_probabilities(sizes, strategy, temperature)
        self.rng = np.random.default_rng(seed)
        self.step = 0

    def next(self) -> tuple[str, ...]:
        """The task(s) whose batch this step trains on."""
        step, self.step = self.step, self.step + 1
        if self.strategy == "both":
            return self.tasks
        if self.strategy == "round_robin":
            return (self.tasks[step % len(self.tasks)],)
        return (self.tasks[self.rng.choice(len(self.tasks), p=[self.probs[t] for t in self.tasks])],)

    def state_dict(self) -> dict:
        return {"step": self.step, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.step = state["step"]
        self.rng.bit_generator.state = state["rng"]
