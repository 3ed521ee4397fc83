"""The demo's two runs, named once: ``parsenet demo`` trains them and ``parsenet serve --model
demo`` serves them, without serve importing the demo (its trainer and plotting)."""

__all__ = ["DEMO_RUNS", "RUN_TITLES"]

DEMO_RUNS = ("baseline", "parsenet")  # run folders under the demo's out_dir, in table order
RUN_TITLES = {"baseline": "baseline", "parsenet": "ParseNet"}
