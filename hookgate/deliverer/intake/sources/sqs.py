"""Amazon SQS source: long-polling ``ReceiveMessage``, ``DeleteMessageBatch`` after enqueue.

It speaks SQS's JSON protocol over aiohttp with Signature Version 4, with no AWS SDK:
aiobotocore pins python-dateutil below 3 while the operator's kubernetes client needs 3 or
later, and four API calls do not need an SDK.

Every deliverer process polls the queue (competing consumers). A message is deleted after
its event is enqueued; one a dead process had received becomes visible again when the
queue's visibility timeout expires. Headers are the message attributes (String and Number
values) plus the system attributes (``SentTimestamp``, ``MessageGroupId``, ...). The message
id is SQS's ``MessageId``. The lag is ``ApproximateNumberOfMessages``.

Credentials: the Secret of ``credentialsFrom``, else the pod's identity, in the order the
AWS SDKs use: ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (and ``AWS_SESSION_TOKEN``)
from the environment, then a web identity token (IRSA: ``AWS_ROLE_ARN`` and
``AWS_WEB_IDENTITY_TOKEN_FILE``, exchanged with STS), then the container credentials
endpoint (EKS Pod Identity, ECS: ``AWS_CONTAINER_CREDENTIALS_FULL_URI`` /
``..._RELATIVE_URI``).

A refusal says what was refused and what to do (:func:`sqs_error`): an unknown access key,
a wrong secret key (a signature that does not match), an expired session token, a clock too
far off, credentials not allowed on the queue, a queue that does not exist. Credentials are
never in a message.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import hmac
import json
import os
import re
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from hookgate.deliverer.intake.sources.base import Consumer, Message, SourceUnavailable

__all__ = ["CONSUMER", "Credentials", "SqsConsumer", "region_of", "sign_v4", "sqs_error"]

_JSON = "application/x-amz-json-1.0"

# AWS error codes, as SQS's JSON protocol gives them: in the x-amzn-query-error header
# ("InvalidClientTokenId;Sender", the code of the older query protocol) and as the body's
# __type ("com.amazonaws.sqs#QueueDoesNotExist", "com.amazon.coral.service#...").
_UNKNOWN_KEY = {"InvalidClientTokenId", "UnrecognizedClientException", "InvalidAccessKeyId",
                "MissingAuthenticationToken", "MissingAuthenticationTokenException"}
_BAD_SIGNATURE = {"SignatureDoesNotMatch", "InvalidSignatureException", "IncompleteSignature",
                  "IncompleteSignatureException"}
_EXPIRED_TOKEN = {"ExpiredToken", "ExpiredTokenException"}
_CLOCK = {"RequestExpired", "RequestTimeTooSkewed", "RequestInTheFuture"}
_DENIED = {"AccessDenied", "AccessDeniedException", "AWS.SimpleQueueService.AccessDenied"}
_NO_QUEUE = {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue"}

#: Where the credentials came from, as the messages name it.
ORIGINS = {
    "secret": "the Secret that broker.sqs.credentialsFrom names",
    "environment": "the deliverer's environment",
    "web-identity": "the IAM role of the deliverer's ServiceAccount (AWS_ROLE_ARN)",
    "container": "the container credentials endpoint",
}


def _fix(origin: str, keys: str) -> str:
    if origin == "secret":
        return f"fix {keys} there: the source reconnects with the new Secret"
    if origin == "environment":
        return (f"fix {keys} there and restart the deliverer, or use "
                "broker.sqs.credentialsFrom")
    return "check that identity: the source retries with backoff"


def _codes(headers: Mapping[str, str], text: str) -> tuple[set[str], str]:
    """The AWS error codes of a failed call and AWS's message."""
    codes: set[str] = set()
    lower = {k.lower(): v for k, v in headers.items()}
    query = lower.get("x-amzn-query-error", "").split(";", 1)[0].strip()
    if query:
        codes.add(query)
    message = ""
    try:
        doc = json.loads(text) if text else None
    except ValueError:
        doc = None
    if isinstance(doc, dict):
        kind = str(doc.get("__type") or doc.get("code") or "").rsplit("#", 1)[-1]
        if kind:
            codes.add(kind)
        message = str(doc.get("message") or doc.get("Message") or "")
    else:  # the query protocol's XML <ErrorResponse>, which a proxy may still answer
        code = re.search(r"<Code>([^<]+)</Code>", text)
        if code:
            codes.add(code.group(1).strip())
        found = re.search(r"<Message>([^<]*)</Message>", text)
        message = found.group(1) if found else ""
    return codes, message


def sqs_error(action: str, queue_url: str, status: int, headers: Mapping[str, str],
              text: str, origin: str = "secret", hide: Sequence[str] = ()
              ) -> SourceUnavailable:
    """What a failed SQS call (HTTP ``status``, response ``headers`` and body ``text``)
    means, and what to do. ``origin`` is where the credentials came from (a key of
    :data:`ORIGINS`); values in ``hide`` (the credentials) never appear in the message
    (those of 8 characters or more: shorter ones are no real AWS credentials, and replacing
    them would garble the text)."""
    codes, aws_message = _codes(headers, text)
    where = ORIGINS.get(origin, origin)

    def one(group: set[str]) -> str | None:
        return next((c for c in sorted(codes) if c in group), None)

    if code := one(_UNKNOWN_KEY):
        message = (f"SQS does not know the access key id of {where} (HTTP {status} {code}); "
                   + _fix(origin, "AWS_ACCESS_KEY_ID (and AWS_SECRET_ACCESS_KEY)"))
    elif code := one(_BAD_SIGNATURE):
        message = (f"SQS refused the signature made with the secret access key of {where} "
                   f"(HTTP {status} {code}): the secret key does not belong to the access key "
                   "id, or this machine's clock is more than 5 minutes off; "
                   + _fix(origin, "AWS_SECRET_ACCESS_KEY"))
    elif code := one(_EXPIRED_TOKEN):
        message = (f"SQS refused the session token of {where} as expired (HTTP {status} "
                   f"{code}); " + _fix(origin, "AWS_SESSION_TOKEN and its key pair (fresh "
                                       "ones, or long-lived keys without a token)"))
    elif code := one(_CLOCK):
        message = (f"SQS refused the request as signed at the wrong time (HTTP {status} "
                   f"{code}): this machine's clock is more than 5 minutes off; set it right "
                   "(NTP): the source retries with backoff")
    elif code := one(_DENIED):
        message = (f"SQS accepted the credentials of {where} but does not allow them "
                   f"{action} on {queue_url} (HTTP {status} {code}: {aws_message[:300]}); "
                   "grant sqs:ReceiveMessage, sqs:DeleteMessage and sqs:GetQueueAttributes "
                   "on the queue to that identity: the source retries with backoff")
    elif code := one(_NO_QUEUE):
        message = (f"SQS queue {queue_url} does not exist (HTTP {status} {code}); create it, "
                   "or fix broker.sqs.queueUrl (and broker.sqs.region): the source retries "
                   "with backoff")
    else:
        message = f"SQS {action} on {queue_url} failed (HTTP {status}): {text[:500]}"
    for value in hide:
        if len(value) >= 8:
            message = message.replace(value, "[hidden]")
    return SourceUnavailable(message)


@dataclass(frozen=True)
class Credentials:
    access_key: str
    secret_key: str
    token: str | None = None
    expires: float | None = None  # unix seconds


def sign_v4(method: str, url: str, headers: Mapping[str, str], body: bytes,
            creds: Credentials, region: str, service: str, now: dt.datetime
            ) -> dict[str, str]:
    """``headers`` plus ``x-amz-date`` (and the session token) and the SigV4 Authorization."""
    amz_date = now.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    parts = urllib.parse.urlsplit(url)
    out = {k.lower(): v for k, v in headers.items()}
    out["host"] = parts.netloc
    out["x-amz-date"] = amz_date
    if creds.token:
        out["x-amz-security-token"] = creds.token
    names = sorted(out)
    query = "&".join(sorted(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)))
    canonical = "\n".join([
        method, urllib.parse.quote(parts.path or "/", safe="/-_.~"), query,
        "".join(f"{n}:{' '.join(out[n].split())}\n" for n in names), ";".join(names),
        hashlib.sha256(body).hexdigest()])
    scope = f"{day}/{region}/{service}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    key = ("AWS4" + creds.secret_key).encode()
    for part in (day, region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    out["authorization"] = (f"AWS4-HMAC-SHA256 Credential={creds.access_key}/{scope}, "
                            f"SignedHeaders={';'.join(names)}, Signature={signature}")
    return out


def region_of(queue_url: str) -> str | None:
    """The region in an AWS queue URL (``https://sqs.eu-west-1.amazonaws.com/...``)."""
    host = urllib.parse.urlsplit(queue_url).hostname or ""
    match = re.match(r"^(?:sqs\.)?([a-z]{2}(?:-[a-z]+)+-\d)\.", host)
    return match.group(1) if match else None


class SqsConsumer(Consumer):
    batch = 10  # SQS's maximum per ReceiveMessage

    async def connect(self) -> None:
        self.queue_url = str(self.settings["queueUrl"])
        endpoint = self.settings.get("endpoint")
        if not endpoint:
            parts = urllib.parse.urlsplit(self.queue_url)
            endpoint = f"{parts.scheme}://{parts.netloc}"
        self.endpoint = str(endpoint).rstrip("/") + "/"
        self.region = str(self.settings.get("region") or region_of(self.queue_url)
                          or os.environ.get("AWS_REGION") or "us-east-1")
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=40))
        self.creds: Credentials | None = None
        self.origin = "secret"
        await self._call("GetQueueAttributes", {"QueueUrl": self.queue_url,
                                                "AttributeNames": ["QueueArn"]})

    async def _credentials(self) -> Credentials:
        if self.creds is not None and (self.creds.expires is None
                                       or self.creds.expires - time.time() > 300):
            return self.creds
        s = self.secrets
        if s.get("AWS_ACCESS_KEY_ID") and s.get("AWS_SECRET_ACCESS_KEY"):
            self.origin = "secret"
            self.creds = Credentials(s["AWS_ACCESS_KEY_ID"], s["AWS_SECRET_ACCESS_KEY"],
                                     s.get("AWS_SESSION_TOKEN"))
        elif "AWS_ACCESS_KEY_ID" in s:  # credentialsFrom is set: its Secret is not filled in
            raise SourceUnavailable(
                f"{ORIGINS['secret']} has an empty AWS_ACCESS_KEY_ID or AWS_SECRET_ACCESS_KEY; "
                "fill them in: the source reconnects with the new Secret")
        elif os.environ.get("AWS_ACCESS_KEY_ID") and os.environ.get("AWS_SECRET_ACCESS_KEY"):
            self.origin = "environment"
            self.creds = Credentials(os.environ["AWS_ACCESS_KEY_ID"],
                                     os.environ["AWS_SECRET_ACCESS_KEY"],
                                     os.environ.get("AWS_SESSION_TOKEN"))
        elif os.environ.get("AWS_WEB_IDENTITY_TOKEN_FILE") and os.environ.get("AWS_ROLE_ARN"):
            self.origin = "web-identity"
            self.creds = await self._web_identity()
        elif (os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI")
              or os.environ.get("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")):
            self.origin = "container"
            self.creds = await self._container()
        else:
            raise SourceUnavailable(
                "no AWS credentials for SQS: set broker.sqs.credentialsFrom (a Secret with "
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or give the deliverer an "
                "identity (an IAM role for its ServiceAccount, or AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY in its environment): the source retries with backoff")
        return self.creds

    async def _web_identity(self) -> Credentials:
        token = (await asyncio.to_thread(
            Path(os.environ["AWS_WEB_IDENTITY_TOKEN_FILE"]).read_text)).strip()
        params = {"Action": "AssumeRoleWithWebIdentity", "Version": "2011-06-15",
                  "RoleArn": os.environ["AWS_ROLE_ARN"], "WebIdentityToken": token,
                  "RoleSessionName": f"hookgate-{os.getpid()}"}
        url = f"https://sts.{self.region}.amazonaws.com/"
        async with self.http.post(url, data=params) as resp:
            text = await resp.text()
            if resp.status != 200:
                raise SourceUnavailable(f"STS refused the web identity: {text[:500]}")
        return parse_sts(text)

    async def _container(self) -> Credentials:
        url = os.environ.get("AWS_CONTAINER_CREDENTIALS_FULL_URI") or (
            "http://169.254.170.2" + os.environ["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"])
        headers = {}
        token_file = os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE")
        if token_file:
            headers["Authorization"] = (await asyncio.to_thread(
                Path(token_file).read_text)).strip()
        elif os.environ.get("AWS_CONTAINER_AUTHORIZATION_TOKEN"):
            headers["Authorization"] = os.environ["AWS_CONTAINER_AUTHORIZATION_TOKEN"]
        async with self.http.get(url, headers=headers) as resp:
            doc = await resp.json(content_type=None)
        expires = dt.datetime.fromisoformat(doc["Expiration"].replace("Z", "+00:00"))
        return Credentials(doc["AccessKeyId"], doc["SecretAccessKey"], doc.get("Token"),
                           expires.timestamp())

    async def _call(self, action: str, payload: dict[str, Any]) -> Any:
        body = json.dumps(payload).encode()
        creds = await self._credentials()
        headers = sign_v4("POST", self.endpoint, {
            "content-type": _JSON, "x-amz-target": f"AmazonSQS.{action}"}, body,
            creds, self.region, "sqs", dt.datetime.now(dt.UTC))
        try:
            async with self.http.post(self.endpoint, data=body, headers=headers) as resp:
                text = await resp.text()
                status = resp.status
                answered = dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            raise SourceUnavailable(f"SQS at {self.endpoint} is not reachable: "
                                    f"{type(exc).__name__}: {exc}") from exc
        if status != 200:
            raise sqs_error(action, self.queue_url, status, answered, text, self.origin,
                            hide=(creds.access_key, creds.secret_key, creds.token or ""))
        return json.loads(text) if text else {}

    async def receive(self, wait: float) -> Sequence[Message]:
        doc = await self._call("ReceiveMessage", {
            "QueueUrl": self.queue_url, "MaxNumberOfMessages": self.batch,
            "WaitTimeSeconds": max(0, min(20, round(wait))),
            "MessageAttributeNames": ["All"], "MessageSystemAttributeNames": ["All"],
            "AttributeNames": ["All"]})
        out = []
        for m in doc.get("Messages") or ():
            headers = {str(k): str(v) for k, v in (m.get("Attributes") or {}).items()}
            for name, attr in (m.get("MessageAttributes") or {}).items():
                if "StringValue" in attr:
                    headers[name] = str(attr["StringValue"])
            out.append(Message(raw=str(m.get("Body", "")).encode(), headers=headers,
                               message_id=m.get("MessageId"), handle=m["ReceiptHandle"]))
        return out

    async def ack(self, messages: Sequence[Message]) -> None:
        for start in range(0, len(messages), 10):
            chunk = messages[start:start + 10]
            doc = await self._call("DeleteMessageBatch", {
                "QueueUrl": self.queue_url,
                "Entries": [{"Id": str(i), "ReceiptHandle": m.handle}
                            for i, m in enumerate(chunk)]})
            failed = doc.get("Failed") or []
            if failed:  # the message comes back after its visibility timeout: a duplicate
                raise SourceUnavailable(f"SQS did not delete {len(failed)} messages: "
                                        f"{failed[0].get('Message', failed[0])}")

    async def lag(self) -> int | None:
        doc = await self._call("GetQueueAttributes", {
            "QueueUrl": self.queue_url, "AttributeNames": ["ApproximateNumberOfMessages"]})
        value = (doc.get("Attributes") or {}).get("ApproximateNumberOfMessages")
        return int(value) if value is not None else None

    async def close(self) -> None:
        http = getattr(self, "http", None)
        if http is not None:
            await http.close()


def parse_sts(text: str) -> Credentials:
    """Credentials from an STS AssumeRoleWithWebIdentity XML response."""
    root = ET.fromstring(text)

    def find(name: str) -> str:
        node = next((n for n in root.iter() if n.tag.rsplit("}", 1)[-1] == name), None)
        if node is None or node.text is None:
            raise SourceUnavailable(f"STS answered without {name}")
        return node.text

    expires = dt.datetime.fromisoformat(find("Expiration").replace("Z", "+00:00"))
    return Credentials(find("AccessKeyId"), find("SecretAccessKey"), find("SessionToken"),
                       expires.timestamp())


CONSUMER = SqsConsumer
