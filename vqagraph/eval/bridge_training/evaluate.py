"""A fast, exact evaluation of a bridge checkpoint on a Shapes-world question file (for training runs).

It computes what the embedding route computes — the checkpoint's image processor and Q-Former, marks drawn as
the engine draws them, `[soft prompt ; embed(BOS + "Question: q Answer:")]`, greedy, at most 10 new tokens,
the route's answer post-processing and the VQA accuracy — but batches questions whose inputs have the same
length (no padding, so the tokens are those of one-by-one decoding). `vqagraph eval --routes bridge` remains
the reference; this exists because it answers a few hundred questions in a minute here.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def evaluate_bridge(checkpoint: str | Path, questions: str | Path, llm_dir: str | Path, limit: int | None = None,
                    families: set[str] | None = None, batch: int = 32, answers_out: str | Path | None = None,
                    ) -> dict[str, Any]:
    from PIL import Image
    from transformers import AutoTokenizer, BlipImageProcessorPil

    from vqagraph.engine import validate_marks
    from vqagraph.eval.bridge_training.stage2 import PROMPT, FrozenLM
    from vqagraph.eval.metric import vqa_accuracy
    from vqagraph.tools.bridge_prompt import bridge_token_ids
    from vqagraph.tools.image_encoder import ADAPTER_FOLDER, AdaptedVision, load_adapter
    from vqagraph.tools.llm.postprocess import postprocess_answer
    from vqagraph.tools.qformer import QFormerBridge
    from vqagraph.tools.vision_features import vision_features
    from vqagraph.tools.visual_prompt import render_marks

    bridge = QFormerBridge.from_pretrained(str(checkpoint)).keep_qformer_fp32()
    vision = None
    if (Path(checkpoint) / ADAPTER_FOLDER).exists():  # the frozen encoder's grid through the bridge's adapter
        from vqagraph.eval.training.data import frozen_encoder

        vision = AdaptedVision(frozen_encoder(), load_adapter(checkpoint))
    processor = BlipImageProcessorPil.from_pretrained(str(checkpoint))
    qtok = AutoTokenizer.from_pretrained(str(checkpoint), subfolder="qformer_tokenizer") if bridge.conditioned else None
    lm = FrozenLM.load(str(llm_dir))
    path = Path(questions)
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if families is None or r["family"] in families][:limit]
    items = []
    for r in rows:
        image = Image.open(path.parent / r["image"]).convert("RGB")
        if r.get("marks"):
            image, _ = render_marks(image, validate_marks(r["marks"]))
        feats = vision(None, image) if vision is not None else vision_features(bridge.vision_model, processor, image)
        ids = mask = None
        if qtok is not None:
            enc = qtok(r["question"], return_tensors="pt")
            ids, mask = enc["input_ids"], enc["attention_mask"]
        soft = bridge.soft_prompt(feats, ids, mask)[0]
        text = bridge_token_ids(lm.tokenizer, PROMPT.format(question=r["question"]), add_bos=True)
        items.append(torch.cat([soft, lm.table[text]]))
    by_length: dict[int, list[int]] = defaultdict(list)
    for k, e in enumerate(items):
        by_length[e.shape[0]].append(k)
    predictions: dict[int, str] = {}
    eos = lm.tokenizer.eos_token_id
    for ks in by_length.values():
        for start in range(0, len(ks), batch):
            chunk = ks[start : start + batch]
            embeds = torch.stack([items[k] for k in chunk])
            out = lm.model.generate(inputs_embeds=embeds, attention_mask=torch.ones(embeds.shape[:2], dtype=torch.long),
                                    max_new_tokens=10, min_new_tokens=1, do_sample=False, eos_token_id=eos,
                                    pad_token_id=eos)
            for k, seq in zip(chunk, out, strict=True):
                new = seq.tolist()
                new = new[: new.index(eos)] if eos in new else new
                predictions[k] = postprocess_answer(lm.tokenizer.decode(new))
    table: dict[str, list[float]] = defaultdict(list)
    records = []
    for k, r in enumerate(rows):
        score = vqa_accuracy(predictions[k], r["answers"])
        table[r["family"]].append(score)
        records.append({"question": r["question"], "family": r["family"], "answer": predictions[k],
                        "answers": r["answers"], "accuracy": score})
    if answers_out is not None:
        Path(answers_out).write_text("".join(json.dumps(x) + "\n" for x in records))
    report = {f: {"accuracy": round(100 * sum(v) / len(v) / (100 if max(v, default=0) > 1 else 1), 2), "n": len(v)}
              for f, v in table.items()}
    kept = [s for f, v in table.items() if f != "knowledge" for s in v]
    scale = 100 if max(kept, default=0) > 1 else 1
    report["overall_without_knowledge"] = {"accuracy": round(100 * sum(kept) / max(len(kept), 1) / scale, 2),
                                           "n": len(kept)}
    return report


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("checkpoint")
    parser.add_argument("questions")
    parser.add_argument("--llm", default=None)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--answers", default=None)
    args = parser.parse_args()
    llm = args.llm
    if llm is None:
        from vqagraph import hub
        from vqagraph.config import ModelRef

        llm = hub.resolve(ModelRef(id="builtin:smollm2-135m-instruct"))
    print(json.dumps(evaluate_bridge(args.checkpoint, args.questions, llm, args.limit, answers_out=args.answers),
                     indent=1))


if __name__ == "__main__":
    main()
