"""Region context: what the attached CLIP classifier's image tower sees inside each region box.

The detector's box-head features are trained to tell the 29 regions apart, and even with the region
heads' losses flowing into them they barely tell a mass from other opacities. The CLIP tower was
trained contrastively on whole reports and names masses far better (it separates them from other
findings where the rrg finding head does not; ``benchmarks/results/rrg_synth5k_v5_val.md``), but it
gives one vector per image. Pooling its feature maps inside each detected box (RoIAlign, as the
detector pools its own maps) gives every region what the tower sees *there*, so the decoder can
write the mass sentence for the zone that holds the mass.

The tower is the one of the classifier attached for the joint design (:mod:`crrg.rrg.joint`), which
travels inside the model folder; its weights are not copied into the rrg model. The context width is
fixed by the config (``region_context.channels``) so the projection can be built, and checked
against the tower at the first image.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from crrg.errors import ConfigError, reject_unknown_keys


@dataclass
class RegionContextConfig:
    # feature-map nodes of the tower's torchvision body (torchvision.models.feature_extraction names)
    layers: list[str] = field(default_factory=lambda: ["layer3", "layer4"])
    channels: int = 768  # sum of the layers' channels (resnet18: layer3 256 + layer4 512)
    sampling_ratio: int = 4  # RoIAlign samples per box side; the box is averaged to one vector

    @classmethod
    def from_dict(cls, d: dict | None) -> "RegionContextConfig | None":
        if not d:
            return None
        d = dict(d)
        reject_unknown_keys(cls, d, "region_context option(s)")
        cfg = cls(**d)
        if not cfg.layers or cfg.channels <= 0:
            raise ConfigError("region_context needs at least one layer and a positive channels")
        return cfg

    def to_dict(self) -> dict:
        return asdict(self)


def tower_of(rrg_model):
    """The model's ``context_encoder`` child (the attached classifier, whose image tower gives the
    context), or a clear error."""
    classifier = getattr(rrg_model, "context_encoder", None)
    if classifier is None or not hasattr(classifier, "image_encoder"):
        raise ConfigError("this rrg model reads region context from its attached CLIP classifier "
                          "(region_context in its config), but none is attached: keep the classifier/ folder "
                          "inside the model, or attach one with crrg.rrg.joint.attach_classifier")
    return classifier


class RegionContext:
    """Per image, the tower's feature maps pooled inside each region box: (B, 29, channels)."""

    def __init__(self, cfg: RegionContextConfig):
        self.cfg = cfg
        self._extractor = None
        self._body = None

    def _maps(self, classifier, batch: torch.Tensor) -> list[torch.Tensor]:
        from torchvision.models.feature_extraction import create_feature_extractor

        body = classifier.image_encoder.body
        if self._body is not body:
            try:
                self._extractor = create_feature_extractor(body, return_nodes={n: n for n in self.cfg.layers})
            except (ValueError, RuntimeError) as exc:
                raise ConfigError(f"region_context layers {self.cfg.layers} are not feature maps of the attached "
                                  f"classifier's tower ({type(body).__name__}): {exc}") from None
            self._body = body
        out = self._extractor(batch)
        return [out[n] for n in self.cfg.layers]

    @torch.no_grad()
    def __call__(self, classifier, images: list[np.ndarray], boxes: list[torch.Tensor]) -> torch.Tensor:
        """``images``: (H, W) arrays in [0, 1]; ``boxes``: (29, 4) in each image's pixels."""
        from torchvision.ops import roi_align

        if len(images) != len(boxes):
            raise ValueError(f"{len(images)} images but {len(boxes)} box sets")
        classifier.eval()
        batch = classifier.preprocess(images)
        size = batch.shape[-1]  # the tower sees a plain square resize (crrg.clip.data.image_to_tensor)
        scaled = []
        for image, b in zip(images, boxes):
            h, w = image.shape[:2]
            factor = torch.tensor([size / w, size / h, size / w, size / h], dtype=torch.float32)
            scaled.append(b.float().cpu() * factor)
        maps = self._maps(classifier, batch)
        pooled = [roi_align(m.float(), [s.to(m.device) for s in scaled], output_size=1,
                            spatial_scale=m.shape[-1] / size, sampling_ratio=self.cfg.sampling_ratio,
                            aligned=True).flatten(1) for m in maps]
        out = torch.cat(pooled, 1).view(len(images), boxes[0].shape[0], -1)
        if out.shape[-1] != self.cfg.channels:
            raise ConfigError(f"region_context.channels is {self.cfg.channels} but the layers {self.cfg.layers} of the "
                              f"attached classifier's tower give {out.shape[-1]}")
        return out
