"""The InstructBLIP hub path (``backend: instructblip``) on a tiny checkpoint saved like a hub repo."""

import pytest

from crrg.errors import ConfigError
from crrg.models.registry import create_model, get_model_config
from crrg.reporting import GeneratedReport, StudyInput

from .conftest import random_image
from .standins import count_generated_tokens, make_tiny_instructblip


@pytest.fixture(scope="module")
def tiny_instructblip(tmp_path_factory):
    return make_tiny_instructblip(tmp_path_factory.mktemp("instructblip"), "gpt2")


def test_hub_checkpoint_writes_a_report_through_the_registry(tiny_instructblip):
    config = get_model_config("blip-instructblip-flan-t5-xl")
    assert config["hub_id"].startswith("Salesforce/")  # the shipped config points at the real hub model
    model = create_model({**config, "hub_id": str(tiny_instructblip), "dtype": "float32",
                          "generation": {"max_new_tokens": 6}})
    study = StudyInput(images=[random_image(0, (64, 48)), random_image(1)], views=["LATERAL", "PA"], indication="cough")
    written = count_generated_tokens(model)
    report = model.generate_report(study)
    assert isinstance(report, GeneratedReport) and report.timings_ms["total_ms"] > 0
    assert report.model == "blip-instructblip-flan-t5-xl"
    again = model.generate_report(study)
    assert again.report == report.report  # greedy decoding is deterministic
    assert 0 < written[0] <= 6 and "Write the findings" not in report.report  # the prompt is not echoed


def test_missing_hub_checkpoint_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot load InstructBLIP"):
        create_model({"family": "blip", "backend": "instructblip", "hub_id": str(tmp_path / "nothing")})
