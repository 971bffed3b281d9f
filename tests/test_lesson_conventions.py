"""What every lesson shares: prerequisites and study time at the top, one style of exercise stub,
and the teacher's banner on every solution."""

import json
import re

import pytest

from helpers import ROOT

LESSONS = ROOT / "lessons"
NAMES = sorted(p.name for p in LESSONS.glob("*.ipynb"))


def first_cell(path):
    return "".join(json.loads(path.read_text(encoding="utf-8"))["cells"][0]["source"])


def code_cells(path):
    nb = json.loads(path.read_text(encoding="utf-8"))
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


@pytest.mark.parametrize("name", NAMES)
def test_every_lesson_opens_with_its_prerequisites_and_study_time(name):
    top = first_cell(LESSONS / name)
    assert re.search(r"^\*\*Prerequisites:\*\* \S", top, re.M), name
    assert re.search(r"^\*\*Time:\*\* about \d+ minutes of study; runs in .*2-core CPU", top, re.M), name


@pytest.mark.parametrize("name", NAMES)
def test_every_teacher_copy_carries_the_banner_that_links_the_students_notebook(name):
    top = first_cell(LESSONS / "solutions" / name)
    assert top.rstrip().endswith(f"> **Teacher's copy, with the answers.** The student's notebook is "
                                 f"[`lessons/{name}`](../{name}).")
    assert "Teacher's copy" not in first_cell(LESSONS / name)


@pytest.mark.parametrize("name", NAMES)
def test_every_stub_is_marked_your_code_here_right_above_its_raise(name):
    for source in code_cells(LESSONS / name):
        lines = source.splitlines()
        for i, line in enumerate(lines):
            if line.strip() == "raise NotImplementedError":
                assert i > 0 and re.match(r"\s*# YOUR CODE HERE\b", lines[i - 1]), (name, source[:200])
            else:
                assert "NotImplementedError" not in line, (name, line)
        assert "your code here" not in source, name
