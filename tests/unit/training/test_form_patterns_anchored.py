"""Every pattern of the trigger-form contracts (training and promotion) matches the WHOLE value.

JSON Schema's ``pattern`` is a search, not a match: an unanchored pattern lets a valid value carry any
text before or after it into pod names, S3 keys and trainer arguments. The test walks every Param
(and every ``items`` schema) that has a pattern, so a pattern added later is covered too.
"""

from __future__ import annotations

import pytest
from airflow.sdk import Param
from airflow.sdk.definitions.param import ParamValidationError

from mlops.promotion.params import promotion_params
from mlops.training.params import training_params

# A value each pattern accepts (the contracts' defaults are None or [] for some fields).
VALID = {
    ("training", "model_name"): "digits-mlp",
    ("training", "dataset_uri"): "s3://bucket-1/data/train",
    ("training", "image"): "ghcr.io/mlops-airflow/trainer:1.0",
    ("training", "extra_args"): "--warmup-steps=3",
    ("promotion", "model"): "digits-mlp",
    ("promotion", "version"): "20260101t000000-abc",
}


def patterned() -> list[tuple[str, str, Param, bool]]:
    """(contract, field, param, pattern applies to the array's items) for every Param with a pattern."""
    found = []
    for contract, params in (("training", training_params()), ("promotion", promotion_params())):
        for field, param in params.items():
            if "pattern" in param.schema:
                found.append((contract, field, param, False))
            elif "pattern" in (param.schema.get("items") or {}):
                found.append((contract, field, param, True))
    return found


PATTERNED = patterned()
IDS = [f"{contract}.{field}" for contract, field, _, _ in PATTERNED]


def accepts(param: Param, value: str, in_items: bool) -> bool:
    try:
        Param(param.value, **param.schema).resolve([value] if in_items else value)
    except ParamValidationError:
        return False
    return True


def test_every_patterned_field_has_a_known_valid_value():
    """A new pattern must be added to VALID, so the anchoring test below cannot silently skip it."""
    assert {(c, f) for c, f, _, _ in PATTERNED} == set(VALID)


@pytest.mark.parametrize(("contract", "field", "param", "in_items"), PATTERNED, ids=IDS)
def test_a_value_with_text_before_or_after_it_is_refused(contract, field, param, in_items):
    valid = VALID[(contract, field)]
    assert accepts(param, valid, in_items), f"{contract}.{field} refuses its own valid example {valid!r}"
    for tampered in (
        f"{valid} x",
        f"{valid};rm -rf /",
        f"{valid}\nx",
        f"x {valid}",
        f"\n{valid}",
        f" {valid}",
        f"{valid} ",
    ):
        assert not accepts(param, tampered, in_items), f"{contract}.{field} accepts {tampered!r}"


@pytest.mark.parametrize(
    ("contract", "field", "param", "in_items"),
    PATTERNED,
    ids=IDS,
)
def test_a_value_with_a_trailing_newline_is_refused(contract, field, param, in_items):
    valid = VALID[(contract, field)]
    assert accepts(param, valid, in_items)
    assert not accepts(param, f"{valid}\n", in_items), f"{contract}.{field} accepts a trailing newline"
