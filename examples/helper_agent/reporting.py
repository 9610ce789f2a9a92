"""Text summaries of the helper agent's episodes."""


def summary(stats):
    """One line per episode, then the mean length."""
    data = stats.to_dict()
    lines = [f"episode {i}: {n} steps" for i, n in enumerate(data["lengths"])]
    lines.append(f"mean length over {data['episodes']} episodes: {data['mean_length']:.2f}")
    return "\n".join(lines)
