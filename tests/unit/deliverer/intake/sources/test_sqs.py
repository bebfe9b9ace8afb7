"""SQS: AWS Signature Version 4 against the AWS test suite, the region of a queue URL and STS
credentials."""

from __future__ import annotations

import datetime as dt

from hookgate.deliverer.intake.sources.sqs import Credentials, parse_sts, region_of, sign_v4


def test_sigv4_matches_the_aws_test_suite() -> None:
    # get-vanilla from the AWS Signature Version 4 test suite
    headers = sign_v4("GET", "https://example.amazonaws.com/", {}, b"",
                      Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
                      "us-east-1", "service", dt.datetime(2015, 8, 30, 12, 36, 0))
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    assert headers["x-amz-date"] == "20150830T123600Z"


def test_sqs_region_and_sts_credentials() -> None:
    assert region_of("https://sqs.eu-west-1.amazonaws.com/123/q") == "eu-west-1"
    assert region_of("http://localhost:9324/000000000000/q") is None
    creds = parse_sts(
        '<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">'
        "<AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>AK</AccessKeyId>"
        "<SecretAccessKey>SK</SecretAccessKey><SessionToken>TOK</SessionToken>"
        "<Expiration>2030-01-01T00:00:00Z</Expiration></Credentials>"
        "</AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>")
    assert (creds.access_key, creds.secret_key, creds.token) == ("AK", "SK", "TOK")
