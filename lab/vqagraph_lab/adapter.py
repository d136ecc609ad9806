"""`vqagraph-lab --adapter`: LLaMA-Adapter's gated adaption prompts inside the frozen LLM (docs/methods.md §9).

A trained Q-Former bridge (BLIP-2's or InstructBLIP's, kept frozen) gives the visual feature: its projected query
outputs, added to the adaption prompts of the top L layers. Only the prompts, the per-head gates and the visual
projection learn, from the LM loss of the route's own prompt (`Question: q Answer:` + the answer, no image tokens
at the input), on the same Shapes-world scenes and question families as the bridges (never `knowledge`). The gates
start at zero, so step 0 is the frozen LLM alone; held-out accuracy and the gates per layer are recorded as the
run goes, and the run is resumable from its checkpoint.
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

from vqagraph_lab.progress import Progress, curve, default_out, default_threads

LOG = logging.getLogger("vqagraph_lab.adapter")
NAME = "shapes-llama-adapter"
INPUT_NAME = "shapes-qformer-input"  # the input arm's Q-Former checkpoint (the bridge route loads it)
LLM = "builtin:smollm2-135m-instruct"
QFORMER = "builtin:shapes-blip2"


@dataclass(frozen=True)
class AdapterPlan:
    scenes: int
    flips: int
    steps: int
    batch: int
    lr: float
    adapter_layers: int  # L, from the top
    adapter_len: int  # K; the Q-Former's query count adds one visual vector to each prompt
    weight_decay: float = 0.02  # LLaMA-Adapter's
    heldout_scenes: int = 60
    heldout_questions: int = 150
    eval_every: int = 100
    checkpoint_every: int = 25
    budget_s: float | None = None  # the run's whole time; training stops at this deadline


# L = 28 of SmolLM2's 30 layers, as the paper adapts the top 30 of LLaMA-7B's 32; K = 8, the Q-Former's queries (the
# paper: 10), so each prompt gets its own visual vector. One step of 16 questions took 5.0 s with L = 30, 3.7 s
# with L = 15, 2.8 s with L = 8 on the 2-core CPU (backward runs only through the adapted layers).
FULL = AdapterPlan(scenes=1000, flips=2, steps=800, batch=16, lr=3e-3, adapter_layers=28, adapter_len=8,
                   budget_s=5400)
QUICK = AdapterPlan(scenes=12, flips=1, steps=6, batch=4, lr=3e-3, adapter_layers=2, adapter_len=8,
                    heldout_scenes=3, heldout_questions=8, eval_every=3, checkpoint_every=3)


@dataclass
class Visual:
    """The frozen Q-Former's projected query outputs per picture (BLIP-2: computed once; InstructBLIP: per
    question, since its queries read the instruction)."""

    bridge: Any
    features: torch.Tensor  # the pictures' tokens through the Q-Former's own image adapter
    instruction_tokenizer: Any = None
    projected: bool = True  # False: the query outputs before the Q-Former's language projection (the input arm's)
    fixed: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if not self.bridge.conditioned:
            with torch.no_grad():
                self.fixed = torch.cat([self.outputs(self.features[i : i + 256])
                                        for i in range(0, len(self.features), 256)])

    def outputs(self, features: torch.Tensor, ids: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        from vqagraph_lab.qformer.stage1 import query_outputs

        if self.projected:
            return self.bridge.soft_prompt(features, ids, mask)  # type: ignore[no-any-return]
        return query_outputs(self.bridge, features, ids, mask)

    @torch.no_grad()
    def __call__(self, which: Sequence[int], questions: Sequence[str]) -> torch.Tensor:
        if self.fixed is not None:
            return self.fixed[list(which)]
        from vqagraph.prompt_templates import INSTRUCTBLIP_QFORMER_INSTRUCTION

        enc = self.instruction_tokenizer([INSTRUCTBLIP_QFORMER_INSTRUCTION.format(question=q) for q in questions],
                                         return_tensors="pt", padding=True)
        return self.outputs(self.features[list(which)], enc["input_ids"], enc["attention_mask"])


class InputArm(torch.nn.Module):
    """The 2×2's other column: the same frozen Q-Former's queries at the LLM's input (BLIP-2's and InstructBLIP's
    own way), trained on the same budget as the adapter. What learns is the Q-Former's language projection,
    continued from the bridge's own, so step 0 is the shipped input bridge and both arms start from one
    checkpoint."""

    def __init__(self, bridge: Any) -> None:
        super().__init__()
        import copy

        self.language_projection = copy.deepcopy(bridge.language_projection).float()
        for p in self.language_projection.parameters():
            p.requires_grad_(True)

    def forward(self, query_outputs: torch.Tensor) -> torch.Tensor:
        return self.language_projection(query_outputs)  # type: ignore[no-any-return]

    def gate_magnitudes(self) -> list[float]:
        return []  # no gates: the image is at the input

    def save_pretrained(self, folder: Path) -> None:
        """Write the trained projection over the Q-Former's own in the checkpoint `folder` (fp16, as shipped)."""
        from safetensors.torch import load_file, save_file

        trained = {f"language_projection.{k}": v.detach().to(torch.float16).contiguous()
                   for k, v in self.language_projection.state_dict().items()}
        for shard in sorted(Path(folder).glob("model*.safetensors")):
            tensors = load_file(str(shard))
            if any(k in tensors for k in trained):
                save_file({**tensors, **{k: v for k, v in trained.items() if k in tensors}}, str(shard),
                          metadata={"format": "pt"})


def load_qformer(ref: str) -> tuple[Any, Any, Any, Path]:
    """(frozen Q-Former bridge, its image adapter, its instruction tokenizer or None, its folder)."""
    from transformers import AutoTokenizer

    from vqagraph import hub
    from vqagraph.config import ModelRef
    from vqagraph.tools.image_encoder import ADAPTER_FOLDER, GridAdapter
    from vqagraph.tools.qformer import QFormerBridge

    folder = Path(hub.resolve(ModelRef(id=ref)) if ref.startswith("builtin:") else ref)
    bridge = QFormerBridge.from_pretrained(str(folder)).keep_qformer_fp32().float()
    for p in bridge.parameters():
        p.requires_grad_(False)
    image_adapter = GridAdapter.from_pretrained(folder / ADAPTER_FOLDER).float().eval()
    tokenizer = AutoTokenizer.from_pretrained(folder / "qformer_tokenizer") if bridge.conditioned else None
    return bridge, image_adapter, tokenizer, folder


def batch_loss(lm: Any, adapter: Any, visual: torch.Tensor, items: Sequence[tuple[list[int], list[int]]],
               ) -> torch.Tensor:
    """Mean cross-entropy of the answers (and end of turn) after the route's prompt, the adapter active (the
    input arm: after its soft prompt, as the Q-Former route sends it)."""
    from vqagraph.models.llama_adapter import adapted

    if isinstance(adapter, InputArm):
        return lm.loss(adapter(visual), items)  # type: ignore[no-any-return]
    lengths = [len(p) + len(t) for p, t in items]
    width = max(lengths)
    pad = lm.tokenizer.pad_token_id or 0
    ids = torch.full((len(items), width), pad, dtype=torch.long)
    mask = torch.zeros((len(items), width), dtype=torch.long)
    labels = torch.full((len(items), width), -100, dtype=torch.long)
    for b, (p, t) in enumerate(items):
        ids[b, : len(p) + len(t)] = torch.tensor(p + t)
        mask[b, : len(p) + len(t)] = 1
        labels[b, len(p) : len(p) + len(t)] = torch.tensor(t)
    with adapted(adapter.prompts(visual)):
        hidden = lm.model.model(input_ids=ids, attention_mask=mask).last_hidden_state
    target = labels[:, 1:]
    where = target != -100
    logits = lm.model.lm_head(hidden[:, :-1][where])
    return F.cross_entropy(logits, target[where])


@torch.no_grad()
def heldout_accuracy(lm: Any, adapter: Any, visual: Visual, items: Sequence[tuple[int, str, list[str], str]],
                     max_new_tokens: int = 10) -> dict[str, float]:
    """VQA accuracy per family and overall: greedy answers as the route decodes them, batched by prompt length
    (no padding, so the tokens are those of one-by-one decoding)."""
    from vqagraph.eval.metric import vqa_accuracy
    from vqagraph.models.llama_adapter import adapted
    from vqagraph.tools.llm.postprocess import postprocess_answer
    from vqagraph_lab.qformer.stage2 import PROMPT

    was = adapter.training
    adapter.eval()
    prompts = [lm.pieces(PROMPT.format(question=q), "")[0] for _, q, _, _ in items]
    groups: dict[int, list[int]] = defaultdict(list)
    for k, p in enumerate(prompts):
        groups[len(p)].append(k)
    eos = lm.tokenizer.eos_token_id
    scores: dict[str, list[float]] = defaultdict(list)
    for ks in groups.values():
        for start in range(0, len(ks), 32):
            chunk = ks[start : start + 32]
            ids = torch.tensor([prompts[k] for k in chunk])
            vis = visual([items[k][0] for k in chunk], [items[k][1] for k in chunk])
            decode = {"max_new_tokens": max_new_tokens, "min_new_tokens": 1, "do_sample": False,
                      "eos_token_id": eos, "pad_token_id": eos}
            if isinstance(adapter, InputArm):  # [soft prompt ; BOS + prompt]: only the new tokens come back
                embeds = torch.cat([adapter(vis), lm.table[ids]], dim=1)
                out = lm.model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2],
                                        dtype=torch.long), **decode)
            else:
                with adapted(adapter.prompts(vis)):
                    out = lm.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **decode)
                out = out[:, ids.shape[1]:]
            for k, seq in zip(chunk, out, strict=True):
                new = seq.tolist()
                new = new[: new.index(eos)] if eos in new else new
                _, _, answers, family = items[k]
                scores[family].append(vqa_accuracy(postprocess_answer(lm.tokenizer.decode(new)), answers))
    adapter.train(was)
    report = {f: round(float(np.mean(v)), 1) for f, v in sorted(scores.items())}
    report["overall"] = round(float(np.mean([s for v in scores.values() for s in v])), 1)
    return report


def train_adapter(out_dir: str | Path | None = None, seed: int = 0, quick: bool = False, *, llm: str = LLM,
                  qformer: str = QFORMER, threads: int | None = None, workers: int | None = None,
                  progress: bool = True, plan: AdapterPlan | None = None, resume: bool = False,
                  into: str = "adapter") -> dict[str, Any]:
    """Train the adapter; write `shapes-llama-adapter/` (the frozen Q-Former's checkpoint and the adapter beside
    it) under `out_dir` (default: the cache's lab folder); return its training notes. `into="input"`: the 2×2's
    input cell on the same plan instead (`InputArm`), written as a Q-Former checkpoint, `shapes-qformer-input/`."""
    if into not in ("adapter", "input"):
        raise ValueError(f"into is 'adapter' or 'input', not {into!r}")
    from vqagraph import hub
    from vqagraph.config import ModelRef
    from vqagraph.models.llama_adapter import LlamaAdapter, LlamaAdapterConfig, attach, llm_numbers
    from vqagraph_lab.projection import heldout_items
    from vqagraph_lab.qformer import data as BD
    from vqagraph_lab.qformer.stage2 import PROMPT, FrozenLM
    from vqagraph_lab.text_route import data as TD
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

    try:
        torch.manual_seed(seed)
        llm_dir = hub.resolve(ModelRef(id=llm)) if llm.startswith("builtin:") else llm
        lm = FrozenLM.load(str(llm_dir))
        attach(lm.model)
        bridge, image_adapter, qtok, qformer_dir = load_qformer(qformer)
        if bridge.output_size != lm.hidden_size:
            raise ValueError(f"the Q-Former {qformer} projects to {bridge.output_size}, the LLM's width is "
                             f"{lm.hidden_size}: train a Q-Former for this LLM first")
        data = BD.make_data(image_adapter, seed, plan.scenes, plan.flips, workers, progress=bar)
        heldout = BD.make_data(image_adapter, seed + 1_000_003, plan.heldout_scenes, 1, 1)
        items = heldout_items(heldout, plan.heldout_questions, seed)  # type: ignore[arg-type]
        visual = Visual(bridge, data.features, qtok, projected=into == "adapter")
        heldout_visual = Visual(bridge, heldout.features, qtok, projected=into == "adapter")
        torch.manual_seed(seed)
        adapter: LlamaAdapter | InputArm
        if into == "input":
            adapter = InputArm(bridge)
        else:
            config = LlamaAdapterConfig(adapter_layers=plan.adapter_layers, adapter_len=plan.adapter_len,
                                        visual_size=bridge.output_size, llm=llm, **llm_numbers(lm.model.config))
            adapter = LlamaAdapter(config)
        t = lap("scenes_and_features", t)

        checkpoints = out / f".{into}-checkpoints-seed{seed}{'-quick' if quick else ''}"
        if checkpoints.exists() and not resume:
            shutil.rmtree(checkpoints)
        checkpoints.mkdir(parents=True, exist_ok=True)
        state_path = checkpoints / "state.pt"
        saved = torch.load(state_path, weights_only=False) if resume and state_path.exists() else None
        opt = torch.optim.AdamW(adapter.parameters(), lr=plan.lr, weight_decay=plan.weight_decay, betas=(0.9, 0.95))
        rng = np.random.default_rng([seed, 89])
        history: dict[str, Any] = {"lm": [], "heldout": [], "gates": []}
        step0 = 0
        if saved is not None:
            adapter.load_state_dict(saved["adapter"])
            opt.load_state_dict(saved["optimizer"])
            rng.bit_generator.state = saved["rng"]
            history, step0 = saved["history"], saved["step"]
            timings.update(saved["timings"])
            LOG.info("resumed at step %d from %s", step0, state_path)

        def keep(step: int) -> None:
            torch.save({"adapter": adapter.state_dict(), "optimizer": opt.state_dict(),
                        "rng": rng.bit_generator.state, "history": history, "step": step,
                        "timings": dict(timings)}, checkpoints / "state.tmp")
            (checkpoints / "state.tmp").rename(state_path)

        def evaluate(step: int) -> None:
            history["heldout"].append({"step": step, **heldout_accuracy(lm, adapter, heldout_visual, items)})
            history["gates"].append({"step": step, "per_layer": adapter.gate_magnitudes()})
            LOG.info("held-out at step %d: %s; gates %s", step, history["heldout"][-1], history["gates"][-1])

        if saved is None:
            evaluate(0)  # the gates are zero: this is the frozen LLM answering from the text alone
            t = lap("heldout_eval", t)
            keep(0)

        adapter.train()
        b = bar("LLaMA-Adapter (frozen LLM)" if into == "adapter" else "queries at the input (frozen LLM)",
                plan.steps, step0)
        warmup = max(1, plan.steps // 20)
        for step in range(step0, plan.steps):
            if plan.budget_s is not None and sum(timings.values()) + time.perf_counter() - t > plan.budget_s:
                LOG.info("budget reached after %d steps", step)
                break
            for group in opt.param_groups:
                group["lr"] = lr_at(step, plan.steps, plan.lr, warmup)
            picked: list[tuple[int, str, str]] = []
            while len(picked) < plan.batch:
                j = int(rng.integers(len(data)))
                qa = BD.qa_sample(data, j, rng)
                if qa is not None:
                    picked.append((j, *qa))
            pieces = [lm.pieces(PROMPT.format(question=q), " " + a) for _, q, a in picked]
            vis = visual([j for j, _, _ in picked], [q for _, q, _ in picked])
            loss = batch_loss(lm, adapter, vis, pieces)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter.parameters(), 1.0)
            opt.step()
            history["lm"].append(float(loss.detach()))
            b(step, {"lm": float(loss.detach())})
            done = step + 1
            if done % plan.eval_every == 0 or done == plan.steps:
                t = lap("train", t)
                evaluate(done)
                t = lap("heldout_eval", t)
            if done % plan.checkpoint_every == 0:
                t = lap("train", t)
                keep(done)
        b.close()
        t = lap("train", t)
        steps_run = len(history["lm"])
        if history["heldout"][-1]["step"] != steps_run:
            evaluate(steps_run)
        timings["total"] = round(sum(timings.values()), 1)
        trainable = sum(p.numel() for p in adapter.parameters())
        notes = {"into": into, "seed": seed, "quick": quick, "plan": asdict(plan), "threads": threads, "llm": llm,
                 "qformer": qformer, "qformer_kind": bridge.kind, "prompt": PROMPT, "knowledge_in_training": False,
                 "families": list(BD.QA_FAMILIES), "image_encoder": TD.encoder_notes(),
                 "trainable_parameters": trainable, "losses": {"lm": curve(history["lm"])},
                 "lm_loss_every_50": [round(float(np.mean(history["lm"][i : i + 50])), 4)
                                      for i in range(0, len(history["lm"]), 50)],
                 "heldout_accuracy": history["heldout"], "gates": history["gates"], "timings_s": timings}
        target = write_checkpoint(adapter, qformer_dir, out / (INPUT_NAME if into == "input" else NAME), notes)
        shutil.rmtree(checkpoints, ignore_errors=True)
        LOG.info("%s written to %s", into, target)
        return {**notes, "model": str(target)}
    finally:
        torch.set_num_threads(previous_threads)


def write_checkpoint(trained: Any, qformer_dir: Path, out: Path, notes: dict[str, Any]) -> Path:
    """One folder the route loads whole: the frozen Q-Former's checkpoint (its own training.json kept as
    `qformer-training.json`), what this run trained written into it (`save_pretrained`: the adapter beside it, or
    the input arm's projection in place of the Q-Former's), this run's training.json; written aside, then moved in."""
    staging = out.parent / f".staging-{out.name}-{os.getpid()}"
    if staging.exists():
        shutil.rmtree(staging)
    shutil.copytree(qformer_dir, staging)
    if (staging / "training.json").exists():
        (staging / "training.json").rename(staging / "qformer-training.json")
    trained.save_pretrained(staging)
    (staging / "training.json").write_text(json.dumps(notes, indent=2, sort_keys=True) + "\n")
    for file in staging.rglob("*"):
        if file.is_file():
            file.chmod(0o644)  # safetensors writes 0600; shipped files must be readable by everyone
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    return out
