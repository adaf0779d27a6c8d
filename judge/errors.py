"""Every error judge raises on purpose. Only `judge.cli` turns them into exit codes.

    JudgeError                      exit_code
    ├── InputError                  2   bad input or usage
    │   ├── ConstitutionError       2   a policy file is wrong (file:line:col, rule id)
    │   ├── LockError               2   the lock is missing, stale or does not match
    │   ├── ImageError              2   an image cannot be read (per image, not fatal in a batch)
    │   │   ├── PixelLimitError     2   it would decode to more pixels than allowed
    │   │   └── VideoError          2   a clip cannot be read: corrupt, truncated, no decoder
    │   │       └── VideoLimitError 2   it is over a limit: bytes, duration, resolution, frames
    │   ├── DatasetError            2   a labelled set is malformed
    │   └── ToyModelsError          2   the shipped toy models are changed or stale
    │                                   (judge.toy.build)
    ├── BackendError                3   the model back end failed (down, timeout, nonsense)
    │   └── ModelCapabilityError    4   the model or server cannot do what judge needs
    │       ├── NoVisionError       5   the model takes no images
    │       ├── LogprobsError       6   logprobs are off or top-k too small
    │       └── TokenizerError      7   "Yes"/"No" are not single tokens
    └── ReviewError                 8   compiled rules need review before they are used

A `BackendError` names the URL or model and what to check; a `ModelCapabilityError`
also says which flag or setting fixes it (`fix`).
"""

from __future__ import annotations


class JudgeError(Exception):
    """Base of every error judge raises on purpose."""

    exit_code = 2


class InputError(JudgeError):
    """Bad input or usage."""

    exit_code = 2


class ConstitutionError(InputError):
    """A constitution file is malformed; the message names file:line:column and the rule."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        rule_id: str | None = None,
    ) -> None:
        self.file, self.line, self.column, self.rule_id = file, line, column, rule_id
        self.reason = message
        where = file or "<constitution>"
        if line is not None:
            where += f":{line}"
            if column is not None:
                where += f":{column}"
        rule = f" [rule {rule_id}]" if rule_id else ""
        super().__init__(f"{where}:{rule} {message}")


class LockError(InputError):
    """The lock file is missing, stale, or does not belong to its constitution."""


class ImageError(InputError):
    """An image cannot be read or is unsafe to decode."""


class PixelLimitError(ImageError):
    """An image, or one of its frames, would decode to more pixels than allowed."""


class VideoError(ImageError):
    """A video clip (or an animated image judged as one) cannot be read: a corrupt or
    truncated container, no video stream, or no decoder installed."""


class VideoLimitError(VideoError):
    """A clip is over a limit (bytes, duration, resolution or frame count), found before
    its frames are decoded."""


class DatasetError(InputError):
    """A labelled set or its manifest is malformed."""


class BackendError(JudgeError):
    """The model back end failed: unreachable, timed out, or answered nonsense."""

    exit_code = 3

    def __init__(self, message: str, *, url: str | None = None, hint: str | None = None) -> None:
        self.url, self.hint = url, hint
        text = message
        if url:
            text += f" (server {url})"
        if hint:
            text += f". {hint}"
        super().__init__(text)


class ModelCapabilityError(BackendError):
    """The model or server cannot do what judge needs; `fix` says how to fix it."""

    exit_code = 4

    def __init__(self, message: str, *, fix: str, url: str | None = None) -> None:
        self.fix = fix
        super().__init__(message, url=url, hint=f"Fix: {fix}")


class NoVisionError(ModelCapabilityError):
    exit_code = 5


class LogprobsError(ModelCapabilityError):
    exit_code = 6


class TokenizerError(ModelCapabilityError):
    exit_code = 7


class ReviewError(JudgeError):
    """A compile produced rules a person must review (a score below the target, nonsense
    statements, a fallback chain): `judge compile` wrote the lock but says so, and judging
    with it is refused unless explicitly allowed. `rules` maps rule id -> reasons."""

    exit_code = 8

    def __init__(self, message: str, *, rules: dict[str, list[str]] | None = None) -> None:
        self.rules = dict(rules or {})
        super().__init__(message)
