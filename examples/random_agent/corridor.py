"""A one-dimensional corridor: walk right until you reach the end.

Self-contained (standard library only, no imports of files next to it), so pcs
can snapshot it and rerun it anywhere.
"""

LEFT = 0
RIGHT = 1


class Corridor:
    """A corridor of ``length`` cells; the agent starts in cell 0.

    Actions: 0 moves left (a wall stops it at cell 0), 1 moves right. Every
    step costs a reward of -1. An episode ends when the agent reaches the last
    cell, or after ``max_steps`` steps so that even a bad policy terminates.

    Example::

        env = Corridor(length=3)
        obs = env.reset()                 # 0
        obs, reward, done = env.step(1)   # (1, -1.0, False)
    """

    def __init__(self, length=5, max_steps=200):
        if not isinstance(length, int) or length < 2:
            raise ValueError(f"Corridor length must be an integer >= 2; got {length!r}.")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"Corridor max_steps must be an integer >= 1; got {max_steps!r}.")
        self.length = length
        self.max_steps = max_steps
        self.position = 0
        self.steps = 0

    def reset(self):
        """Start a new episode; return the first observation (the position, 0)."""
        self.position = 0
        self.steps = 0
        return self.position

    def step(self, action):
        """Take ``action``; return ``(observation, reward, done)``."""
        if action not in (LEFT, RIGHT):
            raise ValueError(f"Corridor actions are 0 (left) and 1 (right); got {action!r}.")
        if action == RIGHT:
            self.position = min(self.position + 1, self.length - 1)
        else:
            self.position = max(self.position - 1, 0)
        self.steps += 1
        done = self.position == self.length - 1 or self.steps >= self.max_steps
        return self.position, -1.0, done

    @property
    def valid_actions(self):
        return [LEFT, RIGHT]
