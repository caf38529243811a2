"""Tests of the teaching kit (book/_ext/teaching_kit.py): chapter notebooks and the course page.

The fast checks convert the real chapters (no execution); the `book`-marked check executes the
primer's instructor notebook end to end with nbclient on the cached models.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "book" / "_ext"))
import teaching_kit as kit  # noqa: E402

# the real data root and artifact cache, before conftest isolates every test from them
REAL_ENVIRONMENT = {name: os.environ.get(name) for name in ("BACKDOORLAB_DATA", "BACKDOORLAB_CACHE")}

CHAPTER = textwrap.dedent('''\
    ---
    jupytext:
      text_representation:
        extension: .md
        format_name: myst
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---

    # A chapter

    **Learning goals.** After this chapter you can

    - add two numbers;
    - multiply
      two numbers.

    ## Setting

    Some text.

    ## Implementation

    ### Code

    ```{code-cell} ipython3
    x = 1 + 1
    ```

    ## Exercises

    :::{exercise} Add
    :label: ex-add

    Add 2 and 3.
    :::

    :::{solution} ex-add
    :class: dropdown

    SECRET-ONE: the sum is 5.
    :::

    ::::{exercise} Train
    :label: ex-train

    Train a model.
    ::::

    ::::{solution} ex-train
    :class: dropdown

    ```python
    # a comment line is not a heading
    SECRET_TWO = fit(model)
    ```
    ::::

    ```{solution-start} ex-train
    ```
    SECRET-THREE gated.
    ```{solution-end}
    ```

    ```{code-cell} ipython3
    :tags: [exercise]

    # Compute the product of 6 and 7.
    SECRET_FOUR = 6 * 7
    ```

    ```{code-cell} ipython3
    # measured for a solution
    SECRET_FIVE = 42
    ```
    ''')


@pytest.fixture()
def book(tmp_path) -> Path:
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "chapter.md").write_text(CHAPTER)
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nparts:\n  - caption: A\n    chapters:\n"
        "      - file: book/chapter\n      - file: book/course\n")
    (tmp_path / "book" / "course.md").write_text(CHAPTER)  # the course page is never a chapter
    return tmp_path


def test_strip_solutions_removes_every_solution_form_and_keeps_the_rest():
    text = kit.strip_solutions(CHAPTER)
    for secret in ("SECRET-ONE", "SECRET_TWO", "SECRET-THREE", "{solution", ":class: dropdown"):
        assert secret not in text
    for kept in ("Add 2 and 3.", "Train a model.", "{exercise} Train", "SECRET_FOUR", "## Implementation"):
        assert kept in text


def test_strip_solutions_rejects_an_unclosed_gated_solution():
    with pytest.raises(ValueError, match="never closed"):
        kit.strip_solutions("```{solution-start} ex-a\n```\ntext\n")


def test_student_notebook_stubs_exercises_and_drops_solution_code(book):
    instructor = kit.instructor_notebook(book / "book" / "chapter.md")
    student = kit.student_notebook(instructor)
    nbformat.validate(student)
    source = "\n".join(cell.source for cell in student.cells)
    assert "SECRET" not in source
    exercise = [cell for cell in student.cells if "exercise" in cell.metadata.get("tags", [])]
    assert [cell.source for cell in exercise] == [f"# Compute the product of 6 and 7.\n{kit.STUB}"]
    assert "x = 1 + 1" in source  # code before the exercises is kept
    # the instructor notebook is unchanged and keeps everything, without outputs
    text = "\n".join(cell.source for cell in instructor.cells)
    for secret in ("SECRET-ONE", "SECRET_TWO", "SECRET-THREE", "SECRET_FOUR", "SECRET_FIVE"):
        assert secret in text
    assert all(cell.outputs == [] for cell in instructor.cells if cell.cell_type == "code")
    assert "jupytext" not in instructor.metadata and instructor.metadata.kernelspec.name == "python3"


def test_write_notebooks_writes_both_versions_of_chapters_only(book):
    written = kit.write_notebooks(book, book / "out")
    assert sorted(p.relative_to(book / "out").as_posix() for p in written) == [
        "instructor/chapter.ipynb", "student/chapter.ipynb"]
    for path in written:
        nbformat.validate(nbformat.read(path, as_version=4))


def test_read_chapter_gathers_goals_sections_and_exercises(book):
    chapter = kit.read_chapter(book / "book" / "chapter.md")
    assert chapter.title == "A chapter"
    assert chapter.goals == ("add two numbers;", "multiply two numbers.")
    assert chapter.sections == (("Setting", ()), ("Implementation", ("Code",)), ("Exercises", ()))
    assert [(e.label, e.title, e.effort) for e in chapter.exercises] == [("ex-add", "Add", 1), ("ex-train", "Train", 3)]


def test_course_weeks_split_chapters_and_give_unplanned_chapters_a_week(book):
    chapter = kit.read_chapter(book / "book" / "chapter.md")
    other = kit.Chapter("other", "Other", (), (("Implementation", ()), ("Exercises", ())), ())
    weeks = kit.course_weeks([chapter, other], [("T", "chapter", "theory"), ("P", "chapter", "practice"),
                                                ("Project", None, "project")])
    assert [w.title for w in weeks] == ["T", "P", "Other", "Project"]
    assert [[s[1] for s in w.sections] for w in weeks] == [["Setting"], ["Implementation"], ["Implementation"], []]
    assert "1. **T.** {doc}`A chapter <chapter>`: Setting." in kit.outline_markdown(weeks, [chapter, other])
    with pytest.raises(ValueError, match="plan"):
        kit.course_weeks([chapter], [("X", "missing", "theory")])
    with pytest.raises(ValueError, match="part"):
        kit.lecture_sections(chapter, "lab")


def test_every_chapter_of_the_book_converts_and_its_student_notebook_has_no_solution(tmp_path):
    written = kit.write_notebooks(ROOT, tmp_path)
    chapters = kit.chapter_documents(ROOT)
    assert len(chapters) >= 5 and "book/backdoors" in chapters and kit.COURSE_PAGE not in chapters
    assert len(written) == 2 * len(chapters)
    for name in chapters:
        student = nbformat.read(tmp_path / "student" / f"{Path(name).name}.ipynb", as_version=4)
        nbformat.validate(student)
        text = "\n".join(cell.source for cell in student.cells)
        assert "{solution" not in text, name
        solutions = kit.solution_texts((ROOT / f"{name}.md").read_text())
        assert solutions, f"{name} has no solutions to remove"
        source = (ROOT / f"{name}.md").read_text()
        inside = {index for token in kit._PARSER.parse(source) if token.info.startswith("{solution}")
                  for index in range(*token.map)}
        outside = {line.strip() for index, line in enumerate(source.splitlines()) if index not in inside}
        # lines of a solution that occur nowhere else in the chapter
        lines = [line.strip() for solution in solutions for line in solution.splitlines()
                 if len(line.strip()) > 40 and line.strip() not in outside]
        assert lines, f"{name}: its solutions have no lines to look for"
        student_lines = {line.strip() for line in text.splitlines()}
        left = [line for line in lines if line in student_lines]
        assert not left, f"{name}: solution lines left in the student notebook: {left[:3]}"
        exercises = kit.read_chapter(ROOT / f"{name}.md").exercises
        assert all(f":label: {e.label}" in text for e in exercises)


@pytest.mark.book
def test_primer_instructor_notebook_executes_end_to_end(monkeypatch):
    """The kernel runs with the real data root and artifact cache (the cached models)."""
    from nbclient import NotebookClient

    for name, value in REAL_ENVIRONMENT.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    notebook = kit.instructor_notebook(ROOT / "book" / "backdoors.md")
    client = NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT / "book")}})
    client.execute()
    errors = [output for cell in notebook.cells if cell.cell_type == "code"
              for output in cell.outputs if output.output_type == "error"]
    assert not errors
    assert sum(1 for cell in notebook.cells if cell.cell_type == "code" and cell.execution_count) >= 5
