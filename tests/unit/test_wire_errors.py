"""Errors the coordinator reports come back to the client as the same class (common/errors.py)."""

from __future__ import annotations

from common.errors import CoordinatorUnavailableError, error_for_code
from coordinator.submission import _not_writable


def test_a_not_stored_refusal_of_a_coordinator_that_cannot_write_is_retryable_on_the_client() -> None:
    """A coordinator that cannot renew its lease (JetStream failing over) refuses a submit as not
    stored: the client must see CoordinatorUnavailableError, which submit_many(retry_for_s=...)
    retries, not a bare ClawError that ends the retrying (found killing the JetStream meta leader)."""
    refused = _not_writable("the coordinator cannot renew its lease, so it writes nothing for now")
    rebuilt = error_for_code(refused.code, str(refused))
    assert isinstance(rebuilt, CoordinatorUnavailableError)
    assert str(rebuilt) == str(refused) and "not stored" in str(rebuilt)
