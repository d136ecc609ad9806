"""`vqagraph-lab`: every Shapes-world model of the text route, from one seed.

Stages: scenes (rendered in worker processes) → the frozen pretrained encoder's grids, computed once →
tokenizers → captioner stage 1 (the adapter on the frozen grid + decoder) → feature cache → captioner stage 2
(decoder) → ITM (text encoder on the same features) → T5 question generator → held-out metrics →
`save_pretrained` directories (float16 safetensors, tokenizer, image processor, `image_adapter/`) and a
`training-summary.json`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vqagraph import hub
from vqagraph.prompt_templates import IMG2LLM_QG_INPUT
from vqagraph_lab.progress import Progress, curve, default_out, default_threads

LOG = logging.getLogger("vqagraph.training")
WEIGHTS_DIR = hub.WEIGHTS_DIR
NAMES = {"captioner": "shapes-blip-captioner", "itm": "shapes-blip-itm", "question_generator": "shapes-t5-qg"}


@dataclass(frozen=True)
class Plan:
    scenes: int  # base scenes; each is also used mirrored (4 pictures)
    stage1_steps: int
    stage1_batch: int
    stage1_subsets: int  # patch samples captioned per picture per step
    stage1_lr: float
    cache_flips: int  # mirror images per scene whose features are cached for stage 2 and ITM
    stage2_steps: int
    stage2_batch: int
    stage2_lr: float
    itm_steps: int
    itm_batch: int
    itm_lr: float
    qg_steps: int
    qg_batch: int
    qg_lr: float
    eval_scenes: int
    itm_attention_weight: float = 0.5  # the pull of the GradCAM layer's cross-attention towards the named objects


FULL = Plan(scenes=1200, stage1_steps=1100, stage1_batch=24, stage1_subsets=2, stage1_lr=1e-3, cache_flips=2,
            stage2_steps=450, stage2_batch=96, stage2_lr=1e-3, itm_steps=2400, itm_batch=32, itm_lr=3e-4,
            qg_steps=900, qg_batch=32, qg_lr=5e-4, eval_scenes=100, itm_attention_weight=2.0)
QUICK = Plan(scenes=16, stage1_steps=12, stage1_batch=8, stage1_subsets=0, stage1_lr=2e-3, cache_flips=1,
             stage2_steps=12, stage2_batch=16, stage2_lr=2e-3, itm_steps=24, itm_batch=12, itm_lr=2e-3,
             qg_steps=12, qg_batch=8, qg_lr=2e-3, eval_scenes=4)


def _vocab_texts(corpus: Any, limit: int = 400) -> list[str]:
    from vqagraph.world.captions import NUMBER_WORDS, PLURALS, POSITION_VARIANTS
    from vqagraph_lab.text_route import data as D

    texts: list[str] = []
    for index in range(min(len(corpus), limit)):
        t = corpus.example(index).texts
        texts += t.captions + [c for r in t.region for c in r] + [q.question for q in t.questions]
        texts += [a for q in t.questions for a in q.answers]
    shapes, colours, sizes = D.shapes_and_colours()
    texts += [" ".join(shapes), " ".join(PLURALS.values()), " ".join(colours), " ".join(sizes), "grey",
              " ".join(NUMBER_WORDS), " ".join(v for vs in POSITION_VARIANTS.values() for v in vs),
              "plain gradient noisy background image picture"]
    return texts


def train_all(out_dir: str | Path | None = None, seed: int = 0, quick: bool = False, threads: int | None = None,
              workers: int | None = None, progress: bool = True, plan: Plan | None = None,
              parallel: bool | None = None, resume: bool = False) -> dict[str, Any]:
    """Train the captioner, ITM model and question generator; save them under `out_dir`; return timings,
    loss curves (first/last tenth of each stage) and held-out metrics.

    Each finished stage is checkpointed under `out_dir/.staging-seed{seed}`; with `resume`, a run that was
    stopped starts again after its last finished stage (every stage draws from its own seeded stream, so the
    result is the one an uninterrupted run gives)."""
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    from vqagraph_lab.text_route import captioner as C
    from vqagraph_lab.text_route import data as D
    from vqagraph_lab.text_route import evaluate as E
    from vqagraph_lab.text_route import itm as I
    from vqagraph_lab.text_route import models as M
    from vqagraph_lab.text_route import t5_qg as Q
    from vqagraph_lab.text_route import vocab as V

    plan = plan or (QUICK if quick else FULL)
    out = Path(out_dir) if out_dir is not None else default_out()
    threads = threads or default_threads()
    workers = workers if workers is not None else (1 if quick else min(2, os.cpu_count() or 1))
    parallel = (not quick) if parallel is None else parallel
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}  # this process's CPU seconds per stage (wall time depends on other load)
    losses: dict[str, Any] = {}
    start = time.perf_counter()
    cpu_mark = [time.process_time()]

    def lap(name: str, since: float) -> float:
        now = time.perf_counter()
        timings[name] = round(now - since, 1)
        cpu[name] = round(time.process_time() - cpu_mark[0], 1)
        cpu_mark[0] = time.process_time()
        LOG.info("%s done in %.1f s (%.1f CPU s)", name, now - since, cpu[name])
        return now

    try:
        t = time.perf_counter()
        seeds = [int(s) for s in np.random.default_rng([seed, 1]).integers(2**31, size=plan.scenes)]
        bar = Progress("scenes", plan.scenes, progress)
        corpus = D.make_corpus(seeds, seed=seed, workers=workers, progress=bar)
        bar.close()
        t = lap("scenes", t)

        staging = out / f".staging-seed{seed}{'-quick' if quick else ''}"
        if staging.exists() and not resume:
            shutil.rmtree(staging)
        checkpoints = staging / "checkpoints"
        checkpoints.mkdir(parents=True, exist_ok=True)

        earlier: dict[str, dict[str, float]] = {"timings": {}, "cpu": {}}  # what a stopped run spent before

        def saved(name: str) -> Any:
            path = checkpoints / f"{name}.pt"
            if resume and path.exists():
                LOG.info("%s: resumed from %s", name, path)
                state = torch.load(path, weights_only=False)
                for key in earlier:
                    earlier[key].update(state.get(key, {}))
                return state
            return None

        def keep(name: str, state: Any) -> None:
            state = {**state, "timings": dict(timings), "cpu": dict(cpu)}
            torch.save(state, checkpoints / f"{name}.pt.tmp")
            (checkpoints / f"{name}.pt.tmp").rename(checkpoints / f"{name}.pt")

        dirs = {role: staging / name for role, name in NAMES.items()}
        texts = _vocab_texts(corpus)
        ids = V.save_bert_tokenizer(texts, dirs["captioner"])
        V.save_bert_tokenizer(texts, dirs["itm"])
        qg_sample = IMG2LLM_QG_INPUT.format(answer="yes",
                                            context="A red circle. Two shapes: a red circle and a blue square")
        qg_ids = V.save_t5_tokenizer([*texts, qg_sample], dirs["question_generator"])
        for role in ("captioner", "itm"):
            M.save_image_processor(dirs[role])
        bert = AutoTokenizer.from_pretrained(dirs["captioner"])
        t5_tok = AutoTokenizer.from_pretrained(dirs["question_generator"])

        # The question generator needs texts only: it trains in a second process beside the BLIP stages
        # (one thread), or here after them when `parallel` is off.
        qg_args = (D.text_corpus(corpus).items, str(dirs["question_generator"]), qg_ids, plan.qg_steps,
                   plan.qg_batch, plan.qg_lr, seed, 1, progress)
        qg_job = None
        qg_done = saved("question_generator")
        if parallel and qg_done is None:
            import concurrent.futures
            import multiprocessing

            qg_pool = concurrent.futures.ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
            qg_job = qg_pool.submit(Q.train_in_process, *qg_args)

        # the frozen encoder's grids of `cache_flips` pictures per scene, computed once (never trained)
        rng = np.random.default_rng([seed, 3])
        flips = len(corpus.flips)
        rows = sorted(base * flips + int(f) for base in range(len(corpus.rendered))
                      for f in rng.choice(flips, size=min(plan.cache_flips, flips), replace=False))
        bar = Progress("frozen encoder", len(rows), progress)
        D.cache_grids(corpus, rows, progress=bar)
        bar.close()
        t = lap("frozen_grids", t)

        # captioner, stage 1: the adapter on the frozen grid (+ decoder)
        torch.manual_seed(seed)
        cap = M.new_captioner(ids)
        adapter = M.new_adapter(D.frozen_encoder().channels)
        done = saved("stage1")
        if done is None:
            bar = Progress("captioner+adapter", plan.stage1_steps, progress)
            h1 = C.train_stage1(cap, adapter, bert, corpus, steps=plan.stage1_steps, batch=plan.stage1_batch,
                                subsets=plan.stage1_subsets, lr=plan.stage1_lr, seed=seed, rows=rows, report=bar)
            bar.close()
            keep("stage1", {"model": cap.state_dict(), "adapter": adapter.state_dict(), "history": h1})
        else:
            cap.load_state_dict(done["model"])
            adapter.load_state_dict(done["adapter"])
            h1 = done["history"]
        cap.eval()
        adapter.eval()
        losses.update({f"stage1_{k}": curve(v) for k, v in h1.items() if v})
        t = lap("captioner_stage1", t)

        bar = Progress("features", len(rows), progress)
        features = C.encode(adapter, corpus, rows, progress=bar.update)
        bar.close()
        t = lap("features", t)

        done = saved("stage2")
        if done is None:
            bar = Progress("captioner decoder", plan.stage2_steps, progress)
            h2 = C.train_stage2(cap, bert, corpus, rows, features, steps=plan.stage2_steps,
                                batch=plan.stage2_batch, lr=plan.stage2_lr, seed=seed, report=bar)
            bar.close()
            keep("stage2", {"model": cap.state_dict(), "history": h2})
        else:
            cap.load_state_dict(done["model"])
            h2 = done["history"]
        cap.eval()
        losses["stage2_caption"] = curve(h2["caption"])
        t = lap("captioner_stage2", t)

        torch.manual_seed(seed + 1)
        itm = M.new_itm(ids)
        itm.vision_model.load_state_dict(cap.vision_model.state_dict())  # the placeholder; the adapter is shared
        # BLIP shares its text encoder's and decoder's weights (all but self-attention's causality): starting the
        # ITM encoder from the trained decoder gives it words that already look at the right patches.
        itm.text_encoder.load_state_dict(cap.text_decoder.bert.state_dict())
        done = saved("itm")
        if done is None:
            bar = Progress("itm", plan.itm_steps, progress)
            h3 = I.train_itm(itm, bert, corpus, rows, features, layer=M.GRADCAM_LAYER, steps=plan.itm_steps,
                             batch=plan.itm_batch, lr=plan.itm_lr, seed=seed, report=bar,
                             attention_weight=plan.itm_attention_weight)
            bar.close()
            keep("itm", {"model": itm.state_dict(), "history": h3})
        else:
            itm.load_state_dict(done["model"])
            h3 = done["history"]
        itm.eval()
        losses.update({"itm": curve(h3["itm"]), "itm_patches": curve(h3["itm_patches"]),
                       "itm_attention": curve(h3["attention"])})
        t = lap("itm", t)

        if qg_done is not None:
            qg_result = qg_done
        elif qg_job is not None:
            qg_result = qg_job.result()
            qg_pool.shutdown()
        else:
            qg_result = Q.train_in_process(*qg_args[:-2], threads, progress)
        if qg_done is None:
            keep("question_generator", qg_result)
        losses["qg"] = curve(qg_result["history"]["qg"])
        timings["question_generator"] = qg_result["seconds"]
        cpu["question_generator_process"] = qg_result["cpu_seconds"]
        qg = AutoModelForSeq2SeqLM.from_pretrained(dirs["question_generator"]).eval()
        t = lap("question_generator_wait", t)

        metrics: dict[str, Any] = {}
        if plan.eval_scenes:
            test = E.held_out(seed, plan.eval_scenes)
            test_features = C.encode(adapter, test, list(range(len(test))))
            metrics["captioner"] = E.caption_metrics(cap, bert, test, seed, features=test_features)
            single = E.held_out(seed + 1, max(4, plan.eval_scenes // 2), n_objects=1, size_word="large")
            metrics["captioner_single_large"] = {
                k: v for k, v in E.caption_metrics(cap, bert, single, seed, vision=adapter).items()
                if k.startswith("region_")}
            metrics["itm"] = E.itm_metrics(itm, bert, test, test_features, seed)
            metrics["gradcam"] = E.pointing_game(itm, bert, test, test_features, M.GRADCAM_LAYER)
            metrics["question_generator"] = E.qg_metrics(qg, t5_tok, test, seed)
            t = lap("evaluation", t)

        # A resumed run reports what each stage cost when it ran, not the seconds it took to reload it.
        timings.update(earlier["timings"])
        cpu.update(earlier["cpu"])
        timings["total"] = round(time.perf_counter() - start, 1)
        notes = {"seed": seed, "quick": quick, "plan": asdict(plan), "threads": threads, "timings_s": timings,
                 "cpu_s": cpu, "losses": losses, "gradcam_layer": M.GRADCAM_LAYER, "image_encoder": D.encoder_notes()}
        M.save_model(cap, dirs["captioner"], {**notes, "metrics": {k: metrics.get(k) for k in
                                                                   ("captioner", "captioner_single_large")}})
        M.save_model(itm, dirs["itm"], {**notes, "metrics": {k: metrics.get(k) for k in ("itm", "gradcam")}})
        M.write_notes(dirs["question_generator"], {**notes, "metrics": metrics.get("question_generator")})
        for role in ("captioner", "itm"):
            M.save_adapter(adapter, dirs[role])
        for role, name in NAMES.items():
            target = out / name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(dirs[role], target)
        shutil.rmtree(staging, ignore_errors=True)
        summary = {**notes, "metrics": metrics, "models": {role: str(out / name) for role, name in NAMES.items()}}
        (out / "shapes-text-route-training.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        return summary
    finally:
        torch.set_num_threads(previous_threads)
