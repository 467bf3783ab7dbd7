"""What the publisher, the dead-letter sink and the stores call retryable, and the code they
count a failure under (rides.stream.retry)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from rides.stream.retry import error_code, is_retryable


def client_error(code: str | None = None, status: int | None = None, *, error: bool = True) -> ClientError:
    """A ClientError as botocore makes it from a response, with or without its parts."""
    response: dict = {}
    if error:
        response["Error"] = {} if code is None else {"Code": code, "Message": "from the service"}
    if status is not None:
        response["ResponseMetadata"] = {"HTTPStatusCode": status}
    return ClientError(response, "PutRecords")


def test_a_failure_is_counted_under_the_services_code_or_what_failed():
    assert error_code(client_error("ThrottlingException", 400)) == "ThrottlingException"
    assert error_code(client_error(None, 400)) == "ClientError"  # an error without a code
    assert error_code(client_error(status=502, error=False)) == "ClientError"  # a response without an error
    assert error_code(EndpointConnectionError(endpoint_url="http://127.0.0.1:1")) == "EndpointConnectionError"
    assert error_code(TimeoutError()) == "TimeoutError"


@pytest.mark.parametrize(
    ("status", "retryable"), [(500, True), (503, True), (599, True), (499, False), (400, False), (None, False)]
)
def test_a_server_fault_is_retried_whatever_its_code_a_client_fault_only_when_named(status, retryable):
    assert is_retryable(client_error("SomethingNewException", status)) is retryable
    assert is_retryable(client_error(status=status, error=False)) is retryable


def test_throttling_is_retried_denied_access_and_a_missing_stream_are_not():
    assert is_retryable(client_error("ProvisionedThroughputExceededException", 400))
    assert is_retryable(client_error("RequestLimitExceeded", 400))
    assert not is_retryable(client_error("AccessDeniedException", 403))
    assert not is_retryable(client_error("ResourceNotFoundException", 400))
    assert is_retryable(EndpointConnectionError(endpoint_url="http://127.0.0.1:1"))  # connection trouble
    assert not is_retryable(ValueError("a bug"))
