"""Ratio benchmarks of parsenet: ``python -m benchmarks [--quick] [--out FILE.json]``.

Every figure that matters is a ratio of two things timed in the same process, interleaved
round by round (A B C, B C A, ...) and summarised as the median of the per-round ratios:
the machine is shared and noisy, so absolute times are context only. Sections that need a
module that is not importable report ``skipped: <reason>`` instead of a number.
"""
