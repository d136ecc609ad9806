"""What an evaluation run produces: per-question records, accuracies per route and family, a table and a chart.

The JSON document is the contract other tools (benchmarks, the issue's acceptance checks) read, so its shape is
fixed: `{"routes": {ROUTE: {"overall": %, "n": N, "families": {FAMILY: {"accuracy": %, "n": N}}}}}`, percentages
rounded to 2 decimals as the official VQA script reports them; timing and error counts ride alongside under their
own top-level keys. The chart is drawn with Pillow, already a dependency, so evaluating needs no plotting library.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont
from pydantic import BaseModel, Field


class RouteRecord(BaseModel):
    """One route's answer within a record, so a `both` run shows what every router policy would have kept."""

    answer: str
    mean_logprob: float
    accuracy: float


class AnswerRecord(BaseModel):
    """One (question, route) pair as answered: what error analysis reads, one JSONL line each."""

    question_id: str
    image: str
    question: str
    family: str
    route: str = Field(description="the route requested")
    route_taken: str | None = Field(None, description="the route the graph took; None when the ask failed")
    reason: str = ""
    answer: str = ""
    answers: list[str]
    accuracy: float = Field(description="VQA accuracy in [0, 100]")
    seconds: float
    error: str | None = None
    route_answers: dict[str, RouteRecord] = Field(
        default_factory=dict, description="every route that ran (two under `both`), each scored")


class FamilyScore(BaseModel):
    accuracy: float
    n: int


class RouteScore(BaseModel):
    overall: float
    n: int
    families: dict[str, FamilyScore]


def _percent(values: Sequence[float]) -> float:
    return round(sum(values) / len(values), 2) if values else 0.0


class EvalReport(BaseModel):
    """Accuracies per route, overall and per question family, with the records they were computed from."""

    routes: dict[str, RouteScore]
    seconds_per_question: dict[str, float] = Field(default_factory=dict)
    errors: dict[str, int] = Field(default_factory=dict)
    records: list[AnswerRecord] = Field(default_factory=list, exclude=True)

    @classmethod
    def from_records(cls, records: Sequence[AnswerRecord], routes: Sequence[str] | None = None) -> EvalReport:
        """Aggregate records; routes and families keep their first-seen order, so reports diff cleanly."""
        order = list(dict.fromkeys([*(routes or []), *(r.route for r in records)]))
        scores: dict[str, RouteScore] = {}
        seconds: dict[str, float] = {}
        errors: dict[str, int] = {}
        for route in order:
            mine = [r for r in records if r.route == route]
            families: dict[str, list[float]] = {}
            for record in mine:
                families.setdefault(record.family, []).append(record.accuracy)
            scores[route] = RouteScore(
                overall=_percent([r.accuracy for r in mine]), n=len(mine),
                families={name: FamilyScore(accuracy=_percent(values), n=len(values))
                          for name, values in families.items()})
            answered = [r.seconds for r in mine if r.error is None]
            # The median: the run's first ask also loads the models, which would swamp a mean of a short run.
            seconds[route] = round(statistics.median(answered), 4) if answered else 0.0
            errors[route] = sum(1 for r in mine if r.error is not None)
        return cls(routes=scores, seconds_per_question=seconds, errors=errors, records=list(records))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON document: `routes` (the contract), `seconds_per_question` (median of the answered questions)
        and `errors` (answers that failed and scored 0) per route."""
        return json.dumps(self.to_dict(), indent=indent)

    def families(self) -> list[str]:
        names: dict[str, None] = {}
        for score in self.routes.values():
            names.update(dict.fromkeys(score.families))
        return list(names)

    def table(self) -> str:
        """Families × routes as aligned plain text, cells like `87.5 (n=40)`, an `overall` row last."""
        routes = list(self.routes)
        rows = [["family", *routes]]
        for family in self.families():
            cells = []
            for route in routes:
                score = self.routes[route].families.get(family)
                cells.append(f"{score.accuracy:.1f} (n={score.n})" if score else "-")
            rows.append([family, *cells])
        rows.append(["overall", *(f"{self.routes[r].overall:.1f} (n={self.routes[r].n})" for r in routes)])
        widths = [max(len(row[col]) for row in rows) for col in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                 for row in rows]
        return "\n".join(lines)

    def plot(self, path: str | Path, title: str = "VQA accuracy by question family and route") -> Path:
        """The table as a grouped bar chart PNG: one group per family (and overall), one bar per route."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        draw_bar_chart(self, title).save(path, format="PNG")
        return path


# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def draw_bar_chart(report: EvalReport, title: str) -> Image.Image:
    """Grouped bars on a 0–100 axis, each bar labelled with its value, a legend of routes, both axes named."""
    routes = list(report.routes)
    groups = [*report.families(), "overall"]
    bar, gap = 36, 28
    group_width = bar * max(len(routes), 1) + gap
    left, right, top, bottom = 80, 30, 80, 70
    plot_w, plot_h = max(group_width * len(groups), 360), 300
    width, height = left + plot_w + right, top + plot_h + bottom
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    small, normal, big = _font(11), _font(13), _font(16)

    draw.text((width / 2, 12), title, fill="black", font=big, anchor="mt")
    x = left  # the legend: a swatch and the route's name per route, on one line under the title
    for index, route in enumerate(routes):
        draw.rectangle((x, 44, x + 14, 58), fill=PALETTE[index % len(PALETTE)])
        draw.text((x + 20, 51), route, fill="black", font=normal, anchor="lm")
        x += 20 + int(draw.textlength(route, font=normal)) + 24

    base = top + plot_h
    for tick in range(0, 101, 20):  # the y axis with its grid
        y = base - tick * plot_h / 100
        draw.line((left, y, left + plot_w, y), fill="#dddddd" if tick else "black")
        draw.text((left - 6, y), str(tick), fill="black", font=small, anchor="rm")
    draw.line((left, top, left, base), fill="black")
    label = Image.new("RGBA", (int(draw.textlength("accuracy (%)", font=normal)) + 4, 20), (255, 255, 255, 0))
    ImageDraw.Draw(label).text((2, 2), "accuracy (%)", fill="black", font=normal)
    label = label.rotate(90, expand=True)
    image.paste(label, (18, top + plot_h // 2 - label.height // 2), label)

    slot = plot_w / len(groups)
    for g, group in enumerate(groups):
        start = left + g * slot + (slot - bar * len(routes)) / 2
        for r, route in enumerate(routes):
            score = report.routes[route]
            family = score.families.get(group)
            value = score.overall if group == "overall" else (family.accuracy if family else None)
            x0 = start + r * bar
            if value is None:
                draw.text((x0 + bar / 2, base - 4), "-", fill="black", font=small, anchor="mb")
                continue
            y0 = base - value * plot_h / 100
            draw.rectangle((x0 + 2, y0, x0 + bar - 2, base), fill=PALETTE[r % len(PALETTE)])
            draw.text((x0 + bar / 2, y0 - 3), f"{value:.1f}", fill="black", font=small, anchor="mb")
        draw.text((left + g * slot + slot / 2, base + 8), group, fill="black", font=normal, anchor="mt")
        if group == "overall":
            ns = sorted({score.n for score in report.routes.values()})
        else:
            ns = sorted({f.n for score in report.routes.values() if (f := score.families.get(group))})
        draw.text((left + g * slot + slot / 2, base + 26), "n=" + "/".join(map(str, ns)), fill="#555555",
                  font=small, anchor="mt")
    draw.text((left + plot_w / 2, height - 14), "question family", fill="black", font=normal, anchor="mb")
    return image
