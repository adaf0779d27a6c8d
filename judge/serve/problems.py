"""The service's HTTP errors, in the OpenAI error shape so existing clients parse them.

    {"error": {"message": "...", "type": "invalid_request_error", "param": "input", "code": "..."}}

Every refusal names its reason; none carries a traceback.

    status  code                       when
    400     text_input / bad_request   text parts, a malformed body
    400     bad_url, remote_urls_off, host_not_allowed, port_not_allowed
    401     unauthorized               no token, or not one of ours
    403     forbidden                  a user token asks for what needs the admin role
    413     body_too_large, image_too_large, too_many_pixels, too_many_images
    415     unsupported_media_type     a body that is not application/json (or multipart)
    422     unknown_rule, empty_rules  a rule subset names a rule the policy lacks, or none
    422     bad_image, fetch_failed    an image that cannot be read or fetched
    429     queue_full                 with Retry-After
    503     not_ready                  no policy loaded yet (or the service is stopping)
"""

from __future__ import annotations

from typing import Any


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


class ApiError(Exception):
    """A refusal with an HTTP status, a stable code and a message for the caller."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        # A message may quote the caller's input: no character may stop it being sent
        # (a lone surrogate cannot be encoded as UTF-8).
        message = _printable(message)
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.param = None if param is None else _printable(param)
        self.headers = dict(headers or {})

    @property
    def kind(self) -> str:
        return {
            401: "authentication_error",
            403: "permission_error",
            429: "rate_limit_error",
            503: "service_unavailable",
        }.get(self.status, "invalid_request_error")

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.code,
            }
        }
