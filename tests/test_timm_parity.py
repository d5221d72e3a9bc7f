"""Parity with timm in every run: weights under timm's names and timm's logits, recorded by timm itself
(``tests/timm_fixtures.py`` says how), loaded through ``vitkit.load_weights`` and compared number for number."""

import json

import pytest
import torch

import vitkit
from tests.timm_fixtures import FIXTURE, MODELS, seeded_input, state_dict_from_record

RECORDS = json.loads(FIXTURE.read_text())["models"]


def test_the_fixture_covers_every_timm_model_vitkit_maps():
    assert set(RECORDS) == set(MODELS)


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n == "vit_b16" else n for n in MODELS]
)
def test_logits_equal_timms(name):
    record = RECORDS[name]
    state = state_dict_from_record(record)
    model = vitkit.create_model(name, num_classes=len(record["logits"][0])).eval()
    assert vitkit.load_weights(model, state).source in ("timm", "vitkit/timm")
    expected = torch.tensor(record["logits"])
    assert expected.std() > 0.1, "reference logits too flat for the comparison to mean anything"
    with torch.no_grad():
        logits = model(seeded_input(name, tuple(record["input_shape"])))
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=0)
