"""The paper's figures (every cell of Tables 1-8) and the configs that reproduce its rows.

The figures ship with the package (``paper_figures.yaml`` beside this module), and so do the
configs (``parsenet/configs/paper``, which a source checkout shows as ``configs/paper``), so
`parsenet study --paper` runs wherever the package is installed. A row's id is the stem of
its config, ``configs/paper/<id>.yaml``; rows other papers reported (``reported_by``) have
none.

    figures = load_paper_figures()
    figures.rows["table3_siftflow_fc7"].figures["mean_iou"]   # 35.4
    print(format_paper_list(figures))                         # `parsenet study --list`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from parsenet.errors import ConfigError

__all__ = ["PaperRow", "PaperTable", "PaperFigures", "load_paper_figures", "format_figures",
           "format_paper_list", "PAPER_CONFIG_DIR", "METRIC_NAMES", "config_file"]

# How the paper's configs are named in the docs and commands; the files ship in the package.
PAPER_CONFIG_DIR = "configs/paper"
FIGURES_FILE = "paper_figures.yaml"
METRIC_NAMES = {"pixel_acc": "pixel acc", "mean_acc": "mean acc", "mean_iou": "mean IU",
                "fw_iou": "f.w. IU"}


@dataclass(frozen=True)
class PaperRow:
    id: str
    table: str
    label: str
    figures: dict[str, float | None]  # None: the paper's own "-"
    reported_by: str | None = None  # another paper's figure, quoted by ParseNet
    same_as: str | None = None  # a row the paper prints twice (same model)

    @property
    def config(self) -> str | None:
        """The config that reproduces the row (``configs/paper/<id>.yaml``, see
        :func:`config_file`), or None for reported rows."""
        return None if self.reported_by else f"{PAPER_CONFIG_DIR}/{self.id}.yaml"


@dataclass(frozen=True)
class PaperTable:
    key: str
    title: str
    dataset: str
    columns: tuple[str, ...]
    rows: tuple[PaperRow, ...] = field(default=())


@dataclass(frozen=True)
class PaperFigures:
    tables: dict[str, PaperTable]
    rows: dict[str, PaperRow]


def config_file(name: str | Path) -> Path:
    """The file a config name stands for: ``configs/paper/...`` is the copy shipped with the
    package (the same files a source checkout links there); any other name is a path."""
    parts = Path(name).parts
    if parts[:2] == tuple(PAPER_CONFIG_DIR.split("/")) and not Path(name).is_absolute():
        return Path(str(resources.files("parsenet").joinpath(*parts)))
    return Path(name)


def _row(row_id: str, values: dict[str, Any], columns: dict[str, tuple[str, ...]]) -> PaperRow:
    table = str(values["table"])
    if table not in columns:
        raise ConfigError(f"paper figures: row {row_id}: unknown table {table!r}")
    figures = dict(values["figures"])
    if set(figures) != set(columns[table]):
        raise ConfigError(f"paper figures: row {row_id}: columns {sorted(figures)} are not "
                          f"table {table}'s {list(columns[table])}")
    return PaperRow(id=row_id, table=table, label=values["label"], figures=figures,
                    reported_by=values.get("reported_by"), same_as=values.get("same_as"))


def load_paper_figures(path: str | Path | None = None) -> PaperFigures:
    """The figures file (default: the one shipped with the package), checked: every row
    belongs to a known table and fills exactly that table's columns."""
    try:
        if path is None:
            text = resources.files("parsenet.apps.study").joinpath(FIGURES_FILE).read_text()
        else:
            text = Path(path).read_text()
        data = yaml.safe_load(text)
        columns = {str(k): tuple(t["columns"]) for k, t in data["tables"].items()}
        rows = {rid: _row(rid, v, columns) for rid, v in data["rows"].items()}
        tables = {
            k: PaperTable(key=k, title=t["title"], dataset=t["dataset"], columns=columns[k],
                          rows=tuple(r for r in rows.values() if r.table == k))
            for k, t in ((str(k), t) for k, t in data["tables"].items())}
    except (KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise ConfigError(f"paper figures {path or FIGURES_FILE}: malformed "
                          f"({type(e).__name__}: {e})") from None
    unknown = [r.id for r in rows.values() if r.same_as and r.same_as not in rows]
    if unknown:
        raise ConfigError(f"paper figures: same_as names unknown rows in {unknown}")
    return PaperFigures(tables=tables, rows=rows)


def _number(value: float | None) -> str:
    """As printed, up to trailing zeros (59.80 -> 59.8; 37.0 stays 37.0); None: the '-'."""
    if value is None:
        return "-"
    return f"{value:.1f}" if value == round(value, 1) else f"{value:g}"


def format_figures(row: PaperRow, with_names: bool = True) -> str:
    """The row's figures as text, e.g. 'pixel acc 85.1, mean acc 44.1, mean IU 35.4, ...'.
    Table 8's per-class IoUs come as 'mean IU 69.8 (bkg 92.4, aero 84.1, ...)'."""
    if "bkg" in row.figures:  # Table 8: the mean first, the 21 classes after it
        classes = ", ".join(f"{k} {_number(v)}" for k, v in row.figures.items()
                            if k != "mean_iou")
        return f"mean IU {_number(row.figures['mean_iou'])} ({classes})"
    return ", ".join((f"{METRIC_NAMES.get(k, k)} " if with_names else "") + _number(v)
                     for k, v in row.figures.items())


def format_paper_list(figures: PaperFigures | None = None) -> str:
    """Every row of Tables 1-8: the paper's figures and the config that reproduces it."""
    figures = figures or load_paper_figures()
    lines = []
    for table in figures.tables.values():
        lines += ["", f"{table.title} - {table.dataset}"]
        for row in table.rows:
            where = (f"reported by {row.reported_by}, not trained here" if row.reported_by
                     else row.config)
            if row.same_as:
                where += f" (the same model as {row.same_as})"
            lines.append(f"  {row.label}: {format_figures(row)}\n      -> {where}")
    return "\n".join(lines[1:])
