"""``python -m lab.study``: ``parsenet study --spec configs/cpu/study.yaml`` (the same
options), and ``--write-md [PATH]`` to regenerate docs/RESULTS.md's generated sections from
the finished runs afterwards."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from lab.study.results_md import write_results_md
from lab.study.spec import EVIDENCE, SPEC_FILE
from parsenet.cli import main as parsenet_main
from parsenet.errors import ParseNetError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.study", epilog="Every other option is parsenet study's "
        "(parsenet study --help); the tables are configs/cpu/study.yaml's.")
    parser.add_argument("--write-md", nargs="?", const="docs/RESULTS.md", default=None,
                        metavar="PATH", help="then rewrite the generated sections of PATH "
                        "(default docs/RESULTS.md) from <out-root>/<table>/results.json")
    parser.add_argument("--out-root", default=str(EVIDENCE))
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    if not rest and args.write_md is None:
        parser.error("give --table KEY (and parsenet study's options), --list, or --write-md")
    if rest:
        # Relative from the repo root, so results.json names no machine's folders.
        spec = os.path.relpath(SPEC_FILE)
        source = [] if "--paper" in rest or "--list" in rest else ["--spec", spec]
        code = parsenet_main(["study", *source, "--out-root", args.out_root, *rest])
        if code:
            return code
    if args.write_md is not None:
        try:
            written = write_results_md(args.write_md, args.out_root)
        except (ParseNetError, OSError) as e:
            print(f"lab.study: error: {e}", file=sys.stderr)
            return 2
        print(f"{args.write_md}: rewrote study section(s) {', '.join(written) or 'none'} "
              f"from {args.out_root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
