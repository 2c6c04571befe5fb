"""Model names and version ids become S3 key segments and Kubernetes labels: the whole value is checked."""

from __future__ import annotations

import pytest

from mlops.registry import artifact_uri, validate_name


@pytest.mark.parametrize("name", ["digits", "v1", "20260101t000000-abc", "a", "model.v2_rc-1"])
def test_a_safe_name_is_returned_unchanged(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    ["v1\n", "v1\nx", "v1 x", " v1", "V1", "-v1", "v1-", "", "a" * 64, "v1/../prod", "v1:latest"],
)
def test_an_unsafe_name_is_refused_naming_the_field(name):
    with pytest.raises(ValueError, match=r"^version: .* must be 1-63 lowercase letters"):
        validate_name(name, "version")


def test_a_trailing_newline_never_reaches_an_s3_key():
    """Python's `$` matches before a final newline: a search/match with it accepted "v1\\n"."""
    with pytest.raises(ValueError, match="version: 'v1\\\\n'"):
        artifact_uri("bucket", "digits", "v1\n")
    assert artifact_uri("bucket", "digits", "v1") == "s3://bucket/models/digits/versions/v1/"
