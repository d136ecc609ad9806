// vqagraph's web page: an image, marks drawn on it with the pointer, questions streamed through
// /v1/chat/completions (the engine's one entry point), conversations kept in the server's thread store.
// Marks are kept in the image's own pixel coordinates; the picture shown is the server's rendering of them
// (POST /v1/render), so what the user sees is exactly what the routes see. The picture is uploaded once
// (POST /v1/images) and named by its sha256: reference after that.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  vocabulary: { colours: { red: [255, 0, 0] }, shapes: [] },
  tool: "rectangle",
  colour: "red",
  image: null,        // {dataUrl, width, height, fromThread}: the picture on the stage
  newImage: false,    // true when the picture must be sent with the next question
  marks: [],          // [{shape, colour, box|point|polygon|path}] in image pixels
  history: [],        // undo: earlier `marks` arrays
  selected: -1,
  drag: null,         // the gesture in progress
  thread: localStorage.getItem("vqagraph.thread") || null,
  busy: false,
  routes: ["img2llm", "bridge", "projection", "adapter"],  // replaced by the server's registry (GET /v1/routes)
};

// ------------------------------------------------------------------------------------------- server calls

function headers(json) {
  const h = {};
  const key = $("api-key").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  if (json) h["Content-Type"] = "application/json";
  return h;
}

async function failure(response) {
  // The server's error shape: {"error": {"message": ...}}; one line for the page.
  let message = response.status + " " + response.statusText, code = null;
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) { message = body.error.message; code = body.error.code; }
  } catch (e) { /* not JSON */ }
  if (response.status === 401) message += " (enter the server's API key above)";
  const error = new Error(message);
  error.code = code;
  return error;
}

async function call(method, path, body) {
  const response = await fetch(path, {
    method, headers: headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  return response;
}

function showError(error) {
  const line = String(error && error.message ? error.message : error).split("\n")[0];
  $("error").textContent = line;
  $("error").hidden = !line;
}

function clearError() { showError(""); }

// ------------------------------------------------------------------------------------------------ image in

function readFile(file) {
  if (!file) return;
  if (!file.type.startsWith("image/")) { showError("that file is not an image (" + (file.type || "unknown type") + ")"); return; }
  const reader = new FileReader();
  reader.onload = () => setImage(reader.result, false);
  reader.onerror = () => showError("the file could not be read");
  reader.readAsDataURL(file);
}

// The picture goes to the server once (POST /v1/images); renders and questions then name it by its reference.
async function imageRef() {
  if (!state.image.ref) {
    const response = await call("POST", "/v1/images", { image: state.image.dataUrl });
    state.image.ref = (await response.json()).id;
  }
  return state.image.ref;
}

// `send(ref)`, uploading the picture again once if the server no longer has it (a restart, another key).
async function withImageRef(send) {
  try {
    return await send(await imageRef());
  } catch (error) {
    if (error.code !== "image_not_found") throw error;
    state.image.ref = null;
    return send(await imageRef());
  }
}

function setImage(dataUrl, fromThread) {
  const probe = new Image();
  probe.onload = () => {
    clearError();
    state.image = { dataUrl, width: probe.naturalWidth, height: probe.naturalHeight, fromThread };
    state.newImage = !fromThread;
    state.marks = []; state.history = []; state.selected = -1;
    $("drop-hint").hidden = true;
    $("stage").hidden = false;
    $("picture").src = dataUrl;
    $("picture").dataset.rendered = "plain";
    refresh();
  };
  probe.onerror = () => showError("the browser cannot read this image; try a PNG or JPEG");
  probe.src = dataUrl;
}

async function blobToDataUrl(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = reject;
    reader.readAsDataURL(blob);
  });
}

// ------------------------------------------------------------------------------------------ marks and tools

function imagePoint(event) {
  // Display pixels to the image's own pixels, whatever size the picture is shown at.
  const rect = $("overlay").getBoundingClientRect();
  const x = (event.clientX - rect.left) * state.image.width / rect.width;
  const y = (event.clientY - rect.top) * state.image.height / rect.height;
  return [Math.max(0, Math.min(state.image.width - 1, x)), Math.max(0, Math.min(state.image.height - 1, y))];
}

const round = (v) => Math.round(v * 10) / 10;

function boxOf(a, b) {
  return [round(Math.min(a[0], b[0])), round(Math.min(a[1], b[1])), round(Math.max(a[0], b[0])), round(Math.max(a[1], b[1]))];
}

function extent(mark) {
  if (mark.box) return mark.box;
  if (mark.point) { const r = Math.max(4, scale() * 8); return [mark.point[0] - r, mark.point[1] - r, mark.point[0] + r, mark.point[1] + r]; }
  const pts = mark.polygon || mark.path;
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => p[1]);
  return [Math.min(...xs), Math.min(...ys), Math.max(...xs), Math.max(...ys)];
}

function scale() { return Math.max(state.image.width, state.image.height) / 336; }

function simplify(points, minStep) {
  // Drop points closer than minStep image pixels to the last kept one (a stroke has hundreds of events).
  const kept = [points[0]];
  for (const p of points.slice(1)) {
    const q = kept[kept.length - 1];
    if (Math.hypot(p[0] - q[0], p[1] - q[1]) >= minStep) kept.push(p);
  }
  if (kept.length > 1 && kept[kept.length - 1] !== points[points.length - 1]) kept.push(points[points.length - 1]);
  return kept.map((p) => [round(p[0]), round(p[1])]);
}

function commit(marks) {
  state.history.push(state.marks);
  state.marks = marks;
  refresh();
}

function addMark(mark) {
  mark.colour = state.colour;
  commit([...state.marks, mark]);
  state.selected = -1;
}

function moveMark(mark, dx, dy) {
  const m = JSON.parse(JSON.stringify(mark));
  if (m.box) m.box = [m.box[0] + dx, m.box[1] + dy, m.box[2] + dx, m.box[3] + dy].map(round);
  if (m.point) m.point = [round(m.point[0] + dx), round(m.point[1] + dy)];
  for (const key of ["polygon", "path"]) if (m[key]) m[key] = m[key].map((p) => [round(p[0] + dx), round(p[1] + dy)]);
  return m;
}

function hit(p) {
  for (let i = state.marks.length - 1; i >= 0; i--) {
    const [x0, y0, x1, y1] = extent(state.marks[i]);
    const pad = 6 * scale();
    if (p[0] >= x0 - pad && p[0] <= x1 + pad && p[1] >= y0 - pad && p[1] <= y1 + pad) return i;
  }
  return -1;
}

function pointerDown(event) {
  if (!state.image || event.button > 0) return;
  event.preventDefault();
  $("overlay").setPointerCapture(event.pointerId);
  const p = imagePoint(event);
  const tool = state.tool;
  if (tool === "select") {
    state.selected = hit(p);
    state.drag = state.selected >= 0 ? { kind: "move", start: p, original: state.marks[state.selected], now: p } : null;
  } else if (tool === "point") {
    addMark({ shape: "point", point: [round(p[0]), round(p[1])] });
  } else if (tool === "triangle") {
    const corners = state.drag && state.drag.kind === "triangle" ? state.drag.points : [];
    corners.push(p);
    if (corners.length === 3) { state.drag = null; addMark({ shape: "triangle", path: simplify(corners, 0) }); }
    else state.drag = { kind: "triangle", points: corners, now: p };
  } else {
    state.drag = { kind: tool, start: p, points: [p], now: p };
  }
  draw();
}

function pointerMove(event) {
  if (!state.drag || !state.image) return;
  const p = imagePoint(event);
  state.drag.now = p;
  if (state.drag.points && state.drag.kind !== "triangle" && (event.buttons & 1)) state.drag.points.push(p);
  draw();
}

function pointerUp(event) {
  const drag = state.drag;
  if (!drag || drag.kind === "triangle") return;
  state.drag = null;
  const p = imagePoint(event);
  const tiny = Math.hypot(p[0] - drag.start[0], p[1] - drag.start[1]) < 3;
  if (drag.kind === "move") {
    const dx = round(p[0] - drag.start[0]), dy = round(p[1] - drag.start[1]);
    if (dx || dy) {
      const marks = [...state.marks];
      marks[state.selected] = moveMark(drag.original, dx, dy);
      commit(marks);
    } else draw();
    return;
  }
  if (drag.kind === "rectangle" || drag.kind === "ellipse") {
    if (!tiny) addMark({ shape: drag.kind, box: boxOf(drag.start, p) });
  } else if (drag.kind === "arrow") {
    if (!tiny) addMark({ shape: "arrow", path: simplify([drag.start, p], 0) });
  } else if (drag.kind === "scribble") {
    const path = simplify([...drag.points, p], scale());
    if (path.length >= 2) addMark({ shape: "scribble", path });
  } else if (drag.kind === "mask" || drag.kind === "mask_contour") {
    const polygon = simplify([...drag.points, p], scale());
    if (polygon.length >= 3) addMark({ shape: drag.kind, polygon });
  }
  draw();
}

// ------------------------------------------------------------------------------------------------ drawing

function rgba(colour, alpha) {
  const c = state.vocabulary.colours[colour] || [255, 0, 0];
  return `rgba(${c[0]},${c[1]},${c[2]},${alpha})`;
}

function draw() {
  // The overlay shows only the gesture in progress and the selection; the marks are in the server's picture.
  const canvas = $("overlay"), picture = $("picture");
  if (!state.image) return;
  const ratio = window.devicePixelRatio || 1;
  canvas.width = Math.round(picture.clientWidth * ratio);
  canvas.height = Math.round(picture.clientHeight * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(canvas.width / state.image.width, 0, 0, canvas.height / state.image.height, 0, 0);
  ctx.clearRect(0, 0, state.image.width, state.image.height);
  const unit = state.image.width / canvas.width * ratio;
  ctx.lineWidth = 2 * unit;
  if (state.selected >= 0 && state.selected < state.marks.length) {
    const [x0, y0, x1, y1] = extent(state.marks[state.selected]);
    ctx.setLineDash([6 * unit, 4 * unit]);
    ctx.strokeStyle = "#2257c5";
    ctx.strokeRect(x0 - 3 * unit, y0 - 3 * unit, x1 - x0 + 6 * unit, y1 - y0 + 6 * unit);
    ctx.setLineDash([]);
  }
  const d = state.drag;
  if (!d) return;
  ctx.strokeStyle = rgba(state.colour, 0.8);
  ctx.fillStyle = rgba(state.colour, 0.4);
  ctx.lineWidth = Math.max(2 * unit, 3 * scale());
  ctx.beginPath();
  if (d.kind === "move") {
    const [x0, y0, x1, y1] = extent(moveMark(d.original, d.now[0] - d.start[0], d.now[1] - d.start[1]));
    ctx.setLineDash([6 * unit, 4 * unit]);
    ctx.strokeStyle = "#2257c5";
    ctx.strokeRect(x0, y0, x1 - x0, y1 - y0);
    ctx.setLineDash([]);
    return;
  }
  if (d.kind === "rectangle") {
    const [x0, y0, x1, y1] = boxOf(d.start, d.now);
    ctx.rect(x0, y0, x1 - x0, y1 - y0);
  } else if (d.kind === "ellipse") {
    const [x0, y0, x1, y1] = boxOf(d.start, d.now);
    ctx.ellipse((x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * 0.6, (y1 - y0) * 0.6, 0, 0, 2 * Math.PI);
  } else if (d.kind === "arrow") {
    ctx.moveTo(d.start[0], d.start[1]); ctx.lineTo(d.now[0], d.now[1]);
  } else {
    const pts = d.kind === "triangle" ? [...d.points, d.now] : d.points;
    ctx.moveTo(pts[0][0], pts[0][1]);
    for (const p of pts.slice(1)) ctx.lineTo(p[0], p[1]);
    if (d.kind === "mask") { ctx.closePath(); ctx.fill(); }
  }
  ctx.stroke();
}

function describe(mark) {
  const where = mark.box ? "box " + mark.box.map(Math.round).join(",")
    : mark.point ? "point " + mark.point.map(Math.round).join(",")
    : (mark.polygon ? "polygon of " + mark.polygon.length : "path of " + mark.path.length) + " points in "
      + extent(mark).map(Math.round).join(",");
  return `${mark.shape} (${mark.colour}): ${where}`;
}

let renderSeq = 0;
async function refresh() {
  // The marks list, and the picture re-rendered by the server with the marks on it.
  const list = $("marks");
  list.replaceChildren(...state.marks.map((m, i) => {
    const li = document.createElement("li");
    li.textContent = describe(m);
    if (i === state.selected) li.className = "selected";
    li.onclick = () => { state.selected = i; refresh(); };
    return li;
  }));
  $("undo").disabled = state.history.length === 0;
  $("delete-mark").disabled = state.selected < 0;
  $("clear-marks").disabled = state.marks.length === 0;
  draw();
  if (!state.image) return;
  const seq = ++renderSeq;
  const picture = $("picture");
  if (state.marks.length === 0) {
    picture.src = state.image.dataUrl;
    picture.dataset.rendered = "plain";
    return;
  }
  picture.dataset.rendered = "pending";
  try {
    const marks = structuredClone(state.marks);  // as they are now: a drag goes on changing them while we upload
    const response = await withImageRef((ref) => call("POST", "/v1/render", { image: ref, marks }));
    const url = URL.createObjectURL(await response.blob());
    if (seq !== renderSeq) return;
    picture.onload = () => { draw(); picture.dataset.rendered = String(state.marks.length); };
    picture.src = url;
    clearError();
  } catch (error) {
    if (seq === renderSeq) { picture.dataset.rendered = "error"; showError(error); }
  }
}

// ------------------------------------------------------------------------------------------------- asking

function turnItem(question) {
  const li = document.createElement("li");
  li.className = "turn";
  const q = document.createElement("div"); q.className = "q"; q.textContent = question;
  const a = document.createElement("div"); a.className = "a";
  const meta = document.createElement("div"); meta.className = "meta";
  li.append(q, a, meta);
  $("turns").append(li);
  return { li, a, meta };
}

function showMeta(item, turn) {
  // The route and the router's reason; every route's answer when several ran; an explain button.
  item.meta.replaceChildren();
  const route = document.createElement("span"); route.className = "route"; route.textContent = turn.route;
  item.meta.append(route, " " + (turn.route_reason || ""));
  const others = Object.entries(turn.route_answers || {});
  if (others.length > 1) {
    const ul = document.createElement("ul"); ul.className = "routes";
    for (const [name, result] of others) {
      const li = document.createElement("li"); li.textContent = `${name}: ${result.answer}`; ul.append(li);
    }
    item.meta.append(ul);
  }
  if (turn.explain) {
    const button = document.createElement("button");
    button.type = "button"; button.className = "explain"; button.textContent = "Explain";
    button.onclick = () => explain(turn.explain);
    item.meta.append(" ", button);
  }
}

async function ask(event) {
  event.preventDefault();
  if (state.busy) return;
  const question = $("question").value.trim();
  if (!question) return;
  if (!state.image && !state.thread) { showError("add an image first (drop, paste or choose a file)"); return; }
  clearError();
  const [route, router] = $("route").value.split(":");
  if (!state.thread) setThread(crypto.getRandomValues(new Uint32Array(3)).reduce((s, v) => s + v.toString(16).padStart(8, "0"), ""));
  const marks = structuredClone(state.marks), sendImage = state.image && state.newImage;
  const body = (ref) => {
    const content = [{ type: "text", text: question }];
    if (sendImage) content.push({ type: "image_url", image_url: { url: ref } });
    return {
      model: "vqagraph", stream: true, messages: [{ role: "user", content }],
      vqagraph: { thread: state.thread, route, router: router || null, marks },
    };
  };
  const item = turnItem(question);
  item.a.classList.add("pending");
  state.busy = true; $("send").disabled = true;
  try {
    const response = sendImage ? await withImageRef((ref) => call("POST", "/v1/chat/completions", body(ref)))
      : await call("POST", "/v1/chat/completions", body(null));
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", final = null;
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const line = buffer.slice(0, cut).trim(); buffer = buffer.slice(cut + 2);
        if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
        const data = JSON.parse(line.slice(6));
        if (data.error) throw new Error(data.error.message);
        const choice = data.choices && data.choices[0];
        if (choice && choice.delta && choice.delta.content) item.a.textContent += choice.delta.content;
        if (data.vqagraph) final = { ...data.vqagraph, id: data.id };
      }
    }
    if (!final) throw new Error("the answer stream ended early");
    const answer = final.answer;
    item.a.textContent = answer.answer;
    const ran = answer.trace.img2llm && answer.trace.img2llm.gradcam && answer.trace.img2llm.gradcam.length;
    showMeta(item, { route: answer.route, route_reason: answer.trace.route_reason, route_answers: answer.trace.route_answers,
                     explain: { id: final.id, picture: Boolean(ran), trace: answer.trace } });
    item.li.dataset.answer = answer.answer;
    state.newImage = false;
    state.image && (state.image.fromThread = true);
    $("question").value = "";  // the marks stay: a follow-up may point at the same region
    loadThreads();
  } catch (error) {
    item.li.remove();
    showError(error);
  } finally {
    item.a.classList.remove("pending");
    state.busy = false; $("send").disabled = false;
  }
}

async function explain(target) {
  // Text route: the explain picture (GradCAM, sampled patches, captions). Embedding routes: their trace records.
  const panel = $("explain"), picture = $("explain-picture");
  panel.hidden = false;
  picture.hidden = true;
  const t = target.trace;
  const records = {};
  for (const key of [...state.routes, "visual_prompt"]) if (t[key]) records[key] = t[key];
  if (records.img2llm) {
    const { gradcam, grid, patch_ids, ...rest } = records.img2llm;
    records.img2llm = { ...rest, gradcam: `(${(gradcam || []).length} values on a ${grid} grid)` };
  }
  $("explain-trace").textContent = JSON.stringify({ route: t.route, reason: t.route_reason, ...records }, null, 2);
  if (!target.picture) return;
  try {
    const response = await call("GET", `/v1/answers/${encodeURIComponent(target.id)}/explain.png`);
    picture.src = URL.createObjectURL(await response.blob());
    picture.hidden = false;
  } catch (error) { showError(error); }
}

// ---------------------------------------------------------------------------------------------- threads

function setThread(id) {
  state.thread = id;
  if (id) localStorage.setItem("vqagraph.thread", id); else localStorage.removeItem("vqagraph.thread");
}

async function loadThreads() {
  try {
    const listed = await (await call("GET", "/v1/threads")).json();
    const ul = $("threads");
    ul.replaceChildren(...listed.data.map((t) => {
      const li = document.createElement("li");
      li.dataset.thread = t.thread_id;
      if (t.thread_id === state.thread) li.className = "current";
      const title = document.createElement("span"); title.className = "title"; title.textContent = t.title;
      title.title = `${t.turns} turn(s), last ${t.updated}`;
      const rename = document.createElement("button"); rename.type = "button"; rename.textContent = "✎";
      rename.title = "Rename"; rename.className = "rename";
      rename.onclick = async (e) => {
        e.stopPropagation();
        const name = prompt("Rename the conversation", t.title);
        if (name && name.trim()) {
          try { await call("PATCH", `/v1/threads/${t.thread_id}`, { title: name }); loadThreads(); } catch (err) { showError(err); }
        }
      };
      const remove = document.createElement("button"); remove.type = "button"; remove.textContent = "✕";
      remove.title = "Delete"; remove.className = "delete";
      remove.onclick = async (e) => {
        e.stopPropagation();
        if (!confirm(`Delete "${t.title}"?`)) return;
        try {
          await call("DELETE", `/v1/threads/${t.thread_id}`);
          if (t.thread_id === state.thread) newThread();
          loadThreads();
        } catch (err) { showError(err); }
      };
      li.append(title, rename, remove);
      li.onclick = () => openThread(t.thread_id);
      return li;
    }));
  } catch (error) { showError(error); }
}

function newThread() {
  setThread(null);
  state.image = null; state.marks = []; state.history = []; state.selected = -1;
  $("turns").replaceChildren();
  $("stage").hidden = true; $("drop-hint").hidden = false;
  $("explain").hidden = true;
  refresh(); loadThreads();
}

async function openThread(id, quiet) {
  // Its turns, and its current image on the stage (follow-up questions are about it). `quiet`: at start-up, a
  // remembered thread that is gone (deleted elsewhere, or never asked in) just means a fresh start.
  try {
    const thread = await (await call("GET", `/v1/threads/${encodeURIComponent(id)}`)).json();
    setThread(id);
    $("turns").replaceChildren();
    $("explain").hidden = true;
    for (const turn of thread.turns) {
      const item = turnItem(turn.question);
      item.a.textContent = turn.answer;
      item.li.dataset.answer = turn.answer;
      showMeta(item, turn);
    }
    if (thread.image_ref) {
      const blob = await (await call("GET", `/v1/threads/${encodeURIComponent(id)}/image`)).blob();
      setImage(await blobToDataUrl(blob), true);
    }
    loadThreads();
  } catch (error) {
    const gone = /no (such )?thread/.test(String(error.message));
    if (!(quiet && gone)) showError(error);
    if (gone) { setThread(null); loadThreads(); }
  }
}

// ------------------------------------------------------------------------------------------------ wiring

function selectTool(tool) {
  state.tool = tool;
  state.drag = null;
  for (const b of document.querySelectorAll("#tools [data-tool]")) b.setAttribute("aria-pressed", String(b.dataset.tool === tool));
  $("overlay").style.cursor = tool === "select" ? "default" : "crosshair";
  draw();
}

function undo() {
  if (!state.history.length) return;
  state.marks = state.history.pop();
  state.selected = -1;
  refresh();
}

function deleteSelected() {
  if (state.selected < 0) return;
  commit(state.marks.filter((_, i) => i !== state.selected));
  state.selected = -1;
  refresh();
}

async function start() {
  $("api-key").value = localStorage.getItem("vqagraph.key") || "";
  $("api-key").addEventListener("change", () => { localStorage.setItem("vqagraph.key", $("api-key").value.trim()); loadThreads(); });
  try { state.vocabulary = await (await fetch("/v1/marks")).json(); } catch (e) { /* the defaults */ }
  try {  // the routes the server has registered, each offered when the served profile can run it
    const { routes } = await (await fetch("/v1/routes")).json();
    state.routes = routes.map((r) => r.name);  // each route's trace record is filed under its name
    $("route-both").before(...routes.filter((r) => r.available).map((r) => {
      const option = new Option(`${r.name} (${r.title})`, r.name); option.title = r.summary; return option;
    }));
  } catch (e) { /* auto and both still work */ }
  const colour = $("colour");
  colour.replaceChildren(...Object.keys(state.vocabulary.colours).map((name) => new Option(name, name)));
  colour.onchange = () => { state.colour = colour.value; };
  for (const b of document.querySelectorAll("#tools [data-tool]")) b.onclick = () => selectTool(b.dataset.tool);
  selectTool("rectangle");
  $("undo").onclick = undo;
  $("delete-mark").onclick = deleteSelected;
  $("clear-marks").onclick = () => { if (state.marks.length) commit([]); };
  $("file").onchange = (e) => readFile(e.target.files[0]);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); readFile(e.dataTransfer.files[0]); });
  document.addEventListener("paste", (e) => {
    const file = [...(e.clipboardData ? e.clipboardData.files : [])].find((f) => f.type.startsWith("image/"));
    if (file) { e.preventDefault(); readFile(file); }
  });
  document.addEventListener("keydown", (e) => {
    if (["TEXTAREA", "INPUT", "SELECT"].includes(e.target.tagName)) return;  // typing, not editing marks
    if ((e.ctrlKey || e.metaKey) && e.key === "z") { e.preventDefault(); undo(); }
    if (e.key === "Delete" || e.key === "Backspace") deleteSelected();
    if (e.key === "Escape") { state.drag = null; draw(); }
  });
  const overlay = $("overlay");
  overlay.addEventListener("pointerdown", pointerDown);
  overlay.addEventListener("pointermove", pointerMove);
  overlay.addEventListener("pointerup", pointerUp);
  window.addEventListener("resize", draw);
  $("ask").addEventListener("submit", ask);
  $("question").addEventListener("keydown", (e) => { if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); $("ask").requestSubmit(); } });
  $("new-thread").onclick = newThread;
  $("close-explain").onclick = () => { $("explain").hidden = true; };
  refresh();
  await loadThreads();
  if (state.thread) await openThread(state.thread, true);
  document.body.dataset.ready = "true";
}

window.vqagraph = { state };  // for the browser's console and the end-to-end tests
start();
