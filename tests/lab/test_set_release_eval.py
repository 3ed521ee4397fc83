"""lab.tools.set_release_eval: the release card's default eval changes, checked like a
config, and the published run is found by its release name."""

import json

import pytest

from lab.tools.set_release_eval import published_run, set_default_eval
from parsenet.config import Config, config_to_dict


def _card(tmp_path):
    config = config_to_dict(Config())
    (tmp_path / "toy.json").write_text(json.dumps({"name": "toy", "config": config}))
    return tmp_path / "toy.json"


def test_the_card_gets_the_new_default_eval_and_keeps_the_rest(tmp_path):
    path = _card(tmp_path)
    before = json.loads(path.read_text())
    new = set_default_eval("toy", {"flip": True, "scales": [1.5, 2.0]}, released=tmp_path)
    after = json.loads(path.read_text())
    assert (new["flip"], new["scales"]) == (True, [1.5, 2.0]) and after["config"]["eval"] == new
    assert after["config"]["model"] == before["config"]["model"] and after["name"] == "toy"


def test_a_setting_the_config_refuses_leaves_the_card_as_it_was(tmp_path):
    path = _card(tmp_path)
    before = path.read_text()
    with pytest.raises(Exception, match="flipp"):
        set_default_eval("toy", {"flipp": True}, released=tmp_path)
    assert path.read_text() == before


def test_the_run_is_found_by_its_release_name_and_only_one_may_match(tmp_path):
    for run, release in (("a", "siftflow"), ("b", None), ("c", "camvid"), ("d", "camvid")):
        (tmp_path / run).mkdir()
        (tmp_path / run / "results.json").write_text(json.dumps({"release": release}))
    assert published_run("siftflow", tmp_path) == tmp_path / "a"
    with pytest.raises(SystemExit, match="2 published runs"):
        published_run("camvid", tmp_path)
    with pytest.raises(SystemExit, match="0 published runs"):
        published_run("stanford", tmp_path)
