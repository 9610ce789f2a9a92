"""An agent in a corridor whose policy lives in ``helpers.py``, next to this file.

The component file imports its helpers like any Python project does
(``from helpers import ...`` at the top, ``import reporting`` inside a
function); pcs records those modules with the run, so a rerun runs the helper
code that ran, and an edit to ``helpers.py`` shows up as a code change.
"""

from pathlib import Path

from helpers import BiasedPolicy, Corridor, EpisodeStats


class HelperAgent:
    """Run episodes of a corridor with a policy that prefers to move right.

    Example (without pcs, from this folder)::

        HelperAgent(length=6).run_episodes(num_episodes=3)["mean_length"]
    """

    DEFAULT_ENTRY_POINT = "run_episodes"

    def __init__(self, length=6, right_bias=0.6):
        self.length = length
        self.right_bias = right_bias

    def run_episodes(self, num_episodes=5, layout=None):
        """Run ``num_episodes`` episodes; log each one's length and reward; print and return stats.

        Args:
            num_episodes: how many episodes to run.
            layout: a layout file next to this one (e.g. ``layout.txt``) whose
                cells (``.``) set the corridor's length instead of ``length``.
        """
        length = self.length if layout is None else read_layout(layout)
        corridor = Corridor(length)
        policy = BiasedPolicy(self.right_bias)
        run = _active_run_of(self)
        stats = EpisodeStats()
        for episode in range(num_episodes):
            steps, reward = corridor.play(policy)
            stats.add(steps, reward)
            if run is not None:
                run.log_metrics({"episode_length": steps, "episode_reward": reward}, step=episode)
        report(stats)
        return stats.to_dict()


def report(stats):
    """Print a summary of the episodes (the module is imported only when reporting)."""
    import reporting

    print(reporting.summary(stats))


def read_layout(name):
    """The number of cells of the layout file ``name`` that lies next to this file."""
    text = (Path(__file__).parent / name).read_text(encoding="utf-8")
    return text.count(".") + 2  # the start and goal cells, and the free cells between


def _active_run_of(agent):
    """The pcs run executing ``agent``, or None (no pcs, or not run through pcs)."""
    try:
        from pcs import active_component_run
    except ImportError:
        return None
    return active_component_run(agent)
