"""Errors and what they mean to Airbyte: each kind knows its failure type and the user's fix.

One conversion (`as_traced`) turns any of them into the AirbyteTracedException that `write` raises
and whose message `check` reports, so both say the same thing for the same failure.
"""

from __future__ import annotations

from typing import ClassVar, Optional

from airbyte_cdk.models import FailureType
from airbyte_cdk.utils.traced_exception import AirbyteTracedException

from destination_planhat.planhat.api import HOST_FIXES, TARGETS, Endpoint
from destination_planhat.planhat.statuses import Meaning, meaning


def config_error(message: str, internal_message: Optional[str] = None) -> AirbyteTracedException:
    """Something only the user can fix: a field of the config or the stream selection."""
    return AirbyteTracedException(
        message=message, internal_message=internal_message or message, failure_type=FailureType.config_error
    )


def transient_error(message: str, internal_message: Optional[str] = None) -> AirbyteTracedException:
    """Something a later retry of the sync may fix: Planhat down, rate limited, network gone."""
    return AirbyteTracedException(
        message=message, internal_message=internal_message or message, failure_type=FailureType.transient_error
    )


def system_error(message: str, internal_message: Optional[str] = None) -> AirbyteTracedException:
    """Anything else: a request Planhat refuses for a reason the user cannot fix in the config."""
    return AirbyteTracedException(
        message=message, internal_message=internal_message or message, failure_type=FailureType.system_error
    )


class PlanhatError(Exception):
    """A request that did not succeed; carries what the server said, never the request's secrets."""

    failure_type: ClassVar[FailureType] = FailureType.system_error

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint,
        status: Optional[int] = None,
        body: str = "",
        ambiguous_failures: int = 0,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status = status
        self.body = body
        # Failed attempts before this one after which Planhat may have kept the items anyway.
        self.ambiguous_failures = ambiguous_failures

    @property
    def meaning(self) -> Optional[Meaning]:
        """What the answer's status means (planhat/statuses.py); None when there was no answer."""
        return None if self.status is None else meaning(TARGETS[self.endpoint].host, self.status)

    def user_message(self, where: str) -> str:
        """What the user reads: what happened at `where` (the target and its URL) and what to do."""
        return f"{where} failed: {self}"


PERMISSION_ANSWER_CHARS = 300
# Refusals whose answer says what was refused: quoted in the error.
_SAYS_WHAT_IS_REFUSED = (Meaning.FORBIDDEN, Meaning.PERMISSION)


class PlanhatAuthError(PlanhatError):
    """The target's credential is wrong or not allowed (planhat/statuses.py: UNAUTHORIZED, FORBIDDEN, PERMISSION)."""

    failure_type = FailureType.config_error

    def user_message(self, where: str) -> str:
        message = f"{where} refused the credentials (HTTP {self.status}): {TARGETS[self.endpoint].credential_fix}."
        if self.meaning in _SAYS_WHAT_IS_REFUSED and self.body:
            # Planhat's permissionErrors say which operation was refused (e.g. creating records).
            message += f" Planhat's answer: {self.body[:PERMISSION_ANSWER_CHARS]}"
        return message


class PlanhatPayloadTooLarge(PlanhatError):
    """413 (or the main API's 400): the caller splits the batch; it only ends a sync if splitting is impossible."""


class PlanhatRejectedRequest(PlanhatError):
    """Another 4xx, or a redirect: retrying the same request will not help."""

    def user_message(self, where: str) -> str:
        return f"{where} rejected a request: {self}"


class PlanhatUnavailable(PlanhatError):
    """Retries exhausted on 429/5xx/timeouts/connection errors."""

    failure_type = FailureType.transient_error

    def user_message(self, where: str) -> str:
        return (
            f"Could not reach {where}: {self}. Planhat may be down or limiting requests; the next attempt of the "
            "sync sends again every record after the last emitted state."
        )


class PlanhatHostNotFound(PlanhatUnavailable):
    """Every attempt failed because DNS says the host name does not exist: most often a wrong `region`
    (or base URL), which no retry of the sync can fix."""

    failure_type = FailureType.config_error

    def user_message(self, where: str) -> str:
        return f"{where}: {self}. {HOST_FIXES[TARGETS[self.endpoint].host]}."


class PlanhatUnacknowledged(PlanhatError):
    """Every attempt was answered without saying what was done (a 2xx without Planhat's counts, or
    counting fewer items than were sent): the items may or may not be in Planhat."""

    failure_type = FailureType.transient_error

    def user_message(self, where: str) -> str:
        field = TARGETS[self.endpoint].base_url_field
        return (
            f"{where} answered without saying what was done with the records: {self}. They are not counted as "
            "written and no state after them was emitted, so the next attempt of the sync sends them again. If "
            f"this persists, check that `{field}` is Planhat's address (or a proxy that passes Planhat's answers "
            "through unchanged)."
        )


class PlanhatTLSError(PlanhatError):
    """The server's TLS certificate could not be verified: retrying cannot help, and the token stays home."""

    failure_type = FailureType.config_error

    def user_message(self, where: str) -> str:
        field = TARGETS[self.endpoint].base_url_field
        return (
            f"{where}: {self}. Check `{field}`: it must be Planhat's host or a proxy with a certificate "
            "your system trusts."
        )


class RequestAborted(PlanhatError):
    """The sync failed elsewhere and `abort()` was called: this request is not tried (again)."""


def as_traced(error: BaseException, where: str) -> BaseException:
    """The exception that ends a sync (or whose message `check` reports) for `error`: a PlanhatError
    as an AirbyteTracedException with its meaning; anything else as it is (the CDK reports an
    unexpected exception as a system error with its stack trace)."""
    if isinstance(error, PlanhatError):
        return AirbyteTracedException(
            message=error.user_message(where), internal_message=str(error), failure_type=error.failure_type
        )
    return error
