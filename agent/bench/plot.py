"""``dw bench --plot FILE.png``: latency per model size, from one ``dw bench`` JSON document.

Pixel sizes: the live loop's end-to-end latency (change on screen -> click delivered) per
resolution. VLM shapes (``dw bench vlm``): one policy step (preprocess + prefill + decoding the
action's tokens) on a 1920x1080 frame. Bars are p50, whiskers reach p95; the y axis is log scale.
"""

from __future__ import annotations

from pathlib import Path


def series(doc: dict) -> tuple[list[str], dict[str, dict[str, tuple[float, float]]]]:
    """(model names in order, {series label: {model: (p50, p95)}})."""
    parts = doc.get("parts", {})
    models: list[str] = []
    data: dict[str, dict[str, tuple[float, float]]] = {}
    for r in parts.get("loop", {}).get("live", {}).get("rows", []):
        label = f"live loop end-to-end {r['size']}"
        e = r["end_to_end"]
        if e.get("n"):
            data.setdefault(label, {})[r["policy"]] = (e["p50_ms"], e["p95_ms"])
            if r["policy"] not in models:
                models.append(r["policy"])
    for r in parts.get("vlm", {}).get("rows", []):
        if "error" in r:
            continue
        label = f"VLM step ({r['device']}, {r['image']})"
        data.setdefault(label, {})[r["shape"]] = (r["step"]["p50_ms"], r["step"]["p95_ms"])
        if r["shape"] not in models:
            models.append(r["shape"])
    return models, data


def plot(doc: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models, data = series(doc)
    path = Path(path)
    fig, ax = plt.subplots(figsize=(max(7.0, 1.1 * len(models) + 3), 4.8), dpi=110)
    n = max(1, len(data))
    width = 0.8 / n
    for i, (label, vals) in enumerate(data.items()):
        xs = [m for m in range(len(models)) if models[m] in vals]
        p50 = [vals[models[m]][0] for m in xs]
        p95 = [vals[models[m]][1] for m in xs]
        pos = [x - 0.4 + width * (i + 0.5) for x in xs]
        ax.bar(pos, p50, width, label=label)
        ax.errorbar(pos, p50, yerr=[[0] * len(p50), [max(0.0, b - a) for a, b in zip(p50, p95, strict=True)]],
                    fmt="none", ecolor="black", capsize=3, linewidth=1)
    ax.set_xticks(range(len(models)))
    ax.set_xticklabels(models, rotation=20, ha="right")
    ax.set_yscale("log")
    ax.set_ylabel("latency, ms (bar p50, whisker p95)")
    machine = doc.get("machine", {})
    ax.set_title(f"latency per model size — {machine.get('cpus', '?')} CPUs, {machine.get('platform', '')[:40]}",
                 fontsize=9)
    ax.grid(axis="y", which="both", alpha=0.3)
    if data:
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no model latencies in this run (run loop and/or vlm)", ha="center",
                transform=ax.transAxes)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path
