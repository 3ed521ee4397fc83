"""Give a released model another default evaluation, chosen on val, and score it.

    python -m lab.tools.set_release_eval siftflow --set flip=true --set "scales=[1.5,2.0,2.5]"

The release's card (src/parsenet/released/<name>.json) gets the settings in its config's
``eval`` (checked like a config), which ``parsenet eval --model``, ``predict`` and ``serve``
then use; its weights are not touched. The released model is then scored with the new
default on the val split through the user's command (``parsenet eval --model NAME``, a fresh
process), and the figures go into the published run's results.json and card
(lab/runs/releases/<run>/, found by its ``release``), then into docs/RELEASED.md and the
recipe tables, as :mod:`lab.tools.publish_run` does for a new release.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from lab.tools.publish_run import RELEASES, REPO, _record_release_eval, write_index
from lab.tools.slim_runs import parse_settings

RELEASED = REPO / "src" / "parsenet" / "released"


def published_run(release: str, releases: Path = RELEASES) -> Path:
    """The folder of the published run released as ``release``."""
    found = [p.parent for p in sorted(releases.glob("*/results.json"))
             if json.loads(p.read_text()).get("release") == release]
    if len(found) != 1:
        raise SystemExit(f"{release}: {len(found)} published runs are released under this "
                         f"name in {releases} (expected one)")
    return found[0]


def set_default_eval(release: str, overrides: dict[str, Any],
                     released: Path = RELEASED) -> dict[str, Any]:
    """Write ``overrides`` into the release card's config ``eval``; returns the new eval."""
    from parsenet.engine.release import with_eval_overrides

    card_path = released / f"{release}.json"
    if not card_path.is_file():
        raise SystemExit(f"{card_path}: no such released model")
    card = json.loads(card_path.read_text())
    card["config"] = with_eval_overrides(card["config"], overrides, release)
    card_path.write_text(json.dumps(card, indent=1) + "\n")
    return card["config"]["eval"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("release")
    ap.add_argument("--set", dest="settings", action="append", required=True,
                    metavar="KEY=VALUE", help="an eval setting, e.g. flip=true or "
                    "scales=[1.5,2.0,2.5] (repeatable; YAML values)")
    args = ap.parse_args(argv)
    overrides = parse_settings(args.settings)
    run = published_run(args.release)
    print(f"{args.release}: default eval now {set_default_eval(args.release, overrides)}")
    _record_release_eval(run, args.release, overrides)
    print(write_index())
    from lab.tools.recipe_table import write_all

    for path in write_all():
        print(path)


if __name__ == "__main__":
    main()
