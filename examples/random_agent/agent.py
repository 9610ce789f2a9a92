"""An agent that acts in an environment with a policy and records what it sees.

Run through pcs, its ``environment``, ``policy`` and ``dataset`` are other
components (see ``components.yaml``), injected as attributes before
``__init__`` runs; this file imports none of them, so pcs can snapshot it on
its own. Without pcs, pass them to the constructor.
"""


class BasicAgent:
    """Run episodes of ``environment`` with ``policy``, recording them in ``dataset``.

    Example (without pcs)::

        agent = BasicAgent(environment=Corridor(), policy=RandomPolicy(),
                           dataset=BasicDataset())
        agent.run_episodes(num_episodes=3)["mean_length"]
    """

    DEFAULT_ENTRY_POINT = "run_episodes"

    def __init__(self, environment=None, policy=None, dataset=None):
        # pcs has already set these attributes; arguments given here win.
        for name, value in (("environment", environment), ("policy", policy), ("dataset", dataset)):
            if value is not None:
                setattr(self, name, value)
            elif not hasattr(self, name):
                raise TypeError(
                    f"BasicAgent has no {name}: run it as a pcs component with a "
                    f"'{name}' dependency, or pass {name}=... to BasicAgent()."
                )

    def run_episode(self):
        """Run one episode to its end; return ``(length, total_reward)``."""
        obs = self.environment.reset()
        length, total = 0, 0.0
        done = False
        while not done:
            action = self.policy.decide(obs)
            next_obs, reward, done = self.environment.step(action)
            self.dataset.add_transition(obs, action, reward, next_obs, done)
            obs = next_obs
            length += 1
            total += reward
        return length, total

    def run_episodes(self, num_episodes=10):
        """Run ``num_episodes`` episodes; log each one's length and reward; return stats.

        Each episode's ``episode_length`` and ``episode_reward`` is logged at
        step ``i`` (0-based) to the pcs run executing this agent, when there is one.
        """
        if not isinstance(num_episodes, int) or isinstance(num_episodes, bool) or num_episodes < 0:
            raise ValueError(f"num_episodes must be a non-negative integer; got {num_episodes!r}.")
        run = _active_run_of(self)
        first = len(self.dataset)
        for i in range(num_episodes):
            length, reward = self.run_episode()
            if run is not None:
                run.log_metrics({"episode_length": length, "episode_reward": reward}, step=i)
        stats = self.dataset.stats(first_episode=first)
        if run is not None and num_episodes:
            run.log_metrics(
                {"mean_length": stats["mean_length"], "mean_reward": stats["mean_reward"]}
            )
        return stats


def _active_run_of(agent):
    """The pcs run executing ``agent``, or None (no pcs, or not run through pcs)."""
    try:
        from pcs import active_component_run
    except ImportError:
        return None
    return active_component_run(agent)
