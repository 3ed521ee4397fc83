"""Publish a finished training run: its record in lab/runs/releases/<run>/ (results.json and a
card), pictures, and (with --release NAME) a released model in src/parsenet/released/.

    python -m lab.tools.publish_run runs/lite_siftflow_parsenet --dataset SiftFlow \
        --command "parsenet train ..." --release siftflow --overlays 3

Reads <run>/metrics.json (the trainer's final validation on the recipe's val split),
config.yaml and log.jsonl, and folds them with the card's facts into one results.json
(:mod:`lab.tools.slim_runs`); draws curves, per-class IU bars and the confusion matrix; with
--release writes the fp16 safetensors + model card from checkpoints/last.pt and overlays of
the first val images. Then regenerates docs/RELEASED.md from every published run, and the
fine-tune recipes' seed tables (:mod:`lab.tools.recipe_table`).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
from pathlib import Path

import numpy as np

from lab.tools.slim_runs import (
    log_segments,
    log_wall_seconds,
    parse_settings,
    read_log,
    release_eval_entry,
    slim_run,
)

REPO = Path(__file__).resolve().parents[2]  # the checkout: lab/tools/ is two below it
RELEASES = REPO / "lab" / "runs" / "releases"


def _cpu_kind() -> str:
    from parsenet.engine.precision import cpu_bf16_units, cpu_has_native_bf16

    name = platform.processor() or "cpu"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            name = line.split(":", 1)[1].strip()
            break
    if not cpu_has_native_bf16():
        return f"{name}, no native bf16"
    # The two native-bf16 kinds differ about 2x in bf16 speed: say which one trained, named
    # as the run log names it (the library's AMX check, which auto's runtime table uses too).
    return f"{name}, {cpu_bf16_units()}"


def _plots(out: Path, metrics: dict, classes: list[str], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    iou = np.array([np.nan if v is None else v for v in metrics["per_class_iou"]]) * 100
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(classes)), 4))
    ax.bar(range(len(classes)), np.nan_to_num(iou), color="tab:blue")
    ax.set_xticks(range(len(classes)), classes, rotation=70, fontsize=8)
    ax.set_ylabel("IU (%)")
    ax.set_title(f"{title}: per-class IU on val (mean {100 * metrics['mean_iou']:.1f})")
    fig.tight_layout()
    fig.savefig(out / "per_class_iou.png", dpi=100)
    plt.close(fig)
    conf = np.asarray(metrics["confusion"], dtype=float)
    rows = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(0.3 * len(classes) + 3, 0.3 * len(classes) + 2.5))
    im = ax.imshow(rows, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=90, fontsize=7)
    ax.set_yticks(range(len(classes)), classes, fontsize=7)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (rows sum to 1)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    ax.set_title(f"{title}: confusion on val")
    fig.tight_layout()
    fig.savefig(out / "confusion.png", dpi=100)
    plt.close(fig)


def publish(run: Path, dataset: str, command: str, release: str | None, overlays: int,
            commit: str | None = None, note: str = "",
            release_eval: dict | None = None) -> Path:
    from parsenet.viz import plot_curves

    out = RELEASES / run.name
    out.mkdir(parents=True, exist_ok=True)
    for name in ("log.jsonl", "config.yaml", "metrics.json"):
        shutil.copy(run / name, out / name)
    result = json.loads((run / "metrics.json").read_text())
    metrics = result["metrics"]
    from parsenet.engine.checkpoint import load_checkpoint

    # A head trained on cached features (parsenet train-head) keeps the whole model in
    # model.pt; its last.pt holds the head alone.
    head_only = (run / "checkpoints" / "model.pt").is_file()
    weights = run / "checkpoints" / ("model.pt" if head_only else "last.pt")
    state = load_checkpoint(weights)
    log = read_log(run / "log.jsonl") or []
    classes = list(state["classes"])
    plot_curves(run / "log.jsonl", out / "curves.png", title=run.name)
    _plots(out, metrics, classes, run.name)
    commit = commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                      capture_output=True, text=True).stdout.strip()
    card = {"dataset": dataset, "run": run.name, "release": release, "command": command,
            "commit": commit,
            "cpu": _cpu_kind(), "precision": result["amp"],
            "wall_time_min": round(log_wall_seconds(log) / 60, 1),
            "segments": len(log_segments(log)), "head_only": head_only, "note": note,
            "train_images_per_s": result["images_per_s"],
            "variant": _variant(state["config"]["model"]["args"]),
            "val_metrics": {k: metrics[k] for k in ("pixel_acc", "mean_acc", "mean_iou",
                                                    "fw_iou", "per_class_iou")},
            "val_split": "see config.data (val)"}
    (out / "card.json").write_text(json.dumps(card, indent=1) + "\n")
    (out / "README.md").write_text(_card_markdown(card, classes, state.get("palette"),
                                                  state["config"], release))
    slim_run(out, name=run.name)
    if release:
        from parsenet.engine.release import write_release

        write_release(weights, REPO / "src" / "parsenet" / "released",
                      release, card, eval_overrides=release_eval)
        if release_eval:
            _record_release_eval(out, release, release_eval)
        if overlays:
            _overlays(release, out, overlays)
    return out


def _record_release_eval(out: Path, release: str, overrides: dict) -> None:
    """Score the released (fp16) model with its default evaluation on the val split, through
    the user's command, and add the figures to the run's results.json and card."""
    import sys

    from parsenet.config import config_from_dict
    from parsenet.models.released import Release

    # A fresh process: this one's released-model registry predates the files just written.
    figures = out / "release_eval.json"
    subprocess.run([str(Path(sys.executable).with_name("parsenet")), "eval", "--model", release,
                    "--split", "val", "--no-progress", "--out", str(figures), "--overwrite"],
                   check=True, cwd=REPO)
    metrics = json.loads(figures.read_text())["metrics"]
    figures.unlink()
    record_path = out / "results.json"
    record = json.loads(record_path.read_text())
    record["release_eval"] = release_eval_entry(metrics, overrides, "released fp16")
    record_path.write_text(json.dumps(record, indent=1) + "\n")
    entry = Release.from_card(release)
    mode = config_from_dict(entry.meta["config"], "card").eval
    with (out / "README.md").open("a") as card:
        card.write(f"\nThe release's default evaluation (`parsenet eval --model {release}`): "
                   f"mode {mode.mode}, scales {list(mode.scales)}, flip {mode.flip}, with the "
                   f"released fp16 weights: val pixel acc {100 * metrics['pixel_acc']:.1f}, "
                   f"mean acc {100 * metrics['mean_acc']:.1f}, mean IU "
                   f"{100 * metrics['mean_iou']:.1f}, f.w. IU {100 * metrics['fw_iou']:.1f}.\n")


def _card_markdown(card: dict, classes: list[str], palette: list | None, config: dict,
                   release: str | None) -> str:
    m = card["val_metrics"]
    lines = [f"# Model card: {card['run']}", "",
             f"- dataset: {card['dataset']} ({len(classes)} classes), val split as in "
             "results.json's config (data.val_split, data.holdout_every)",
             f"- model: {config['model']['name']} {json.dumps(config['model']['args'])}",
             f"- released as: `--model {release}`" if release else "- not released",
             f"- trained by: `{card['command']}` at commit {card['commit']}",
             f"- CPU: {card['cpu']}; precision {card['precision']}; wall time "
             f"{card['wall_time_min']} min (training + final validation) on a machine shared "
             "with other jobs" + (
                 "; the head alone, on the frozen trunk's cached features: the cache (the "
                 "trunk over the train and val images, fp32) is built once per trunk and "
                 "resolution, shared by the runs on them, and not in this time"
                 if card.get("head_only") else ""),
             *([f"- note: {card['note']}"] if card.get("note") else []),
             f"- val: pixel acc {100 * m['pixel_acc']:.1f}, mean acc {100 * m['mean_acc']:.1f}, "
             f"mean IU {100 * m['mean_iou']:.1f}, f.w. IU {100 * m['fw_iou']:.1f} "
             "(mean over classes present in val)", "",
             "| class | palette | val IU |", "| --- | --- | --- |"]
    for k, name in enumerate(classes):
        iou = m["per_class_iou"][k]
        color = palette[k] if palette else ""
        lines.append(f"| {name} | {color} | {'-' if iou is None else f'{100 * iou:.1f}'} |")
    lines += ["", "![curves](curves.png)", "![per-class IU](per_class_iou.png)",
              "![confusion](confusion.png)", ""]
    return "\n".join(lines)


def _overlays(release: str, out: Path, n: int) -> None:
    from parsenet.apps.tasks import predict_images
    from parsenet.config import config_from_dict
    from parsenet.models.released import Release
    from parsenet.recipe import dataset_from_config

    # Read from the files just written: the ReleasedWeights enum holds the cards as they
    # were when this process imported it.
    entry = Release.from_card(release)
    cfg = config_from_dict(entry.meta["config"], "card")
    val = dataset_from_config(cfg.data, "val")
    files = list(val._image_paths[:n])  # the first val images, in sorted-id order
    if files:
        predict_images(entry, files, out / "overlays", backend="eager",
                       progress=False, overwrite=True)  # a republish redraws its own
        for p in (out / "overlays").glob("*.png"):
            p.unlink()  # keep the side-by-side JPEGs only


def _variant(args: dict) -> str:
    variant = "parsenet" if args.get("context", True) else "baseline"
    return variant + (", multi-tap" if len(args.get("features", [])) > 1 else "")


def _backbone(config: dict) -> str:
    """The network a published run trained, from its config."""
    model = config["model"]
    args = model.get("args", {})
    if model["name"] == "parsenet_vgg16":
        return f"VGG-16 {args.get('base', '')} ({args.get('weights') or 'from scratch'})"
    lite = model["name"].removeprefix("parsenet_efficientnet_")
    return f"EfficientNet-{lite.title()}" if lite != model["name"] else model["name"]


def write_index(releases: Path = RELEASES, docs: Path = REPO / "docs") -> Path:
    """docs/RELEASED.md (and its block in docs/RESULTS.md) from every published run's
    results.json."""
    lines = ["# Released and CPU-trained ParseNets", "",
             "Regenerated by `python -m lab.tools.publish_run` from "
             "lab/runs/releases/*/results.json; figures are",
             "the trainer's final validation on each recipe's val split (whole images); the",
             "last column, the released fp16 model with its default evaluation where that is",
             "not whole images (its card says which).", "",
             "| run | released as | dataset | network | variant | pixel acc | mean acc | mean IU |"
             " f.w. IU | wall min | precision | CPU | default eval: pixel acc / mean IU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for record in sorted(releases.glob("*/results.json")):
        c = json.loads(record.read_text())
        m = c["metrics"]
        release = f"`--model {c['release']}`" if c.get("release") else "-"
        lines.append(f"| {c['run']} | {release} | {c['dataset']} | "
                     f"{_backbone(c['config'])} | {c['variant']} | "
                     f"{100 * m['pixel_acc']:.1f} | {100 * m['mean_acc']:.1f} | "
                     f"{100 * m['mean_iou']:.1f} | {100 * m['fw_iou']:.1f} | "
                     f"{c['wall_time_min']} | {c['precision']} | {c['cpu']} | "
                     f"{_release_eval_cell(c)} |")
    lines += ["", "Training commands: each lab/runs/releases/<run>/README.md (model card). Check a",
              "released model on any folder-layout dataset with the same classes:", "",
              "    parsenet eval --model NAME --data-root DIR --split SPLIT",
              "    parsenet predict photo.jpg --model siftflow --out predictions/", "",
              "The runs that chose the recipes and were not released: their figures are in",
              "RESULTS.md (Exploration runs)."]
    path = docs / "RELEASED.md"
    path.write_text("\n".join(lines) + "\n")
    _write_results_block(docs / "RESULTS.md", lines[4:])
    return path


def _release_eval_cell(record: dict) -> str:
    release_eval = record.get("release_eval")
    if not release_eval:
        return "-"
    m = release_eval["metrics"]
    return f"{100 * m['pixel_acc']:.1f} / {100 * m['mean_iou']:.1f}"


BLOCK = ("<!-- released:begin -->", "<!-- released:end -->")


def _write_results_block(results: Path, table: list[str]) -> None:
    """The released runs' table, also between the markers in docs/RESULTS.md."""
    text = results.read_text()
    if BLOCK[0] not in text:
        return
    head, rest = text.split(BLOCK[0], 1)
    tail = rest.split(BLOCK[1], 1)[1]
    body = ["Written by `python -m lab.tools.publish_run` from lab/runs/releases/*/results.json",
            "(the same table as [RELEASED.md](RELEASED.md)); each run's card has its command.",
            "",
            *table[1:]]
    results.write_text(head + BLOCK[0] + "\n" + "\n".join(body) + "\n" + BLOCK[1] + tail)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", type=Path, nargs="?")
    ap.add_argument("--dataset", default="")
    ap.add_argument("--command", default="")
    ap.add_argument("--release", default=None)
    ap.add_argument("--overlays", type=int, default=3)
    ap.add_argument("--commit", default=None,
                    help="the commit the run trained at (default: HEAD now)")
    ap.add_argument("--note", default="", help="a line for the card (the run's conditions)")
    ap.add_argument("--release-eval", action="append", default=[], metavar="KEY=VALUE",
                    help="the release's default eval, e.g. mode=multiscale, flip=true, "
                    "scales=[0.75,1.0,1.25] (repeatable; YAML values)")
    args = ap.parse_args()
    if args.run is not None:
        overrides = parse_settings(args.release_eval)
        print(publish(args.run, args.dataset, args.command, args.release, args.overlays,
                      args.commit, args.note, overrides or None))
    print(write_index())
    # A republished card is written afresh: its line to the recipe seed table comes back here.
    from lab.tools.recipe_table import write_all

    for path in write_all():
        print(path)


if __name__ == "__main__":
    main()
