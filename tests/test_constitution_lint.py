"""Issue 12, finding 1: alternatives are what the author wrote.

In YAML a flow list `[a, b]` splits at every comma, so a sentence with a comma became two
OR alternatives in the shipped constitutions. `judge check` now warns (file:line:column)
about flow items that look like pieces of one sentence and about statements that assert
an absence; `judge show` prints each rule as a readable formula; and every statement of
every shipped constitution is a whole line its author wrote.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

import judge.commands.constitution  # noqa: F401  (registers the commands)
from judge.commands.app import app
from judge.constitution import yamlsafe
from judge.constitution.lint import lint_source, split_reason, statement_paths
from judge.prompts import render
from judge.resources import data_dir

runner = CliRunner()

# The lines of moderation.yaml and clue.yaml that were split, as they were written.
SPLIT = """\
name: split
rules:
  - id: blade
    text: No blades.
    preconditions:
      - any_of: [a knife is visible, a machete, sword or other blade is visible]
  - id: injection
    text: No injections.
    preconditions:
      - any_of: [no medical gloves, medical staff or hospital equipment are visible]
  - id: chest
    text: No bare chests.
    preconditions:
      - any_of: [the person's chest is bare, with no clothing on it]
      - [the thighs are spread apart by more than 90 degrees, facing the camera]
  - id: fine
    text: No people or animals.
    preconditions:
      - any_of: [a person is visible, an animal is visible, people are visible]
      - [a red shape, a blue shape]
      - any_of:
          - a knife, a machete or a sword is visible
"""


def _by_position(text: str) -> dict[tuple[int, int], list[str]]:
    found: dict[tuple[int, int], list[str]] = {}
    for warning in lint_source(text, "split.yaml"):
        found.setdefault((warning.line, warning.column), []).append(warning.message)
    return found


def test_flow_items_that_are_pieces_of_one_sentence_are_warned_with_line_and_column():
    found = _by_position(SPLIT)
    # "a machete" is a fragment and "sword or other blade is visible" continues it.
    assert any("'a machete'" in m and "flow list" in m for m in found[(6, 38)])
    assert any("continues" not in m and "fragment" in m for m in found[(6, 49)])
    # "medical staff ..." continues "no medical gloves", which is also an absence.
    assert any("absence" in m and "'no'" in m for m in found[(10, 18)])
    assert any("continues 'no medical gloves'" in m for m in found[(10, 37)])
    # A connecting word, and a participle.
    assert any("begins with 'with'" in m for m in found[(14, 46)])
    assert any("participle 'facing'" in m for m in found[(15, 63)])
    # Every warning says how to fix it.
    assert all("block style" in m or "absence" in m for ms in found.values() for m in ms), found
    # Whole statements in a flow list, and a comma inside a block item, are fine.
    assert not [pos for pos in found if pos[0] >= 19]


@pytest.mark.parametrize(
    ("previous", "item", "split"),
    [
        ("a knife is visible", "a machete", False),  # a fragment, caught on its own
        ("a machete", "sword or other blade is visible", True),
        ("the chest is bare", "with no clothing on it", True),
        ("the legs are apart", "while the person lies down", True),
        ("the legs are apart", "and the person lies down", True),
        ("no medical gloves", "medical staff are visible", True),
        ("a person is visible", "people are visible", False),
        ("a person is visible", "two people are visible", False),
        ("smoke is visible at the bowl", "a flame is held to the bowl", False),
    ],
)
def test_split_reasons(previous: str, item: str, split: bool):
    assert (split_reason(previous, item) is not None) is split


def test_check_prints_the_warnings_and_still_passes_unless_strict(tmp_path: Path):
    source = tmp_path / "split.yaml"
    source.write_text(SPLIT)
    result = runner.invoke(app, ["check", str(source)])
    assert result.exit_code == 0, result.output
    assert f"WARN {source}:6:38: [rule blade] alternative 'a machete'" in result.output
    assert "warning(s)" in result.output
    strict = runner.invoke(app, ["check", "--strict", str(source)])
    assert strict.exit_code != 0 and "under --strict" in str(strict.exception)


def test_show_prints_each_rule_as_a_formula(tmp_path: Path):
    source = tmp_path / "split.yaml"
    source.write_text(SPLIT)
    result = runner.invoke(app, ["show", str(source)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # `show` wraps to the terminal's width
    assert (
        "violated iff ([a knife is visible] OR [a machete] OR [sword or other blade is visible])"
        in said
    )
    shipped = runner.invoke(app, ["show", str(data_dir("constitutions") / "moderation.yaml")])
    assert shipped.exit_code == 0, shipped.output
    assert (
        "violated iff [a syringe is visible] AND [the syringe's needle is inserted into a "
        "person's skin] AND ([a spoon or a lighter is next to the person] OR [a belt or cord "
        "is tied around the person's arm])"
    ) in " ".join(shipped.output.split())


SHIPPED = sorted(
    p for p in data_dir("constitutions").glob("*.yaml")
    if not p.name.endswith((".lock.yaml", ".tests.yaml"))  # locks, `judge test` cases
)


def _whole_line(line: str) -> str:
    """A source line's content as one statement: without `- `, `any_of:`/`statement:`/`text:`,
    the brackets of a one-item flow list, and quotes."""
    text = line.strip()
    text = re.sub(r"^-\s+", "", text)
    text = re.sub(r"^(any_of|statement|text):\s*", "", text)
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1].strip()
    if len(text) > 1 and text[0] == text[-1] and text[0] in "'\"":
        text = text[1:-1].replace("''", "'") if text[0] == "'" else text[1:-1]
    return text


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_every_shipped_statement_is_a_whole_line_its_author_wrote(path: Path):
    data = path.read_bytes()
    lines = data.decode("utf-8").splitlines()
    located = yamlsafe.load(data)
    pieces = []
    for i, raw_rule in enumerate(located.value["rules"]):
        for _, items, _ in statement_paths(raw_rule, ("rules", i), located):
            for where, statement in items:
                line = located.position(where)[0]
                if _whole_line(lines[line - 1]) != statement:
                    pieces.append(f"{path.name}:{line} [{raw_rule['id']}] {statement!r}")
    assert not pieces, "statements that are not a whole line:\n" + "\n".join(pieces)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_constitutions_lint_clean(path: Path):
    warnings = lint_source(path.read_bytes(), str(path))
    assert not warnings, "\n".join(str(w) for w in warnings)


def test_the_precondition_prompt_asks_for_whole_statements_and_no_absences():
    prompt = render("preconditions", rule="Images must not show a knife.")
    assert "complete statement on its own" in prompt
    assert "never what is absent" in prompt


def test_an_alternative_in_mapping_form_is_linted_at_its_text():
    text = """\
name: mapped
rules:
  - id: injury
    text: No fatal injuries.
    preconditions:
      - any_of:
          - text: the throat is cut open
            objects: [throat]
          - text: no clothing covers the torso
            objects: [torso]
"""
    found = [(w.line, w.column, w.message) for w in lint_source(text, "mapped.yaml")]
    assert len(found) == 1
    line, column, message = found[0]
    assert (line, column) == (9, 19)
    assert message.startswith("statement 'no clothing covers the torso' asserts an absence")
