// Capture page: account -> camera -> instructions while recording -> upload -> result.
// Plain browser JavaScript, no build step. ?fast=1 shortens every countdown (for tests).
"use strict";

(function () {
  const FAST = new URLSearchParams(location.search).get("fast") === "1";
  const TICK_MS = FAST ? 250 : 1000; // one countdown step
  const LEAD_TICKS = 3; // "Recording starts in 3, 2, 1"
  const STEP_TICKS = 4; // seconds (ticks) per instruction
  const TAIL_MS = FAST ? 300 : 1000; // keep recording a moment after the last one

  const $ = (id) => document.getElementById(id);
  const sections = ["step-account", "step-camera", "step-upload", "step-result"];
  const state = { account: "", stream: null, session: null };

  function announce(text) {
    // Clear first so that the same sentence twice is announced twice.
    const live = $("live");
    live.textContent = "";
    window.setTimeout(() => { live.textContent = text; }, 50);
  }

  function showError(text) {
    const box = $("error");
    box.textContent = text;
    box.hidden = !text;
  }

  function show(id) {
    for (const s of sections) $(s).hidden = s !== id;
    const heading = $(id).querySelector("h2");
    if (heading) heading.focus();
  }

  const sleep = (ms) => new Promise((resolve) => window.setTimeout(resolve, ms));

  async function postJSON(url, body) {
    const res = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    let data = {};
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    return { ok: res.ok, status: res.status, data };
  }

  // -- 1. account ---------------------------------------------------------------------
  $("account-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const value = $("account").value.trim();
    if (!value) {
      showError("Enter your account name.");
      $("account").setAttribute("aria-invalid", "true");
      $("account").focus();
      return;
    }
    $("account").removeAttribute("aria-invalid");
    showError("");
    state.account = value;
    show("step-camera");
    $("camera-on").focus();
  });

  // -- 2. camera ----------------------------------------------------------------------
  $("camera-on").addEventListener("click", async () => {
    showError("");
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This browser cannot use the camera here. Use an up-to-date browser.");
      return;
    }
    try {
      state.stream = await navigator.mediaDevices.getUserMedia({
        video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } },
        audio: false,
      });
    } catch (err) {
      const denied = err && (err.name === "NotAllowedError" || err.name === "SecurityError");
      showError(denied
        ? "Camera access was refused. Allow the camera for this page in your browser's " +
          "settings, then press Turn on camera again."
        : "No camera could be started. Check that a camera is connected and not in use, " +
          "then press Turn on camera again.");
      return;
    }
    $("preview").srcObject = state.stream;
    $("preview-wrap").hidden = false;
    $("camera-on").hidden = true;
    $("ready").hidden = false;
    announce("The camera is on. You can see yourself like in a mirror.");
    $("record").focus();
  });

  function pickType() {
    const types = ["video/webm;codecs=vp9", "video/webm;codecs=vp8", "video/webm", "video/mp4"];
    if (!window.MediaRecorder) return null;
    for (const t of types) if (MediaRecorder.isTypeSupported(t)) return t;
    return "";
  }

  function stopCamera() {
    if (state.stream) for (const track of state.stream.getTracks()) track.stop();
    state.stream = null;
    $("preview").srcObject = null;
  }

  async function countdown(ticks, render) {
    for (let n = ticks; n >= 1; n--) {
      render(n);
      await sleep(TICK_MS);
    }
  }

  $("record").addEventListener("click", async () => {
    showError("");
    const type = pickType();
    if (type === null) {
      showError("This browser cannot record video. Use an up-to-date browser.");
      return;
    }
    $("record").disabled = true;
    const started = await postJSON("/recoveries", { account: state.account });
    if (!started.ok) {
      $("record").disabled = false;
      showError(started.data.message || "The recovery could not be started. Try again later.");
      $("record").focus();
      return;
    }
    const session = (state.session = started.data);
    $("ready").hidden = true;
    const prompt = $("prompt");
    prompt.hidden = false;
    const total = session.instructions.length;
    if (session.schedule) {
      await recordTimed(session, type, prompt, total);
      return;
    }

    $("prompt-step").textContent = "Get ready";
    $("prompt-text").textContent = "Look at the camera.";
    announce(`Get ready. You will be asked to do ${total} things. ` +
             "Recording starts in 3 seconds.");
    await countdown(LEAD_TICKS, (n) => {
      $("prompt-count").textContent = `Recording starts in ${n}`;
    });

    const rec = startRecorder(type);
    prompt.classList.add("recording");

    for (let i = 0; i < total; i++) {
      showStep(session, i, total);
      await countdown(STEP_TICKS, (n) => { $("prompt-count").textContent = `${n}`; });
    }
    await finishRecording(session, rec, type, prompt);
  });

  // The stream as the camera gives it: not mirrored (the server is told mirrored=false).
  // Recording starts at once; `began` resolves when the recorder has really started.
  function startRecorder(type) {
    const recorder = new MediaRecorder(state.stream, type ? { mimeType: type } : undefined);
    const chunks = [];
    recorder.ondataavailable = (e) => { if (e.data && e.data.size) chunks.push(e.data); };
    const stopped = new Promise((resolve) => { recorder.onstop = resolve; });
    const began = new Promise((resolve) => { recorder.onstart = resolve; });
    recorder.start(250);
    return { recorder, chunks, stopped, began };
  }

  function showStep(session, i, total) {
    const text = session.instructions[i];
    $("prompt-step").textContent = `Step ${i + 1} of ${total}`;
    $("prompt-text").textContent = text;
    announce(`Step ${i + 1} of ${total}: ${text}`);
  }

  // After the last step: a short tail, then the clip is uploaded and the camera released.
  async function finishRecording(session, rec, type, prompt) {
    $("prompt-step").textContent = "Done";
    $("prompt-text").textContent = "Look at the camera.";
    $("prompt-count").textContent = "";
    await sleep(TAIL_MS);
    rec.recorder.stop();
    await rec.stopped;
    prompt.classList.remove("recording");
    prompt.hidden = true;
    stopCamera();
    $("preview-wrap").hidden = true;
    const blob = new Blob(rec.chunks, { type: rec.recorder.mimeType || type || "video/webm" });
    await upload(session, blob);
  }

  // Timed steps (v2 tokens): the server checks that each action starts inside its window,
  // counted from the start of the recording, so the steps are shown on the server's
  // schedule (session.schedule[i].show_at seconds after recording starts), never sped up.
  async function recordTimed(session, type, prompt, total) {
    const rec = startRecorder(type);
    await rec.began;
    const t0 = performance.now();
    session.recordingStarted = Date.now() / 1000;
    prompt.classList.add("recording");
    const elapsed = () => (performance.now() - t0) / 1000;
    const until = async (at, render) => {
      // Redraw the countdown every quarter second until `at` seconds into the recording.
      for (let left = at - elapsed(); left > 0; left = at - elapsed()) {
        render(Math.ceil(left));
        await sleep(Math.min(250, left * 1000));
      }
    };
    $("prompt-step").textContent = "Get ready";
    $("prompt-text").textContent = "Look at the camera. Do each step when it appears.";
    announce(`Recording. Get ready: you will be asked to do ${total} things.`);
    await until(session.schedule[0].show_at, (n) => {
      $("prompt-count").textContent = `First step in ${n}`;
    });
    for (let i = 0; i < total; i++) {
      showStep(session, i, total);
      await until(session.schedule[i].hide_at, (n) => { $("prompt-count").textContent = `${n}`; });
    }
    await finishRecording(session, rec, type, prompt);
  }

  // -- 3. upload ------------------------------------------------------------------------
  // A 503 (the service's database or session store briefly away) is tried again with the
  // same recording after its Retry-After, up to UPLOAD_TRIES sends in all: the server lets
  // the same upload resume the session its first try consumed, so the person neither
  // records again nor is refused for the server's fault. When the connection breaks
  // instead, the server may have the result already: the page asks for it (GET
  // /recoveries/{id} with the token), waits while the video is still being checked, and
  // sends the recording again only if the attempt is still waiting for it.
  const UPLOAD_TRIES = 4;
  const MAX_WAIT_S = 15;
  const POLL_S = 2;
  const MAX_POLL_S = 120;

  // The recovery as the server has it ({status, and the result once there is one}), or
  // null when it cannot be asked either.
  async function recovery(session) {
    try {
      const res = await fetch(`/recoveries/${encodeURIComponent(session.recovery_id)}`, {
        headers: { Authorization: `Bearer ${session.token}` },
      });
      return res.ok ? await res.json() : null;
    } catch (e) {
      return null;
    }
  }

  // After a broken connection: the recovery once it is no longer being checked.
  async function settled(session) {
    for (let waited = 0; waited <= MAX_POLL_S; waited += POLL_S) {
      const r = await recovery(session);
      if (!r || r.status !== "processing") return r;
      await sleep(POLL_S * 1000);
    }
    return null;
  }

  function send(session, form) {
    return new Promise((resolve) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", session.upload_url);
      xhr.responseType = "json";
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) $("upload-progress").value = Math.round((100 * e.loaded) / e.total);
      };
      xhr.onload = () => resolve({
        status: xhr.status,
        data: xhr.response || {},
        retryAfter: Number(xhr.getResponseHeader("Retry-After")) || 5,
      });
      xhr.onerror = () => resolve({
        status: 0,
        data: { message: "The video could not be sent. Check your connection." },
      });
      xhr.send(form);
    });
  }

  async function upload(session, blob) {
    show("step-upload");
    $("upload-status").textContent = "Sending your video. Please keep this page open.";
    announce("Recording finished. Checking your video.");
    const ext = blob.type.includes("mp4") ? "mp4" : "webm";
    const form = new FormData();
    form.append("token", session.token);
    form.append("mirrored", "false");
    if (session.recordingStarted) form.append("recording_started", String(session.recordingStarted));
    form.append("video", blob, `recording.${ext}`);
    const tell = (text) => {
      $("upload-status").textContent = text;
      announce(text);
    };
    let answer = null;
    for (let tries = 1; ; tries++) {
      answer = await send(session, form);
      if (answer.status === 0) {
        tell("The connection was interrupted. Checking whether your video arrived.");
        const r = await settled(session);
        if (r && (r.status === "done" || r.status === "failed")) {
          answer = { status: 200, data: r };  // the result the server recorded
          break;
        }
        if (!r || r.status !== "waiting" || tries >= UPLOAD_TRIES) break;
        tell("Your video did not arrive. Sending it again.");
        await sleep(1000);
      } else if (answer.status === 503 && tries < UPLOAD_TRIES) {
        const wait = Math.min(Math.max(answer.retryAfter, 1), MAX_WAIT_S);
        const unit = wait === 1 ? "second" : "seconds";
        tell(`The service is briefly unavailable. Trying again in ${wait} ${unit}.`);
        await sleep(wait * 1000);
      } else {
        break;
      }
    }
    showResult(answer.status, answer.data);
  }

  // -- 4. result --------------------------------------------------------------------------
  function showResult(status, data) {
    const decision = data.decision || "error";
    const title = { accept: "You are verified", review: "Sent for review",
                    reject: "Not verified" }[decision] || "Something went wrong";
    $("h-result").textContent = `Result: ${title}`;
    const text = $("result-decision");
    text.dataset.decision = decision;
    text.textContent = data.headline || data.message || "Please try again later.";
    const list = $("result-reasons");
    list.textContent = "";
    for (const r of data.reasons || []) {
      const li = document.createElement("li");
      li.textContent = r.message;
      li.dataset.code = r.code;
      list.appendChild(li);
    }
    $("result-reasons-wrap").hidden = list.children.length === 0;
    $("again").hidden = decision === "accept";
    $("step-result").dataset.status = String(status);
    show("step-result");
    const reasons = (data.reasons || []).map((r) => r.message).join(" ");
    announce(`${title}. ${text.textContent} ${reasons}`);
  }

  $("again").addEventListener("click", () => {
    $("record").disabled = false;
    $("camera-on").hidden = false;
    $("ready").hidden = true;
    state.session = null;
    show("step-camera");
    $("camera-on").focus();
  });
})();
