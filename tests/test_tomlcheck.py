"""The one checker behind target files, recipes, [tune] tables and preprocess.toml."""
import pytest

from edgeprune.errors import UserError
from edgeprune.tomlcheck import check_table, read_toml

SCHEMA = {"name": (str, True, None), "scale": (float, False, None), "mean": (list[float], False, None),
          "mode": (str, False, ("a", "b")), "n": (int | float, False, None),
          "inner": {"flags": (list[str], False, None), "k": (int, True, None)}}


def test_accepts_a_good_table():
    check_table({"name": "x", "scale": 2, "mean": [0, 0.5], "mode": "a", "n": 3.5, "inner": {"k": 1, "flags": []}},
                SCHEMA, "f.toml")


@pytest.mark.parametrize("table, message", [
    ({"scale": 1.0}, "f.toml: missing required key 'name'"),
    ({"name": "x", "inner": {}}, "missing required key 'inner.k'"),
    ({"name": "x", "colour": 1}, "unknown key 'colour'"),
    ({"name": "x", "inner": {"k": 1, "z": 0}}, "unknown key 'inner.z'"),
    ({"name": "x", "scale": True}, "key 'scale' must be of type float, got True"),
    ({"name": "x", "mean": [1, "2"]}, r"key 'mean' must be of type list\[float\]"),
    ({"name": "x", "inner": {"k": 1, "flags": [1]}}, r"'inner.flags' must be of type list\[str\]"),
    ({"name": "x", "inner": 3}, "key 'inner' must be a table"),
    ({"name": "x", "mode": "c"}, "key 'mode' is 'c'; allowed: a, b"),
    ({"name": "x", "n": "3"}, r"key 'n' must be of type int \| float"),
])
def test_one_line_errors_name_the_file_and_key(table, message):
    table.setdefault("inner", {"k": 1})
    with pytest.raises(UserError, match=message):
        check_table(table, SCHEMA, "f.toml")


def test_bad_syntax_names_the_file(tmp_path):
    (tmp_path / "r.toml").write_text("a = = 1\n")
    with pytest.raises(UserError, match=r"r.toml: not valid TOML"):
        read_toml(tmp_path / "r.toml")
