"""Range parsing and the ShapePlan's JSON form."""
import pytest

from dynashape.errors import ShapeError
from dynashape.planning.shapes import Range, ShapePlan, parse_range


@pytest.mark.parametrize("text,expected", [
    ("1:1024", Range(1, 1024)),
    ("2:1024:128", Range(2, 1024, 128)),
    ("8", Range(8, 8)),
    (" 3 : 9 ", Range(3, 9)),
])
def test_parse_range_accepts(text, expected):
    assert parse_range(text, "seq") == expected


@pytest.mark.parametrize("text,fragment", [
    ("", "is not a range"),
    ("1:2:3:4", "is not a range"),
    ("1:", "is not a range"),
    ("a:10", "'a' is not a whole number"),
    ("1.5:10", "is not a whole number"),
    ("0:10", "at least 1"),
    ("-1:10", "at least 1"),
    ("10:5", "min > max"),
    ("1:10:20", "OPT 20 is outside"),
])
def test_parse_range_refuses_with_a_fix(text, fragment):
    with pytest.raises(ShapeError) as info:
        parse_range(text, "seq")
    line = info.value.one_line()
    assert fragment in line
    assert "Fix:" in line and "\n" not in line


def test_range_queries():
    r = Range(2, 10, 4)
    assert 2 in r and 10 in r and 1 not in r and 11 not in r
    assert not r.static and Range(3, 3).static
    assert r.text() == "2:10:4" and Range(3, 3).text() == "3"


def test_plan_json_round_trip(tiny):
    from conftest import make_plan_for

    plan = make_plan_for(tiny, "1:256", "1:4")
    again = ShapePlan.from_json(plan.to_json())
    assert again.to_json() == plan.to_json()
    assert again.graph_size("seq", 1) == 2 and again.graph_size("seq", 7) == 7


def test_plan_from_other_format_is_refused(tiny):
    from conftest import make_plan_for

    data = make_plan_for(tiny, "1:256").to_json()
    data["format"] = 99
    with pytest.raises(ShapeError, match="format"):
        ShapePlan.from_json(data)
