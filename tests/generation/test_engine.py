"""The report engine: one loader, one error class, the same timings keys for every generator."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crrg.generation import DecodingOptions, GenerationError, ReportEngine, load_generator
from crrg.reporting import TIMING_KEYS, StudyInput


def _study(views=("PA", "LATERAL")):
    rng = np.random.default_rng(0)
    return StudyInput(images=[rng.random((72, 64), dtype=np.float32) for _ in views], views=list(views))


def test_load_generator_holds_the_model_on_its_device_and_applies_options(saved_rrg, monkeypatch):
    import crrg.rrg.decoding as decoding

    engine = load_generator(saved_rrg, device="cpu")
    assert isinstance(engine, ReportEngine) and engine.device == torch.device("cpu") and engine.family == "rrg"
    assert engine.defaults == DecodingOptions()  # the tiny model's decoding.json
    seen = []
    real = decoding.decode_studies
    monkeypatch.setattr(decoding, "decode_studies", lambda m, s, o, *rest: seen.append(o) or real(m, s, o, *rest))
    report = engine.generate(_study(), {"beams": 2, "joint": "off"})
    assert seen[-1].beams == 2 and seen[-1].joint.value == "off"
    assert tuple(report.timings_ms) == TIMING_KEYS and report.timings_ms["total_ms"] > 0
    assert engine.generate_report(_study()).report  # the ReportGenerator protocol, for the service
    with pytest.raises(GenerationError, match="unknown decoding option"):
        engine.generate(_study(), {"beam": 2})


def test_one_error_class_for_what_cannot_be_loaded(tmp_path, monkeypatch):
    from crrg.models import create_model, save_pretrained

    save_pretrained(create_model("classifier-resnet18", image_encoder={"image_size": 32}), tmp_path / "clf")
    with pytest.raises(GenerationError, match="does not generate reports"):
        load_generator(tmp_path / "clf", device="cpu")
    with pytest.raises(GenerationError, match="not a saved crrg model"):
        load_generator(tmp_path, device="cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(GenerationError, match="no GPU"):
        load_generator(tmp_path / "clf", device="cuda")


def test_every_generator_reports_the_same_timings_keys(saved_rrg, tiny_lm_folder, tmp_path):
    from crrg.clip.retrieval import RetrievalIndex
    from crrg.models import create_model

    torch.manual_seed(0)
    blip = create_model({"family": "blip", "image_size": 32, "lm": {"pretrained": str(tiny_lm_folder)},
                         "vision": {"type": "resnet18"}, "qformer": {"hidden_size": 32, "layers": 1, "heads": 2,
                                                                     "num_query_tokens": 2},
                         "generation": {"max_new_tokens": 4}}).eval()
    clip = create_model("clip-tiny").eval()
    clip.retrieval = RetrievalIndex(torch.nn.functional.normalize(torch.randn(3, 32), dim=-1),
                                    [{"id": str(i), "findings": f"finding {i}.", "impression": "ok."} for i in range(3)])
    engines = [load_generator(saved_rrg, device="cpu"), ReportEngine(blip, "blip"), ReportEngine(clip, "retrieval")]
    for engine in engines:
        report = engine.generate(_study())
        assert tuple(report.timings_ms) == TIMING_KEYS, engine.name
        assert tuple(engine.model.generate_report(_study()).timings_ms) == TIMING_KEYS, engine.name


def test_the_frontal_image_rule_is_one_rule():
    from crrg.observations import frontal_index

    assert frontal_index(["LATERAL", "AP"]) == 1
    assert frontal_index(["LATERAL", "unknown"]) == 1  # an unlabelled film before a lateral one
    assert frontal_index(["LL", "LATERAL"]) is None and frontal_index(["LATERAL"], fallback=0) == 0
    with pytest.raises(Exception, match="only lateral"):
        _study(("LATERAL",)).frontal_index()
    assert _study(("LATERAL",)).frontal_index(required=False) == 0


@pytest.mark.gpu
def test_reports_on_cuda_match_the_cpu(saved_rrg):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    cpu = load_generator(saved_rrg, device="cpu").generate(_study())
    gpu_engine = load_generator(saved_rrg, device="cuda")
    assert next(gpu_engine.model.parameters()).is_cuda
    assert gpu_engine.generate(_study()).regions[0].name == cpu.regions[0].name
