"""A record of the transitions an agent went through, grouped into episodes."""


class BasicDataset:
    """Transitions ``(obs, action, reward, next_obs, done)``, episode by episode.

    An episode closes when a transition with ``done`` true is added; the next
    transition starts a new one.

    Example::

        data = BasicDataset()
        data.add_transition(0, 1, -1.0, 1, False)
        data.add_transition(1, 1, -1.0, 2, True)
        data.episode_lengths()  # [2]
    """

    def __init__(self):
        self.episodes = []
        self._current = []

    def add_transition(self, obs, action, reward, next_obs, done):
        """Record one step; ``done`` closes the current episode."""
        self._current.append(
            {
                "obs": obs,
                "action": action,
                "reward": float(reward),
                "next_obs": next_obs,
                "done": bool(done),
            }
        )
        if done:
            self.episodes.append(self._current)
            self._current = []

    def __len__(self):
        """The number of finished episodes."""
        return len(self.episodes)

    def num_transitions(self):
        return sum(len(e) for e in self.episodes) + len(self._current)

    def episode_lengths(self):
        """The number of steps of every finished episode, in order."""
        return [len(e) for e in self.episodes]

    def episode_rewards(self):
        """The total reward of every finished episode, in order."""
        return [sum(t["reward"] for t in e) for e in self.episodes]

    def stats(self, first_episode=0):
        """Plain-data statistics of the finished episodes from ``first_episode`` on."""
        lengths = self.episode_lengths()[first_episode:]
        rewards = self.episode_rewards()[first_episode:]
        count = len(lengths)
        return {
            "episodes": count,
            "mean_length": sum(lengths) / count if count else 0.0,
            "mean_reward": sum(rewards) / count if count else 0.0,
            "min_length": min(lengths) if count else 0,
            "max_length": max(lengths) if count else 0,
            "lengths": lengths,
            "rewards": rewards,
        }
