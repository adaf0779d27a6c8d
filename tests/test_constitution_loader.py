"""Loading constitutions: exact errors with file:line:column and rule id, hostile YAML,
fuzzing (only ConstitutionError with a location may escape), round trips, the JSON Schema,
and a policy written the way a new user would write one from a public taxonomy."""

from __future__ import annotations

import json
import textwrap

import jsonschema
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from judge.constitution import Constitution, parse_spec
from judge.constitution.loader import load_spec, source_json_schema
from judge.errors import ConstitutionError
from judge.resources import data_dir

GOOD = textwrap.dedent(
    """\
    name: demo
    version: "2"
    description: a small policy
    defaults:
      thresholds: {relevance: 0.25}
    rules:
      - id: fire
        text: Images must not show a person whose body is on fire.
        category: violence
        severity: high
        thresholds: {beta: 0.5}
        preconditions:
          - a person is visible
          - [flames are on the body, the skin is charred black]
          - any_of: [the throat is cut]
            objects: [throat]
          - statement: blood is visible
            objects: [blood]
      - id: nudity
        text: Images must not show bare genitals.
        enabled: false
    """
)


def rule_yaml(body: str) -> str:
    """A constitution whose one rule (id r1) is `body`, indented under `rules:`."""
    return "name: p\nrules:\n  - id: r1\n" + textwrap.indent(textwrap.dedent(body), "    ")


# (name, file text or bytes, line, column, rule id, first line of the message)
MALFORMED = [
    (
        "empty file",
        "",
        1,
        1,
        None,
        "the file is empty; a constitution needs at least 'name' and 'rules'",
    ),
    (
        "only a comment",
        "# nothing\n",
        1,
        1,
        None,
        "the file is empty; a constitution needs at least 'name' and 'rules'",
    ),
    (
        "top level list",
        "- a\n- b\n",
        1,
        1,
        None,
        "a constitution must be a mapping with 'name' and 'rules', not a list",
    ),
    (
        "top level scalar",
        "hello\n",
        1,
        1,
        None,
        "a constitution must be a mapping with 'name' and 'rules', not text ('hello')",
    ),
    ("missing rules", "name: p\n", 1, 1, None, "required key 'rules' is missing"),
    (
        "no rules",
        "name: p\nrules: []\n",
        2,
        8,
        None,
        "rules: must have at least 1 item; it has none",
    ),
    (
        "rules not a list",
        "name: p\nrules: {a: 1}\n",
        2,
        8,
        None,
        "rules: must be a list, not a mapping",
    ),
    (
        "bad name",
        "name: My Policy\nrules: [{id: a, text: t}]\n",
        1,
        7,
        None,
        "name: 'My Policy' must be a slug: lowercase letters, digits, '.', '_' or '-', "
        "starting with a letter or digit, at most 64 characters",
    ),
    (
        "version as a number",
        "name: p\nversion: 1\nrules: [{id: a, text: t}]\n",
        2,
        10,
        None,
        "version: must be text, not a number (1); put it in quotes",
    ),
    (
        "unknown top-level key",
        "name: p\nrule: []\nrules: [{id: a, text: t}]\n",
        2,
        1,
        None,
        "rule: unknown key 'rule' (allowed: name, version, description, defaults, rules); "
        "did you mean 'rules'?",
    ),
    (
        "duplicate key",
        "name: p\nname: q\nrules: [{id: a, text: t}]\n",
        2,
        1,
        None,
        "duplicate key 'name' (first given at line 1)",
    ),
    (
        "misspelt text",
        rule_yaml("txt: hello\n"),
        4,
        5,
        "r1",
        "txt: unknown key 'txt' (allowed: id, text, topic, category, severity, enabled, "
        "thresholds, preconditions); did you mean 'text'?",
    ),
    ("missing text", rule_yaml("category: x\n"), 3, 5, "r1", "required key 'text' is missing"),
    ("empty text", rule_yaml("text: '   '\n"), 4, 11, "r1", "text: must not be empty"),
    ("null text", rule_yaml("text:\n"), 4, 10, "r1", "text: must be text, not nothing (null)"),
    ("text as a list", rule_yaml("text: [a, b]\n"), 4, 11, "r1", "text: must be text, not a list"),
    (
        "text too long",
        rule_yaml(f"text: {'x' * 2001}\n"),
        4,
        11,
        "r1",
        "text: is too long (2001 characters; at most 2000)",
    ),
    (
        "missing id",
        "name: p\nrules:\n  - text: hello\n",
        3,
        5,
        "#1",
        "required key 'id' is missing",
    ),
    (
        "id with a slash",
        "name: p\nrules:\n  - id: self-harm/intent\n    text: t\n",
        3,
        9,
        "self-harm/intent",
        "id: 'self-harm/intent' must be a slug: lowercase letters, digits, '.', '_' or '-', "
        "starting with a letter or digit, at most 64 characters",
    ),
    (
        "duplicate ids",
        "name: p\nrules:\n  - {id: a, text: x}\n  - {id: a, text: y}\n",
        4,
        10,
        "a",
        "duplicate rule id 'a' (first used at line 3)",
    ),
    (
        "bad severity",
        rule_yaml("text: t\nseverity: severe\n"),
        5,
        15,
        "r1",
        "severity: must be one of 'low', 'medium', 'high' or 'critical', not 'severe'",
    ),
    (
        "enabled not a boolean",
        rule_yaml("text: t\nenabled: maybe\n"),
        5,
        14,
        "r1",
        "enabled: must be true or false, not text ('maybe')",
    ),
    (
        "threshold out of range",
        rule_yaml("text: t\nthresholds: {beta: 2}\n"),
        5,
        24,
        "r1",
        "thresholds.beta: 2 is out of range: input should be less than or equal to 1",
    ),
    (
        "unknown threshold",
        rule_yaml("text: t\nthresholds: {alpha: 2}\n"),
        5,
        18,
        "r1",
        "thresholds.alpha: unknown key 'alpha' (allowed: a1_scale, a2_scale, beta, relevance, "
        "relevance_vlm, box_confidence, crop_area)",
    ),
    (
        "precondition a number",
        rule_yaml("text: t\npreconditions: [a person, 5]\n"),
        5,
        31,
        "r1",
        "preconditions[1]: a precondition must be a statement, a list of alternative "
        "statements, or a mapping with 'any_of' (and optionally 'objects'), not a number (5)",
    ),
    (
        "empty preconditions",
        rule_yaml("text: t\npreconditions: []\n"),
        5,
        20,
        "r1",
        "preconditions: must have at least 1 item; it has none",
    ),
    (
        "empty alternatives",
        rule_yaml("text: t\npreconditions: [[]]\n"),
        5,
        21,
        "r1",
        "preconditions[0]: must have at least 1 alternative; it has none",
    ),
    (
        "empty alternative",
        rule_yaml("text: t\npreconditions:\n  - [a person, '']\n"),
        6,
        20,
        "r1",
        "preconditions[0][1]: must not be empty",
    ),
    (
        "empty statement",
        rule_yaml("text: t\npreconditions:\n  - statement: ''\n"),
        6,
        20,
        "r1",
        "preconditions[0].statement: must not be empty",
    ),
    (
        "nested alternatives",
        rule_yaml("text: t\npreconditions:\n  - [[a, b]]\n"),
        6,
        10,
        "r1",
        "preconditions[0][0]: must be text, not a list",
    ),
    (
        "misspelt objects",
        rule_yaml("text: t\npreconditions:\n  - any_of: [a]\n    object: [b]\n"),
        7,
        9,
        "r1",
        "preconditions[0].object: unknown key 'object' (allowed: any_of, statement, objects); "
        "did you mean 'objects'?",
    ),
    (
        "objects not a list",
        rule_yaml("text: t\npreconditions:\n  - any_of: [a]\n    objects: b\n"),
        7,
        18,
        "r1",
        "preconditions[0].objects: must be a list, not text ('b')",
    ),
    (
        "yaml syntax",
        "name: p\nrules: [\n",
        3,
        1,
        None,
        "invalid YAML: while parsing a flow node expected the node content, but found "
        "'<stream end>'",
    ),
    (
        "bad indentation",
        "name: p\n  rules: []\n",
        2,
        8,
        None,
        "invalid YAML: mapping values are not allowed here",
    ),
    (
        "two documents",
        "name: p\n---\nname: q\n",
        2,
        1,
        None,
        "invalid YAML: expected a single document in the stream but found another document",
    ),
    (
        "non-utf8",
        b"name: p\nrules:\n  - id: a\n    text: caf\xe9\n",
        4,
        14,
        None,
        "not valid UTF-8 (byte 0xe9); save the file as UTF-8",
    ),
    ("NUL character", "name: p\x00\n", 1, 8, None, "invalid character #x0000"),
    (
        "python tag",
        "name: !!python/object/apply:os.system [ls]\n",
        1,
        7,
        None,
        "unsupported YAML tag 'tag:yaml.org,2002:python/object/apply:os.system'",
    ),
    ("custom tag", "name: !secret p\n", 1, 7, None, "unsupported YAML tag '!secret'"),
    (
        "binary tag",
        "name: !!binary aGk=\n",
        1,
        7,
        None,
        "unsupported YAML tag 'tag:yaml.org,2002:binary'",
    ),
    ("set tag", "name: !!set {a, b}\n", 1, 7, None, "unsupported YAML tag 'tag:yaml.org,2002:set'"),
    (
        "bad explicit int",
        "name: !!int abc\n",
        1,
        7,
        None,
        "cannot read 'abc' as int: invalid literal for int() with base 10: 'abc'",
    ),
    (
        "merge key",
        "name: p\nbase: &b {text: x}\nrules:\n  - <<: *b\n    id: a\n",
        4,
        5,
        None,
        "merge keys (<<) are not supported",
    ),
    (
        "number as key",
        "name: p\n1: x\n",
        2,
        1,
        None,
        "mapping keys must be text; quote '1' if it is meant as a key",
    ),
    (
        "list as key",
        "name: p\n? [a]\n: x\n",
        2,
        3,
        None,
        "mapping keys must be text; quote 'a collection' if it is meant as a key",
    ),
    (
        "recursive alias",
        "name: p\nrules: &r [*r]\n",
        2,
        8,
        None,
        "recursive alias: a node contains itself",
    ),
    (
        "deep nesting",
        "name: " + "[" * 40 + "]" * 40 + "\n",
        1,
        38,
        None,
        "nesting is deeper than 32 levels",
    ),
]


@pytest.mark.parametrize(
    ("case", "text", "line", "column", "rule_id", "message"),
    MALFORMED,
    ids=[case[0] for case in MALFORMED],
)
def test_malformed_file_gives_exact_error(case, text, line, column, rule_id, message):
    with pytest.raises(ConstitutionError) as info:
        parse_spec(text, "policy.yaml")
    error = info.value
    assert (error.file, error.line, error.column, error.rule_id) == (
        "policy.yaml",
        line,
        column,
        rule_id,
    ), str(error)
    assert error.reason.splitlines()[0] == message
    rule = f" [rule {rule_id}]" if rule_id else ""
    assert str(error).splitlines()[0] == f"policy.yaml:{line}:{column}:{rule} {message}"


def test_every_problem_is_listed_and_a_misspelling_comes_first():
    text = rule_yaml("txt: hello\nseverity: huge\n")
    with pytest.raises(ConstitutionError) as info:
        parse_spec(text, "p.yaml")
    lines = str(info.value).splitlines()
    assert lines[0].startswith("p.yaml:4:5: [rule r1] txt: unknown key 'txt'")
    assert lines[1] == "2 more problem(s):"
    assert "  p.yaml:5:15: [rule r1] severity: must be one of" in lines[2]
    assert lines[3] == "  p.yaml:3:5: [rule r1] required key 'text' is missing"


def test_alias_bomb_is_refused():
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for name, prev in zip("bcdefg", "abcdef", strict=True):
        refs = ", ".join([f"*{prev}"] * 10)
        lines.append(f"{name}: &{name} [{refs}]")
    with pytest.raises(ConstitutionError, match="expands to more than 100,000 values"):
        parse_spec("\n".join(lines), "bomb.yaml")


def test_a_few_aliases_are_fine():
    text = textwrap.dedent(
        """\
        name: p
        rules:
          - id: a
            text: t
            preconditions: &people [[a person is visible, a child is visible]]
          - id: b
            text: u
            preconditions: *people
        """
    )
    spec = parse_spec(text)
    assert spec.rules[1].preconditions == spec.rules[0].preconditions


def test_oversized_file_is_refused(tmp_path):
    path = tmp_path / "big.yaml"
    path.write_bytes(b"name: p\n# " + b"x" * (1024 * 1024) + b"\n")
    with pytest.raises(ConstitutionError) as info:
        load_spec(path)
    assert "file is too large" in str(info.value)
    assert info.value.file == str(path)


def test_missing_file(tmp_path):
    with pytest.raises(ConstitutionError, match="cannot read the file"):
        load_spec(tmp_path / "nope.yaml")


def test_good_file_loads_with_all_shorthands():
    spec = parse_spec(GOOD)
    fire = spec.rules[0]
    assert [p.any_of for p in fire.preconditions or []] == [
        ["a person is visible"],
        ["flames are on the body", "the skin is charred black"],
        ["the throat is cut"],
        ["blood is visible"],
    ]
    assert fire.preconditions and fire.preconditions[2].objects == ["throat"]
    assert fire.thresholds and fire.thresholds.beta == 0.5
    assert spec.defaults.thresholds and spec.defaults.thresholds.relevance == 0.25
    assert spec.rules[1].enabled is False and spec.rules[1].preconditions is None


def test_bom_and_unquoted_date_version():
    spec = parse_spec("\ufeffname: p\nversion: 2024-05-01\nrules: [{id: a, text: t}]\n")
    assert spec.version == "2024-05-01"


def test_to_yaml_round_trips():
    policy = Constitution.from_yaml(GOOD)
    again = Constitution.from_yaml(policy.to_yaml())
    assert again.spec == policy.spec


def shipped() -> list:
    return sorted(data_dir("constitutions").glob("*.yaml"))


@pytest.mark.parametrize(
    "path",
    [p for p in shipped() if not p.name.endswith((".lock.yaml", ".tests.yaml"))],
    ids=lambda p: p.name,
)
def test_shipped_constitution_loads_has_fresh_lock_and_matches_json_schema(path):
    policy = Constitution.load(path)
    lock = policy.lock  # raises LockError if stale
    assert [r.id for r in lock.rules] == [r.id for r in policy.spec.rules]
    for rule in lock.rules:
        assert rule.preconditions and all(p.any_of for p in rule.preconditions)
    jsonschema.validate(yaml.safe_load(path.read_text()), source_json_schema())


def test_json_schema_rejects_what_the_loader_rejects():
    schema = source_json_schema()
    bad = {"name": "p", "rules": [{"id": "a", "text": "t", "preconditions": [{"anyof": ["x"]}]}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)
    json.dumps(schema)  # serialisable, for `judge schema`


# ---- a new user, starting from a public moderation taxonomy -----------------------------

# What a policy author might first write from OpenAI's moderation categories and MLCommons
# hazard names: ids copied from the taxonomy (with slashes and capitals), a `description`
# per rule, a severity the schema does not know, thresholds as a string.
NEW_USER_FIRST_TRY = textwrap.dedent(
    """\
    name: acme-moderation
    version: "0.1"
    rules:
      - id: violence/graphic
        text: Images must not show open wounds with blood flowing from them.
        category: violence
      - id: self-harm
        description: Cuts on a person's wrist or forearm that are bleeding.
        severity: high
      - id: s12-sexual-content
        text: Images must not show a person's bare genitals.
        severity: severe
    """
)


def test_new_user_first_try_gets_precise_errors():
    with pytest.raises(ConstitutionError) as info:
        parse_spec(NEW_USER_FIRST_TRY, "acme.yaml")
    text = str(info.value)
    first, *rest = text.splitlines()
    assert first.startswith("acme.yaml:4:9: [rule violence/graphic] id: 'violence/graphic' must")
    assert any(
        "acme.yaml:8:5: [rule self-harm] description: unknown key 'description'" in line
        for line in rest
    )
    assert any(
        "acme.yaml:12:15: [rule s12-sexual-content] severity: must be one of" in line
        for line in rest
    )
    assert any(
        "acme.yaml:7:5: [rule self-harm] required key 'text' is missing" in line for line in rest
    )


def test_new_user_fixed_policy_loads_and_compiles_without_model(tmp_path):
    fixed = textwrap.dedent(
        """\
        name: acme-moderation
        version: "0.1"
        description: After OpenAI's moderation categories and MLCommons hazards, our words.
        rules:
          - id: violence.graphic
            text: Images must not show open wounds with blood flowing from them.
            category: violence/graphic
            severity: high
            preconditions:
              - [a person is visible, an animal is visible]
              - any_of: [the body has an open wound with blood flowing from it]
                objects: [wound, blood]
          - id: self-harm.cutting
            text: Images must not show cuts on a person's wrist or forearm that are bleeding.
            category: self-harm
            severity: critical
            preconditions:
              - any_of: [a person's wrist or forearm is visible]
                objects: [wrist, forearm]
              - statement: the skin of the wrist or forearm has bleeding cuts
                objects: [cuts]
          - id: sexual.genitals
            text: Images must not show a person's bare genitals.
            category: sexual
            preconditions: [a person is visible, the person's genitals are bare]
        """
    )
    path = tmp_path / "acme.yaml"
    path.write_text(fixed)
    policy = Constitution.load(path)
    lock = policy.compile(None)
    assert [r.extraction for r in lock.rules] == ["hand-written"] * 3
    policy.save_lock()
    assert Constitution.load(path).lock == lock


# ---- fuzzing: only ConstitutionError, with a location, ever escapes --------------------


def _assert_only_located_errors(data: bytes | str) -> None:
    try:
        parse_spec(data, "fuzz.yaml")
    except ConstitutionError as error:
        assert error.file == "fuzz.yaml"
        assert error.line is not None and error.line >= 1
        assert error.column is not None and error.column >= 1


YAML_ALPHABET = st.sampled_from(
    [
        *list("abz019 \n\t:-,[]{}&*!|>'\"#%@`?.<\x00\x85\ufeff\u2028é"),
        "name: ",
        "rules:",
        "  - id: ",
        "text: ",
        "preconditions:",
        "any_of:",
        "objects:",
        "!!int ",
        "!!python/name:os.system",
        "&a ",
        "*a",
        "<<: ",
        "---\n",
        "...\n",
        "? ",
    ]
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_bytes(data):
    _assert_only_located_errors(data)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(YAML_ALPHABET, max_size=60).map("".join))
def test_fuzz_yaml_like_text(text):
    _assert_only_located_errors(text)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.integers(0, len(GOOD) - 1),
    st.integers(0, 8),
    st.text(alphabet=list(" \n:-[]{}'\"&*!#x1"), max_size=4),
)
def test_fuzz_mutations_of_a_good_file(position, delete, insert):
    _assert_only_located_errors(GOOD[:position] + insert + GOOD[position + delete :])


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(
        [
            "name",
            "version",
            "rules",
            "defaults",
            "text",
            "id",
            "preconditions",
            "objects",
            "thresholds",
            "severity",
            "enabled",
        ]
    ),
    JSONISH,
)
def test_fuzz_wrong_types_anywhere(key, value):
    data = yaml.safe_load(GOOD)

    def replace(node):
        if isinstance(node, dict):
            return {k: (value if k == key else replace(v)) for k, v in node.items()}
        if isinstance(node, list):
            return [replace(v) for v in node]
        return node

    _assert_only_located_errors(yaml.safe_dump(replace(data), allow_unicode=True))
