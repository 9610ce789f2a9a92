"""The corridor, the policy and the bookkeeping of the helper agent."""

import random
from dataclasses import dataclass, field


class Corridor:
    """A corridor of ``length`` cells: start at 0, the episode ends at the last cell.

    Each step costs a reward of -1; an episode stops after ``max_steps`` steps.
    """

    def __init__(self, length=6, max_steps=200):
        if length < 2:
            raise ValueError(f"a corridor needs at least 2 cells; got {length}")
        self.length = length
        self.max_steps = max_steps

    def play(self, policy):
        """One episode with ``policy``; returns ``(steps, total_reward)``."""
        position, steps = 0, 0
        while position < self.length - 1 and steps < self.max_steps:
            position = max(0, position + policy.step(position))
            steps += 1
        return steps, -float(steps)


class BiasedPolicy:
    """Move right (+1) with probability ``right_bias``, else left (-1)."""

    def __init__(self, right_bias=0.6):
        self.right_bias = right_bias

    def step(self, position):
        return 1 if random.random() < self.right_bias else -1


@dataclass
class EpisodeStats:
    """Lengths and rewards of the episodes run so far."""

    lengths: list = field(default_factory=list)
    rewards: list = field(default_factory=list)

    def add(self, length, reward):
        self.lengths.append(length)
        self.rewards.append(reward)

    def to_dict(self):
        count = len(self.lengths)
        return {
            "episodes": count,
            "lengths": list(self.lengths),
            "rewards": list(self.rewards),
            "mean_length": sum(self.lengths) / count if count else 0.0,
            "mean_reward": sum(self.rewards) / count if count else 0.0,
        }
