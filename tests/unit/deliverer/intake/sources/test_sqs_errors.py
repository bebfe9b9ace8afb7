"""SQS: what each refusal says, and where the credentials are looked for.

Real AWS cannot run here (no network, no account), and ElasticMQ, the SQS of the
integration tests, accepts any key and signature. So the error replies below are
constructed, not captured: in the form of SQS's JSON protocol as the AWS SDKs parse it (the
HTTP status, the ``x-amzn-query-error`` header ``<query-protocol code>;Sender`` and a JSON
body with ``__type`` and ``message``), with the codes and texts AWS users report for wrong
keys; one in the older query protocol's XML.
The refusals ElasticMQ does give (no credentials, a missing queue) run for real in
tests/integration/deliverer/intake/sources/test_credentials.py.
"""

from __future__ import annotations

import json

import pytest

from hookgate.deliverer.intake.sources.base import SourceUnavailable
from hookgate.deliverer.intake.sources.sqs import SqsConsumer, sqs_error
from hookgate.model.routing import BrokerConfig, SourceConfig

QUEUE = "https://sqs.eu-west-1.amazonaws.com/123456789012/orders"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def reply(status: int, code: str, type_: str, message: str) -> tuple[int, dict[str, str], str]:
    """An SQS JSON-protocol error reply."""
    return status, {"Content-Type": "application/x-amz-json-1.0",
                    "x-amzn-RequestId": "7a62c49f-347e-4fc4-9331-6e8e7a96aa73",
                    "x-amzn-query-error": f"{code};Sender"}, json.dumps(
        {"__type": type_, "message": message})


def said(status: int, headers: dict[str, str], text: str, origin: str = "secret",
         action: str = "ReceiveMessage") -> str:
    error = sqs_error(action, QUEUE, status, headers, text, origin, hide=(SECRET_KEY,))
    assert isinstance(error, SourceUnavailable)
    assert error.reason == "BrokerUnavailable"
    return str(error)


def test_an_access_key_aws_does_not_know() -> None:
    assert said(*reply(403, "InvalidClientTokenId", "com.amazon.coral.service#InvalidClientTokenId",
                       "The security token included in the request is invalid.")) == (
        "SQS does not know the access key id of the Secret that broker.sqs.credentialsFrom "
        "names (HTTP 403 InvalidClientTokenId); fix AWS_ACCESS_KEY_ID (and "
        "AWS_SECRET_ACCESS_KEY) there: the source reconnects with the new Secret")


def test_a_secret_key_that_does_not_match() -> None:
    text = said(*reply(403, "SignatureDoesNotMatch",
                       "com.amazon.coral.service#SignatureDoesNotMatch",
                       "The request signature we calculated does not match the signature you "
                       "provided. Check your AWS Secret Access Key and signing method."))
    assert text == (
        "SQS refused the signature made with the secret access key of the Secret that "
        "broker.sqs.credentialsFrom names (HTTP 403 SignatureDoesNotMatch): the secret key "
        "does not belong to the access key id, or this machine's clock is more than 5 minutes "
        "off; fix AWS_SECRET_ACCESS_KEY there: the source reconnects with the new Secret")


def test_credentials_not_allowed_on_the_queue() -> None:
    aws = ("User: arn:aws:iam::123456789012:user/hookgate is not authorized to perform: "
           "sqs:receivemessage on resource: arn:aws:sqs:eu-west-1:123456789012:orders")
    text = said(*reply(403, "AccessDenied", "com.amazon.coral.service#AccessDeniedException",
                       aws))
    assert text == (
        "SQS accepted the credentials of the Secret that broker.sqs.credentialsFrom names but "
        f"does not allow them ReceiveMessage on {QUEUE} (HTTP 403 AccessDenied: {aws}); grant "
        "sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes on the queue to that "
        "identity: the source retries with backoff")


def test_an_expired_session_token() -> None:
    text = said(*reply(403, "ExpiredToken", "com.amazon.coral.service#ExpiredTokenException",
                       "The security token included in the request is expired"))
    assert text.startswith("SQS refused the session token of the Secret that "
                           "broker.sqs.credentialsFrom names as expired (HTTP 403 "
                           "ExpiredToken); fix AWS_SESSION_TOKEN"), text


def test_a_clock_too_far_off() -> None:
    text = said(*reply(400, "RequestExpired", "com.amazon.coral.service#RequestExpired",
                       "Request has expired."))
    assert "(HTTP 400 RequestExpired): this machine's clock is more than 5 minutes off" in text


def test_the_code_is_read_from_the_body_alone_and_from_query_protocol_xml() -> None:
    _, headers, body = reply(403, "InvalidClientTokenId", "InvalidClientTokenId", "invalid")
    del headers["x-amzn-query-error"]
    assert "does not know the access key id" in said(403, headers, body)
    xml = ('<?xml version="1.0"?><ErrorResponse xmlns="http://queue.amazonaws.com/doc/'
           '2012-11-05/"><Error><Type>Sender</Type><Code>InvalidClientTokenId</Code><Message>'
           "The security token included in the request is invalid.</Message><Detail/></Error>"
           "<RequestId>5b7b1a59-0d8e-5b2f-8f1f-0e8e7a96aa73</RequestId></ErrorResponse>")
    assert "does not know the access key id" in said(403, {"Content-Type": "text/xml"}, xml)


def test_a_queue_that_does_not_exist_as_aws_says_it() -> None:
    status, headers, body = reply(400, "AWS.SimpleQueueService.NonExistentQueue",
                                  "com.amazonaws.sqs#QueueDoesNotExist",
                                  "The specified queue does not exist.")
    assert said(status, headers, body) == (
        f"SQS queue {QUEUE} does not exist (HTTP 400 AWS.SimpleQueueService.NonExistentQueue); "
        "create it, or fix broker.sqs.queueUrl (and broker.sqs.region): the source retries "
        "with backoff")


def test_what_to_fix_follows_where_the_credentials_came_from() -> None:
    refusal = reply(403, "InvalidClientTokenId", "com.amazon.coral.service#InvalidClientTokenId",
                    "The security token included in the request is invalid.")
    assert said(*refusal, origin="environment").endswith(
        "of the deliverer's environment (HTTP 403 InvalidClientTokenId); fix AWS_ACCESS_KEY_ID "
        "(and AWS_SECRET_ACCESS_KEY) there and restart the deliverer, or use "
        "broker.sqs.credentialsFrom")
    assert said(*refusal, origin="web-identity").endswith(
        "of the IAM role of the deliverer's ServiceAccount (AWS_ROLE_ARN) (HTTP 403 "
        "InvalidClientTokenId); check that identity: the source retries with backoff")


def test_other_failures_keep_the_reply_but_never_a_credential() -> None:
    echo = f"<html>bad gateway; canonical request had {SECRET_KEY}</html>"
    assert said(502, {"Content-Type": "text/html"}, echo, action="GetQueueAttributes") == (
        f"SQS GetQueueAttributes on {QUEUE} failed (HTTP 502): "
        "<html>bad gateway; canonical request had [hidden]</html>")


# -- where the credentials are looked for --------------------------------------------------------

AWS_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
           "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
           "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")


async def connect_error(secrets: dict[str, str]) -> str:
    """What connecting says; it fails before any request (the endpoint is never asked)."""
    config = SourceConfig(key="shop/orders", path="", scheme="broker", broker=BrokerConfig(
        "sqs", {"queueUrl": QUEUE, "endpoint": "http://127.0.0.1:9/"}))
    consumer = SqsConsumer(config, secrets)
    try:
        with pytest.raises(SourceUnavailable) as caught:
            await consumer.connect()
    finally:
        await consumer.close()
    return str(caught.value)


async def test_no_credentials_anywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in AWS_ENV:
        monkeypatch.delenv(name, raising=False)
    assert (await connect_error({})).startswith(
        "no AWS credentials for SQS: set broker.sqs.credentialsFrom")


async def test_a_secret_with_empty_keys_is_named_not_skipped(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # credentials in the environment too: an empty Secret must not fall through to them
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00000")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    assert await connect_error({"AWS_ACCESS_KEY_ID": "", "AWS_SECRET_ACCESS_KEY": ""}) == (
        "the Secret that broker.sqs.credentialsFrom names has an empty AWS_ACCESS_KEY_ID or "
        "AWS_SECRET_ACCESS_KEY; fill them in: the source reconnects with the new Secret")
