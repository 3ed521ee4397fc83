"""The CPU claims harness: the study's tables at CPU scale (``configs/cpu/study.yaml``), the
claims table and the generated sections of docs/RESULTS.md, claim 2's context-size study,
the ERF and Fig. 2 measurements. Run from the repository root:

    python -m lab.study --table claim-layers            # train what is missing, tabulate
    python -m lab.study --table claim-layers --report   # tabulate the finished runs only
    python -m lab.study --write-md                      # regenerate docs/RESULTS.md
    python -m lab.study.context_study run | report      # claim 2 (context vs image size)
    python -m lab.study.fig2 --out docs/images/fig2_pretrained_vgg.png
"""
