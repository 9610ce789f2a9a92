"""Fit y = 3x + 1 by stochastic gradient descent: a plain argparse + MLflow script.

Nothing in it knows about pcs. Run it with python, or record it with pcs:

    pcs run examples/script/train.py --lr 0.1 --epochs 3
"""

import argparse
import random

import mlflow

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--lr", type=float, default=0.05, help="learning rate")
parser.add_argument("--epochs", type=int, default=5)
parser.add_argument("--samples", type=int, default=64, help="training points drawn per run")
args = parser.parse_args()

points = [(x, 3 * x + 1 + random.gauss(0, 0.1)) for x in (random.uniform(-1, 1) for _ in range(args.samples))]
w, b = 0.0, 0.0
with mlflow.start_run():
    for epoch in range(args.epochs):
        random.shuffle(points)
        for x, y in points:
            error = w * x + b - y
            w -= args.lr * error * x
            b -= args.lr * error
        loss = sum((w * x + b - y) ** 2 for x, y in points) / len(points)
        mlflow.log_metric("loss", loss, step=epoch)
        print(f"epoch {epoch}  loss {loss:.4f}")
    mlflow.log_metrics({"w": w, "b": b})
