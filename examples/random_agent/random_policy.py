"""A policy that picks actions uniformly at random.

It draws from the global generator of the standard library's ``random``
module, which pcs seeds before every run, so a run and its rerun take the same
actions.
"""

import random


class RandomPolicy:
    """Choose among ``actions`` uniformly at random, whatever the observation.

    Example::

        policy = RandomPolicy()
        policy.decide(0)  # 0 or 1
    """

    def __init__(self, actions=(0, 1)):
        actions = list(actions)
        if not actions:
            raise ValueError("RandomPolicy needs at least one action.")
        self.actions = actions

    def decide(self, obs):
        """The action to take on observation ``obs``."""
        return random.choice(self.actions)
