"""``remotecell image prune --older-than``: durations as people write them, and a clear error otherwise."""

import pytest
from remotecell._image_cli import duration_s
from remotecell.exceptions import InvalidError


def test_durations_in_each_unit():
    assert [duration_s(t) for t in ("90s", "30m", "12h", "7d", "2w", "0.5d", " 1h ")] == [
        90, 1800, 43200, 604800, 1209600, 43200, 3600]


@pytest.mark.parametrize("text", ["7", "soon", "-1d", "1y", ""])
def test_other_text_is_refused_naming_it(text):
    with pytest.raises(InvalidError, match="give a number and a unit"):
        duration_s(text)
