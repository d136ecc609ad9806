"""`vqagraph-lab --bridge`: both Q-Former bridges.

Stages: scenes (rendered in worker processes) → the frozen image encoder's features, cached → Q-Former
initialised from the ITM text encoder → stage 1, image-grounded captioning (no LLM) → stage 2, LM loss through
the frozen SmolLM2-135M (captions and questions) → BLIP-2 checkpoint → InstructBLIP from it, question-conditioned
and tuned on the question families → InstructBLIP checkpoint. `knowledge` questions never enter training.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch

from vqagraph import hub
from vqagraph_lab.progress import Progress, curve, default_out, default_threads

LOG = logging.getLogger("vqagraph_lab.qformer")
WEIGHTS_DIR = hub.WEIGHTS_DIR
NAMES = {"blip2": "shapes-blip2", "instructblip": "shapes-instructblip"}
LLM = "builtin:smollm2-135m-instruct"


@dataclass(frozen=True)
class BridgePlan:
    scenes: int  # base scenes, each also seen under `flips` mirror images
    flips: int
    stage1_steps: int
    stage1_batch: int
    stage1_lr: float
    stage2_steps: int
    stage2_batch: int
    stage2_lr: float
    instruct_steps: int
    instruct_batch: int
    instruct_lr: float
    align_steps: int = 0  # the InstructBLIP warm start (no LLM) before its LM-loss stage
    align_batch: int = 64
    align_lr: float = 1e-3
    num_query_tokens: int = 8
    probe: int = 32  # fixed questions whose loss is measured before and after each LLM stage
    budget_s: float | None = None  # the InstructBLIP LM stage stops early so the whole run stays within this


# On the frozen encoder's cached grids the stages without the LLM are cheap, so BLIP-2's representation stage
# (image-grounded captioning) gets 10x the steps it had on the from-scratch ViT; the LM stages keep their plan
# and the whole run stays inside `budget_s` (the InstructBLIP LM stage stops at the deadline).
FULL = BridgePlan(scenes=1000, flips=2, stage1_steps=1000, stage1_batch=32, stage1_lr=5e-4, stage2_steps=90,
                  stage2_batch=16, stage2_lr=1e-3, instruct_steps=600, instruct_batch=16, instruct_lr=1e-3,
                  align_steps=400, align_batch=64, align_lr=1e-3, budget_s=2700)
QUICK = BridgePlan(scenes=12, flips=1, stage1_steps=8, stage1_batch=8, stage1_lr=1e-3, stage2_steps=12,
                   stage2_batch=4, stage2_lr=3e-4, instruct_steps=8, instruct_batch=4, instruct_lr=3e-4,
                   align_steps=10, align_batch=8, align_lr=1e-3, probe=8)


def train_bridge(out_dir: str | Path | None = None, seed: int = 0, quick: bool = False, *,
                 vision_dir: str | Path | None = None, llm: str = LLM, threads: int | None = None,
                 workers: int | None = None, progress: bool = True, plan: BridgePlan | None = None,
                 num_query_tokens: int | None = None, resume: bool = False) -> dict[str, Any]:
    """Train the BLIP-2 and InstructBLIP bridges into SmolLM2-135M; write them under `out_dir` (default: the
    package's weights) as `shapes-blip2/` and `shapes-instructblip/`; return timings, losses and probe losses.
    `vision_dir` holds the world's trained `shapes-blip-captioner/` and `shapes-blip-itm/` (default: the
    package's weights)."""
    from transformers import AutoTokenizer, BlipForConditionalGeneration

    from vqagraph import hub
    from vqagraph.config import ModelRef
    from vqagraph_lab.qformer import checkpoint as K
    from vqagraph_lab.qformer import data as BD
    from vqagraph_lab.qformer import instruct as I
    from vqagraph_lab.qformer import stage1 as S1
    from vqagraph_lab.qformer import stage2 as S2
    from vqagraph_lab.text_route import data as TD
    from vqagraph_lab.text_route import models as M

    plan = plan or (QUICK if quick else FULL)
    if num_query_tokens is not None:
        plan = replace(plan, num_query_tokens=num_query_tokens)
    out = Path(out_dir) if out_dir is not None else default_out()
    models = Path(vision_dir) if vision_dir is not None else WEIGHTS_DIR
    captioner_dir, itm_dir = models / "shapes-blip-captioner", models / "shapes-blip-itm"
    for d in (captioner_dir, itm_dir):
        if not (d / "config.json").exists():
            raise FileNotFoundError(f"{d} is missing: the bridge's image encoder is the world's trained BLIP vision "
                                    "model; run `vqagraph-lab` first (or pass vision_dir)")
    threads = threads or default_threads()
    workers = workers if workers is not None else (1 if quick else min(2, os.cpu_count() or 1))
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    timings: dict[str, float] = {}
    losses: dict[str, Any] = {}
    probes: dict[str, float] = {}
    start = t = time.perf_counter()

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        LOG.info("%s done in %.1f s", name, now - since)
        return now

    def bar(name: str, total: int) -> Progress:
        return Progress(name, total, progress, log=LOG)

    try:
        torch.manual_seed(seed)
        vision_cfg = BD.vision_config(captioner_dir)
        qformer_cfg = S1.qformer_config(itm_dir)
        llm_dir = hub.resolve(ModelRef(id=llm)) if llm.startswith("builtin:") else llm
        text_cfg = S1.llm_text_config(Path(llm_dir))
        blip2 = S1.new_bridge("blip-2", vision_cfg, qformer_cfg, text_cfg, plan.num_query_tokens)
        blip2.vision_model.load_state_dict(BD.blip_vision_state(captioner_dir))
        for p in blip2.vision_model.parameters():
            p.requires_grad_(False)
        itm_state = S1.itm_text_state(itm_dir)
        copied = S1.init_qformer_from_itm(blip2.qformer, itm_state)
        LOG.info("Q-Former: %d tensors initialised from the ITM text encoder", copied)

        # The Q-Formers read the frozen encoder's grid through their own adapter, trained in stage 1 (BLIP-2 §3:
        # only what sits on the frozen encoder learns), then frozen for the LLM stages.
        adapter = M.new_adapter(TD.frozen_encoder().channels)
        data = BD.make_data(adapter, seed, plan.scenes, plan.flips, workers, progress=bar)
        t = lap("scenes_and_features", t)

        # Each finished stage is checkpointed; with `resume`, a stopped run starts after its last finished stage
        # (every stage draws from its own seeded stream).
        checkpoints = out / f".bridge-checkpoints-seed{seed}{'-quick' if quick else ''}"
        if checkpoints.exists() and not resume:
            shutil.rmtree(checkpoints)
        checkpoints.mkdir(parents=True, exist_ok=True)

        def saved(name: str) -> Any:
            path = checkpoints / f"{name}.pt"
            if resume and path.exists():
                LOG.info("%s: resumed from %s", name, path)
                return torch.load(path, weights_only=False)
            return None

        def keep(name: str, state: dict[str, Any]) -> None:
            torch.save({**state, "timings": dict(timings), "probes": dict(probes)}, checkpoints / f"{name}.pt.tmp")
            (checkpoints / f"{name}.pt.tmp").rename(checkpoints / f"{name}.pt")

        def restore(done: dict[str, Any]) -> None:
            timings.update(done["timings"])
            probes.update(done["probes"])

        done = saved("stage1")
        if done is None:
            captioner = BlipForConditionalGeneration.from_pretrained(captioner_dir, dtype=torch.float32)
            cap_tok = AutoTokenizer.from_pretrained(captioner_dir)
            b = bar("stage1 (captioning)", plan.stage1_steps)
            h1 = S1.train_stage1(blip2, captioner, cap_tok, data, steps=plan.stage1_steps, batch=plan.stage1_batch,
                                 lr=plan.stage1_lr, seed=seed, report=b, adapter=adapter)
            b.close()
            del captioner
            t = lap("stage1", t)
            keep("stage1", {"bridge": blip2.state_dict(), "adapter": adapter.state_dict(), "history": h1})
        else:
            restore(done)
            blip2.load_state_dict(done["bridge"])
            adapter.load_state_dict(done["adapter"])
            data.refresh(adapter)
            h1 = done["history"]
        for p in adapter.parameters():
            p.requires_grad_(False)
        losses["stage1_itg"] = curve(h1["itg"])

        lm = S2.FrozenLM.load(str(llm_dir))
        probe = S2.probe_items(data, plan.probe, seed)
        done = saved("stage2")
        if done is None:
            S2.match_projection_scale(blip2, lm)
            probes["stage2_before"] = round(S2.probe_loss(blip2, lm, data, probe), 4)
            b = bar("stage2 (frozen LLM)", plan.stage2_steps)
            h2 = S2.train_stage2(blip2, lm, data, steps=plan.stage2_steps, batch=plan.stage2_batch,
                                 lr=plan.stage2_lr, seed=seed, report=b)
            b.close()
            probes["stage2_after"] = round(S2.probe_loss(blip2, lm, data, probe), 4)
            t = lap("stage2", t)
            keep("stage2", {"bridge": blip2.state_dict(), "history": h2})
        else:
            restore(done)
            blip2.load_state_dict(done["bridge"])
            h2 = done["history"]
        losses["stage2_lm"] = curve(h2["lm"])

        staging = out / f".staging-bridge-{os.getpid()}"
        if staging.exists():
            shutil.rmtree(staging)
        notes = {"seed": seed, "quick": quick, "plan": asdict(plan), "threads": threads, "llm": llm,
                 "vision": str(captioner_dir.name), "knowledge_in_training": False,
                 "families": list(BD.QA_FAMILIES),
                 "image_encoder": TD.encoder_notes()}
        K.write_checkpoint(blip2, staging / NAMES["blip2"], vision_cfg["image_size"], adapter=adapter,
                           notes={**notes, "losses": dict(losses), "probe": dict(probes)})

        qtok = AutoTokenizer.from_pretrained(itm_dir)
        inst = I.instruct_from_blip2(blip2, itm_state)
        for p in inst.vision_model.parameters():
            p.requires_grad_(False)
        done = saved("instruct_align")
        if done is not None:
            restore(done)
            inst.load_state_dict(done["bridge"])
            losses["instruct_answer"] = curve(done["history"]["answer"])
        elif plan.align_steps:
            probes["align_before"] = round(S2.probe_loss(inst, lm, data, probe, qtok), 4)
            b = bar("instructblip answer warm start (no LLM)", plan.align_steps)
            ha = I.train_align(inst, lm, qtok, data, steps=plan.align_steps, batch=plan.align_batch,
                               lr=plan.align_lr, seed=seed, report=b)
            b.close()
            losses["instruct_answer"] = curve(ha["answer"])
            t = lap("instruct_align", t)
            keep("instruct_align", {"bridge": inst.state_dict(), "history": ha})
        probes["instruct_before"] = round(S2.probe_loss(inst, lm, data, probe, qtok), 4)
        b = bar("instructblip (frozen LLM)", plan.instruct_steps)
        deadline = None if plan.budget_s is None else time.time() + plan.budget_s - (time.perf_counter() - start) - 60
        h3 = I.train_instruct(inst, lm, qtok, data, steps=plan.instruct_steps, batch=plan.instruct_batch,
                              lr=plan.instruct_lr, seed=seed, report=b, deadline=deadline)
        b.close()
        probes["instruct_after"] = round(S2.probe_loss(inst, lm, data, probe, qtok), 4)
        losses["instruct_lm"] = curve(h3["lm"])  # `steps` says how many ran before the budget's deadline
        t = lap("instruct", t)
        timings["total"] = round(time.perf_counter() - start, 1)
        notes = {**notes, "losses": losses, "probe": probes, "timings_s": timings}
        K.write_checkpoint(inst, staging / NAMES["instructblip"], vision_cfg["image_size"], qformer_tokenizer=qtok,
                           adapter=adapter, notes=notes)
        LOG.info("checkpoints written under %s", staging)
        (staging / NAMES["blip2"] / "training.json").write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
        for name in NAMES.values():
            target = out / name
            if target.exists():
                shutil.rmtree(target)
            (staging / name).rename(target)
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(checkpoints, ignore_errors=True)
        return {**notes, "models": {k: str(out / v) for k, v in NAMES.items()}}
    finally:
        torch.set_num_threads(previous_threads)
