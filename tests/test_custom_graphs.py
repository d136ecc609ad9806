"""Custom graphs: the node catalogue, declarative specs (validation errors by location), the shipped examples
end to end on the tiny offline profile (untrained models: the answers are noise, so these tests check the path
taken, the keys written and determinism, not correctness), and `vqagraph graph check|show`."""

from __future__ import annotations

import copy
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, ImageDraw

from vqagraph.errors import QuestionError
from vqagraph.graphs import composed_nodes
from vqagraph.graphs.graph_cli import main as graph_main
from vqagraph.graphs.library import CONDITIONS, NODES
from vqagraph.graphs.spec import GraphSpecError, compile_file, compile_spec, load_graph
from vqagraph.graphs.state import VQAContext

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "graphs"
COMPOUND = "What colour is the circle and how many squares are there?"


@pytest.fixture(scope="module")
def picture() -> Image.Image:
    image = Image.new("RGB", (200, 150), "white")
    ImageDraw.Draw(image).ellipse((20, 20, 90, 90), fill=(255, 0, 0))
    ImageDraw.Draw(image).rectangle((120, 60, 170, 110), fill=(0, 0, 255))
    return image


def run(engine: Any, graph: Any, image: Image.Image, question: str = "What colour is the circle?",
        route: str = "auto") -> dict[str, Any]:
    inputs = {"image_ref": engine.add_image(image), "question": question, "route": route, "router_policy": "",
              "marks": []}
    return graph.invoke(inputs, context=VQAContext(tools=engine.tools))  # type: ignore[no-any-return]


def example(name: str) -> dict[str, Any]:
    return yaml.safe_load((EXAMPLES / name).read_text())  # type: ignore[no-any-return]


def spec_error(data: dict[str, Any]) -> str:
    with pytest.raises(GraphSpecError) as caught:
        compile_spec(data, "test.yaml")
    return str(caught.value)


# --- the catalogue ---------------------------------------------------------------------------------------------

def test_catalogue_entries_build_and_declare_their_keys() -> None:
    for entry in NODES.values():
        fn = entry.build()
        assert callable(fn) and entry.writes and entry.doc, entry.name
        if hasattr(fn, "READS"):  # plain nodes: required + optional reads are exactly what the node declares
            assert set(entry.reads) | set(entry.optional) == set(fn.READS), entry.name
            assert set(entry.writes) == set(fn.WRITES), entry.name
    for needed in ("intake", "render_marks", "region_captions", "gradcam", "question_generation", "img2llm_prompt",
                   "qformer_encode", "llm_answer", "router", "postprocess", "vote", "mark_gradcam_peak",
                   "decompose_question", "ask_subquestions", "compose_answer", "img2llm", "bridge", "vqa"):
        assert needed in NODES
    assert CONDITIONS["confidence"].outcomes == ("low", "high")


def test_peak_box_maps_the_grid_cell_to_original_pixels() -> None:
    cam = [0.0] * 16
    cam[6] = 1.0  # row 1, col 2 of a 4x4 grid
    assert composed_nodes.peak_box(cam, [4, 4], (200, 100), 0) == ((1, 2), (100, 25, 150, 50))
    assert composed_nodes.peak_box(cam, [4, 4], (200, 100), 1) == ((1, 2), (50, 0, 200, 75))
    assert composed_nodes.refer_with_phrase("What colour is the circle?", "within the red rectangle") == \
        "What colour is the circle within the red rectangle?"
    assert composed_nodes.refer_with_phrase("What is this?", "within the red rectangle") == \
        "What is the object within the red rectangle?"


def test_decomposition_rules_and_the_llm_check() -> None:
    assert composed_nodes.split_question(COMPOUND) == ["What colour is the circle?", "How many squares are there?"]
    assert composed_nodes.split_question("Is the circle red? Where is the square?") == \
        ["Is the circle red?", "Where is the square?"]
    assert composed_nodes.split_question("Is the red and blue square left?") == ["Is the red and blue square left?"]
    good = "1. What colour is the circle?\n2. How many squares are there?\n"
    assert composed_nodes.llm_sub_questions(good, COMPOUND, 4) == ["What colour is the circle?",
                                                                    "How many squares are there?"]
    assert composed_nodes.llm_sub_questions("What colour is the car?\nreeagon lying", COMPOUND, 4) == []


def test_vote_tally() -> None:
    def answer(text: str, score: float) -> Any:
        return {"answer": text, "raw_answer": text, "token_ids": [], "token_logprobs": [], "mean_logprob": score}

    answers = {"a": answer("red", -2.0), "b": answer("red", -3.0), "c": answer("blue", -0.1)}
    assert composed_nodes.tally(answers, [], {}) == ("a", "vote: 'red' has 2 of 3 votes")
    best, note = composed_nodes.tally(answers, [], {"c": 3.0})
    assert best == "c" and "3 of 5" in note
    assert composed_nodes.tally(answers, ["b", "c"], {})[0] == "c"  # a tie goes to the more confident


# --- validation errors: each names the spec location and the cause ---------------------------------------------

def test_unknown_node() -> None:
    data = example("look_twice.yaml")
    data["nodes"]["first"]["use"] = "bridgee"
    assert "test.yaml: nodes.first.use: unknown node 'bridgee' (did you mean 'bridge'?)" in spec_error(data)
    data["nodes"]["first"]["use"] = "no_such_package.nodes:answer"
    assert "nodes.first.use: cannot import node 'no_such_package.nodes:answer'" in spec_error(data)


def test_edge_to_an_unknown_node() -> None:
    data = example("text_only.yaml")
    data["edges"] = ["START -> marks -> captions -> exemplars -> prompt -> llm -> finsh -> END"]
    message = spec_error(data)
    assert "edges[0]: no node named 'finsh' to go to (did you mean 'finish'?)" in message
    assert "edges[0]: no node named 'finsh' to start from" in message


def test_a_key_read_that_no_upstream_node_writes() -> None:
    data = example("text_only.yaml")
    data["edges"] = ["START -> marks -> captions -> prompt -> llm -> finish -> END", "marks -> exemplars -> END"]
    message = spec_error(data)
    assert ("nodes.prompt: reads 'img2llm.candidates', which no upstream node writes (upstream: captions, marks; "
            "given: " in message)
    assert "nodes that write it: question_generation" in message


def test_a_condition_reading_a_key_no_upstream_node_writes() -> None:
    data = example("look_twice.yaml")
    data["edges"][0] = "START -> marks"
    data["edges"][1]["from"] = "marks"
    data["edges"].append("first -> finish")
    assert "edges[1].when: condition 'confidence' reads 'route_answers', which no upstream node writes" in \
        spec_error(data)


def test_unreachable_node() -> None:
    data = example("vote.yaml")
    data["nodes"]["orphan"] = {"use": "gradcam"}
    data["edges"].append("orphan -> vote")
    assert "test.yaml: nodes.orphan: unreachable: no edge from START leads to it" in spec_error(data)


def loop_spec(bound: int | None) -> dict[str, Any]:
    """Ask the bridge; while unsure (always, with `below: 0`), mark the GradCAM peak and ask again."""
    ask: dict[str, Any] = {"use": "bridge"}
    if bound:
        ask.update(max_visits=bound, on_limit="finish")
    return {"name": "retry", "nodes": {
        "ask": ask, "peak": {"use": "gradcam"}, "mark": {"use": "mark_gradcam_peak"}, "finish": {"use": "postprocess"}},
        "edges": ["START -> ask",
                  {"from": "ask", "when": {"use": "confidence", "settings": {"below": 0.0}},
                   "cases": {"low": "peak", "high": "finish"}},
                  "peak -> mark -> ask", "finish -> END"]}


def test_a_loop_without_a_bound() -> None:
    assert "test.yaml: edges[2]: the loop ask → peak → mark → ask has no bound: give one of its nodes max_visits" \
        in spec_error(loop_spec(None))


def test_a_setting_of_the_wrong_type() -> None:
    data = example("look_twice.yaml")
    data["nodes"]["mark"]["settings"]["radius"] = "big"
    assert "test.yaml: nodes.mark.settings.radius: Input should be a valid integer" in spec_error(data)
    data = example("look_twice.yaml")
    data["nodes"]["finish"]["settings"] = {"prefr": ["bridge"]}
    assert "nodes.finish.settings.prefr: Extra inputs are not permitted" in spec_error(data)
    data = example("look_twice.yaml")
    data["edges"][1]["when"]["settings"]["below"] = "low"
    assert "edges[1].when.settings.below: Input should be a valid number" in spec_error(data)


def test_more_wiring_errors() -> None:
    data = example("look_twice.yaml")
    data["edges"][1]["cases"] = {"maybe": "peak", "high": "finish"}
    message = spec_error(data)
    assert "edges[1].cases.maybe: condition 'confidence' never answers 'maybe'; it answers low, high" in message
    assert "edges[1].cases: no target for 'low': add them to cases or give a default" in message
    data = example("text_only.yaml")
    data["edges"] = ["START -> marks -> captions -> exemplars -> prompt -> llm -> END"]
    data["nodes"].pop("finish")
    assert "nodes: no node writes 'answer'" in spec_error(data)
    data = example("text_only.yaml")
    data["edges"][0] = "START -> marks -> captions -> exemplars -> prompt -> llm -> finish"
    assert "nodes.finish: has no outgoing edge" in spec_error(data)
    assert "nodes.first: give exactly one of `use` (a node) or `graph` (a spec file)" in spec_error(
        {"nodes": {"first": {"settings": {}}}, "edges": []})
    assert "test.yaml: edges: Field required" in spec_error({"nodes": {}})


def test_file_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: {a: [\n")
    with pytest.raises(GraphSpecError, match=r"bad.yaml: file: not valid YAML: .*line"):
        compile_file(bad)
    loop = tmp_path / "loop.yaml"
    loop.write_text("nodes: {inner: {graph: loop.yaml}}\nedges: ['START -> inner -> END']\n")
    with pytest.raises(GraphSpecError, match=r"spec files include each other: loop\.yaml → loop\.yaml"):
        compile_file(loop)


# --- the shipped examples, end to end ---------------------------------------------------------------------------

def test_text_only_example(engine: Any, picture: Image.Image) -> None:
    state = run(engine, load_graph(EXAMPLES / "text_only.yaml"), picture)
    assert state["path"] == ["marks", "captions", "exemplars", "prompt", "llm", "finish"]
    assert state["answered_by"] == "img2llm" and list(state["route_answers"]) == ["img2llm"]
    assert state["answer"] == state["route_answers"]["img2llm"]["answer"] and state["img2llm"]["captions"]


def test_vote_example(engine: Any, picture: Image.Image) -> None:
    state = run(engine, load_graph(EXAMPLES / "vote.yaml"), picture)
    assert state["path"][0] == "marks" and state["path"][-1] == "vote"
    assert {"text", "text/llm_answer", "embedding", "embedding/bridge_answer"} <= set(state["path"])
    assert set(state["votes"]) == {"img2llm", "bridge"} and state["answered_by"] in state["votes"]
    assert state["answer"] == state["votes"][state["answered_by"]] and state["route_reason"].startswith("vote: ")


def test_vote_across_three_routes(model_cache: Any, picture: Image.Image) -> None:
    from test_projection import llava_engine

    three = llava_engine(qformer={"id": "builtin:tiny-blip2"})  # both bridges project into the tiny Llama
    state = run(three, load_graph(EXAMPLES / "vote-three.yaml"), picture)
    assert {"text/llm_answer", "qformer/bridge_answer", "projection/projection_answer"} <= set(state["path"])
    assert set(state["votes"]) == {"img2llm", "bridge", "projection"} and state["answered_by"] in state["votes"]
    assert state["answer"] == state["votes"][state["answered_by"]]


def test_routed_example_takes_the_projection_route(model_cache: Any, picture: Image.Image) -> None:
    from test_projection import llava_engine

    state = run(llava_engine(), load_graph(EXAMPLES / "routed.yaml"), picture, route="projection")
    assert "projection/projection_answer" in state["path"] and state["answered_by"] == "projection"


def test_look_twice_example_asks_again_when_unsure(engine: Any, picture: Image.Image) -> None:
    graph = load_graph(EXAMPLES / "look_twice.yaml")
    state = run(engine, graph, picture)
    assert [p for p in state["path"] if "/" not in p] == ["marks", "first", "peak", "mark", "second", "finish"]
    assert "second/bridge_answer" in state["path"]
    first, second = state["route_answers"]["bridge"], state["route_answers"]["bridge_marked"]
    assert first["mean_logprob"] < -1.0  # untrained: unsure, so it looked twice
    look = state["look_twice"]
    assert look["first_answer"] == first["answer"] and look["phrase"] == "within the red rectangle"
    assert state["question"] == "What colour is the circle within the red rectangle?" == look["question"]
    assert state["visual_prompt"]["original_question"] == "What colour is the circle?"
    assert state["image_ref"] != state["visual_prompt"]["original_image_ref"]
    assert state["visual_prompt"]["boxes"] == [look["box"]]
    assert state["answered_by"] == "bridge_marked" and state["answer"] == second["answer"]
    again = run(engine, graph, picture)  # the same question answers the same way, by the same path
    assert (again["answer"], again["path"], again["look_twice"]) == (state["answer"], state["path"], look)
    # Sure enough: one look.
    data = example("look_twice.yaml")
    data["edges"][1]["when"]["settings"]["below"] = -100.0
    once = run(engine, compile_spec(data).graph, picture)
    assert [p for p in once["path"] if "/" not in p] == ["marks", "first", "finish"]
    assert once["answered_by"] == "bridge" and "look_twice" not in once


def test_decompose_example(engine: Any, picture: Image.Image) -> None:
    state = run(engine, load_graph(EXAMPLES / "decompose.yaml"), picture, COMPOUND)
    assert state["path"] == ["marks", "split", "ask", "compose"]
    assert state["sub_questions"] == ["What colour is the circle?", "How many squares are there?"]
    assert state["decomposition"]["source"] in ("llm", "rules")
    subs = state["sub_answers"]
    assert [s["question"] for s in subs] == state["sub_questions"]
    assert all(s["path"][-1] == "pick_answer" and "router" in s["path"] for s in subs)
    assert list(state["route_answers"]) == ["q1", "q2"]
    assert state["answer"] == "; ".join(s["answer"] or "unknown" for s in subs)
    assert state["answered_by"] == "compose"


def test_routed_example_branches_on_the_router(engine: Any, picture: Image.Image) -> None:
    graph = load_graph(EXAMPLES / "routed.yaml")
    state = run(engine, graph, picture)  # a colour question: the rules send it to the embedding route
    assert [p for p in state["path"] if "/" not in p] == ["marks", "router", "embedding", "finish"]
    both = run(engine, graph, picture, route="both")
    top = [p for p in both["path"] if "/" not in p]
    assert top[:2] == ["marks", "router"] and sorted(top[2:4]) == ["embedding", "text"] and top[4:] == ["finish"]
    assert set(both["route_answers"]) == {"img2llm", "bridge"}


def test_engine_answers_with_a_custom_graph(engine: Any, picture: Image.Image) -> None:
    from vqagraph import Engine

    custom = Engine(engine.profile, graph=load_graph(EXAMPLES / "look_twice.yaml"))
    custom.tools = engine.tools  # share the loaded models
    answer = custom.ask(picture, "What colour is the circle?")
    assert answer.route == "bridge_marked" and set(answer.trace.route_answers) == {"bridge", "bridge_marked"}
    assert answer.question == "What colour is the circle within the red rectangle?"
    assert answer.trace.visual_prompt["phrases"] == ["within the red rectangle"]


def test_a_loop_bound_holds(engine: Any, picture: Image.Image) -> None:
    compiled = compile_spec(loop_spec(2))
    state = run(engine, compiled.graph, picture)
    top = [p for p in state["path"] if "/" not in p]
    assert top == ["ask", "peak", "mark", "ask", "peak", "mark", "finish"]
    assert "ask (limit)" in compiled.graph.get_graph().draw_mermaid()


def test_user_nodes_conditions_and_spec_subgraphs(engine: Any, picture: Image.Image, tmp_path: Path) -> None:
    (tmp_path / "my_graph_nodes.py").write_text(textwrap.dedent('''
        from vqagraph.graphs.nodes import node

        @node("shout", reads=("answer",), writes=("answer",))
        def shout(state, runtime):
            return {"answer": state["answer"].upper() + "!"}

        def long_question(state):
            return len(state["question"].split()) > 3
        long_question.READS = ("question",)
    '''))
    (tmp_path / "inner.yaml").write_text(yaml.safe_dump(
        {"name": "inner", "nodes": {"ask": {"use": "bridge"}, "finish": {"use": "postprocess"}},
         "edges": ["START -> ask -> finish -> END"]}))
    outer = {"name": "outer", "nodes": {
        "inner": {"graph": "inner.yaml"}, "loud": {"use": "my_graph_nodes:shout"},
        "quiet": {"use": "postprocess", "settings": {"max_words": 1}}},
        "edges": ["START -> inner",
                  {"from": "inner", "when": {"use": "my_graph_nodes.long_question"},
                   "cases": {True: "loud", False: "quiet"}},  # YAML's `true:` arrives as a boolean
                  "loud -> END", "quiet -> END"]}
    spec = tmp_path / "outer.yaml"
    spec.write_text(yaml.safe_dump(outer))
    state = run(engine, load_graph(spec), picture)
    assert state["path"] == ["inner", "inner/ask", "inner/ask/qformer_encode", "inner/ask/bridge_prompt",
                             "inner/ask/bridge_answer", "inner/finish", "loud"]
    assert state["answer"].endswith("!") and state["answer"] == state["answer"].upper()
    outer["nodes"]["loud"]["use"] = "my_graph_nodes:long_question"
    spec.write_text(yaml.safe_dump(outer))
    with pytest.raises(GraphSpecError, match=r"nodes\.loud\.use: user node 'my_graph_nodes:long_question' declares "
                                             r"no READS/WRITES"):
        compile_file(spec)


def test_nodes_in_a_hand_built_state_graph(engine: Any, picture: Image.Image, tmp_path: Path) -> None:
    from langgraph.graph import END, START, StateGraph

    from vqagraph.graphs.state import VQAState

    graph = StateGraph(VQAState, context_schema=VQAContext)
    graph.add_node("intake", NODES["intake"].build())
    graph.add_node("bridge", NODES["bridge"].build())
    graph.add_node("finish", NODES["postprocess"].build(max_words=2))
    graph.add_edge(START, "intake")
    graph.add_edge("intake", "bridge")
    graph.add_edge("bridge", "finish")
    graph.add_edge("finish", END)
    picture.save(tmp_path / "picture.png")
    state = graph.compile().invoke({"image_ref": str(tmp_path / "picture.png"), "question": "  What colour   is it? "},
                                   context=VQAContext(tools=engine.tools))
    assert state["image_ref"] == engine.add_image(picture) and state["question"] == "What colour is it?"
    assert len(state["answer"].split()) <= 2 and state["answered_by"] == "bridge"
    assert state["path"] == ["qformer_encode", "bridge_prompt", "bridge_answer"]  # only the subgraph's steps
    with pytest.raises(QuestionError, match="the question is empty"):
        graph.compile().invoke({"image_ref": str(tmp_path / "picture.png"), "question": " "},
                               context=VQAContext(tools=engine.tools))


# --- the CLI ----------------------------------------------------------------------------------------------------

def test_graph_check_and_show(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert graph_main(["check", str(EXAMPLES / "look_twice.yaml")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: look-twice (6 nodes, 8 edges)") and "  mark: mark_gradcam_peak" in out
    assert graph_main(["show", str(EXAMPLES / "look_twice.yaml")]) == 0
    out = capsys.readouterr().out
    assert "graph TD;" in out and "first -. &nbsp;low&nbsp; .-> peak;" in out
    broken = copy.deepcopy(example("look_twice.yaml"))
    broken["nodes"]["first"]["use"] = "bridgee"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(broken))
    assert graph_main(["check", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "vqagraph: error: " in err and "nodes.first.use: unknown node 'bridgee'" in err
    assert graph_main(["nodes"]) == 0
    assert "mark_gradcam_peak: Draw a mark around the GradCAM peak" in capsys.readouterr().out


def test_graph_show_png_without_graphviz(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    try:
        import pygraphviz  # noqa: F401
    except ImportError:
        assert graph_main(["show", str(EXAMPLES / "vote.yaml"), "--png", str(tmp_path / "g.png")]) == 2
        captured = capsys.readouterr()
        assert "graph TD;" in captured.out  # the Mermaid text still comes first
        assert "--png needs Graphviz and pygraphviz" in captured.err
    else:
        assert graph_main(["show", str(EXAMPLES / "vote.yaml"), "--png", str(tmp_path / "g.png")]) == 0
        assert (tmp_path / "g.png").stat().st_size > 0
