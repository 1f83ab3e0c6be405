// Live check: account -> camera -> frames streamed over a WebSocket -> the server's prompts
// and screen colours -> the result. Plain browser JavaScript, no build step.
(() => {
  "use strict";
  const FPS = 10;
  const $ = (id) => document.getElementById(id);
  const say = (text) => { $("live").textContent = text; };

  function show(id) {
    for (const s of ["step-account", "step-check", "step-result"]) $(s).hidden = s !== id;
    const h = $(id).querySelector("h2");
    if (h) h.focus();
  }

  function fail(message) {
    const e = $("error");
    e.textContent = message;
    e.hidden = false;
  }

  function showResult(r) {
    $("light").hidden = true;
    const d = $("result-decision");
    d.dataset.decision = r.decision || "error";
    d.textContent = r.headline || r.message || "Something went wrong.";
    const ul = $("result-reasons");
    ul.replaceChildren();
    for (const reason of r.reasons || []) {
      const li = document.createElement("li");
      li.textContent = reason.message;
      li.dataset.code = reason.code;
      ul.append(li);
    }
    show("step-result");
    say(d.textContent);
  }

  async function start(account) {
    const res = await fetch("/recoveries", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ account }),
    });
    const session = await res.json();
    if (!res.ok) { fail(session.message || "The check could not start."); return; }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 640 }, height: { ideal: 480 }, facingMode: "user" },
        audio: false,
      });
    } catch (err) {
      fail("We need your camera for this check. Allow the camera and try again.");
      return;
    }
    show("step-check");
    const video = $("preview");
    video.srcObject = stream;
    await new Promise((ok) => { if (video.videoWidth) ok(); else video.onloadedmetadata = ok; });
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    const ctx = canvas.getContext("2d");

    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let ws = null;
    let timer = null;
    let busy = false;
    const stop = () => {
      if (timer) clearInterval(timer);
      timer = null;
      for (const t of stream.getTracks()) t.stop();
    };

    function sendFrame() {
      if (busy || ws.readyState !== WebSocket.OPEN) return;
      busy = true;
      ctx.drawImage(video, 0, 0, canvas.width, canvas.height); // not mirrored
      canvas.toBlob(async (blob) => {
        if (blob && ws.readyState === WebSocket.OPEN) ws.send(await blob.arrayBuffer());
        busy = false;
      }, "image/jpeg", 0.85);
    }

    // The service briefly unavailable as the check starts (STORE_UNAVAILABLE, with
    // retry_after): connect again with the same token, up to CONNECT_TRIES times; the
    // server resumes the session the first try consumed.
    const CONNECT_TRIES = 4;
    let tries = 0;
    const connect = () => {
      tries += 1;
      ws = new WebSocket(`${scheme}//${location.host}/recoveries/${session.recovery_id}/live`);
      ws.binaryType = "arraybuffer";
      ws.onopen = () => ws.send(JSON.stringify({ token: session.token, mirrored: false }));
      ws.onmessage = onMessage;
      ws.onerror = () => { stop(); fail("The connection was lost. Start again."); };
    };
    const unavailable = (m) => m.type === "result" && m.retry_after
      && (m.reasons || []).some((r) => r.code === "STORE_UNAVAILABLE");

    function onMessage(ev) {
      const m = JSON.parse(ev.data);
      if (unavailable(m) && tries < CONNECT_TRIES) {
        const wait = Math.min(Math.max(Number(m.retry_after) || 5, 1), 15);
        const unit = wait === 1 ? "second" : "seconds";
        const text = `The service is briefly unavailable. Trying again in ${wait} ${unit}.`;
        $("prompt-step").textContent = "Please wait";
        $("prompt-text").textContent = text;
        say(text);
        ws.onerror = null;
        window.setTimeout(connect, wait * 1000);
        return;
      }
      if (m.type === "ready") {
        $("prompt-step").textContent = "Hold still and look at the screen";
        $("prompt-text").textContent = "";
        timer = setInterval(sendFrame, 1000 / FPS);
      } else if (m.type === "light") {
        const light = $("light");
        if (m.rgb) {
          light.style.background = `rgb(${m.rgb[0]}, ${m.rgb[1]}, ${m.rgb[2]})`;
          light.hidden = false;
        } else {
          light.hidden = true;
        }
      } else if (m.type === "prompt") {
        $("prompt-step").textContent = `Step ${m.step + 1}`;
        $("prompt-text").textContent = m.instruction;
        $("prompt-text").dataset.action = m.action;
        say(m.instruction);
      } else if (m.type === "seen") {
        $("prompt-step").textContent = `Step ${m.step + 1}: done`;
        $("prompt-text").textContent = "Wait for the next instruction";
      } else if (m.type === "end") {
        stop();
        $("prompt-step").textContent = "Checking…";
        $("prompt-text").textContent = "";
      } else if (m.type === "result") {
        stop();
        showResult(m);
      }
    }
    connect();
  }

  $("account-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const account = $("account").value.trim();
    if (!account) { fail("Enter your account name."); return; }
    $("error").hidden = true;
    start(account).catch(() => fail("Something went wrong. Start again."));
  });
})();
