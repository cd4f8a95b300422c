"""Regenerate the bundled pixel-tiny and pixel-small checkpoints from the project's own demos.

Runs the same code as ``dw demos`` / ``dw train`` (each command's own parser), copies each model
into ``fixtures/checkpoints/<size>/`` (pixel-small stored in fp16 to stay small), then evaluates
each exported checkpoint closed-loop on unseen seeds (10000+) at 640x480, 1920x1080 and
5120x2880@2 and measures one step's latency (preprocessing a 1920x1080 frame + forward, 2 cores),
writing ``eval.json`` beside the weights. pixel-small is then taught to read (``--read-models``):
a 16-channel reader is pretrained on synthetic UI text, and the match layers are fine-tuned on
fresh demos with every other weight kept (``dw reader``, ``dw train --match-reader``). Then it is
taught to compare the numbers it reads (``--stage order``, after ``read``): its reader goes on
from the desktop's own words and then from slider screens, and two rounds of fine-tuning with
``--match-order`` run over fresh demos and DAgger episodes on drag-slider, the second driven by
the first round's model. Two more rounds untie the match kernels, widen their reach to 4 tiles
and add demos and DAgger episodes of the tasks whose targets sit in close rows (``rows_rounds``);
two more add DAgger episodes that name the expert's targets and a reader of read windows
(``window_rounds``); two more tell the offset heads which window read their word and add a
DAgger round weighted to click-checkboxes, training every layer but the reader (``where_rounds``);
three more add two more DAgger sets and give each glimpse an offset per read window, chosen
by where the word was read around it (``near_rounds``); the next two add three more DAgger sets and
train every layer but the reader again (``last_round``); the last gives the model a reader with
ReLU for GELU, distilled from its own (``relu_round``: cheaper reads on a CPU).

Demos: the direct expert on every task, many episodes at scale-1 sizes (640x480 .. 2560x1440) and
fewer at HiDPI sizes (1440x900@1.5 .. 5120x2880@2): preprocessing works in logical
points, so both kinds teach the same thing and the cheap ones are 5-10x cheaper to record and
decode. Training adds ``--shifts`` tile-grid-shifted copies of every sample and keeps the epoch
with the best held-out action accuracy.

    python scripts/train_checkpoints.py                       # CPU: slow (hours on 2 cores)
    python scripts/train_checkpoints.py --device cuda --workers 15
    python scripts/train_checkpoints.py --stage train --models pixel-small --device cuda   # one model
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHEAP_SIZES = "640x480,800x600,1024x768,1280x720,1366x768,1920x1080,2560x1440"
LARGE_SIZES = "1440x900@1.5,1920x1200@1.25,2880x1800@2,3840x2160@1.5,5120x2880@2"
EVAL_SIZES = ((640, 480, 1.0), (1920, 1080, 1.0), (5120, 2880, 2.0))
READ_SIZES = "640x480,1280x720,1920x1080,2560x1440,1440x900@1.5,5120x2880@2"
READ_ROUNDS = ((2, "5e-3"), (2, "3e-3"))  # (epochs, lr) of each match-layer fine-tune
ROWS_TASKS = "enter-text,click-checkboxes,click-menu"  # targets in close rows: the later rounds' extra data
ORDER_READERS = (  # (name, steps, seed, extra dw reader arguments): each goes on from the one before
    ("reader-desk", 7257, 1, []),
    ("reader-slider", 1165, 2, ["--desktop-tasks", "all,drag-slider,drag-slider,drag-slider", "--desktop-share", "0.75"]),
)


def dw(module, argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="dw")
    module.register(p.add_subparsers())
    args = p.parse_args(argv)
    return int(args.func(args) or 0)


LARGE_READ_SIZES = "1920x1080,2560x1440,5120x2880@2"
# What the later DAgger sets are weighted to: (tasks, episodes per task and size, sizes, seed offset)
ROWS_WEIGHTS = (("click-checkboxes", 30, READ_SIZES, 0), ("enter-text,click-menu", 25, READ_SIZES, 100),
                ("close-dialog,drag-slider", 15, READ_SIZES, 200), ("click-checkboxes", 20, LARGE_READ_SIZES, 300),
                ("enter-text", 15, LARGE_READ_SIZES, 400), ("click-menu", 10, LARGE_READ_SIZES, 500))
SLIDER_WEIGHTS = (("click-checkboxes,click-menu", 30, READ_SIZES, 0), ("enter-text,close-dialog", 12, READ_SIZES, 100),
                  ("drag-slider", 15, READ_SIZES, 200),
                  ("click-checkboxes,click-menu,drag-slider", 20, LARGE_READ_SIZES, 300))


def dagger(runs: Path, out: str, driver: str, tasks: str, episodes: int, sizes: str, seed: int) -> None:
    """``dw demos`` of DAgger episodes driven by ``runs/driver`` (beta 0.3), into ``runs/out``."""
    from agent.cli.commands import demos

    dw(demos, ["demos", "--tasks", tasks, "--episodes", str(episodes), "--sizes", sizes, "--seed", str(seed),
               "--out", str(runs / out), "--plain", "--dagger", str(runs / driver), "--beta", "0.3"])


def dagger_sets(runs: Path, out: str, driver: str, seed: int, weights) -> None:
    """One DAgger set of ``weights`` (``ROWS_WEIGHTS``, ``SLIDER_WEIGHTS``) from ``seed`` on."""
    for tasks, episodes, sizes, offset in weights:
        dagger(runs, out, driver, tasks, episodes, sizes, seed + offset)


def export(run_dir: Path, dest: Path, fp16: bool) -> None:
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "training.json"):
        shutil.copy(run_dir / name, dest / name)
    tensors = load_file(str(run_dir / "model.safetensors"))
    if fp16:
        tensors = {k: v.half() for k, v in tensors.items()}
    save_file(tensors, str(dest / "model.safetensors"), metadata={"format": "pt"})


def latency(spec: str, steps: int = 200, cores: int = 2) -> dict:
    """p50/p95 of one step (preprocess a 1920x1080 virtual-desktop frame + forward), ``cores`` cores."""
    import cv2
    import torch

    from agent.bench.policies import act_latency
    from agent.desktops.virtual import VirtualDesktop
    from policies.base import Observation
    from policies.pixel import load_pixel_policy

    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    torch.set_num_threads(cores)
    cv2.setNumThreads(cores)
    busy = _busy_share()  # another process on these cores makes every figure below pessimistic: say so
    from agent.bench import reference_ms

    reference = reference_ms()  # and a slow hour of a shared host, which no process list shows
    if busy is not None and busy > 0.1:
        print(f"latency: the CPUs were {busy:.0%} busy with other work just before measuring: "
              "these figures are pessimistic", file=sys.stderr)
    pol = load_pixel_policy(spec)
    desk = VirtualDesktop("click-menu", seed=10_000, size=(1920, 1080), scale=1.0)
    frame = desk.observe()
    obs = Observation(frame=frame, cursor=desk.cursor, history=[], instruction=desk.instruction)
    pol.reset(desk.instruction)
    lat = act_latency(pol, obs, steps, warmup=20)  # a reading model reads every tile afresh each step
    doc = {"p50_ms": lat["p50_ms"], "p95_ms": lat["p95_ms"], "dtype": str(pol.dtype).removeprefix("torch."),
           "precision": pol.precision,
           "steps": steps, "cores": cores, "torch_threads": cores, "frame": "1920x1080@1", "cpu": _cpu_name(),
           "busy_before": busy, "reference_ms": reference}
    if pol.reads is not None:  # and the same frame again: every tile already read
        same = act_latency(pol, obs, steps, warmup=20, cold=False)
        doc["unchanged_screen"] = {"p50_ms": same["p50_ms"], "p95_ms": same["p95_ms"]}
    return doc


def _busy_share(seconds: float = 1.0) -> float | None:
    """Share of all CPUs' time spent busy over ``seconds`` while this process sleeps (from
    /proc/stat; None where there is none). Unlike the load average, it does not lag: a run that
    just ended does not count."""
    def sample() -> tuple[int, int]:
        v = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)  # total, idle + iowait

    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def evaluate(spec: str, dest: Path, episodes: int, workers: int, max_steps: int) -> dict:
    from agent.desktops.virtual import task_names
    from agent.desktops.virtual.evaluate import EVAL_SEED, episode_specs, summarise
    from agent.scaleout.backends import evaluate_episodes

    specs = episode_specs(task_names(), episodes, EVAL_SIZES, seed=EVAL_SEED)
    report = evaluate_episodes(specs, spec, max_steps=max_steps, backend="local", workers=workers)
    failed = [r for r in report.results if "error" in r]
    if failed:
        raise RuntimeError(f"{len(failed)} evaluation episodes failed, e.g. {failed[0]['error']}")
    res = report.results
    s = summarise(res)
    doc = {"policy": spec, "suite": "virtual", "seeds": [EVAL_SEED, EVAL_SEED + episodes - 1],
           "episodes_per_cell": episodes, "max_steps": max_steps, "expert": "none (closed loop)",
           "mean_over_tasks": s["sizes"], "overall": s["overall"], "summary": s,
           "min_over_sizes": min(s["sizes"].values()) if s["sizes"] else 0.0,
           "episodes": [{k: r[k] for k in ("task", "seed", "size", "scale", "success", "steps", "reason")}
                        for r in res]}
    (dest / "eval.json").write_text(json.dumps(doc, indent=1) + "\n")
    return doc


def extract_reader(checkpoint: Path, out: Path) -> None:
    """A reading checkpoint's frozen reader as a ``dw reader`` folder (to go on training it)."""
    from safetensors.torch import load_file

    from policies.pixel.reader import save_reader

    cfg = json.loads((checkpoint / "config.json").read_text())
    tensors = load_file(str(checkpoint / "model.safetensors"))
    save_reader(out, {k.removeprefix("reader."): v.float() for k, v in tensors.items() if k.startswith("reader.")},
                {"stem": cfg.get("match_stem", "reader"), "stem_channels": cfg["match_channels"],
                 "head_width": cfg["match_head"], "tile_pt": cfg["tile_pt"], "glimpse_px": cfg["glimpse_px"],
                 **({"window": cfg["match_window"], "window_px": cfg["match_window_px"]} if cfg.get("match_window") else {})})


def order_stage(runs: Path, dest: Path, workers: int, device: str) -> None:
    """pixel-small (a reading checkpoint at ``dest``) learns to compare numbers (``--match-order``)."""
    from agent.cli.commands import demos, reader, train

    sizes, w = READ_SIZES, str(workers)
    extract_reader(dest, runs / "reader-bundled")
    prev = runs / "reader-bundled"
    for name, steps, seed, extra in ORDER_READERS:
        dw(reader, ["reader", "--size", "pixel-small", "--init", str(prev), "--lr", "1e-3", "--steps", str(steps),
                    "--seed", str(seed), "--device", device, "--out", str(runs / name), *extra])
        prev = runs / name
    for tasks, n, seed, out in (("all", 60, 70000, "demos-read"),
                                ("click-button,click-checkboxes,enter-text,click-menu,close-dialog,double-click-icon",
                                 40, 74000, "demos-read2"),
                                ("drag-slider", 120, 71000, "demos-slider")):
        dw(demos, ["demos", "--tasks", tasks, "--episodes", str(n), "--sizes", sizes, "--seed", str(seed),
                   "--out", str(runs / out), "--workers", w, "--plain"])
    common = ["--batch-size", "64", "--seed", "0", "--workers", w, "--device", device, "--cache", str(runs / "cache-order")]
    # round 1: the match layers and the new order layer, on DAgger episodes driven by the bundled model
    dw(demos, ["demos", "--tasks", "drag-slider", "--episodes", "60", "--sizes", sizes, "--seed", "72000",
               "--out", str(runs / "dagger-slider"), "--workers", w, "--plain", "--dagger", str(dest), "--beta", "0.5"])
    data = [str(runs / d) for d in ("demos-read", "demos-slider", "dagger-slider")]
    dw(train, ["train", *data, "--init", str(dest), "--match-reader", str(runs / "reader-desk"), "--match-order",
               "--train-only", "match_", "--epochs", "2", "--lr", "3e-3", "--out", str(runs / "small-order1"), *common])
    # round 2: DAgger driven by round 1, more demos of the other tasks, the slider reader, and the
    # type and key heads too (when to submit, which way to press)
    dw(demos, ["demos", "--tasks", "drag-slider", "--episodes", "60", "--sizes", sizes, "--seed", "73000",
               "--out", str(runs / "dagger-slider2"), "--workers", w, "--plain", "--dagger", str(runs / "small-order1"),
               "--beta", "0.3"])
    data += [str(runs / "demos-read2"), str(runs / "dagger-slider2")]
    dw(train, ["train", *data, "--init", str(runs / "small-order1"), "--match-reader", str(runs / "reader-slider"),
               "--train-only", "match_,head_type,head_key", "--epochs", "2", "--lr", "2e-3",
               "--out", str(runs / "small-order2"), *common])
    data = rows_rounds(runs, data, common, w)
    data = window_rounds(runs, data, common, w, device)
    data = where_rounds(runs, data, common)
    data = near_rounds(runs, data, common)
    last_round(runs, data, common)
    relu_round(runs, device)
    export(runs / "small-relu", dest, fp16=True)


def rows_rounds(runs: Path, data: list[str], common: list[str], w: str) -> list[str]:
    """Rounds 3 and 4 over ``--stage order``'s round 2: untied match kernels, a reach of 4 tiles,
    and more demos and DAgger episodes of the tasks whose targets sit in close rows.

    The bundled checkpoint's rounds 1-2 ran before the kernel mix started random, so their four
    kernels stayed equal; round 3 (the same data) is where ``dw train`` untied them. With today's
    code every round trains untied kernels, so round 3 is two more epochs. Likewise the demos
    recorded before demos named each expert target (``expert_target`` events) were recorded again,
    with the same seeds, for round 4 only: today every demo and DAgger episode names its targets,
    so every round learns which word to look for. Returns the data with the new sessions."""
    from agent.cli.commands import demos, train

    dw(train, ["train", *data, "--init", str(runs / "small-order2"), "--train-only", "match_,head_type,head_key",
               "--epochs", "2", "--lr", "2e-3", "--out", str(runs / "small-untie"), *common])
    dw(demos, ["demos", "--tasks", ROWS_TASKS, "--episodes", "80", "--sizes", READ_SIZES, "--seed", "77000",
               "--out", str(runs / "demos-rows"), "--workers", w, "--plain"])
    dw(demos, ["demos", "--tasks", ROWS_TASKS, "--episodes", "40", "--sizes", READ_SIZES, "--seed", "78000",
               "--out", str(runs / "dagger-rows"), "--workers", w, "--plain", "--dagger", str(runs / "small-untie"),
               "--beta", "0.3"])
    data = [*data, str(runs / "demos-rows"), str(runs / "dagger-rows")]
    dw(train, ["train", *data, "--init", str(runs / "small-untie"),
               "--match-reach", "4", "--train-only", "match_,head_type,head_key", "--epochs", "2", "--lr", "2e-3",
               "--out", str(runs / "small-reach4"), *common])
    return data


def window_rounds(runs: Path, data: list[str], common: list[str], w: str, device: str) -> list[str]:
    """Rounds 5 and 6 over ``rows_rounds``' round 4: a DAgger round whose episodes name the
    expert's targets, then a reader of read windows in place of the tile reader.

    The tile reader named a word only where the 64-point grid left it whole, about half the targets
    where rows sit 30-44 points apart. A read window (128 x 64 points at 96 x 48 pixels, four a
    glimpse, each centred on a quarter of its tile) names the word centred in it, whole wherever
    the grid falls; its stem goes on from the slider reader's and its head starts afresh. (The
    bundled reader ran ``--steps 8000 --time-budget 2100`` on a 2-core CPU, which fitted its
    schedule to 2,917 steps after the first ones; here the schedule is 2,917 steps from the start.)
    Returns the data with the new sessions."""
    from agent.cli.commands import reader, train

    dagger(runs, "dagger-named", "small-reach4", ROWS_TASKS, 40, READ_SIZES, 79000)
    data = [*data, str(runs / "dagger-named")]
    # an option given again after ``common`` overrides it (argparse keeps the last value)
    dw(train, ["train", *data, "--init", str(runs / "small-reach4"), "--train-only", "match_,head_type,head_key",
               "--epochs", "2", "--lr", "1e-3", "--out", str(runs / "small-named3"), *common, "--seed", "1"])
    dw(reader, ["reader", "--size", "pixel-small", "--init", str(runs / "reader-slider"), "--window", "128x64",
                "--window-px", "96x48", "--desktop-share", "0.75", "--desktop-tasks",
                "all,drag-slider,drag-slider,click-checkboxes,enter-text", "--lr", "2e-3", "--steps", "2917",
                "--seed", "3", "--device", device, "--out", str(runs / "reader-window")])
    dw(train, ["train", *data, "--init", str(runs / "small-named3"), "--match-reader", str(runs / "reader-window"),
               "--train-only", "match_,head_type,head_key", "--epochs", "2", "--lr", "2e-3",
               "--out", str(runs / "small-window"), *common, "--cache", str(runs / "cache-window")])
    return data


def where_rounds(runs: Path, data: list[str], common: list[str]) -> list[str]:
    """Rounds 7 and 8 over ``window_rounds``' round 6: the offset heads are told which window read
    their word (``--match-where``), then a DAgger round driven by that model, weighted to
    click-checkboxes, teaches every layer but the reader (lr 5e-4). Round 7 caches every session's
    reads, so the windows of those sessions can be deleted before round 8 (they fill a 100 GB disk)."""
    from agent.cli.commands import train

    cache = ["--cache", str(runs / "cache-window")]
    dw(train, ["train", *data, "--init", str(runs / "small-window"), "--match-where", "--train-only", "match_,off_",
               "--epochs", "2", "--lr", "2e-3", "--out", str(runs / "small-where"), *common, *cache])
    for tasks, n, out in (("click-checkboxes", 60, "dagger-w1"), ("enter-text,click-menu,drag-slider", 25, "dagger-w2")):
        dagger(runs, out, "small-where", tasks, n, READ_SIZES, 81000)
        data = [*data, str(runs / out)]
    dw(train, ["train", *data, "--init", str(runs / "small-where"), "--epochs", "2", "--lr", "5e-4",
               "--out", str(runs / "small-w4"), *common, *cache])
    return data


def near_rounds(runs: Path, data: list[str], common: list[str]) -> list[str]:
    """Rounds 10-12 over ``where_rounds``' round 8: two more DAgger sets driven by round 8 (the
    first at the large sizes only, from the unbundled round 9; the second over every size, weighted
    to what round 8 misses), 2 epochs over every layer but the reader (round 10), then offsets per
    read window chosen by where the word was read around a glimpse (``--match-where-near``): that
    layer alone (round 11), then it with the offset heads (round 12)."""
    from agent.cli.commands import train

    cache = ["--cache", str(runs / "cache-window")]
    dagger(runs, "dagger-w3", "small-w4", "click-checkboxes,click-menu,enter-text,drag-slider", 30,
           "1920x1080,2560x1440,1440x900@1.5,5120x2880@2", 82000)
    dagger_sets(runs, "dagger-w4", "small-w4", 83000, ROWS_WEIGHTS)
    data = [*data, str(runs / "dagger-w3"), str(runs / "dagger-w4")]
    dw(train, ["train", *data, "--init", str(runs / "small-w4"), "--epochs", "2", "--lr", "3e-4",
               "--out", str(runs / "small-w6"), *common, *cache])
    dw(train, ["train", *data, "--init", str(runs / "small-w6"), "--match-where-near", "--train-only",
               "match_where_off", "--epochs", "2", "--lr", "5e-3", "--out", str(runs / "small-near4"), *common, *cache])
    dw(train, ["train", *data, "--init", str(runs / "small-near4"), "--train-only", "match_where,off_",
               "--epochs", "2", "--lr", "2e-3", "--out", str(runs / "small-near5"), *common, *cache])
    return data


def last_round(runs: Path, data: list[str], common: list[str]) -> None:
    """Rounds 13 and 14 over ``near_rounds``' round 12: two more DAgger sets, the first driven by
    round 10, the second by round 12 (weighted to click-checkboxes, click-menu and drag-slider), then
    every layer but the reader for 2 epochs at lr 3e-4 (round 13); one more set like the second,
    driven by round 13, in place of the first, and 1 epoch (round 14). The first demo set
    (``demos-read``) is left out: 24 GB of memory holds the samples of about 10,400 sessions, and
    these are 9,414 and 9,393. (The bundled run drove round 13's second set with round 12's fp16
    export, ``fixtures/checkpoints/pixel-small``.)"""
    from agent.cli.commands import train

    base = [d for d in data if Path(d).name != "demos-read"]
    for init, out, epochs, sets, extra in (
            ("small-near5", "small-near6", 2, [("dagger-w5", "small-w6", 84000, ROWS_WEIGHTS),
                                               ("dagger-w6", "small-near5", 85000, SLIDER_WEIGHTS)],
             ["dagger-w5", "dagger-w6"]),
            ("small-near6", "small-near7", 1, [("dagger-w7", "small-near6", 86000, SLIDER_WEIGHTS)],
             ["dagger-w6", "dagger-w7"])):
        for folder, driver, seed, weights in sets:
            dagger_sets(runs, folder, driver, seed, weights)
        dw(train, ["train", *base, *(str(runs / d) for d in extra), "--init", str(runs / init), "--epochs",
                   str(epochs), "--lr", "3e-4", "--out", str(runs / out), *common, "--cache", str(runs / "cache-window")])


def relu_round(runs: Path, device: str) -> None:
    """Round 15 over ``last_round``'s round 14: its reader with ReLU after each convolution instead
    of GELU (``--stem reader-relu``), started from every weight of round 14's reader and distilled
    from it (its per-slot distributions), in place of it; every other weight is round 14's. The
    bundled reader ran 4,075 steps in 28 minutes on a 2-core CPU (a 25-minute budget, fitted early)."""
    from agent.cli.commands import reader
    from policies.pixel import load_model
    from policies.train import with_match_reader

    extract_reader(runs / "small-near7", runs / "reader-near7")
    src = str(runs / "reader-near7")
    dw(reader, ["reader", "--stem", "reader-relu", "--init", src, "--teacher", src, "--window", "128x64",
                "--window-px", "96x48", "--desktop-share", "0.75", "--desktop-tasks",
                "all,drag-slider,drag-slider,click-checkboxes,enter-text", "--lr", "5e-4", "--seed", "3",
                "--steps", "20000", "--time-budget", "1500", "--device", device, "--out", str(runs / "reader-relu")])
    with_match_reader(load_model(str(runs / "small-near7")), runs / "reader-relu").save_pretrained(runs / "small-relu")
    summary = json.loads((runs / "small-near7" / "training.json").read_text())
    summary["reader"] = {k: v for k, v in json.loads((runs / "reader-relu" / "reader.json").read_text()).items()
                         if k != "history"}  # what replaced round 14's reader
    (runs / "small-relu" / "training.json").write_text(json.dumps(summary, indent=2) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--stage", default="all", choices=("all", "demos", "train", "read", "order", "eval"))
    ap.add_argument("--read-models", default="pixel-small",
                    help="models taught to read after training (a reader, then their match layers), "
                         "exported over their checkpoints (--stage all or read)")
    ap.add_argument("--reader-steps", type=int, default=4637, help="reading pretraining steps")
    ap.add_argument("--reader-channels", type=int, default=16, help="the reader's stem width")
    ap.add_argument("--read-episodes", type=int, default=60,
                    help="fresh demo episodes per task and size for the match layers")
    ap.add_argument("--episodes", type=int, default=500, help="demo episodes per task at each cheap size")
    ap.add_argument("--episodes-large", type=int, default=100, help="demo episodes per task at each large size")
    ap.add_argument("--epochs-tiny", type=int, default=40)
    ap.add_argument("--epochs-small", type=int, default=40)
    ap.add_argument("--shifts", type=int, default=0, help="tile-grid-shifted copies of every sample")
    ap.add_argument("--time-budget", type=float, default=None, help="seconds per model's training")
    ap.add_argument("--runs", default=str(ROOT / "runs"))
    ap.add_argument("--dest", default=str(ROOT / "fixtures" / "checkpoints"))
    ap.add_argument("--models", default="pixel-tiny,pixel-small")
    ap.add_argument("--eval-episodes", type=int, default=20, help="closed-loop episodes per task and size (0: skip)")
    ap.add_argument("--eval-max-steps", type=int, default=30)
    ap.add_argument("--no-latency", action="store_true")
    a = ap.parse_args()
    from agent.cli.commands import demos, train

    runs = Path(a.runs)
    t0 = time.time()
    if a.stage in ("all", "demos"):
        for sizes, n in ((CHEAP_SIZES, a.episodes), (LARGE_SIZES, a.episodes_large)):
            if n < 1:
                continue
            dw(demos, ["demos", "--tasks", "all", "--episodes", str(n), "--sizes", sizes, "--seed", "0",
                       "--out", str(runs / "demos"), "--workers", str(a.workers), "--plain"])
        print(f"[{time.time() - t0:.0f}s] demos done", flush=True)
    models = [m for m in a.models.split(",") if m]
    if a.stage in ("all", "train"):
        for size in models:
            epochs = a.epochs_small if size == "pixel-small" else a.epochs_tiny
            argv = ["train", str(runs / "demos"), "--size", size, "--out", str(runs / size), "--epochs", str(epochs),
                    "--batch-size", "256", "--lr", "1e-3", "--device", a.device, "--seed", "0",
                    "--workers", str(a.workers), "--cache", str(runs / f"cache-{size}"), "--shifts", str(a.shifts)]
            if a.time_budget:
                argv += ["--time-budget", str(a.time_budget)]
            dw(train, argv)
            export(runs / size, Path(a.dest) / size, fp16=(size == "pixel-small"))
            print(f"[{time.time() - t0:.0f}s] {size} trained and exported", flush=True)
    read = [m for m in a.read_models.split(",") if m in models]
    if a.stage in ("all", "read") and read:
        from agent.cli.commands import reader

        dw(demos, ["demos", "--tasks", "all", "--episodes", str(a.read_episodes), "--sizes", READ_SIZES,
                   "--seed", "70000", "--out", str(runs / "demos-read"), "--workers", str(a.workers), "--plain"])
        for size in read:
            dw(reader, ["reader", "--size", size, "--out", str(runs / f"reader-{size}"), "--steps",
                        str(a.reader_steps), "--channels", str(a.reader_channels), "--head-width", "256",
                        "--device", a.device])
            trained = runs / size if (runs / size / "config.json").is_file() else Path(a.dest) / size
            for i, (epochs, lr) in enumerate(READ_ROUNDS):  # the match layers only; each round from the last
                out = runs / f"{size}-read{i + 1}"
                dw(train, ["train", str(runs / "demos-read"), "--init", str(trained), "--match-reader",
                           str(runs / f"reader-{size}"), "--train-only", "match_", "--out", str(out),
                           "--epochs", str(epochs), "--batch-size", "64", "--lr", lr, "--device", a.device,
                           "--seed", "0", "--cache", str(runs / f"cache-{size}-read")])
                trained = out
            export(trained, Path(a.dest) / size, fp16=(size == "pixel-small"))
            print(f"[{time.time() - t0:.0f}s] {size} reads: trained and exported", flush=True)
    if a.stage in ("all", "order") and "pixel-small" in models:
        order_stage(runs, Path(a.dest) / "pixel-small", a.workers, a.device)
        print(f"[{time.time() - t0:.0f}s] pixel-small compares numbers: trained and exported", flush=True)
    if a.stage in ("all", "eval"):
        for size in models:
            dest = Path(a.dest) / size
            if a.eval_episodes:
                doc = evaluate(str(dest), dest, a.eval_episodes, a.workers, a.eval_max_steps)
                print(f"[{time.time() - t0:.0f}s] {size}: success per size {doc['mean_over_tasks']}", flush=True)
        for size in [] if a.no_latency else models:
            import multiprocessing as mp

            dest = Path(a.dest) / size
            with mp.get_context("spawn").Pool(1) as pool:  # pinned to 2 cores in its own process
                lat = pool.apply(latency, (str(dest),))
            f = dest / "eval.json"
            doc = json.loads(f.read_text()) if f.is_file() else {"policy": str(dest)}
            doc["latency"] = lat
            f.write_text(json.dumps(doc, indent=1) + "\n")
            print(f"[{time.time() - t0:.0f}s] {size}: step latency {lat}", flush=True)
    print(json.dumps({"seconds": round(time.time() - t0)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
