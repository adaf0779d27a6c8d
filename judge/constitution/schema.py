"""The constitution (authored YAML) and its lock (compiled YAML), as pydantic models.

Source form, e.g. `policy.yaml`:

    name: my-policy
    version: "1"
    description: ...
    defaults:                      # optional
      model: Qwen/Qwen2.5-VL-7B-Instruct
      thresholds: {relevance: 0.22}
    rules:
      - id: fatal-injury           # slug, unique
        text: Images must not show a person with injuries that indicate imminent death.
        topic: fatal injuries      # optional: what the VLM relevance scan asks about
        category: violence         # optional
        severity: high             # optional: low | medium | high | critical
        enabled: true              # optional
        thresholds: {beta: 0.5}    # optional per-rule overrides
        preconditions:             # optional, hand-written; AND of the items
          - people are visible                                  # a statement
          - [the body has bloody injuries, the body is burnt]   # OR alternatives
          - any_of: [the throat is cut]                         # mapping form, with
            objects: [throat]                                   # central object words
          - any_of:                                             # an alternative may
              - text: the throat is cut                         # name its own words;
                objects: [throat]                               # the others use the
              - the torso is torn open                          # precondition's
            objects: [torso]

Lock form, `policy.lock.yaml`: see `Lock`.
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from judge.thresholds import ThresholdOverrides

Slug = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=2000)]
Severity = Literal["low", "medium", "high", "critical"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AlternativeSpec(_Strict):
    """An OR alternative in its mapping form: the statement, and the central object words
    that belong to it rather than to the whole precondition."""

    text: Text
    objects: list[Text] = Field(default_factory=list, max_length=8)


def _alternatives_json_schema(schema: dict[str, Any]) -> None:
    # Editors should accept an alternative written as {text, objects} as well.
    schema["items"] = {"anyOf": [schema["items"], AlternativeSpec.model_json_schema()]}


class PreconditionSpec(_Strict):
    """One precondition: met if any alternative is visible.

    An alternative is a statement, or a mapping `{text: ..., objects: [...]}` that names its
    own central object words; `objects` are the words of every alternative that names none.
    A box found for an alternative's words is used for that alternative only (a small box
    of "throat" must not stand in for "the torso is torn open").

    `any_of` holds the statements, so every reader sees a list of text; the words an
    alternative names itself are kept apart (`objects_of`) and written back in the mapping
    form, so a lock round-trips and a plain precondition dumps (and hashes) as before.
    """

    any_of: list[Text] = Field(
        min_length=1, max_length=16, json_schema_extra=_alternatives_json_schema
    )
    objects: list[Text] = Field(default_factory=list, max_length=8)
    _own_objects: dict[str, list[str]] = PrivateAttr(default_factory=dict)

    @model_validator(mode="wrap")
    @classmethod
    def _short_forms(cls, value: Any, handler: Any) -> Any:
        # "statement" and ["alt", "alt"] are shorthands for {any_of: [...]}.
        if isinstance(value, str):
            value = {"any_of": [value]}
        elif isinstance(value, list):
            value = {"any_of": value}
        elif isinstance(value, dict) and "statement" in value and "any_of" not in value:
            value = dict(value)
            value["any_of"] = [value.pop("statement")]
        own: dict[str, list[str]] = {}
        if isinstance(value, dict) and isinstance(value.get("any_of"), list):
            statements = []
            for index, item in enumerate(value["any_of"]):
                if isinstance(item, dict):
                    alternative = _alternative(item, index)
                    item = alternative.text
                    if alternative.objects:
                        own[item] = list(alternative.objects)
                statements.append(item)
            value = {**value, "any_of": statements}
        spec = handler(value)
        if own:
            spec._own_objects = own
        return spec

    @model_serializer(mode="wrap")
    def _alternatives_with_objects(self, handler: Any) -> Any:
        data = handler(self)
        if self._own_objects and isinstance(data, dict) and "any_of" in data:
            data["any_of"] = [
                {"text": s, "objects": self._own_objects[s]} if s in self._own_objects else s
                for s in data["any_of"]
            ]
        return data

    def objects_of(self, statement: str) -> list[str]:
        """The central object words of alternative `statement`: its own, else the
        precondition's."""
        return self._own_objects.get(statement.strip(), self.objects)

    def all_objects(self) -> list[str]:
        """Every central object word of the precondition, its alternatives' included."""
        words = [*self.objects, *(w for s in self.any_of for w in self.objects_of(s))]
        return list(dict.fromkeys(words))


def _alternative(item: dict[str, Any], index: int) -> AlternativeSpec:
    """An alternative written as a mapping, or a readable error naming it."""
    try:
        return AlternativeSpec.model_validate(item)
    except ValidationError as error:
        first = error.errors(include_url=False)[0]
        where = ".".join(str(p) for p in first["loc"])
        raise PydanticCustomError(
            "alternative",
            "alternative {number}: {where}: {problem}",
            {"number": index + 1, "where": where or "it", "problem": first["msg"]},
        ) from None


class Defaults(_Strict):
    model: str | None = None
    backend: str | None = None
    relevance_model: str | None = None
    locator_model: str | None = None
    thresholds: ThresholdOverrides | None = None


class RuleSpec(_Strict):
    id: Slug
    text: Text
    # A short phrase naming what the rule is about ("nudity", "a syringe or needle"):
    # the VLM relevance scan asks whether the image shows anything related to it.
    topic: Text | None = Field(default=None, max_length=120)
    category: str | None = None
    severity: Severity | None = None
    enabled: bool = True
    thresholds: ThresholdOverrides | None = None
    preconditions: list[PreconditionSpec] | None = Field(default=None, min_length=1, max_length=16)

    def text_sha256(self) -> str:
        """Hash of what the compiler reads: a change here means re-compiling this rule."""
        payload = self.text + "\x00" + repr(
            [p.model_dump() for p in self.preconditions] if self.preconditions else None
        )
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ConstitutionSpec(_Strict):
    name: Slug
    version: str = "1"
    description: str = ""
    defaults: Defaults = Field(default_factory=Defaults)
    rules: list[RuleSpec] = Field(min_length=1, max_length=1000)


# ---- the lock -----------------------------------------------------------------------


HAND_WRITTEN = "hand-written"
FALLBACK = "fallback"


class Provenance(_Strict):
    """Who produced each compiled field of a rule: a model id, "hand-written" (taken as the
    author wrote it in the source), or "fallback" (a mechanical stand-in: for a chain or a
    score, a model was asked and its answer could not be used; for a topic, nobody wrote
    one, so the chain's central object words stand in). None: never produced.

    A lock states this per field so that nothing typed by hand can pass for model output,
    and a reviewer sees at once which parts a model wrote.
    """

    text: str = HAND_WRITTEN  # the objectified text: the author's, or a model's rewrite
    objectiveness: str | None = None  # the model that scored it (None: never scored)
    preconditions: str = HAND_WRITTEN
    topic: str | None = None

    def models(self) -> set[str]:
        """The model ids among the producers."""
        values = (self.text, self.objectiveness, self.preconditions, self.topic)
        return {v for v in values if v is not None and v not in (HAND_WRITTEN, FALLBACK)}


class Objectiveness(_Strict):
    score: int = Field(ge=1, le=10)
    explanation: str = ""
    rewritten: bool = False
    reached: bool = True  # False: never reached 9 within the retry limit; author must review
    attempts: int = 0


class CompiledRule(_Strict):
    id: Slug
    source_text: str  # the author's text
    text: str  # the objectified text: what relevance and the baselines use
    text_sha256: str  # RuleSpec.text_sha256() of the source this was compiled from
    topic: Text | None = None  # the relevance topic; None in locks made before topics
    category: str | None = None
    severity: Severity | None = None
    enabled: bool = True
    thresholds: ThresholdOverrides | None = None
    objectiveness: Objectiveness | None = None
    produced_by: Provenance = Field(default_factory=Provenance)
    preconditions: list[PreconditionSpec] = Field(min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _legacy_extraction(cls, value: Any) -> Any:
        # Locks and callers from before `produced_by` said only `extraction`; a model
        # whose id is unknown here is named "llm" (Lock fills in the compiler's id).
        if isinstance(value, dict) and "extraction" in value:
            value = dict(value)
            kind = value.pop("extraction")
            if "produced_by" not in value:
                value["produced_by"] = _legacy_provenance(value, kind, "llm")
        return value

    @property
    def extraction(self) -> Literal["llm", "hand-written", "fallback"]:
        """How the precondition chain was made: by a model ("llm"), by hand, or a fallback."""
        source = self.produced_by.preconditions
        if source in (HAND_WRITTEN, FALLBACK):
            return source  # type: ignore[return-value]
        return "llm"


def _legacy_provenance(rule: dict[str, Any], kind: Any, model: str) -> dict[str, Any]:
    """`produced_by` for a rule written with the old `extraction` field."""
    chain = model if kind == "llm" else str(kind)
    rewritten = rule.get("text") not in (None, rule.get("source_text"))
    return {
        "text": model if rewritten else HAND_WRITTEN,
        "objectiveness": model if rule.get("objectiveness") is not None else None,
        "preconditions": chain,
        "topic": None,
    }


class Calibration(_Strict):
    dataset_sha256: str
    objective: str
    relevance: float | None = None
    rules: dict[str, ThresholdOverrides] = Field(default_factory=dict)


class Lock(_Strict):
    lock_version: Literal[1] = 1
    name: str
    source: str  # file name of the constitution, relative to the lock
    source_sha256: str
    compiler_model: str
    prompt_versions: dict[str, int] = Field(default_factory=dict)
    compiled_at: str
    defaults: Defaults = Field(default_factory=Defaults)
    calibration: Calibration | None = None
    rules: list[CompiledRule]

    @model_validator(mode="before")
    @classmethod
    def _legacy_rules(cls, value: Any) -> Any:
        # An old lock's `extraction: llm` was made by its compiler model: name it.
        if not isinstance(value, dict) or not isinstance(value.get("rules"), list):
            return value
        model = str(value.get("compiler_model") or "llm")
        rules = []
        for rule in value["rules"]:
            if isinstance(rule, dict) and "extraction" in rule and "produced_by" not in rule:
                rule = dict(rule)
                rule["produced_by"] = _legacy_provenance(rule, rule.pop("extraction"), model)
            rules.append(rule)
        return {**value, "rules": rules}

    def lock_hash(self) -> str:
        """A stable hash of the compiled content, recorded in every verdict."""
        body = self.model_dump(mode="json", exclude={"compiled_at"})
        import json

        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]

    def enabled_rules(self) -> list[CompiledRule]:
        return [r for r in self.rules if r.enabled]
