#!/usr/bin/env python
"""Sweep the random agent over the number of episodes x 3 seeds: one sweep run, 12 trials.

Run from anywhere (the runs go to MLflow's store in the current folder, or
MLFLOW_TRACKING_URI)::

    python examples/sweep/sweep_random_agent.py
    python examples/sweep/sweep_random_agent.py --executor serial --episodes 1,5

It prints the table of trials and the best one by mean reward, then the
sweep's id on the last line. The same sweep from the command line::

    pcs sweep agent -r examples/random_agent/components.yaml -e run_episodes \\
        --grid agent.run_episodes.num_episodes=1,5,10,20 --seeds 1,2,3 --metric mean_reward
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pcs import Component, SweepRun

REGISTRY_FILE = Path(__file__).resolve().parent.parent / "random_agent" / "components.yaml"
EPISODES = "agent.run_episodes.num_episodes"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", default="process", choices=["serial", "process", "ray"])
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--episodes", default="1,5,10,20", help="values of num_episodes")
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--out", default=None, help="also write the plot (SVG) to this file")
    args = parser.parse_args(argv)

    agent = Component.from_registry_file(REGISTRY_FILE, "agent")
    sweep = SweepRun.from_component(  # what agent.sweep(...) does
        agent,
        "run_episodes",
        grid={EPISODES: [int(n) for n in args.episodes.split(",")]},
        seeds=[int(s) for s in args.seeds.split(",")],
        executor=args.executor,
        max_workers=args.workers,
        run_name="random agent: episodes x seeds",
        plot_metric="mean_reward",
    )

    print(f"{'trial':>5}  {'episodes':>8}  {'seed':>4}  {'mean_length':>11}  {'mean_reward':>11}  status")
    for row in sweep.table():
        print(f"{row['trial']:>5}  {row[EPISODES]:>8}  {row['seed']:>4}  "
              f"{row.get('mean_length') or float('nan'):>11.2f}  "
              f"{row.get('mean_reward') or float('nan'):>11.2f}  {row['status']}")
    best = sweep.best("mean_reward")
    print(f"best by mean_reward: trial {best.tags['pcs.trial']} "
          f"({best.params[EPISODES]} episodes, seed {best.seed}) = {best.metrics['mean_reward']:.2f}")
    if args.out:
        sweep.plot(args.out, metric="mean_reward")
    print(sweep.identifier)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
