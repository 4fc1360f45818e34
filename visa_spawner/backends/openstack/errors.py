"""What an OpenStack failure means for a person, and whether trying again can help.

openstacksdk raises a handful of exception families (HTTP answers, keystoneauth connection
failures, timeouts). The backend needs three answers from them: is it *transient* (retry with
backoff), is it a *capacity/quota* refusal (tell the person plainly), or something else (tell
them generically, log the detail). Pure functions, tested against real cloud answers.
"""
from __future__ import annotations

import re

from keystoneauth1 import exceptions as ksa_exc
from openstack import exceptions as sdk_exc

from visa_spawner.backends.base import BackendError
from visa_spawner.backends.guest.protocol import mask_secrets

#: HTTP statuses worth another try: the service (or a proxy in front of it) was briefly unwell
TRANSIENT_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
_QUOTA = re.compile(r"quota exceeded for (\w+)(?:: requested (\d+), but already used (\d+) of (\d+))?", re.I)
_CAPACITY = re.compile(r"no valid host|insufficient|not enough|exceeds? (the )?capacity", re.I)


def status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None) or getattr(exc, "http_status", None)
    return int(code) if isinstance(code, int) or (isinstance(code, str) and code.isdigit()) else None


def is_transient(exc: BaseException) -> bool:
    """A failure another attempt may not see: connection trouble, timeouts, 5xx, 429."""
    if isinstance(exc, (ksa_exc.ConnectionError, ksa_exc.RetriableConnectionFailure, TimeoutError)):
        return True
    if isinstance(exc, ksa_exc.HttpError) or isinstance(exc, sdk_exc.HttpException):
        return status_code(exc) in TRANSIENT_STATUS
    # openstacksdk wraps some transport failures in a bare SDKException; its "Endless pagination
    # loop" comes from a listing that changed between two pages: the next listing is fine; "does not
    # have any supported versions" is version discovery that got a 5xx from the service's root
    if isinstance(exc, sdk_exc.SDKException) and not isinstance(exc, sdk_exc.HttpException):
        return any(word in str(exc).lower()
                   for word in ("timed out", "connection", "pagination loop", "any supported versions"))
    return False


def scrub(text: str) -> str:
    """Cloud messages may echo request bodies: never let a secret through to a log or a page."""
    return mask_secrets(text or "")[:500]


def cloud_message(exc: BaseException) -> str:
    """The cloud's own explanation, without the SDK's request dump."""
    details = getattr(exc, "details", None) or ""
    text = details if isinstance(details, str) and details else str(exc)
    return scrub(" ".join(text.split()))


def quota_error(text: str) -> BackendError | None:
    """A quota refusal (Nova: 403 'Quota exceeded for instances: Requested 1, but already used…')."""
    m = _QUOTA.search(text)
    if not m:
        return None
    what = m.group(1).lower().replace("ram", "memory").replace("cores", "CPU cores")
    used = f" ({m.group(3)} of {m.group(4)} in use)" if m.group(4) else ""
    return BackendError(
        f"The facility cloud has no room for this instance: the project's quota of {what} is used up"
        f"{used}. Stop an instance you no longer need, or ask the facility to raise the quota.",
        reason="quota", log_detail=scrub(text),
    )


def to_backend_error(exc: BaseException, doing: str) -> BackendError:
    """Translate a failed SDK call (after retries) into what the progress bar shows."""
    if isinstance(exc, BackendError):
        return exc
    text = cloud_message(exc)
    found = quota_error(text)
    if found:
        return found
    code = status_code(exc)
    if _CAPACITY.search(text):
        return BackendError(f"The facility cloud has no capacity for this instance right now ({text}). "
                            "Try a smaller plan or try again later.", reason="capacity", log_detail=text)
    if is_transient(exc):
        return BackendError(f"The facility cloud did not answer while {doing}; it may be overloaded. "
                            "Try again in a few minutes.", reason="cloud-unavailable", log_detail=text)
    if code in (401, 403):
        return BackendError(f"The hub is not allowed to use the facility cloud ({doing}); ask an admin.",
                            reason="cloud-auth", log_detail=text)
    return BackendError(f"The facility cloud refused a request while {doing}: {text}",
                        reason="cloud-error", log_detail=f"{type(exc).__name__}: {text}")


def fault_error(fault: dict | None, status: str) -> BackendError:
    """A server that went to ERROR: show Nova's fault message (never its admin-only details)."""
    message = scrub(str((fault or {}).get("message") or "no reason given"))
    found = quota_error(message)
    if found:
        return found
    reason = "capacity" if _CAPACITY.search(message) else "server-error"
    return BackendError(f"The cloud could not start the server ({status}): {message}", reason=reason,
                        log_detail=f"fault code {(fault or {}).get('code')}")
