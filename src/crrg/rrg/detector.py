"""Anatomical region detector: torchvision Faster R-CNN over the 29 Chest ImaGenome regions.

Every chest film has all 29 regions, so inference does not threshold detections: for each class it
keeps the single best-scoring proposal and that proposal's class-specific box (as RGRG does). The
report generator then always sees exactly one box per region, even for a poor image.

The input size is fixed by the config (``image_size``, 256-512 px): torchvision's default resizes the
short side to 800 px, which is slow on a CPU and pointless for radiographs downsampled for training.

Real films (issue 20; ``benchmarks/bench_real_boxes.py`` measures them against annotated lung boxes)
get four opt-in config options, all off by default so a saved model behaves as it was trained:
``contrast_percentiles`` (stretch each film's intensities before detection, in training and
inference; with ``contrast_boxes_only`` for placing the boxes only), ``box_votes`` (score-weighted mean of the best proposals' boxes), ``mirror_regions``
(average with the flipped film's mirror-image box) and ``box_calibration`` (per-region edge shifts
from the synthetic box convention to the annotated one). The last three touch only the returned
boxes; the region features stay pooled at the best proposal's box.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import boxes as box_ops

from crrg.errors import ConfigError
from crrg.observations import ANATOMICAL_REGIONS
from crrg.rrg.contrast import contrast_bounds, mirror_keeps_sample, stretch_contrast

NUM_REGIONS = len(ANATOMICAL_REGIONS)
BACKBONES = ("mobilenet_v3_large_fpn", "resnet50_fpn")


@dataclass
class DetectorConfig:
    backbone: str = "mobilenet_v3_large_fpn"
    image_size: int = 256
    pretrained_backbone: bool = False  # ImageNet weights via torchvision (needs internet once)
    trainable_backbone_layers: int | None = None
    anchor_sizes: tuple[int, ...] = (16, 32, 64, 128, 256)
    rpn_pre_nms_top_n_test: int = 300
    rpn_post_nms_top_n_test: int = 150
    rpn_pre_nms_top_n_train: int = 600
    rpn_post_nms_top_n_train: int = 300
    box_batch_size_per_image: int = 256
    representation_size: int = 1024  # width of the box head (torchvision's TwoMLPHead) = RoI feature width
    # > 0: append each region's image pooled to a grid x grid thumbnail plus its normalised box to the
    # RoI features. The box head is trained to tell regions apart, not to see disease; a whiter
    # costophrenic angle or a wider heart shows in these raw descriptors.
    region_descriptor_grid: int = 0
    # (low, high) percentiles: each film's intensities are stretched so these map to 0 and 1 before the
    # detector sees it (training and inference). The synthetic training films span their whole range;
    # real films (figures, portable films, JPEGs) are often washed out. None: the image as loaded.
    contrast_percentiles: tuple[float, float] | None = None
    # True: the stretched film only places the boxes; the region features come from one more pass over
    # the film as loaded, pooled at that pass's own best boxes, so the report heads read exactly what
    # they read without the stretch (a model whose heads were trained without it keeps its scores).
    contrast_boxes_only: bool = False
    # region name -> (dx1, dy1, dx2, dy2), each edge moved by this fraction of the detected box's width
    # (x) or height (y). It maps the detector's box convention onto another one (the synthetic "right
    # lung" is the whole projected lung, behind the heart and the diaphragm domes; annotated real
    # films box the visible lung field) and is applied to the returned boxes only: the region
    # features are pooled at the detector's own boxes, so what the report heads read is unchanged.
    box_calibration: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)
    # > 1: each returned box is the score-weighted mean of the class boxes of the region's best
    # ``box_votes`` proposals instead of the single best one's (steadier on unfamiliar films); the
    # features are still pooled at the best proposal's box. 1: the best proposal's box (RGRG's rule).
    box_votes: int = 1
    # regions whose returned box is the mean of its own box and the box of its mirror-image region
    # ("left lung" for "right lung"; itself for a midline region) on the horizontally flipped film,
    # flipped back. Costs a second detector pass; features are the first pass's.
    mirror_regions: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)  # further FasterRCNN keyword arguments

    @classmethod
    def from_dict(cls, d: dict | None) -> "DetectorConfig":
        d = dict(d or {})
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        unknown = set(d) - set(known)
        if unknown:
            raise ConfigError(f"unknown detector option(s) {sorted(unknown)}")
        cfg = cls(**known)
        cfg.anchor_sizes = tuple(int(a) for a in cfg.anchor_sizes)
        if cfg.backbone not in BACKBONES:
            raise ConfigError(f"detector backbone {cfg.backbone!r} is not one of {list(BACKBONES)}")
        if not 64 <= cfg.image_size <= 1024:
            raise ConfigError(f"detector image_size {cfg.image_size} is outside 64-1024 px")
        if cfg.contrast_percentiles is not None:
            lo, hi = (float(v) for v in cfg.contrast_percentiles)
            if not 0.0 <= lo < hi <= 100.0:
                raise ConfigError(f"detector contrast_percentiles {list(cfg.contrast_percentiles)} must be two "
                                  "percentiles 0 <= low < high <= 100")
            cfg.contrast_percentiles = (lo, hi)
        calibration = {}
        for name, deltas in dict(cfg.box_calibration or {}).items():
            if name not in ANATOMICAL_REGIONS:
                raise ConfigError(f"detector box_calibration names {name!r}, which is not one of the 29 regions")
            deltas = tuple(float(v) for v in deltas)
            if len(deltas) != 4 or max(abs(v) for v in deltas) > 0.5:
                raise ConfigError(f"detector box_calibration[{name!r}] must be four edge shifts, each a fraction "
                                  "of the box's width or height between -0.5 and 0.5")
            calibration[name] = deltas
        cfg.box_calibration = calibration
        if not 1 <= int(cfg.box_votes) <= 100:
            raise ConfigError(f"detector box_votes {cfg.box_votes} must be between 1 and 100")
        cfg.box_votes = int(cfg.box_votes)
        cfg.mirror_regions = tuple(cfg.mirror_regions or ())
        for name in cfg.mirror_regions:
            if name not in ANATOMICAL_REGIONS or mirror_name(name) not in ANATOMICAL_REGIONS:
                raise ConfigError(f"detector mirror_regions names {name!r}: only one of the 29 regions whose "
                                  "mirror image is a region too (a left/right pair or a midline region)")
        return cfg


def build_faster_rcnn(cfg: DetectorConfig) -> FasterRCNN:
    """A Faster R-CNN with ``NUM_REGIONS`` + background classes, the configured input size and anchors.

    Small anchors (16 px) matter: at 256 px the costophrenic angles and the carina are ~20 px wide.
    """
    from torchvision.ops import misc as misc_nn_ops
    from torchvision.models.detection.backbone_utils import mobilenet_backbone, resnet_fpn_backbone

    pretrained = cfg.pretrained_backbone
    # Without ImageNet weights BatchNorm must learn; with them it stays frozen (torchvision's choice).
    norm_layer = misc_nn_ops.FrozenBatchNorm2d if pretrained else nn.BatchNorm2d
    if cfg.backbone == "mobilenet_v3_large_fpn":
        trainable = cfg.trainable_backbone_layers if cfg.trainable_backbone_layers is not None else (3 if pretrained else 6)
        backbone = mobilenet_backbone(backbone_name="mobilenet_v3_large", weights="IMAGENET1K_V1" if pretrained else None,
                                      fpn=True, norm_layer=norm_layer, trainable_layers=trainable)
        levels = 3  # two feature maps plus the max-pool level
        anchors = AnchorGenerator((cfg.anchor_sizes,) * levels, ((0.5, 1.0, 2.0),) * levels)
    else:
        trainable = cfg.trainable_backbone_layers if cfg.trainable_backbone_layers is not None else (3 if pretrained else 5)
        backbone = resnet_fpn_backbone(backbone_name="resnet50", weights="IMAGENET1K_V1" if pretrained else None,
                                       norm_layer=norm_layer, trainable_layers=trainable)
        if len(cfg.anchor_sizes) != 5:
            raise ConfigError("the resnet50_fpn detector needs five anchor_sizes, one per pyramid level")
        anchors = AnchorGenerator(tuple((a,) for a in cfg.anchor_sizes), ((0.5, 1.0, 2.0),) * 5)
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    resolution = 7  # torchvision's RoIAlign output size
    box_head = TwoMLPHead(backbone.out_channels * resolution**2, cfg.representation_size)
    return FasterRCNN(
        backbone,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(cfg.representation_size, NUM_REGIONS + 1),
        min_size=cfg.image_size,
        max_size=cfg.image_size,
        rpn_anchor_generator=anchors,
        rpn_pre_nms_top_n_test=cfg.rpn_pre_nms_top_n_test,
        rpn_post_nms_top_n_test=cfg.rpn_post_nms_top_n_test,
        rpn_pre_nms_top_n_train=cfg.rpn_pre_nms_top_n_train,
        rpn_post_nms_top_n_train=cfg.rpn_post_nms_top_n_train,
        box_batch_size_per_image=cfg.box_batch_size_per_image,
        **cfg.extra,
    )


def to_rgb_tensor(image) -> torch.Tensor:
    """A (H, W) float image in [0, 1] (crrg.image contract) -> (3, H, W) tensor for the ImageNet-style backbone."""
    t = torch.as_tensor(image, dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale image, got shape {tuple(t.shape)}")
    return t.unsqueeze(0).expand(3, -1, -1).contiguous()


def to_gray_tensor(image) -> torch.Tensor:
    """A (H, W) float image in [0, 1] -> (1, H, W) tensor, sharing the array's memory where it can:
    :meth:`RegionDetector.detect` reads a one-plane film as the three equal planes of
    :func:`to_rgb_tensor` without holding them (a large film is 20 MB a plane)."""
    t = torch.as_tensor(image, dtype=torch.float32)
    if t.ndim != 2:
        raise ValueError(f"expected a (H, W) grayscale image, got shape {tuple(t.shape)}")
    return t.unsqueeze(0)


def mirror_name(region: str) -> str:
    """The region a horizontally flipped film shows in ``region``'s place: right <-> left, else itself."""
    words = region.split(" ")
    swap = {"right": "left", "left": "right"}
    return " ".join(swap.get(w, w) for w in words)


def calibrate_boxes(boxes: torch.Tensor, calibration: dict[str, tuple[float, float, float, float]]) -> torch.Tensor:
    """(NUM_REGIONS, 4) boxes with each named region's edges moved by its fractions of the box's size."""
    if not calibration:
        return boxes
    out = boxes.clone()
    for name, deltas in calibration.items():
        i = ANATOMICAL_REGIONS.index(name)
        w, h = boxes[i, 2] - boxes[i, 0], boxes[i, 3] - boxes[i, 1]
        out[i] = boxes[i] + torch.tensor(deltas, dtype=boxes.dtype, device=boxes.device) * torch.stack([w, h, w, h])
    return out


MIN_RESIZED_SIDE = 32  # px after the resize to image_size: the backbone's coarsest stride


def pad_to_usable_aspect(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """Pad (black, bottom / right, so pixel coordinates are unchanged) an image so thin that resizing its
    longer side to ``image_size`` would leave the shorter under MIN_RESIZED_SIDE px (4000 x 10, 600 x 1):
    torchvision would resize it to zero pixels and crash."""
    h, w = image.shape[-2:]
    need = int(-(-max(h, w) * MIN_RESIZED_SIDE // image_size))  # ceil
    if min(h, w) >= need:
        return image
    return F.pad(image, (0, max(0, need - w), 0, max(0, need - h)))


def _clip_to(boxes: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boxes clipped to the unpadded image, each at least one pixel wide and high where the image allows."""
    out = boxes.clone()
    out[:, 0] = out[:, 0].clamp(0, max(width - 1, 0))
    out[:, 1] = out[:, 1].clamp(0, max(height - 1, 0))
    out[:, 2] = torch.maximum(out[:, 2], out[:, 0] + 1).clamp(max=width)
    out[:, 3] = torch.maximum(out[:, 3], out[:, 1] + 1).clamp(max=height)
    return out


@dataclass
class Detections:
    """Per image: one box per region (in pixels of the original image) and its score."""

    boxes: torch.Tensor  # (NUM_REGIONS, 4)
    scores: torch.Tensor  # (NUM_REGIONS,)
    features: torch.Tensor  # (NUM_REGIONS, representation) box-head features at the final boxes
    # the boxes ``features`` were pooled at (the best proposals', on the film as loaded): anything else
    # pooled for the report heads (the region context) belongs there too. They differ from ``boxes``
    # only when the real-film options (votes, mirror, calibration, contrast for boxes only) are on.
    feature_boxes: torch.Tensor | None = None

    @property
    def pooling_boxes(self) -> torch.Tensor:
        return self.boxes if self.feature_boxes is None else self.feature_boxes


class RegionDetector(nn.Module):
    """Faster R-CNN plus the one-box-per-region inference and RoI features used downstream."""

    def __init__(self, cfg: DetectorConfig):
        super().__init__()
        self.cfg = cfg
        self.frcnn = build_faster_rcnn(cfg)

    @property
    def representation_size(self) -> int:
        return self.frcnn.roi_heads.box_predictor.cls_score.in_features

    @property
    def feature_size(self) -> int:
        """Width of :attr:`Detections.features`: box-head features plus the optional region descriptors."""
        grid = self.cfg.region_descriptor_grid
        return self.representation_size + (grid * grid + 4 if grid > 0 else 0)

    def _descriptors(self, images: torch.Tensor, boxes: list[torch.Tensor], sizes: list[tuple[int, int]]) -> torch.Tensor:
        """(sum boxes, grid*grid + 4): the normalised image inside each box at low resolution, and the box."""
        from torchvision.ops import roi_align

        grid = self.cfg.region_descriptor_grid
        thumbs = roi_align(images[:, :1], boxes, output_size=(grid, grid), spatial_scale=1.0, sampling_ratio=2,
                           aligned=True).flatten(1)
        geometry = torch.cat([b / torch.tensor([w, h, w, h], dtype=b.dtype, device=b.device) for b, (h, w) in zip(boxes, sizes)])
        return torch.cat([thumbs, geometry], 1)

    def _loss_mode(self, update_statistics: bool) -> None:
        """torchvision returns losses only in train mode; validation must not move BatchNorm statistics."""
        self.frcnn.train()
        if not update_statistics:
            for module in self.frcnn.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()

    def prepare(self, images: list[torch.Tensor]) -> list[torch.Tensor]:
        """The configured intensity normalisation (``contrast_percentiles``), the same in training and
        inference; geometry is untouched, so targets and returned boxes need no mapping."""
        return [stretch_contrast(im, self.cfg.contrast_percentiles) for im in images]

    def losses(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
               update_statistics: bool = True) -> dict[str, torch.Tensor]:
        """Training losses; targets have ``boxes`` (N, 4) in pixels and ``labels`` in 1..29."""
        self._loss_mode(update_statistics)
        return self.frcnn(self.prepare(images), targets)

    def losses_and_target_features(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]],
                                   update_statistics: bool = True
                                   ) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        """Training losses plus the region features at the ground-truth boxes, one (N_i, feature_size)
        tensor per image in the order of ``targets[i]["labels"]``.

        The box head is otherwise trained only to tell the 29 regions apart, so its features need
        not see disease; letting the region heads' losses flow through these features into the box
        head and backbone (the detector stage's ``loss.detector_heads``) makes the features that later
        stages read from the cache carry abnormality too. This is torchvision's GeneralizedRCNN
        forward, unrolled so the backbone's feature maps are computed once for both.
        """
        frcnn = self.frcnn
        self._loss_mode(update_statistics)
        image_list, resized = frcnn.transform(self.prepare(images), [dict(t) for t in targets])
        features = frcnn.backbone(image_list.tensors)
        proposals, rpn_losses = frcnn.rpn(image_list, features, resized)
        _, head_losses = frcnn.roi_heads(features, proposals, image_list.image_sizes, resized)
        boxes = [t["boxes"] for t in resized]
        region_feats = self._features_at(features, image_list, boxes)
        return {**rpn_losses, **head_losses}, list(region_feats.split([len(b) for b in boxes]))

    def _features_at(self, features, image_list, boxes: list[torch.Tensor]) -> torch.Tensor:
        """Box-head features (plus the optional region descriptors) pooled at ``boxes`` of each image."""
        heads = self.frcnn.roi_heads
        region_feats = heads.box_head(heads.box_roi_pool(features, boxes, image_list.image_sizes))
        if self.cfg.region_descriptor_grid > 0:
            region_feats = torch.cat([region_feats, self._descriptors(image_list.tensors, boxes,
                                                                      image_list.image_sizes)], 1)
        return region_feats

    def _voted(self, boxes: torch.Tensor, scores: torch.Tensor, chosen: torch.Tensor) -> torch.Tensor:
        """(NUM_REGIONS, 4): per region, the score-weighted mean class box of its ``box_votes`` best
        proposals (``chosen``, the best one's, when voting is off). ``boxes`` (N, C + 1, 4), ``scores`` (N, C)."""
        k = min(self.cfg.box_votes, len(scores))
        if k <= 1:
            return chosen
        top_scores, top = scores.topk(k, dim=0)  # (k, NUM_REGIONS)
        cls = torch.arange(NUM_REGIONS, device=boxes.device).expand_as(top)
        weights = top_scores / top_scores.sum(0).clamp_min(1e-12)
        voted = (boxes[top, cls + 1] * weights.unsqueeze(-1)).sum(0)
        voted[:, 2:] = torch.maximum(voted[:, 2:], voted[:, :2] + 1.0)
        return voted

    @torch.no_grad()
    def detect(self, images: list[torch.Tensor]) -> list[Detections]:
        """Best box per region for each image ((C, H, W), C = 3 or 1 for a gray film), plus the box-head
        features pooled at those boxes.

        The real-film options look at each film up to three times: as loaded (or stretched) for the
        features, stretched for the boxes (``contrast_boxes_only``) and mirrored (``mirror_regions``).
        Each look is made from the one gray plane and resized before the next is made (:meth:`_look`),
        so a large film is never held as several full-size three-channel copies (a 2,500 x 2,000 px film
        added ~240 MB to the peak), and the stretch's percentiles are computed once where the mirrored
        film's are the same numbers."""
        cfg = self.cfg
        stretch = cfg.contrast_percentiles is not None
        boxes_look = stretch and cfg.contrast_boxes_only  # a second, stretched look places the boxes
        n = len(images)
        looks, bounds = [], []
        for im in images:
            bounds.append(contrast_bounds(im, cfg.contrast_percentiles) if stretch else None)
            looks.append(self._look(im, stretch=stretch and not cfg.contrast_boxes_only, bounds=bounds[-1]))
        if boxes_look:
            looks += [self._look(im, stretch=True, bounds=b) for im, b in zip(images, bounds)]
        if cfg.mirror_regions:
            looks += [self._look(im, stretch=stretch, flip=True,
                                 bounds=b if mirror_keeps_sample(im.shape[-1]) else ...)
                      for im, b in zip(images, bounds)]
        # one forward per kind of look, the films together: one forward for all looks would save ~8 % of
        # the detector's time on a CPU, but a batch of three rounds the convolutions differently
        returned, scores, features, pooled_at = [], [], [], []
        for start in range(0, len(looks), n):
            r, s, f, p = self._detect_looks(looks[start:start + n], with_features=start == 0)
            returned += r
            scores += s
            features += f
            pooled_at += p
        boxes = returned[n:2 * n] if boxes_look else returned[:n]
        scores = scores[n:2 * n] if boxes_look else scores[:n]
        if cfg.mirror_regions:
            boxes = self._with_mirrored(images, boxes, returned[-n:])
        return [Detections(boxes=_clip_to(calibrate_boxes(b, cfg.box_calibration), *im.shape[-2:]), scores=s,
                           features=f, feature_boxes=_clip_to(p, *im.shape[-2:]))
                for im, b, s, f, p in zip(images, boxes, scores, features, pooled_at)]

    def _with_mirrored(self, images: list[torch.Tensor], boxes: list[torch.Tensor],
                       mirrored: list[torch.Tensor]) -> list[torch.Tensor]:
        """``boxes`` with each of ``mirror_regions`` averaged with the mirror-image region's box on the
        horizontally flipped film (``mirrored``), flipped back: a second look that halves the detector's
        left-right asymmetric errors on films unlike its training films."""
        out = []
        for im, own, flipped in zip(images, boxes, mirrored):
            width = im.shape[-1]
            own = own.clone()
            for name in self.cfg.mirror_regions:
                x1, y1, x2, y2 = flipped[ANATOMICAL_REGIONS.index(mirror_name(name))]
                i = ANATOMICAL_REGIONS.index(name)
                own[i] = (own[i] + torch.stack([width - x2, y1, width - x1, y2])) / 2
            out.append(own)
        return out

    def _look(self, image: torch.Tensor, stretch: bool, flip: bool = False, bounds=...
              ) -> tuple[torch.Tensor, tuple[int, int]]:
        """One look at a film ((C, H, W), C = 1 or 3): ((3, h, w) backbone input, the film's size before
        the resize), bit for bit what torchvision's transform gives (normalise, then resize) for the film
        expanded to three planes, with one full-size three-plane buffer; ``bounds``: the stretch's
        :func:`contrast_bounds` when known."""
        if flip:
            image = image.flip(-1)
        if stretch:
            image = stretch_contrast(image, self.cfg.contrast_percentiles, bounds)
        image = pad_to_usable_aspect(image, self.cfg.image_size)
        if image.ndim != 3 or image.shape[0] not in (1, 3):
            raise ValueError(f"expected a (3, H, W) or (1, H, W) image, got shape {tuple(image.shape)}")
        if not image.is_floating_point():
            raise TypeError(f"expected a floating-point image in [0, 1], got {image.dtype}")
        transform = self.frcnn.transform
        mean = torch.as_tensor(transform.image_mean, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
        std = torch.as_tensor(transform.image_std, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
        # torchvision's normalize ((image - mean) / std, element for element the same numbers) written
        # straight into one channels-last buffer: with one thread the bilinear resize of a three-plane
        # image runs in channels-last order and would first copy a contiguous one into that order (a
        # full-size copy: 60 ms and 60 MB for a 5-megapixel film); with more threads it reads any layout.
        normalised = torch.empty((1, 3, *image.shape[-2:]), dtype=image.dtype, device=image.device,
                                 memory_format=torch.channels_last)
        torch.sub(image.unsqueeze(0), mean, out=normalised).div_(std)
        return transform.resize(normalised[0])[0], tuple(image.shape[-2:])

    def _detect_looks(self, looks: list[tuple[torch.Tensor, tuple[int, int]]], with_features: bool
                      ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Per look (from :meth:`_look`), in one forward: the returned boxes (voted, in the film's pixels,
        before calibration and clipping) and the best scores; ``with_features``: also the region
        features at the best proposals' boxes and those boxes (in the film's pixels)."""
        from torchvision.models.detection.image_list import ImageList

        frcnn = self.frcnn
        tensors = [t for t, _ in looks]
        original_sizes = [size for _, size in looks]
        image_list = ImageList(frcnn.transform.batch_images(tensors, size_divisible=frcnn.transform.size_divisible),
                               [(int(t.shape[-2]), int(t.shape[-1])) for t in tensors])
        del tensors
        features = frcnn.backbone(image_list.tensors)
        proposals, _ = frcnn.rpn(image_list, features)
        heads = frcnn.roi_heads
        pooled = heads.box_head(heads.box_roi_pool(features, proposals, image_list.image_sizes))
        class_logits, box_regression = heads.box_predictor(pooled)
        all_boxes = heads.box_coder.decode(box_regression, proposals)  # (N, C, 4)
        all_scores = F.softmax(class_logits, -1)
        counts = [len(p) for p in proposals]
        best_boxes = []
        best_scores = []
        returned = []
        for boxes, scores, size in zip(all_boxes.split(counts), all_scores.split(counts), image_list.image_sizes):
            boxes = box_ops.clip_boxes_to_image(boxes, size)
            scores = scores[:, 1:]  # drop background
            idx = scores.argmax(0)  # best proposal for each region class
            cls = torch.arange(NUM_REGIONS, device=boxes.device)
            chosen = boxes[idx, cls + 1]
            # A degenerate box would give an empty RoI; give it at least one pixel.
            chosen[:, 2:] = torch.maximum(chosen[:, 2:], chosen[:, :2] + 1.0)
            best_boxes.append(chosen)
            best_scores.append(scores[idx, cls])
            returned.append(self._voted(boxes, scores, chosen))
        feats = list(self._features_at(features, image_list, best_boxes).split(NUM_REGIONS)) if with_features else []
        scaled, pooled_at = [], []
        for i, (boxes, best) in enumerate(zip(returned, best_boxes)):
            scale_h = original_sizes[i][0] / image_list.image_sizes[i][0]
            scale_w = original_sizes[i][1] / image_list.image_sizes[i][1]
            scale = torch.tensor([scale_w, scale_h, scale_w, scale_h], device=boxes.device)
            scaled.append(boxes * scale)
            pooled_at.append(best * scale)
        return scaled, best_scores, feats, pooled_at if with_features else []


def targets_from_regions(regions, image_index: int = 0) -> dict[str, torch.Tensor]:
    """Detector targets from a record's :class:`crrg.records.Region` list (one image)."""
    boxes, labels = [], []
    for r in regions:
        if r.image != image_index:
            continue
        x1, y1, x2, y2 = r.box
        if x2 - x1 < 1 or y2 - y1 < 1:
            continue  # torchvision rejects empty boxes; such a region cannot be learnt anyway
        boxes.append([x1, y1, x2, y2])
        labels.append(ANATOMICAL_REGIONS.index(r.name) + 1)
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64)}
