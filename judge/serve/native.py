"""`POST /v1/judge`: judge's own shape, the Verdict JSON that `judge --json` prints.

JSON body:

    {"images": [{"data": "<base64>", "id": "optional name"} | {"url": "data:..."}],
     "explain": false, "rules": ["rule-id", ...]}

or multipart/form-data: image files (any field name; the file name becomes the image id),
`explain=true`, and `rules=a,b` (or `rules` repeated). A video clip (MP4/MOV, WebM/MKV,
AVI; base64, a `data:video/...` URL or an upload) is judged as a clip under the video
limits, and its verdict names the deciding frame and its time (docs/video.md).

The answer: `{"id", "policy": {"name", "lock_hash"}, "summary": {...}, "verdicts": [...]}`.
Each verdict is exactly a `judge.Verdict` as JSON. Without `explain`, each rule keeps its
outcome, reason, relevance and decisive precondition and drops the per-precondition
evidence (the bulk of the document); with it, the verdict is complete. A rule subset
narrows the verdict to those rules, its outcome recomputed from them alone (the policy's
other rules are still judged: the subset narrows the answer, not the work).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class NativeImage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    data: str | None = Field(None, description="The image or video file, base64-encoded.")
    url: str | None = Field(None, description="A data URL, or an http(s) URL of an "
                            "allowed host.")
    id: str | None = Field(None, max_length=200, description="A name for the verdict.")


class JudgeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    images: list[NativeImage]
    explain: bool = False
    rules: list[str] | None = Field(None, description="Only these rules (ids).")


class NativeResponse(BaseModel):
    id: str
    policy: dict[str, Any]
    summary: dict[str, Any]
    flagged: list[bool] = Field(description="Per verdict, as /v1/moderations flags it.")
    verdicts: list[dict[str, Any]] = Field(description="judge.Verdict JSON, one per image.")


_MULTIPART = {
    "type": "object",
    "properties": {
        "image": {"type": "array", "items": {"type": "string", "format": "binary"}},
        "explain": {"type": "boolean"},
        "rules": {"type": "string", "description": "Rule ids, separated by commas."},
    },
    "required": ["image"],
}

JUDGE_BODY_SCHEMA: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": {"$ref": "#/components/schemas/JudgeRequest"}},
    "multipart/form-data": {"schema": _MULTIPART},
}}}


def _slim(verdict: Any) -> dict[str, Any]:
    data: dict[str, Any] = verdict.model_dump(mode="json")
    for rule in data.get("rules", []):
        rule["preconditions"] = []
    return data


def native_response(
    request_id: str, policy: Any, judged: list[Any], *, explain: bool, fail_closed: bool
) -> dict[str, Any]:
    verdicts = [j.verdict for j in judged]
    outcomes = [v.outcome for v in verdicts]
    return {
        "id": request_id,
        "policy": {"name": policy.lock.name, "lock_hash": policy.lock_hash},
        "summary": {
            "images": len(verdicts),
            **{k: outcomes.count(k) for k in ("safe", "unsafe", "undecided")},
            # "safe" only because another precondition was not met: counted apart.
            "safe_with_undecided_precondition": sum(
                v.outcome == "safe" and bool(v.partly_undecided) for v in verdicts),
            "flagged": sum(j.flagged for j in judged),
            "fail_closed": fail_closed,
        },
        "flagged": [j.flagged for j in judged],
        "verdicts": [
            v.model_dump(mode="json") if explain else _slim(v) for v in verdicts
        ],
    }
