"""Question-guided region captions (Img2LLM, docs/methods.md §1.2-1.3).

GradCAM picks the patches the question is about; K' of them are sampled per caption, the BLIP decoder
captions all M samples in one batched `generate` call, and the ITM model keeps the captions that match the
same patches. Each image is encoded once per model and reused from the feature cache.
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel

from vqagraph.config import Img2LLMSettings
from vqagraph.errors import ModelMismatchError
from vqagraph.media import FeatureCache, letterbox_box
from vqagraph.tools.batching import Batcher, BatchPolicy
from vqagraph.tools.blip_model import BlipModel
from vqagraph.tools.gradcam import BlipMatcher, normalise_gradcam, patch_grid
from vqagraph.tools.seeding import seeded

Job = tuple[str, Image.Image, str, tuple[int, int, int, int] | None]  # image ref, image, question, region


class RegionCaptions(BaseModel):
    """What the captioner produced for one question; serialisable, so it can go into graph state."""

    captions: list[str]
    scores: list[float]
    gradcam: list[float]
    grid: tuple[int, int]
    patch_ids: list[list[int]]
    generated: int
    rejected_itm: int
    rejected_duplicate: int
    rounds: int
    image_encoded: bool


class BlipCaptioner(BlipModel):
    """A BLIP captioning model whose decoder can be conditioned on any subset of the image's patches."""

    @torch.no_grad()
    def caption(self, patch_embeds: torch.Tensor, settings: Img2LLMSettings, seed: int) -> list[str]:
        """One sampled caption per row of `patch_embeds` (M, K, dim), in one batched generate call."""
        count = patch_embeds.shape[0]
        prompt = self.tokenizer([settings.caption_prompt] * count, return_tensors="pt").to(self.device)
        input_ids = prompt.input_ids.clone()
        input_ids[:, 0] = self.model.config.text_config.bos_token_id  # [DEC] replaces [CLS], as BLIP does
        input_ids = input_ids[:, :-1]  # drop [SEP]
        atts = torch.ones(patch_embeds.shape[:-1], dtype=torch.long, device=self.device)
        with seeded(seed, self.device):
            out = self.model.text_decoder.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                encoder_hidden_states=patch_embeds,
                encoder_attention_mask=atts,
                do_sample=True,
                top_k=settings.caption_top_k,
                top_p=settings.caption_top_p,
                min_length=settings.caption_min_length,
                max_length=settings.caption_max_length,
                repetition_penalty=settings.caption_repetition_penalty,
                eos_token_id=self.model.config.text_config.sep_token_id,
                pad_token_id=self.model.config.text_config.pad_token_id,
            )
        texts = self.tokenizer.batch_decode(out, skip_special_tokens=True)
        prefix = settings.caption_prompt.strip().lower()
        return [_strip_prompt(t, prefix) for t in texts]


def region_patches(
    grid: tuple[int, int], size: tuple[int, int], box: tuple[int, int, int, int], letterboxed: bool = False
) -> torch.Tensor:
    """Boolean `(rows * cols,)`: the patches whose cells overlap a pixel box (BLIP resizes the whole image to
    its square input, so a patch cell covers `W / cols` by `H / rows` original pixels; a letterboxed image is
    centred on a square of side max(W, H) first)."""
    if letterboxed:
        size, box = letterbox_box(size, box)
    rows, cols = grid
    width, height = size
    x0, y0, x1, y1 = box
    c0, c1 = int(x0 * cols // width), int(min(cols - 1, (x1 - 1) * cols // width))
    r0, r1 = int(y0 * rows // height), int(min(rows - 1, (y1 - 1) * rows // height))
    inside = torch.zeros(rows, cols, dtype=torch.bool)
    inside[max(r0, 0) : r1 + 1, max(c0, 0) : c1 + 1] = True
    return inside.flatten()


def restrict_to_region(
    probs: torch.Tensor, grid: tuple[int, int], size: tuple[int, int], box: tuple[int, int, int, int],
    letterboxed: bool = False,
) -> torch.Tensor:
    """Zero the distribution outside the region and renormalise; unchanged when no patch falls inside."""
    inside = region_patches(grid, size, box, letterboxed).to(probs.device)
    if not inside.any():
        return probs
    kept = torch.where(inside, probs, torch.zeros_like(probs))
    return kept / kept.sum()


def _strip_prompt(text: str, prefix: str) -> str:
    text = text.strip()
    if text.lower().startswith(prefix):
        text = text[len(prefix) :]
    return " ".join(text.split()).strip(" .")


class RegionCaptioner:
    """GradCAM → patch sampling → batched captions → ITM filter, with the image encoded once per model."""

    def __init__(
        self, matcher: BlipMatcher, captioner: BlipCaptioner, settings: Img2LLMSettings, cache: FeatureCache,
        policy: BatchPolicy | None = None,
    ) -> None:
        self.matcher = matcher
        self.captioner = captioner
        self.settings = settings
        self.cache = cache
        # GradCAM hooks a module of the shared ITM model: one pass at a time, whoever calls.
        self.lock = threading.RLock()
        policy = policy or BatchPolicy()
        self.batcher: Batcher[Job, RegionCaptions] = policy.batcher(self.caption_many, stage="region_captions")
        # GradCAM alone (a custom graph's `gradcam` node) batches too, and so takes the locks in the same order.
        self.cam_batcher: Batcher[tuple[str, Image.Image, str], tuple[torch.Tensor, torch.Tensor, bool]] = \
            policy.batcher(self.gradcams, stage="gradcam")

    def _features(self, which: str, model: Any, ref: str, image: Image.Image) -> tuple[torch.Tensor, bool]:
        key = (which, id(model), ref)
        cached = self.cache.get(key)
        if cached is not None:
            return cached, False
        embeds = model.encode_image(image, ref)
        self.cache.put(key, embeds)
        return embeds, True

    def gradcam(self, ref: str, image: Image.Image, question: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """The normalised patch distribution for `question`, with the ITM features it came from."""
        return self.cam_batcher((ref, image, question))

    def gradcams(self, asks: list[tuple[str, Image.Image, str]]) -> list[tuple[torch.Tensor, torch.Tensor, bool]]:
        """`gradcam` for several questions (each on its image) in one ITM pass."""
        with self.lock:
            features = [self._features("itm", self.matcher, ref, image) for ref, image, _ in asks]
            embeds = torch.cat([f[0] for f in features])
            cams = self.matcher.gradcam(embeds, [question for _, _, question in asks], self.settings.gradcam_layer)
            probs = normalise_gradcam(cams, self.settings.gradcam_floor)
        return [(probs[i], embeds[i : i + 1], fresh) for i, (_, fresh) in enumerate(features)]

    def __call__(
        self, ref: str, image: Image.Image, question: str, region: tuple[int, int, int, int] | None = None
    ) -> RegionCaptions:
        """Captions for `question`; with `region` (a pixel box), patches are sampled inside it only. Concurrent
        questions share the GradCAM pass (`caption_many`)."""
        return self.batcher((ref, image, question, region))

    def caption_many(self, jobs: list[Job]) -> list[RegionCaptions]:
        """One GradCAM pass for every job, then each job's seeded captions (sampling stays per question, so a
        question's captions do not depend on its batch)."""
        with self.lock:
            cams = self.gradcams([(ref, image, question) for ref, image, question, _ in jobs])
            return [self._captions(ref, image, region, *cam)
                    for (ref, image, _, region), cam in zip(jobs, cams, strict=True)]

    def _captions(self, ref: str, image: Image.Image, region: tuple[int, int, int, int] | None, probs: torch.Tensor,
                  itm_embeds: torch.Tensor, itm_fresh: bool) -> RegionCaptions:
        s = self.settings
        if region is not None:
            probs = restrict_to_region(probs, patch_grid(probs.shape[0]), image.size, region,
                                       self.matcher.pixels_or_grid.letterboxed)
        cap_embeds, cap_fresh = self._features("caption", self.captioner, ref, image)
        if cap_embeds.shape[1] != itm_embeds.shape[1]:
            raise ModelMismatchError(
                f"the captioner sees {cap_embeds.shape[1] - 1} patches but the ITM model {itm_embeds.shape[1] - 1}:"
                " their vision encoders must share image and patch size"
            )
        num_patches = probs.shape[0]
        k = min(s.num_patches, num_patches, int((probs > 0).sum()))
        generator = torch.Generator().manual_seed(s.seed)
        kept: list[str] = []
        scores: list[float] = []
        kept_ids: list[list[int]] = []
        generated = rejected_itm = rejected_dup = rounds = 0
        while len(kept) < s.num_captions and rounds < s.max_caption_rounds:
            if s.patch_selection == "all":  # the paper's ablation: every caption sees the whole image, CLS too
                ids = torch.arange(num_patches + 1).expand(s.num_captions, -1)
            else:  # §1.2: K' patches per caption, without replacement; +1 skips the image CLS; ids sorted.
                ids = torch.multinomial(probs.cpu().expand(s.num_captions, -1), k, replacement=False,
                                        generator=generator)
                ids = (ids + 1).sort(dim=1).values
            gather = ids.to(cap_embeds.device)[..., None]
            cap_patches = torch.gather(cap_embeds.expand(s.num_captions, -1, -1), 1,
                                       gather.expand(-1, -1, cap_embeds.shape[-1]))
            texts = self.captioner.caption(cap_patches, s, seed=s.seed * 1000 + rounds)
            itm_patches = torch.gather(itm_embeds.expand(s.num_captions, -1, -1), 1,
                                       gather.to(itm_embeds.device).expand(-1, -1, itm_embeds.shape[-1]))
            # §1.3: ITM against the same sampled patches; all captions of the round in one pass.
            match = self.matcher.match_probability(itm_patches, [t or "." for t in texts]).tolist()
            generated += len(texts)
            rounds += 1
            for text, p, row in zip(texts, match, ids.tolist(), strict=True):
                if len(kept) >= s.num_captions:
                    break
                if p < s.itm_threshold:
                    rejected_itm += 1
                elif not text or any(text in other for other in kept):
                    rejected_dup += 1  # §1.3: not a substring of a caption already kept
                else:
                    kept.append(text)
                    scores.append(round(p, 4))
                    kept_ids.append([i - 1 for i in row if i > 0])
        return RegionCaptions(
            captions=kept,
            scores=scores,
            gradcam=[round(v, 6) for v in probs.tolist()],
            grid=patch_grid(num_patches),
            patch_ids=kept_ids,
            generated=generated,
            rejected_itm=rejected_itm,
            rejected_duplicate=rejected_dup,
            rounds=rounds,
            image_encoded=itm_fresh or cap_fresh,
        )
