"""The ``.env`` format (``protocol/dotenv.py``) that ``Secret.from_dotenv`` and ``secret create --from-dotenv`` read."""

from __future__ import annotations

import pytest
from remotecell_runtime.protocol.dotenv import DotenvError, find, parse


def test_assignments_quotes_comments_and_variables():
    text = ('# a comment\n\nA=1\nexport B = two words # trailing comment\nC=\'literal ${A} # kept\'\n'
            'D="line one\nline two\\t${A} ${MISSING:-fallback} \\"q\\""\nE=${A}${FROM_ENV}\nF\nG=a#b\n')
    assert parse(text, environ={"FROM_ENV": "env"}) == {
        "A": "1", "B": "two words", "C": "literal ${A} # kept", "D": 'line one\nline two\t1 fallback "q"',
        "E": "1env", "F": "", "G": "a#b"}


@pytest.mark.parametrize(("text", "says"), [
    ("A=1\n2B=3\n", "x.env, line 2: '2B=3' is not KEY=VALUE"),
    ("A='open\n", "x.env, line 1: the value of A has no closing '"),
    ('A="v" junk\n', "x.env, line 1: 'junk' after the quoted value of A"),
    ("just words\n", "x.env, line 1: 'just words' is not KEY=VALUE"),
])
def test_a_bad_line_is_named_by_file_and_number(text, says):
    with pytest.raises(DotenvError) as info:
        parse(text, "x.env", environ={})
    assert says in str(info.value)


def test_find_looks_in_the_folder_and_above(tmp_path):
    (tmp_path / ".env").write_text("A=1\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "main.py").write_text("")
    assert find(deep / "main.py") == tmp_path / ".env" and find(deep) == tmp_path / ".env"
    assert find(deep, "other.env") is None
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        find(tmp_path / "missing")
