"""The committed lessons: each has a teacher's copy, reads on GitHub, and matches its copy.

nbmake (pytest.ini) executes every notebook; these tests check what is committed: the
outputs of a full run with clean metadata, the student's exercises left open and the
teacher's answered, and the two copies otherwise the same lesson.
"""

import json
import re
from pathlib import Path

import pytest

LESSONS = Path(__file__).resolve().parent.parent / "lessons"
NAMES = sorted(p.name for p in LESSONS.glob("[0-9][0-9]_*.ipynb"))


def test_every_lesson_of_the_course_is_there():
    assert [name[:2] for name in NAMES] == [f"{i:02d}" for i in range(12)]


def load(path):
    return json.loads(path.read_text(encoding="utf-8"))


def text_of(cell):
    out = []
    for o in cell.get("outputs", []):
        out.append("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")))
    return "".join(out)


CHECK_CALL = re.compile(r"^(?:assert )?check_\w+\((\w+)\)\s*$")


def exercise_cells(nb):
    # the cells that end in a checker call on the student's function: check_x(fn)
    return [c for c in nb["cells"] if c["cell_type"] == "code"
            and any(CHECK_CALL.match(line) for line in c["source"])]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("folder", ["", "solutions"])
def test_lesson_is_committed_with_outputs_and_clean_metadata(name, folder):
    nb = load(LESSONS / folder / name)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert set(nb["metadata"]) <= {"kernelspec", "language_info"}
    for cell in nb["cells"]:
        assert not cell.get("metadata"), f"cell metadata left in {folder}/{name}"
        if cell["cell_type"] == "code":
            assert cell["execution_count"] is not None, f"an unexecuted cell in {folder}/{name}"
            assert all(o["output_type"] != "error" for o in cell["outputs"])


# a call that draws: one of the library's plot_* functions, pyplot, imshow, or a shown image
DRAWS = re.compile(r"\bplot_\w+\(|\bplt\.(?:subplots|figure|plot|imshow|show)\(|\.imshow\(|\bImage\(")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("folder", ["", "solutions"])
def test_every_cell_that_draws_is_committed_with_its_picture(name, folder):
    # a bare matplotlib Figure returned by a cell shows as the text "<Figure size ...>"
    missing = [i for i, cell in enumerate(load(LESSONS / folder / name)["cells"])
               if cell["cell_type"] == "code" and DRAWS.search("".join(cell["source"]))
               and not any("image/png" in o.get("data", {}) for o in cell["outputs"])]
    assert not missing, f"{folder}/{name}: cells {missing} draw but hold no image"


@pytest.mark.parametrize("name", NAMES)
def test_student_exercises_are_open_and_teacher_exercises_pass(name):
    student, teacher = load(LESSONS / name), load(LESSONS / "solutions" / name)
    open_cells, answered = exercise_cells(student), exercise_cells(teacher)
    assert open_cells and len(open_cells) == len(answered)
    for cell in open_cells:
        (function,) = {m.group(1) for line in cell["source"] if (m := CHECK_CALL.match(line))}
        stub = [c for c in student["cells"] if f"def {function}(" in "".join(c["source"])]
        assert stub and "raise NotImplementedError" in "".join(stub[-1]["source"]), function
        assert "not done yet" in text_of(cell)
    for cell in answered:
        assert "NotImplementedError" not in "".join(cell["source"])
        out = text_of(cell)
        assert "all ok" in out and "FAIL" not in out


@pytest.mark.parametrize("name", NAMES)
def test_teacher_copy_is_the_same_lesson(name):
    student, teacher = load(LESSONS / name), load(LESSONS / "solutions" / name)
    assert len(student["cells"]) == len(teacher["cells"])
    for s, t in list(zip(student["cells"], teacher["cells"]))[1:]:
        assert s["cell_type"] == t["cell_type"]
        if s["cell_type"] == "markdown":
            assert s["source"] == t["source"]


def test_the_readme_links_every_lesson():
    readme = (LESSONS / "README.md").read_text(encoding="utf-8")
    for name in NAMES:
        assert f"({name})" in readme
