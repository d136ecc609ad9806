"""`vqagraph-lab --projection`: the Shapes world's projection bridge into the frozen SmolLM2-135M (LLaVA's
first stage, docs/methods.md §7).

Stages: the bridge trainer's scenes with the frozen encoder's grids, cached once → a warm start without the LLM
(each image token regressed onto the LLM's own word embeddings of what covers its cell: cheap, and it starts the
projector in the LLM's input space) → LLaVA stage 1: only the projector learns, under the language-modelling loss
through the frozen LLM, on the pictures' captions and the training families' questions in the route's own prompt
→ a LLaVA checkpoint holding `multi_modal_projector` alone, with `training.json` (plan, timings, loss curves and
held-out accuracy curves on scenes never trained on). Resumable: a stopped run continues from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from vqagraph import hub
from vqagraph.prompt_templates import LLAVA15_SHORT_ANSWER, LLAVA_BRIEF_CAPTION
from vqagraph.tools.bridge_prompt import placed_embeddings
from vqagraph_lab.progress import Progress, curve, default_out, default_threads

LOG = logging.getLogger("vqagraph_lab.projection")
WEIGHTS_DIR = hub.WEIGHTS_DIR
NAME = "shapes-llava-projector"
LLM = "builtin:smollm2-135m-instruct"
# The route's prompt (LLaVA-1.5's short-answer VQA prompt, docs/methods.md §7: ProjectionSettings' default) and a
# brief-description prompt for captions (stage 1).
PROMPT = LLAVA15_SHORT_ANSWER
CAPTION_PROMPT = LLAVA_BRIEF_CAPTION


@dataclass(frozen=True)
class ProjectionPlan:
    scenes: int  # base scenes, each also seen under `flips` mirror images (the Q-Former bridges' corpus)
    flips: int
    cells: int  # image tokens: the 14x14 grid average-pooled to √cells x √cells
    align_steps: int  # the warm start without the LLM
    align_batch: int
    align_lr: float
    lm_steps: int  # LLaVA stage 1 through the frozen LLM
    lm_batch: int
    lm_lr: float
    caption_share: float = 0.2
    heldout_scenes: int = 60
    heldout_questions: int = 150
    eval_every: int = 100
    checkpoint_every: int = 20
    budget_s: float | None = None  # the LM stage stops at this deadline (the run's whole time)


FULL = ProjectionPlan(scenes=1000, flips=2, cells=49, align_steps=3000, align_batch=64, align_lr=1e-3,
                      lm_steps=1200, lm_batch=16, lm_lr=1e-3, budget_s=5400)
QUICK = ProjectionPlan(scenes=12, flips=1, cells=49, align_steps=20, align_batch=8, align_lr=1e-3, lm_steps=12,
                       lm_batch=4, lm_lr=1e-3, heldout_scenes=4, heldout_questions=12, eval_every=6,
                       checkpoint_every=4)


# --- the model ------------------------------------------------------------------------------------------------


def projector_config(llm_dir: str | Path, channels: int, cells: int) -> Any:
    """A LLaVA config whose projector maps the frozen encoder's `channels` into the LLM's width. The vision config
    only states that width: the vision tower is the profile's frozen encoder, never stored here."""
    from transformers import AutoConfig, CLIPVisionConfig, LlavaConfig

    text = AutoConfig.from_pretrained(llm_dir)
    vision = CLIPVisionConfig(hidden_size=channels, intermediate_size=4 * channels, num_hidden_layers=1,
                              num_attention_heads=1, image_size=224, patch_size=16)
    return LlavaConfig(vision_config=vision, text_config=text, image_seq_length=cells, vision_feature_layer=-1,
                       vision_feature_select_strategy="full", projector_hidden_act="gelu",
                       multimodal_projector_bias=True)


@dataclass
class Normalised:
    """Per-channel standardisation of the grid, learned from the training grids and folded into `linear_1` when
    saved, so the checkpoint is a plain `LlavaMultiModalProjector` reading the encoder's raw features."""

    mean: torch.Tensor
    std: torch.Tensor

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        return (tokens - self.mean) / self.std

    def fold(self, projector: Any) -> dict[str, torch.Tensor]:
        state = {k: v.detach().clone() for k, v in projector.state_dict().items()}
        weight = state["linear_1.weight"] / self.std
        state["linear_1.bias"] = state["linear_1.bias"] - weight @ self.mean
        state["linear_1.weight"] = weight
        return state

    def unfold(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of `fold`: a saved projector's weights as they act on standardised features."""
        state = dict(state)
        weight = state["linear_1.weight"]
        state["linear_1.bias"] = state["linear_1.bias"] + weight @ self.mean
        state["linear_1.weight"] = weight * self.std
        return state


def read_projector(folder: str | Path) -> dict[str, torch.Tensor]:
    """A saved projector's `multi_modal_projector` weights, read by the route's own loader."""
    from vqagraph.tools.projector import ProjectionBridge

    bridge = ProjectionBridge.from_pretrained(str(folder), vision_tower=False)
    return {k: v.detach().float() for k, v in bridge.multi_modal_projector.state_dict().items()}


# --- data -----------------------------------------------------------------------------------------------------


@dataclass
class Pictures:
    """Pictures with their image tokens (pooled frozen grids) and the word-embedding targets of each cell."""

    corpus: Any
    tokens: torch.Tensor  # (N, cells, channels)
    cover: torch.Tensor  # (N, cells, objects max + 1): each object's share of each cell, background last

    def texts(self, j: int) -> Any:
        return self.corpus.example(j).texts

    def __len__(self) -> int:
        return len(self.tokens)


def make_pictures(seed: int, scenes: int, flips: int, cells: int, workers: int, progress: Any = None) -> Pictures:
    from vqagraph.tools.projector import grid_tokens
    from vqagraph_lab.text_route import data as D

    seeds = [int(s) for s in np.random.default_rng([seed, 71]).integers(2**31, size=scenes)]
    corpus = D.make_corpus(seeds, seed=seed + 7919, flips=D.FLIPS[:flips], workers=workers, progress=progress)
    rows = list(range(len(corpus)))
    D.cache_grids(corpus, rows)
    grids = torch.stack([corpus.example(r).memo["grid"] for r in rows])
    side = round(cells**0.5)
    most = max(len(corpus.example(r).coverage) for r in rows)
    cover = torch.zeros(len(rows), cells, most + 1)
    for r in rows:
        c = torch.from_numpy(corpus.example(r).coverage).reshape(-1, 1, D.GRID, D.GRID)
        pooled = F.adaptive_avg_pool2d(c, (side, side)).flatten(1).T if len(c) else torch.zeros(cells, 0)
        cover[r, :, : pooled.shape[1]] = pooled
        cover[r, :, most] = (1 - pooled.sum(1)).clamp(min=0)
    return Pictures(corpus, grid_tokens(grids, cells), cover)


def word_targets(lm: Any, pictures: Pictures) -> torch.Tensor:
    """(N, cells, hidden): each cell's mix of the LLM's embeddings of ' colour shape' for the objects covering it,
    and of ' background' for the rest (the warm start's regression target)."""
    table = lm.table.detach()

    def embed(text: str) -> torch.Tensor:
        return table[torch.tensor(lm.tokenizer(text, add_special_tokens=False)["input_ids"])].mean(0)

    background = embed(" background")
    most = pictures.cover.shape[-1] - 1
    words = torch.zeros(len(pictures), most + 1, table.shape[1])
    for j in range(len(pictures)):
        objects = pictures.texts(j).scene.objects
        for i, o in enumerate(objects):
            words[j, i] = (embed(f" {o.colour}") + embed(f" {o.shape}")) / 2
        words[j, most] = background
    return torch.einsum("nco,noh->nch", pictures.cover, words)


# --- the frozen LLM -------------------------------------------------------------------------------------------


def lm_loss(lm: Any, contexts: Sequence[torch.Tensor], targets: Sequence[list[int]]) -> torch.Tensor:
    """Mean cross-entropy of each target after its context embeddings (right-padded batch, logits only where a
    target is: SmolLM2's 49k-word head everywhere would cost a tenth of the step)."""
    table = lm.table
    seqs = [torch.cat([c, table[torch.tensor(t)]]) for c, t in zip(contexts, targets, strict=True)]
    width = max(len(s) for s in seqs)
    embeds = table.new_zeros(len(seqs), width, table.shape[1])
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for b, (s, c, t) in enumerate(zip(seqs, contexts, targets, strict=True)):
        embeds[b, : len(s)] = s
        mask[b, : len(s)] = 1
        labels[b, len(c) : len(s)] = torch.tensor(t)
    hidden = lm.model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    where = target != -100
    logits = lm.model.lm_head(hidden[:, :-1][where])
    return F.cross_entropy(logits, target[where])


@dataclass
class Prompts:
    """The route's prompt pieces around the image (tools/bridge_prompt.py: the same split the engine makes)."""

    tokenizer: Any

    def pieces(self, template: str, question: str = "") -> tuple[list[int], list[int]]:
        from vqagraph.tools.bridge_prompt import split_at_image

        return split_at_image(self.tokenizer, template.format(question=question))

    def target(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        eos = self.tokenizer.eos_token_id
        return ids + ([eos] if eos is not None else [])


# --- held-out accuracy ----------------------------------------------------------------------------------------


def heldout_items(pictures: Pictures, n: int, seed: int) -> list[tuple[int, str, list[str], str]]:
    """(picture, question, answers, family): questions of the training families about held-out scenes."""
    from vqagraph_lab.qformer.data import QA_FAMILIES

    items = [(j, q.question, list(q.answers), q.family) for j in range(len(pictures))
             for q in pictures.texts(j).questions if q.family in QA_FAMILIES and not q.marks]
    rng = np.random.default_rng([seed, 53])
    keep = sorted(rng.permutation(len(items))[:n].tolist())
    return [items[k] for k in keep]


@torch.no_grad()
def heldout_accuracy(projector: Any, norm: Normalised, lm: Any, prompts: Prompts, pictures: Pictures,
                     items: Sequence[tuple[int, str, list[str], str]], max_new_tokens: int = 10) -> dict[str, float]:
    """VQA accuracy per family and overall: greedy answers as the route decodes them, batched by input length
    (no padding, so the tokens are those of one-by-one decoding)."""
    from vqagraph.eval.metric import vqa_accuracy
    from vqagraph.tools.llm.postprocess import postprocess_answer

    was = projector.training
    projector.eval()
    table = lm.table
    soft = projector(norm(pictures.tokens[[j for j, *_ in items]]))
    inputs = [placed_embeddings(soft[k], *prompts.pieces(PROMPT, q), table) for k, (_, q, _, _) in enumerate(items)]
    groups: dict[int, list[int]] = defaultdict(list)
    for k, e in enumerate(inputs):
        groups[len(e)].append(k)
    eos = lm.tokenizer.eos_token_id
    scores: dict[str, list[float]] = defaultdict(list)
    for ks in groups.values():
        for start in range(0, len(ks), 32):
            chunk = ks[start : start + 32]
            embeds = torch.stack([inputs[k] for k in chunk])
            out = lm.model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                    max_new_tokens=max_new_tokens, min_new_tokens=1, do_sample=False,
                                    eos_token_id=eos, pad_token_id=eos)
            for k, seq in zip(chunk, out, strict=True):
                new = seq.tolist()
                new = new[: new.index(eos)] if eos in new else new
                _, _, answers, family = items[k]
                scores[family].append(vqa_accuracy(postprocess_answer(lm.tokenizer.decode(new)), answers))
    projector.train(was)
    report = {f: round(float(np.mean(v)), 1) for f, v in sorted(scores.items())}
    report["overall"] = round(float(np.mean([s for v in scores.values() for s in v])), 1)
    return report


# --- training -------------------------------------------------------------------------------------------------


def train_align(projector: Any, norm: Normalised, pictures: Pictures, targets: torch.Tensor, *, steps: int,
                batch: int, lr: float, seed: int, report: Any = None) -> list[float]:
    """Regress each image token onto its cell's word-embedding mix (cosine + scaled MSE); no LLM in the loop."""
    from vqagraph_lab.text_route.captioner import lr_at

    rng = np.random.default_rng([seed, 61])
    opt = torch.optim.AdamW(projector.parameters(), lr=lr, weight_decay=0.0)
    scale = float(targets.std())
    history = []
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, steps, lr, max(1, steps // 20))
        which = torch.from_numpy(rng.integers(0, len(pictures), size=batch))
        out = projector(norm(pictures.tokens[which]))
        goal = targets[which]
        loss = (1 - F.cosine_similarity(out, goal, dim=-1)).mean() + F.mse_loss(out / scale, goal / scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        history.append(float(loss.detach()))
        if report is not None:
            report(step, {"align": float(loss)})
    return history


def lm_batch(pictures: Pictures, prompts: Prompts, rng: np.random.Generator, batch: int, caption_share: float,
             ) -> tuple[list[int], list[tuple[list[int], list[int]]], list[list[int]]]:
    """(pictures, prompt pieces around the image, targets): captions and training-family questions."""
    from vqagraph_lab.qformer.data import caption_sample, qa_sample

    which: list[int] = []
    pieces: list[tuple[list[int], list[int]]] = []
    targets: list[list[int]] = []
    while len(which) < batch:
        j = int(rng.integers(len(pictures)))
        qa = None if rng.random() < caption_share else qa_sample(pictures, j, rng)  # type: ignore[arg-type]
        if qa is None:
            pieces.append(prompts.pieces(CAPTION_PROMPT))
            targets.append(prompts.target(" " + caption_sample(pictures, j, rng, short=True)))  # type: ignore[arg-type]
        else:
            pieces.append(prompts.pieces(PROMPT, qa[0]))
            targets.append(prompts.target(" " + qa[1]))
        which.append(j)
    return which, pieces, targets


def train_projection(out_dir: str | Path | None = None, seed: int = 0, quick: bool = False, *, llm: str = LLM,
                     threads: int | None = None, workers: int | None = None, progress: bool = True,
                     plan: ProjectionPlan | None = None, resume: bool = False,
                     continue_from: str | Path | None = None) -> dict[str, Any]:
    """Train the projection bridge; write `shapes-llava-projector/` under `out_dir` (default: the package's
    weights); return its training notes. `continue_from` (a trained projector's folder) starts the LM stage from
    its weights instead of a warm start: a longer LM stage without redoing the one before (the plan's `lm_steps`
    and `lm_lr` are then the continuation's own schedule)."""
    from transformers.models.llava.modeling_llava import LlavaMultiModalProjector

    from vqagraph import hub
    from vqagraph.config import ModelRef
    from vqagraph_lab.qformer.stage2 import FrozenLM
    from vqagraph_lab.text_route import data as D
    from vqagraph_lab.text_route.captioner import lr_at

    plan = plan or (QUICK if quick else FULL)
    out = Path(out_dir) if out_dir is not None else default_out()
    threads = threads or default_threads()
    workers = workers if workers is not None else (1 if quick else min(2, os.cpu_count() or 1))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    timings: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(timings.get(name, 0.0) + now - since, 1)
        return now

    def bar(name: str, total: int, done: int = 0) -> Progress:
        b = Progress(name, total, progress, log=LOG)
        b.bar.update(done)
        return b

    previous = None if continue_from is None else json.loads((Path(continue_from) / "training.json").read_text())

    try:
        torch.manual_seed(seed)
        llm_dir = hub.resolve(ModelRef(id=llm)) if llm.startswith("builtin:") else llm
        lm = FrozenLM.load(str(llm_dir))
        prompts = Prompts(lm.tokenizer)
        pictures = make_pictures(seed, plan.scenes, plan.flips, plan.cells, workers, bar("scenes", plan.scenes))
        heldout = make_pictures(seed + 1_000_003, plan.heldout_scenes, 1, plan.cells, 1)
        items = heldout_items(heldout, plan.heldout_questions, seed)
        channels = pictures.tokens.shape[-1]
        flat = pictures.tokens.reshape(-1, channels)
        norm = Normalised(flat.mean(0), flat.std(0).clamp(min=1e-3))
        config = projector_config(llm_dir, channels, plan.cells)
        torch.manual_seed(seed)  # here: loading the frozen encoder (when its grids are not cached yet) draws too
        projector = LlavaMultiModalProjector(config)
        t = lap("scenes_and_features", t)

        checkpoints = out / f".projection-checkpoints-seed{seed}{'-quick' if quick else ''}"
        if checkpoints.exists() and not resume:
            shutil.rmtree(checkpoints)
        checkpoints.mkdir(parents=True, exist_ok=True)
        state_path = checkpoints / "state.pt"
        saved = torch.load(state_path, weights_only=False) if resume and state_path.exists() else None

        opt = torch.optim.AdamW(projector.parameters(), lr=plan.lm_lr, weight_decay=0.0, betas=(0.9, 0.98))
        rng = np.random.default_rng([seed, 67])
        history: dict[str, Any] = {"align": [], "lm": [], "heldout": []}
        step0 = 0
        if saved is not None:
            projector.load_state_dict(saved["projector"])
            opt.load_state_dict(saved["optimizer"])
            rng.bit_generator.state = saved["rng"]
            history, step0 = saved["history"], saved["step"]
            timings.update(saved["timings"])
            LOG.info("resumed at LM step %d from %s", step0, state_path)

        def keep(step: int) -> None:
            torch.save({"projector": projector.state_dict(), "optimizer": opt.state_dict(),
                        "rng": rng.bit_generator.state, "history": history, "step": step,
                        "timings": dict(timings)}, checkpoints / "state.tmp")
            (checkpoints / "state.tmp").rename(state_path)

        if saved is None:
            if continue_from is not None:
                projector.load_state_dict(norm.unfold(read_projector(continue_from)))
            else:  # start at the scale of the LLM's own token embeddings, then the warm start
                width = config.text_config.hidden_size
                torch.nn.init.normal_(projector.linear_2.weight, std=float(lm.table.std()) / width**0.5)
                if plan.align_steps:
                    targets = word_targets(lm, pictures)
                    b = bar("warm start (no LLM)", plan.align_steps)
                    history["align"] = train_align(projector, norm, pictures, targets, steps=plan.align_steps,
                                                   batch=plan.align_batch, lr=plan.align_lr, seed=seed, report=b)
                    b.close()
                    t = lap("align", t)
            history["heldout"].append({"step": 0, **heldout_accuracy(projector, norm, lm, prompts, heldout, items)})
            LOG.info("held-out before the LM stage: %s", history["heldout"][-1])
            t = lap("heldout_eval", t)
            keep(0)

        projector.train()
        b = bar("LLaVA stage 1 (frozen LLM)", plan.lm_steps, step0)
        warmup = max(1, plan.lm_steps // 30)
        step = step0
        for step in range(step0, plan.lm_steps):
            if plan.budget_s is not None and sum(timings.values()) + time.perf_counter() - t > plan.budget_s:
                LOG.info("budget reached after %d LM steps", step)
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, plan.lm_steps, plan.lm_lr, warmup)
            which, pieces, answers = lm_batch(pictures, prompts, rng, plan.lm_batch, plan.caption_share)
            soft = projector(norm(pictures.tokens[which]))
            contexts = [placed_embeddings(soft[k], *pieces[k], lm.table) for k in range(len(which))]
            loss = lm_loss(lm, contexts, answers)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(projector.parameters(), 1.0)
            opt.step()
            history["lm"].append(float(loss.detach()))
            b(step, {"lm": float(loss.detach())})
            done = step + 1
            if done % plan.eval_every == 0 or done == plan.lm_steps:
                t = lap("lm", t)
                history["heldout"].append({"step": done, **heldout_accuracy(projector, norm, lm, prompts, heldout,
                                                                            items)})
                LOG.info("held-out at LM step %d: %s", done, history["heldout"][-1])
                t = lap("heldout_eval", t)
            if done % plan.checkpoint_every == 0:
                t = lap("lm", t)
                keep(done)
        b.close()
        t = lap("lm", t)
        steps_run = len(history["lm"])
        if not history["heldout"] or history["heldout"][-1]["step"] != steps_run:
            history["heldout"].append({"step": steps_run, **heldout_accuracy(projector, norm, lm, prompts, heldout,
                                                                             items)})
        timings["total"] = round(sum(timings.values()), 1)
        notes = {"seed": seed, "quick": quick, "plan": asdict(plan), "threads": threads, "llm": llm,
                 "prompt": PROMPT, "caption_prompt": CAPTION_PROMPT, "knowledge_in_training": False,
                 "image_encoder": D.encoder_notes(), "image_tokens": plan.cells,
                 "losses": {"align": curve(history["align"]) if history["align"] else None,
                            "lm": curve(history["lm"])},
                 "heldout_accuracy": history["heldout"], "lm_loss_every_50": [
                     round(float(np.mean(history["lm"][i : i + 50])), 4) for i in range(0, len(history["lm"]), 50)],
                 "timings_s": timings}
        if previous is not None:  # the run this one continued: its own record, kept whole
            notes["continued_from"] = {k: previous[k] for k in ("plan", "seed", "losses", "heldout_accuracy",
                                                                "lm_loss_every_50", "timings_s", "continued_from")
                                       if k in previous}
        target = write_checkpoint(config, norm.fold(projector), out / NAME, notes)
        shutil.rmtree(checkpoints, ignore_errors=True)
        LOG.info("projection bridge written to %s", target)
        return {**notes, "model": str(target)}
    finally:
        torch.set_num_threads(previous_threads)


def write_checkpoint(config: Any, projector_state: dict[str, torch.Tensor], out: Path, notes: dict[str, Any]) -> Path:
    """A LLaVA checkpoint with only `multi_modal_projector.*` (float16 safetensors; the config says float32, so
    loaders compute in float32) and `training.json`, written beside and then moved into place."""
    from safetensors.torch import save_file

    staging = out.parent / f".{out.name}.{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    state = {f"model.multi_modal_projector.{k}": v.to(torch.float16).contiguous() for k, v in projector_state.items()}
    save_file(state, str(staging / "model.safetensors"), metadata={"format": "pt"})
    (staging / "model.safetensors").chmod(0o644)
    data = config.to_dict()
    data["architectures"] = ["LlavaForConditionalGeneration"]
    data["dtype"] = "float32"
    data.get("text_config", {})["dtype"] = "float32"
    (staging / "config.json").write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    (staging / "training.json").write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
