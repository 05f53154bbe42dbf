"""The Lightning module of the ``rrg`` task: what each stage trains, its losses, its optimizer."""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch import nn

from crrg.errors import ConfigError
from crrg.rrg.region_data import scatter_regions
from crrg.rrg.region_data import _section
from crrg.rrg.stage_model import FEATURE_STAGES, NEW_HEAD_PREFIXES, build_rrg, ensure_tokenizer, stage_of

log = logging.getLogger(__name__)


class RRGModule(L.LightningModule):
    def __init__(self, config: dict):
        super().__init__()
        self.config = config
        self.stage_name = stage_of(config)
        self.model = build_rrg(config)
        if self.stage_name in ("pretrain", "language", "joint"):
            ensure_tokenizer(self.model, config)
        elif self.stage_name in FEATURE_STAGES and self.model.tokenizer is None:
            pass
        loss = _section(config, "loss")
        self.w_sel = float(loss.get("selection", 1.0))
        self.w_abn = float(loss.get("abnormal", 1.0))
        self.w_find = float(loss.get("findings", 1.0))
        self.w_lm = float(loss.get("language", 1.0))
        # > 0: the detector stage also trains the region heads on its ground-truth-box features
        # (RegionDetector.losses_and_target_features), so those features learn to show disease.
        self.w_det_heads = float(loss.get("detector_heads", 0.0))
        if self.stage_name == "detector" and self.w_det_heads > 0 and self.model.context is not None:
            raise ConfigError("loss.detector_heads trains the region heads on the detector's features alone, but this "
                              "model's region features also carry region_context: set loss.detector_heads to 0 for "
                              "the detector stage (the classifiers stage trains the heads on both)")
        # About one region in nine is abnormal: without up-weighting them the head learns "normal".
        self.abnormal_pos_weight = float(loss.get("abnormal_pos_weight", 1.0))
        # Zeroing the finding probabilities for some sentences teaches the decoder to write without
        # them too, so "joint off" can be measured on the same model.
        self.condition_dropout = float(loss.get("condition_dropout", 0.3))
        self._freeze()

    def _trainable(self) -> list[nn.Module]:
        m = self.model
        heads = [m.projector, m.selection, m.abnormality, m.findings] + ([m.context_projector] if m.context_projector else [])
        return {
            "detector": [m.detector] + (heads if self.w_det_heads > 0 else []),
            "classifiers": heads,
            "pretrain": [m.language.gpt2],
            # the region context is what lets the decoder tell a mass from other opacities, so the
            # decoder's own loss also shapes its projection (the joint stage then refits the heads to it)
            "language": [m.language, m.impression_query, m.global_query] + ([m.context_projector] if m.context_projector else []),
            "joint": heads + [m.language, m.impression_query, m.global_query],
        }[self.stage_name]

    def _freeze(self) -> None:
        self.model.requires_grad_(False)
        for module in self._trainable():
            module.requires_grad_(True)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # A checkpoint written before a newer head existed resumes with that head's initial values.
        state = checkpoint.get("state_dict", {})
        for key, value in self.state_dict().items():
            if key not in state and key.removeprefix("model.").startswith(NEW_HEAD_PREFIXES):
                state[key] = value

    def train(self, mode: bool = True) -> "RRGModule":
        """Frozen parts stay in eval mode (no dropout, fixed BatchNorm statistics). Done here rather than
        in ``on_train_epoch_start``, which Lightning skips when it resumes mid-epoch."""
        super().train(mode)
        if mode:
            self.model.eval()
            for module in self._trainable():
                module.train()
        return self

    def _lm_batch(self, batch: dict, feats: torch.Tensor, finding_probs: torch.Tensor):
        from crrg.rrg.language import encode_sentences

        impressions = batch.get("impressions") or []
        globals_ = (batch.get("globals") or []) if self.model.global_sentences else []
        if not batch["sentences"] and not impressions and not globals_:
            return None
        rows = torch.tensor([s[0] for s in batch["sentences"]] + [i[0] for i in impressions] + [g[0] for g in globals_],
                            dtype=torch.long)
        regions = torch.tensor([s[1] for s in batch["sentences"]], dtype=torch.long)
        inputs = [feats[rows[: len(regions)], regions]]
        if impressions:
            # the IMPRESSION is written from the (ground-truth) abnormal regions, as at inference
            imp_rows = rows[len(regions):len(regions) + len(impressions)]
            abnormal = (batch["abnormal"] * batch["known"])[imp_rows]
            inputs.append(self.model.impression_query(feats[imp_rows], abnormal))
        if globals_:
            # an empty target teaches the decoder to stop at once when nothing is left to say
            g_rows = rows[len(regions) + len(impressions):]
            inputs.append(self.model.global_query(feats[g_rows], torch.ones_like(batch["known"][g_rows])))
        texts = [s[2] for s in batch["sentences"]] + [i[1] for i in impressions] + [g[1] for g in globals_]
        ids, mask = encode_sentences(self.model.tokenizer, texts,
                                     self.model.lang_cfg.n_positions - self.model.lang_cfg.prefix_length - 1)
        ids, mask = ids.to(self.device), mask.to(self.device)
        cond = finding_probs[rows]
        if "conditions" in batch:  # the attached classifier's probabilities, the head's where it has none
            given = batch["conditions"][rows].to(cond)
            cond = torch.where(torch.isnan(given), cond, given)
        if self.training and self.condition_dropout > 0:
            keep = (torch.rand(len(rows), 1, device=cond.device) >= self.condition_dropout).to(cond.dtype)
            cond = cond * keep
        return self.model.language.conditioned_loss(torch.cat(inputs), ids, mask, cond)

    def _head_losses(self, batch: dict, feats: torch.Tensor) -> dict[str, torch.Tensor]:
        bce = nn.functional.binary_cross_entropy_with_logits
        logits = self.model.heads(feats)
        known = batch["known"]
        denom = known.sum().clamp(min=1)
        return {
            "selection": (bce(logits["selection"], batch["selected"], reduction="none") * known).sum() / denom,
            "abnormal": (bce(logits["abnormal"], batch["abnormal"], reduction="none",
                             pos_weight=torch.tensor(self.abnormal_pos_weight, device=known.device)) * known).sum() / denom,
            "findings": bce(logits["findings"], batch["findings"]),
            "finding_probs": torch.sigmoid(logits["findings"]),
        }

    def _weighted_head_losses(self, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The three head losses, each times its ``loss.*`` weight (one rule for every stage that trains heads)."""
        return {"selection": self.w_sel * parts["selection"], "abnormal": self.w_abn * parts["abnormal"],
                "findings": self.w_find * parts["findings"]}

    def _step(self, batch, prefix: str) -> torch.Tensor:
        stage, m = self.stage_name, self.model
        if stage == "detector":
            images, targets, regions = batch
            train = prefix == "train"
            with torch.set_grad_enabled(train):
                # torchvision only returns losses in train mode; validation then restores eval mode
                if self.w_det_heads > 0:
                    losses, feats = m.detector.losses_and_target_features(images, targets, update_statistics=train)
                    roi, present = scatter_regions(feats, targets)
                    regions = {**regions, "known": regions["known"] * present.to(regions["known"])}
                    weighted = self._weighted_head_losses(self._head_losses(regions, m.region_features(roi)))
                    losses.update({f"heads_{k}": self.w_det_heads * v for k, v in weighted.items()})
                else:
                    losses = m.detector.losses(images, targets, update_statistics=train)
            if not train:
                m.detector.frcnn.eval()
            loss = sum(losses.values())
            for k, v in losses.items():
                self.log(f"{prefix}_{k}", v, batch_size=len(images))
        elif stage == "pretrain":
            from crrg.rrg.language import encode_sentences

            ids, mask = encode_sentences(m.tokenizer, batch, m.lang_cfg.n_positions)
            loss = m.language.text_loss(ids.to(self.device), mask.to(self.device))
        else:
            feats = m.region_features(batch["features"])
            parts = self._head_losses(batch, feats)
            if stage == "classifiers":
                loss = sum(self._weighted_head_losses(parts).values())
            else:
                lm = self._lm_batch(batch, feats, parts["finding_probs"].detach())
                lm = lm if lm is not None else feats.sum() * 0
                self.log(f"{prefix}_lm_loss", lm, batch_size=len(feats))
                loss = self.w_lm * lm
                if stage == "joint":
                    loss = loss + sum(self._weighted_head_losses(parts).values())
            for k in ("selection", "abnormal", "findings"):
                self.log(f"{prefix}_{k}_loss", parts[k], batch_size=len(feats))
        size = len(batch[0]) if stage == "detector" else (len(batch) if stage == "pretrain" else len(batch["features"]))
        self.log(f"{prefix}_loss", loss, prog_bar=True, batch_size=size, sync_dist=True)
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        from crrg.training.optim import configure_adamw

        return configure_adamw(self, [p for module in self._trainable() for p in module.parameters() if p.requires_grad],
                               self.config)
