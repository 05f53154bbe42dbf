"""Which parameters each stage trains, and LoRA adapters saved / loaded / merged without changing outputs."""

import torch

from crrg.blip.lora import STAGE_DEFAULTS, load_adapter, parameter_counts, save_adapter, set_trainable
from crrg.models.registry import build_model, load_pretrained, save_pretrained

from .conftest import random_image


def _batch(model):
    sample = model.prepare_sample([random_image(0), random_image(1)], ["PA", "LATERAL"],
                                  "Indication: cough. Write the findings and impression.", "The lungs are clear.")
    return model.collate([sample])


def _perturb_adapters(model, seed=0):
    """Fresh LoRA B matrices are zero (a no-op); give them values so equality tests mean something."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_stage1_trains_qformer_and_vision_lora_never_the_lm(tiny_config):
    torch.manual_seed(0)
    model = build_model(tiny_config)
    counts = set_trainable(model, STAGE_DEFAULTS[1])
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert not any(n.startswith("lm.") for n in trainable)
    assert counts["vision_lora"] > 0 and counts["qformer"] > 0
    assert all("lora_" in n for n in trainable if n.startswith("vision."))
    # a gradient step changes nothing inside the frozen LM
    before = {k: v.clone() for k, v in model.lm.state_dict().items()}
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    model(_batch(model)).backward()
    opt.step()
    assert all(torch.equal(before[k], v) for k, v in model.lm.state_dict().items())


def test_stage2_trains_only_lora_on_the_lm(tiny_config):
    model = build_model(tiny_config)
    model.add_adapters("lm", {"r": 2, "dropout": 0.0})
    counts = set_trainable(model, STAGE_DEFAULTS[2])
    lm_trainable = [n for n, p in model.named_parameters() if p.requires_grad and n.startswith("lm.")]
    assert lm_trainable and all("lora_" in n for n in lm_trainable)
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("vision."))
    table = parameter_counts(model)
    assert table["lm"]["trainable"] == 0 and table["lm_lora"]["trainable"] == counts["lm_lora"] > 0
    assert model.crrg_config["lora"]["lm"]["r"] == 2  # the saved config rebuilds the same structure


def test_adapters_save_load_and_merge_keep_outputs_identical(tiny_config, tmp_path):
    torch.manual_seed(0)
    model = build_model(tiny_config)
    model.add_adapters("lm", {"r": 2, "dropout": 0.0})
    _perturb_adapters(model)
    model.eval()
    batch = _batch(model)
    with torch.no_grad():
        reference = model(batch)
    assert (tmp_path / "full").exists() is False
    save_pretrained(model, tmp_path / "full")
    for part in ("vision", "lm"):
        assert (tmp_path / "full" / "adapters" / part / "adapter_model.safetensors").is_file()

    # 1. the whole saved model round-trips
    reloaded = load_pretrained(tmp_path / "full")
    with torch.no_grad():
        assert torch.allclose(reloaded(batch), reference, atol=1e-6)

    # 2. adapters alone, attached to the same base weights, reproduce the model
    base = build_model(tiny_config)
    base.load_state_dict({k: v for k, v in model.state_dict().items() if "lora_" not in k and not k.startswith("lm.")}, strict=False)
    base.lm.load_state_dict(model.lm.get_base_model().state_dict(), strict=False)
    for part in ("vision", "lm"):
        load_adapter(base, part, tmp_path / "full" / "adapters" / part)
    base.eval()
    with torch.no_grad():
        assert torch.allclose(base(batch), reference, atol=1e-6)

    # 3. merged into the base weights: same output, no LoRA left, and it saves/loads as a plain model
    model.merge_adapters()
    assert not any("lora_" in n for n, _ in model.named_parameters())
    with torch.no_grad():
        assert torch.allclose(model(batch), reference, atol=1e-5)
    save_pretrained(model, tmp_path / "merged")
    merged = load_pretrained(tmp_path / "merged")
    with torch.no_grad():
        assert torch.allclose(merged(batch), reference, atol=1e-5)


def test_adapter_saved_on_its_own(tiny_config, tmp_path):
    model = build_model(tiny_config)
    _perturb_adapters(model, seed=3)
    save_adapter(model, "vision", tmp_path / "vision")
    other = build_model(tiny_config)
    load_adapter(other, "vision", tmp_path / "vision")
    a = {k: v for k, v in model.vision.state_dict().items() if "lora_" in k}
    b = {k: v for k, v in other.vision.state_dict().items() if "lora_" in k}
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_stage1_contrastive_loss_trains_the_qformer_text_side(tiny_config):
    torch.manual_seed(0)
    model = build_model({**tiny_config, "itc_weight": 1.0})
    set_trainable(model, STAGE_DEFAULTS[1])
    samples = [model.prepare_sample([random_image(i)], ["PA"], "Write the findings and impression.", text)
               for i, text in enumerate(["The lungs are clear.", "Cardiomegaly with effusion."])]
    batch = model.collate(samples)
    model.train()
    with_itc = model(batch)
    model.itc_weight = 0.0
    without = model(batch)
    assert with_itc.item() > without.item()  # ITC of 2 studies is about log(2) at initialisation
    model.itc_weight = 1.0
    with_itc.backward()
    assert model.itc_text.weight.grad is not None and model.itc_text.weight.grad.abs().sum() > 0
    assert not any(p.grad is not None for n, p in model.named_parameters() if n.startswith("lm.") and "lora_" not in n)


def test_a_frozen_resnet_tower_keeps_its_batchnorm_statistics_in_training(tiny_config):
    """Stage 1 with a frozen pretrained ResNet (+ LoRA): train mode must not move its BatchNorm statistics."""
    torch.manual_seed(0)
    model = build_model({**tiny_config, "vision": {"type": "resnet18"}})
    set_trainable(model, STAGE_DEFAULTS[1])
    model.train()
    bn = [m for m in model.vision.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    before = [m.running_mean.clone() for m in bn]
    model(_batch(model))
    assert not any(m.training for m in bn) and model.qformer.training
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bn))
    # a tower that is trained itself keeps updating them
    set_trainable(model, ["qformer", "vision"])
    model.train()
    model(_batch(model))
    assert all(m.training for m in bn) and not torch.equal(before[0], bn[0].running_mean)
