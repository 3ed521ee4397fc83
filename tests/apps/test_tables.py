"""The one table layout the apps print with."""

from parsenet.apps.tables import format_markdown_table, format_text_table


def test_text_table_aligns_given_and_measured_widths():
    lines = format_text_table(["name", "a", "b"], [["x", "1.5", "10"], ["longer", "-", "2"]],
                              [None, 4, None], rule="columns")
    assert lines == ["name       a   b",
                     "------  ----  --",
                     "x        1.5  10",
                     "longer     -   2"]


def test_a_cell_wider_than_its_column_widens_its_own_line_only():
    lines = format_text_table(["", "m"], [["r", "12345"], ["s", "1"]], [None, 3], rule="line")
    assert lines == ["     m", "------", "r  12345", "s    1"]


def test_no_rule_and_markdown():
    assert format_text_table(["k", "v"], [["a", "1"]], [None, None]) == ["k  v", "a  1"]
    assert format_markdown_table(["a", "b"], [["1", "2"]]) == ["| a | b |", "| --- | --- |",
                                                               "| 1 | 2 |"]
