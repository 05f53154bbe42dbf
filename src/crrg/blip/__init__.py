"""ClinicalBLIP: an InstructBLIP-style report generator with multi-stage LoRA fine-tuning and
prior-knowledge prompts.

- :mod:`crrg.blip.model`     image encoder -> instruction-aware Q-Former -> projection -> causal LM;
  registry family ``blip``; ``generate_report(StudyInput, findings=..., prompt_variant=...)``.
- :mod:`crrg.blip.prompts`   instructions carrying the indication and likely findings (ablation variants).
- :mod:`crrg.blip.lora`      peft LoRA on the image encoder (stage 1) and the LM (stage 2); save/load/merge.
- :mod:`crrg.blip.task`      ``crrg train blip --config configs/blip/stage1.yaml`` (then ``stage2.yaml``).
- :mod:`crrg.blip.hub`       Salesforce InstructBLIP hub checkpoints behind the same report interface,
  trainable by the same two stages (``model.backend: instructblip``; Q-Former + peft LoRA).
- :mod:`crrg.blip.language_model`  a small report-pretrained GPT-2 when the hub is out of reach.
"""
