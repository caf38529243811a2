"""Teaching kit: notebooks of the chapters, and what the course page reads from them.

Three uses of one module:

- a Sphinx extension (registered in `_config.yml`) that writes, at the end of an HTML build,
  `notebooks/instructor/<chapter>.ipynb` and `notebooks/student/<chapter>.ipynb` into the site
  and puts a line linking both at the top of every chapter page;
- a command line, ``python book/_ext/teaching_kit.py``, run by ``make notebooks``, that writes
  the same notebooks into ``_build/html/notebooks`` without a rebuild;
- functions the course page (``book/course.md``) calls to gather learning goals, sections and
  exercises from the chapters' sources.

A *chapter* is a document of the table of contents whose MyST front matter has a jupytext
header and a kernelspec (the documents the build executes), except the course page itself.
The instructor notebook is the chapter converted by Jupytext, outputs cleared. The student
notebook is the same without the sphinx-exercise solutions (``{solution}`` directives, and
``{solution-start}`` ... ``{solution-end}`` blocks) and with the code of every cell tagged
``exercise`` replaced by a stub; code cells tagged ``solution`` are dropped, and so are the
untagged code cells of the "Exercises" section, where the chapters compute the measured
outcomes that their solutions quote. No chapter needs editing for this.
"""

from __future__ import annotations

import argparse
import dataclasses
import posixpath
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import yaml
from markdown_it import MarkdownIt
from mdit_py_plugins.colon_fence import colon_fence_plugin
from mdit_py_plugins.front_matter import front_matter_plugin
from sphinx.util import logging

COURSE_PAGE = "book/course"
KINDS = ("instructor", "student")
EXERCISE_TAG = "exercise"
SOLUTION_TAG = "solution"
STUB = "# Exercise: write your code here.\n..."

_PARSER = MarkdownIt("commonmark").use(front_matter_plugin).use(colon_fence_plugin)
_DIRECTIVE = re.compile(r"^\{([\w-]+)\}\s*(.*)$")
_OPTION = re.compile(r"^:([\w-]+):\s*(.*)$")


# ---------------------------------------------------------------- conversion to notebooks


def _directive(token) -> tuple[str, str] | None:
    """(name, argument) of a fenced MyST directive token, or None for any other token."""
    if token.type not in ("fence", "colon_fence"):
        return None
    match = _DIRECTIVE.match(token.info.strip())
    return (match.group(1), match.group(2).strip()) if match else None


def strip_solutions(markdown: str) -> str:
    """Remove the sphinx-exercise solutions from MyST markdown.

    Removed: every ``{solution}`` directive with its content (colon or backtick fence), and
    everything from a ``{solution-start}`` directive to its ``{solution-end}``, each with the
    blank line that follows it. Other lines are kept as they are.
    """
    lines = markdown.splitlines(keepends=True)
    drop: set[int] = set()
    gated_start: int | None = None
    for token in _PARSER.parse(markdown):
        directive = _directive(token)
        if directive is None or token.map is None or token.level != 0:
            continue
        name, start, end = directive[0], token.map[0], token.map[1]
        if name == "solution":
            drop.update(range(start, end))
        elif name == "solution-start":
            gated_start = start
        elif name == "solution-end":
            if gated_start is None:
                raise ValueError(f"markdown: a solution-end directive on line {start + 1} has no solution-start")
            drop.update(range(gated_start, end))
            gated_start = None
    if gated_start is not None:
        raise ValueError(f"markdown: the solution-start directive on line {gated_start + 1} is never closed")
    # a blank line that followed a removed block goes with it
    drop.update(index for index in range(1, len(lines))
                if index - 1 in drop and index not in drop and not lines[index].strip())
    return "".join(line for index, line in enumerate(lines) if index not in drop).strip("\n")


def solution_texts(markdown: str) -> list[str]:
    """The content of every ``{solution}`` directive in MyST ``markdown`` (stripped)."""
    return [token.content.strip() for token in _PARSER.parse(markdown)
            if _directive(token) and _directive(token)[0] == "solution" and token.content.strip()]


def instructor_notebook(path: Path) -> nbformat.NotebookNode:
    """The chapter at ``path`` (MyST markdown) as a notebook with every output cleared."""
    notebook = jupytext.read(path, fmt="md:myst")
    notebook.metadata.pop("jupytext", None)  # else Jupytext-enabled servers pair it with a new .md
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return notebook


def student_notebook(instructor: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The student version of an instructor notebook (a new notebook; the input is unchanged).

    Markdown cells lose their solutions (:func:`strip_solutions`) and are dropped if nothing
    is left; code cells tagged ``solution`` are dropped, and so is every untagged code cell
    of the "Exercises" section (the chapters compute there the measured outcomes their
    solutions quote); code cells tagged ``exercise`` keep their leading comment lines (the
    task) and get a stub instead of their code.
    """
    student = nbformat.from_dict(nbformat.v4.new_notebook(metadata=dict(instructor.metadata)))
    in_exercises = False
    for cell in instructor.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        new = nbformat.from_dict(dict(cell))
        new.metadata = dict(cell.metadata)
        if cell.cell_type == "markdown":
            tokens = _PARSER.parse(cell.source)
            for token, inline in zip(tokens, tokens[1:]):
                if token.type == "heading_open" and token.tag in ("h1", "h2"):
                    in_exercises = token.tag == "h2" and inline.content.strip() == "Exercises"
            new.source = strip_solutions(cell.source)
            if not new.source.strip():
                continue
        elif cell.cell_type == "code" and (SOLUTION_TAG in tags or (in_exercises and EXERCISE_TAG not in tags)):
            continue
        elif cell.cell_type == "code" and EXERCISE_TAG in tags:
            comments = []
            for line in cell.source.splitlines():
                if not line.startswith("#"):
                    break
                comments.append(line)
            new.source = "\n".join([*comments, STUB])
        student.cells.append(new)
    return student


def is_chapter(path: Path) -> bool:
    """True if the MyST file at ``path`` is an executable notebook (jupytext and kernelspec)."""
    text = path.read_text(encoding="utf-8")
    if not text.startswith("---"):
        return False
    header = yaml.safe_load(text.split("---", 2)[1]) or {}
    return "kernelspec" in header and header.get("jupytext", {}).get("text_representation", {}).get("format_name") == "myst"


def toc_documents(root: Path) -> list[str]:
    """Every document of ``root/_toc.yml`` in reading order (docnames such as ``book/uap``)."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    names = [toc["root"]]

    def visit(entries):
        for entry in entries or []:
            if "file" in entry:
                names.append(str(Path(entry["file"]).with_suffix("")))
            visit(entry.get("chapters") or entry.get("sections"))

    for part in toc.get("parts", []):
        visit(part.get("chapters"))
    visit(toc.get("chapters"))
    return names


def chapter_documents(root: Path, documents: list[str] | None = None) -> list[str]:
    """The chapters among ``documents`` (default: the table of contents), in order."""
    documents = toc_documents(root) if documents is None else documents
    return [name for name in documents if name != COURSE_PAGE and (root / f"{name}.md").exists()
            and is_chapter(root / f"{name}.md")]


def write_notebooks(root: Path, out: Path, documents: list[str] | None = None) -> list[Path]:
    """Write ``out/{instructor,student}/<stem>.ipynb`` for every chapter; return the paths.

    Every notebook is validated against the nbformat schema before it is written.
    """
    written = []
    for name in chapter_documents(root, documents):
        instructor = instructor_notebook(root / f"{name}.md")
        for kind, notebook in zip(KINDS, (instructor, student_notebook(instructor))):
            nbformat.validate(notebook)
            target = out / kind / f"{Path(name).name}.ipynb"
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(notebook, target)
            written.append(target)
    return written


# ---------------------------------------------------------------- what the course page reads


@dataclasses.dataclass(frozen=True)
class Exercise:
    """One ``{exercise}`` of a chapter: its label, title, and whether its solution has code."""

    chapter: str
    label: str
    title: str
    solution_code: str  # the code blocks of its solution, joined ("" for a derivation)

    @property
    def effort(self) -> int:
        """1: a derivation; 2: code on the chapter's models; 3: code that trains new models."""
        if not self.solution_code:
            return 1
        return 3 if re.search(r"\bfit\(|\brecipes\.\w+\(|\btrain_\w+\(", self.solution_code) else 2


@dataclasses.dataclass(frozen=True)
class Chapter:
    """What the course page needs from one chapter's source."""

    name: str
    title: str
    goals: tuple[str, ...]
    sections: tuple[tuple[str, tuple[str, ...]], ...]  # (level-2 heading, its level-3 headings)
    exercises: tuple[Exercise, ...]

    @property
    def link(self) -> str:
        """A MyST link to the chapter, named by its title up to the first colon."""
        return f"{{doc}}`{self.title.split(':')[0].strip() or self.name} <{self.name}>`"


def _inline_text(token) -> str:
    return token.content.strip() if token is not None else ""


def read_chapter(path: Path, *, name: str | None = None) -> Chapter:
    """Parse a chapter's MyST source: title, learning goals, sections and exercises.

    The learning goals are the bullet list that follows the paragraph starting with
    "**Learning goals.**"; an exercise's kind comes from its ``{solution}`` (does it contain
    a code block?).
    """
    name = name or path.stem
    text = path.read_text(encoding="utf-8")
    tokens = _PARSER.parse(text)
    title, goals, sections = "", [], []
    exercises, solutions = [], {}
    in_goals = False
    for index, token in enumerate(tokens):
        if token.type == "heading_open":
            heading = _inline_text(tokens[index + 1])
            if token.tag == "h1" and not title:
                title = heading
            elif token.tag == "h2":
                sections.append((heading, []))
            elif token.tag == "h3" and sections:
                sections[-1][1].append(heading)
        elif token.type == "inline" and token.level == 1 and token.content.startswith("**Learning goals.**"):
            in_goals = True
        elif in_goals and token.type == "inline" and token.level == 3:
            goals.append(" ".join(token.content.split()))
        elif in_goals and token.type == "bullet_list_close" and token.level == 0:
            in_goals = False
        directive = _directive(token)
        if directive and token.level == 0 and directive[0] == "exercise":
            options = dict(m.groups() for m in map(_OPTION.match, token.content.splitlines()) if m)
            exercises.append((options.get("label", ""), directive[1]))
        elif directive and token.level == 0 and directive[0] == "solution":
            blocks = _PARSER.parse(token.content)
            solutions[directive[1]] = "".join(b.content for b in blocks if b.type == "fence" and b.level == 0)
    return Chapter(
        name=name,
        title=title,
        goals=tuple(goals),
        sections=tuple((heading, tuple(subs)) for heading, subs in sections),
        exercises=tuple(Exercise(name, label, ex_title, solutions.get(label, ""))
                        for label, ex_title in exercises),
    )


def read_chapters(root: Path) -> list[Chapter]:
    """:func:`read_chapter` of every chapter of the table of contents of ``root``, in order."""
    return [read_chapter(root / f"{name}.md", name=Path(name).name) for name in chapter_documents(root)]


# ---------------------------------------------------------------- the course outline

ASIDE = ("Summary", "Exercises")
CLAIMS = "What the paper claims vs what we measured"
EFFORT = {1: "derivation", 2: "computation", 3: "computation that trains models"}


@dataclasses.dataclass(frozen=True)
class Week:
    """One week of the course: a lecture title and the chapter sections it covers."""

    number: int
    title: str
    sections: tuple[tuple[str, str, tuple[str, ...]], ...]  # (chapter name, section, subsections)


def lecture_sections(chapter: Chapter, part: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The level-2 sections of ``chapter`` that a lecture of kind ``part`` covers.

    ``"theory"``: the sections before "Implementation"; ``"practice"``: from "Implementation"
    to the end, summary and exercises left out; ``"claims"``: the section comparing the
    paper's claims with the measurements.
    """
    sections = [section for section in chapter.sections if section[0] not in ASIDE]
    names = [name for name, _ in sections]
    if part == "claims":
        return tuple(section for section in sections if section[0] == CLAIMS)
    if "Implementation" not in names:
        raise ValueError(f"chapter: {chapter.name!r} has no section 'Implementation' to split its lectures at")
    split = names.index("Implementation")
    if part == "theory":
        return tuple(sections[:split])
    if part == "practice":
        return tuple(sections[split:])
    raise ValueError(f"part: expected 'theory', 'practice' or 'claims', got {part!r}")


def course_weeks(chapters: list[Chapter], plan: list[tuple[str, str | None, str]]) -> list[Week]:
    """The weekly outline of ``plan``: entries (title, chapter name or None, part).

    An entry with a chapter covers :func:`lecture_sections` of it; one with ``None`` and part
    ``"claims"`` covers the claims-against-measurements section of every chapter; one with
    ``None`` and any other part covers no section (a project week). A chapter that the plan
    does not name gets one week of its own, before the plan's chapter-free weeks.
    """
    by_name = {chapter.name: chapter for chapter in chapters}
    unknown = sorted({name for _, name, _ in plan if name is not None} - set(by_name))
    if unknown:
        raise ValueError(f"plan: no chapter named {unknown}; chapters are {sorted(by_name)}")
    named = {name for _, name, _ in plan}
    extra = [(chapter.title, chapter.name, "all") for chapter in chapters if chapter.name not in named]
    first_free = next((i for i, (_, name, _) in enumerate(plan) if name is None), len(plan))
    entries = [*plan[:first_free], *extra, *plan[first_free:]]
    weeks = []
    for number, (title, name, part) in enumerate(entries, start=1):
        if name is not None:
            chapter = by_name[name]
            sections = (lecture_sections(chapter, part) if part != "all"
                        else [section for section in chapter.sections if section[0] not in ASIDE])
            covered = [(name, *section) for section in sections]
        elif part == "claims":
            covered = [(chapter.name, *section) for chapter in chapters
                       for section in lecture_sections(chapter, "claims")]
        else:
            covered = []
        weeks.append(Week(number, title, tuple(covered)))
    return weeks


def outline_markdown(weeks: list[Week], chapters: list[Chapter]) -> str:
    """The weekly outline as a MyST list, one item per week, linking the chapters."""
    links = {chapter.name: chapter.link for chapter in chapters}
    items = []
    for week in weeks:
        by_chapter: dict[str, list[str]] = {}
        for chapter, section, subsections in week.sections:
            text = section + (f" ({'; '.join(subsections)})" if subsections else "")
            by_chapter.setdefault(chapter, []).append(text)
        covered = " ".join(f"{links[chapter]}: {'; '.join(parts)}." for chapter, parts in by_chapter.items())
        title = week.title if week.title[-1] in ".?!" else week.title + "."
        items.append(f"{week.number}. **{title}** {covered or 'Project work: the assignments below.'}")
    return "\n".join(items)


def goals_markdown(chapters: list[Chapter]) -> str:
    """Every chapter's learning goals, as gathered from its source, under its name."""
    blocks = []
    for chapter in chapters:
        goals = "\n".join(f"- {goal}" for goal in chapter.goals) or "- (the chapter states no learning goals)"
        blocks.append(f"{chapter.link}: after it, a student can\n\n{goals}")
    return "\n\n".join(blocks)


def assignments_markdown(chapters: list[Chapter]) -> str:
    """A table of every exercise by chapter, ordered by effort within each chapter."""
    rows = ["| chapter | exercise | kind |", "|---|---|---|"]
    for chapter in chapters:
        for exercise in sorted(chapter.exercises, key=lambda e: e.effort):
            title = exercise.title.replace("|", "\\|")
            rows.append(f"| {chapter.link} | {{ref}}`{exercise.label}`: {title} | {EFFORT[exercise.effort]} |")
    return "\n".join(rows)


# ---------------------------------------------------------------- Sphinx extension


def _chapters_of_build(app) -> list[str]:
    root = Path(app.srcdir)
    return chapter_documents(root, sorted(app.env.found_docs))


def _note_chapter_dependencies(app, docname: str, source: list[str]) -> None:
    """The course page reads the chapters' sources: re-read it whenever one of them changes."""
    if docname == COURSE_PAGE:
        for name in _chapters_of_build(app):
            app.env.note_dependency(str(Path(app.srcdir) / f"{name}.md"))


def _add_notebook_links(app, doctree, docname: str) -> None:
    """Insert, under a chapter's title, a line linking its instructor and student notebooks."""
    from docutils import nodes

    source = Path(app.env.doc2path(docname))
    if app.builder.format != "html" or docname == COURSE_PAGE or source.suffix != ".md" or not is_chapter(source):
        return
    here = posixpath.dirname(app.builder.get_target_uri(docname))
    stem = posixpath.basename(docname)
    href = {kind: posixpath.relpath(f"notebooks/{kind}/{stem}.ipynb", here or ".") for kind in KINDS}
    html = (
        '<p class="teaching-kit-notebooks">Run this chapter as a notebook: '
        f'<a class="reference download" href="{href["student"]}" download>student version</a> '
        "(exercises to do, no solutions) or "
        f'<a class="reference download" href="{href["instructor"]}" download>instructor version</a> '
        "(with solutions).</p>"
    )
    for section in doctree.findall(nodes.section):
        title = section.next_node(nodes.title)
        if title is not None:
            title.parent.insert(title.parent.index(title) + 1, nodes.raw("", html, format="html"))
            return


def _write_site_notebooks(app, exception) -> None:
    if exception is None and app.builder.format == "html":
        root = Path(app.srcdir)
        written = write_notebooks(root, Path(app.outdir) / "notebooks", _chapters_of_build(app))
        logging.getLogger(__name__).info(f"teaching kit: wrote {len(written)} notebooks into {Path(app.outdir) / 'notebooks'}")


def setup(app):
    """Register the teaching kit with Sphinx."""
    app.connect("source-read", _note_chapter_dependencies)
    app.connect("doctree-resolved", _add_notebook_links)
    app.connect("build-finished", _write_site_notebooks)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}


# ---------------------------------------------------------------- command line


def main(argv: list[str] | None = None) -> int:
    """Write the notebooks of every chapter of the table of contents into the built site."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    root_default = Path(__file__).resolve().parents[2]
    parser.add_argument("--root", type=Path, default=root_default, help="the book's root (with _toc.yml)")
    parser.add_argument("--out", type=Path, default=None, help="default: <root>/_build/html/notebooks")
    args = parser.parse_args(argv)
    out = args.out or args.root / "_build" / "html" / "notebooks"
    written = write_notebooks(args.root, out)
    print(f"wrote {len(written)} notebooks into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
