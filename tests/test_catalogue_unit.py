"""The catalogue's pure parts (no cluster): the ``--where`` filter language, metadata
checks, gc's retention policy and the schema check of multi-dataset queries.

The filter's expected answers are Python's own evaluation of the same condition on
the same dicts (written out by hand per case), never the module's output."""

import datetime

import pyarrow as pa
import pytest

from skyhook_py.catalogue import metadata as meta
from skyhook_py.catalogue import multi
from skyhook_py.catalogue.where import Filter
from skyhook_py.errors import QueryError
from skyhook_py.storage import versions

DATASETS = {
    "DY18": {"year": 2018, "is_mc": True, "process": "DY", "sqrt_s": 13.0, "runs": [[1, 1]]},
    "DY17": {"year": 2017, "is_mc": True, "process": "DY", "sqrt_s": 13.0},
    "data18": {"year": 2018, "is_mc": False, "runs": [[315252, 315260], [316000, 316000]]},
    "ttbar": {"year": 2015, "is_mc": True, "process": "ttbar", "cross_section_pb": 831.76},
    "bare": {},
}

CASES = [
    ("year == 2018 and is_mc", lambda d: d.get("year") == 2018 and d.get("is_mc") is True),
    ("year >= 2017 and not is_mc", lambda d: d.get("year", -1) >= 2017 and d.get("is_mc") is False),
    ("process in ['DY', 'ttbar']", lambda d: d.get("process") in ("DY", "ttbar")),
    ("process not in ['DY']", lambda d: d.get("process") not in ("DY",)),
    ("cross_section_pb > 100", lambda d: d.get("cross_section_pb", 0) > 100),
    ("315255 in runs", lambda d: any(a <= 315255 <= b for a, b in d.get("runs", []))),
    ("316001 in runs", lambda d: any(a <= 316001 <= b for a, b in d.get("runs", []))),
    ("(year == 2017 or year == 2015) and sqrt_s != 13", lambda d: d.get("year") in (2017, 2015)
     and d.get("sqrt_s") != 13),
    ("not (is_mc)", lambda d: not d.get("is_mc")),
    ("process == null", lambda d: "process" not in d),
    ("name == 'DY17' or version > 3", lambda d: d["name"] == "DY17"),
    ('process == "DY" and year < 2018.5', lambda d: d.get("process") == "DY" and d.get("year", 1e9) < 2018.5),
    ("year > 'x'", lambda d: False),     # different kinds never compare
]


@pytest.mark.parametrize("text,expect", CASES, ids=[c[0] for c in CASES])
def test_filter_agrees_with_python(text, expect):
    f = Filter(text)
    for name, d in DATASETS.items():
        fields = {**d, "name": name, "version": 1}
        assert f.matches(fields) == expect(fields), (text, name)


@pytest.mark.parametrize("text,pos", [
    ("year == ", 8), ("year = 2018", 5), ("(year == 2018", 13), ("year == 2018 is_mc", 13),
    ("year == 2018 and", 16), ("year @ 3", 5), ("", 0), ("process in ['a', ]", 17),
])
def test_filter_errors_name_the_position(text, pos):
    with pytest.raises(QueryError) as e:
        Filter(text)
    assert e.value.position == pos, str(e.value)
    assert "^" in str(e.value)


def test_filter_is_not_python():
    with pytest.raises(QueryError):
        Filter("__import__('os').system('true')")
    with pytest.raises(QueryError):
        Filter("year.__class__ == 1 or [x for x in y]")


def test_metadata_values_and_known_types():
    got = meta.parse_assignments(["year=2018", "is_mc=true", "sqrt_s=13", "process=DYJetsToLL",
                                  "tags=[\"a\", \"b\"]", "cross_section_pb=6077.22", "note=hello world"])
    assert got == {"year": 2018, "is_mc": True, "sqrt_s": 13.0, "process": "DYJetsToLL",
                   "tags": ["a", "b"], "cross_section_pb": 6077.22, "note": "hello world"}
    assert isinstance(got["sqrt_s"], float)
    assert meta.check({"is_mc": "data"}) == {"is_mc": False}
    for bad, word in [({"year": "2018x"}, "year"), ({"year": 2018.5}, "year"), ({"is_mc": 1}, "is_mc"),
                      ({"runs": [[3, 1]]}, "runs"), ({"version": 2}, "reserved"), ({"1x": 1}, "invalid key"),
                      ({"k": {"a": 1}}, "k"), ({"sum_weights": float("nan")}, "sum_weights")]:
        with pytest.raises(meta.MetadataError, match=word):
            meta.check(bad)
    with pytest.raises(meta.MetadataError, match="KEY=VALUE"):
        meta.parse_assignments(["year"])
    assert meta.updated({"a": 1, "b": 2}, {"c": 3}, ["a"]) == {"b": 2, "c": 3}
    with pytest.raises(meta.MetadataError, match="no such key"):
        meta.updated({"a": 1}, None, ["z"])


def test_metadata_files(tmp_path):
    y = tmp_path / "m.yaml"
    y.write_text("year: 2018\nis_mc: true\nprocess: DY\nruns:\n  - [1, 5]\n")
    assert meta.load_file(y) == {"year": 2018, "is_mc": True, "process": "DY", "runs": [[1, 5]]}
    j = tmp_path / "m.json"
    j.write_text('{"year": 2016, "sqrt_s": 13}')
    assert meta.load_file(j) == {"year": 2016, "sqrt_s": 13.0}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- 1\n- 2\n")
    with pytest.raises(meta.MetadataError, match="mapping"):
        meta.load_file(bad)
    with pytest.raises(meta.MetadataError, match="cannot read"):
        meta.load_file(tmp_path / "missing.yaml")


def _t(days_ago: float) -> str:
    t = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc) - datetime.timedelta(days=days_ago)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_retention_policy():
    now = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)
    vs = [(1, _t(30)), (2, _t(20)), (3, _t(10)), (4, _t(1))]
    assert versions.to_collect(vs, keep_versions=1, now=now) == [1, 2, 3]
    assert versions.to_collect(vs, keep_versions=2, now=now) == [1, 2]
    assert versions.to_collect(vs, keep_versions=10, now=now) == []
    # v3 was current until 1 day ago, v2 until 10 days ago, v1 until 20 days ago
    assert versions.to_collect(vs, keep_versions=1, keep_days=5, now=now) == [1, 2]
    assert versions.to_collect(vs, keep_versions=1, keep_days=15, now=now) == [1]
    assert versions.to_collect(vs, keep_versions=1, keep_days=25, now=now) == []
    with pytest.raises(ValueError):
        versions.to_collect(vs, keep_versions=0)


def test_multi_dataset_schemas_must_agree():
    a = pa.schema([("event", pa.uint64()), ("MET_pt", pa.float32())])
    b = pa.schema([("event", pa.uint64()), ("MET_pt", pa.float64())])
    c = pa.schema([("event", pa.uint64())])
    out = multi.check_compatible([("x", a), ("y", a)])
    assert out.names == ["dataset", "event", "MET_pt"]
    assert out.field("dataset").type == pa.dictionary(pa.int32(), pa.string())
    with pytest.raises(QueryError, match="'MET_pt' is double in dataset 'y' but float"):
        multi.check_compatible([("x", a), ("y", b)])
    with pytest.raises(QueryError, match="dataset 'y' has no column 'MET_pt'"):
        multi.check_compatible([("x", a), ("y", c)])
    with pytest.raises(QueryError, match="dataset 'x' answers with column 'MET_pt'"):
        multi.check_compatible([("y", c), ("x", a)])
