// The try-it page: draw a digit (or choose an image), pick a number, POST /predict, show the answer.
// Plain script, no build step and no third-party code, so it runs offline under a strict CSP
// (script-src 'self'): no inline handlers, no eval, and every text goes in through textContent.
"use strict";

(() => {
  const PREDICT_URL = "/predict?include_input=true";
  const PAD_BACKGROUND = "#000";
  const INK = "#fff";
  // MNIST strokes are ~2-3 px wide in a 28 px image, i.e. about 1/10 of the side.
  const STROKE_FRACTION = 1 / 11;
  // Above this, a failed upload is more likely a refused (too large) body than a dead service.
  const LARGE_UPLOAD_BYTES = 1024 * 1024;

  const $ = (id) => {
    const element = document.getElementById(id);
    if (element === null) throw new Error(`page is missing #${id}`);
    return element;
  };

  const form = $("ask");
  const pad = $("pad");
  const padContext = pad.getContext("2d");
  const dropZone = $("drop-zone");
  const fileInput = $("file");
  const clearButton = $("clear");
  const submitButton = $("submit");
  const sourceStatus = $("source-status");
  const errorBox = $("error");
  const placeholder = $("placeholder");
  const result = $("result");
  const seen = $("seen");

  // What will be sent: the drawing on the pad, or a file the person chose or dropped.
  let chosenFile = null;
  let hasInk = false;
  let drawing = false;
  let busy = false;

  // ---- the drawing pad ---------------------------------------------------------------

  function resetPad() {
    padContext.fillStyle = PAD_BACKGROUND;
    padContext.fillRect(0, 0, pad.width, pad.height);
    padContext.strokeStyle = INK;
    padContext.fillStyle = INK;
    padContext.lineWidth = pad.width * STROKE_FRACTION;
    padContext.lineCap = "round";
    padContext.lineJoin = "round";
    hasInk = false;
  }

  // Pointer position in canvas pixels: the canvas is drawn at its CSS size, not its pixel size.
  function padPoint(event) {
    const box = pad.getBoundingClientRect();
    return {
      x: ((event.clientX - box.left) * pad.width) / box.width,
      y: ((event.clientY - box.top) * pad.height) / box.height,
    };
  }

  function useDrawing() {
    if (chosenFile !== null) {
      chosenFile = null;
      fileInput.value = "";
      resetPad();
    }
    sourceStatus.textContent = "Drawing on the pad.";
  }

  pad.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    event.preventDefault();
    useDrawing();
    pad.setPointerCapture(event.pointerId);
    drawing = true;
    const { x, y } = padPoint(event);
    // A dot, so that a tap leaves a mark, then the path the moves extend.
    padContext.beginPath();
    padContext.arc(x, y, padContext.lineWidth / 2, 0, 2 * Math.PI);
    padContext.fill();
    padContext.beginPath();
    padContext.moveTo(x, y);
    hasInk = true;
  });

  pad.addEventListener("pointermove", (event) => {
    if (!drawing) return;
    event.preventDefault();
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
    for (const each of events.length ? events : [event]) {
      const { x, y } = padPoint(each);
      padContext.lineTo(x, y);
    }
    padContext.stroke();
    // Restart the path at the last point so each stroke() only paints the new segment.
    const { x, y } = padPoint(event);
    padContext.beginPath();
    padContext.moveTo(x, y);
  });

  const stopDrawing = () => {
    drawing = false;
  };
  pad.addEventListener("pointerup", stopDrawing);
  pad.addEventListener("pointercancel", stopDrawing);

  clearButton.addEventListener("click", () => {
    chosenFile = null;
    fileInput.value = "";
    resetPad();
    hideError();
    sourceStatus.textContent = "Pad cleared. Drawing on the pad.";
  });

  // ---- choosing or dropping an image ------------------------------------------------

  function formatBytes(bytes) {
    if (bytes < 1024) return `${bytes} bytes`;
    if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
    return `${(bytes / (1024 * 1024)).toFixed(1)} MB`;
  }

  // Show the chosen file on the pad, letterboxed. Only a preview: the file itself is sent,
  // so that the service (not the browser) decides whether it is an image it accepts.
  async function previewOnPad(file) {
    resetPad();
    try {
      const bitmap = await createImageBitmap(file);
      const scale = Math.min(pad.width / bitmap.width, pad.height / bitmap.height);
      const width = bitmap.width * scale;
      const height = bitmap.height * scale;
      padContext.drawImage(bitmap, (pad.width - width) / 2, (pad.height - height) / 2, width, height);
      bitmap.close();
      return true;
    } catch {
      return false;
    }
  }

  async function useFile(file) {
    chosenFile = file;
    hideError();
    const described = `“${file.name}” (${formatBytes(file.size)})`;
    sourceStatus.textContent = `Using the image ${described}. Draw on the pad to go back to drawing.`;
    const shown = await previewOnPad(file);
    if (!shown && chosenFile === file) {
      sourceStatus.textContent =
        `Using the file ${described}. This browser cannot preview it; ` +
        "the service will say whether it can read it.";
    }
  }

  fileInput.addEventListener("change", () => {
    if (fileInput.files && fileInput.files.length > 0) void useFile(fileInput.files[0]);
  });

  dropZone.addEventListener("dragover", (event) => {
    event.preventDefault();
    dropZone.classList.add("dragging");
  });
  dropZone.addEventListener("dragleave", () => dropZone.classList.remove("dragging"));
  dropZone.addEventListener("drop", (event) => {
    event.preventDefault();
    dropZone.classList.remove("dragging");
    const files = event.dataTransfer ? event.dataTransfer.files : null;
    if (files && files.length > 0) {
      fileInput.value = "";
      void useFile(files[0]);
    }
  });
  // A file dropped next to the pad would otherwise make the browser navigate away to it.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());

  // ---- errors in plain words --------------------------------------------------------

  function hideError() {
    errorBox.hidden = true;
    errorBox.replaceChildren();
  }

  function showError(headline, details = []) {
    result.hidden = true;
    placeholder.hidden = true;
    const title = document.createElement("p");
    title.className = "error-title";
    title.textContent = headline;
    errorBox.replaceChildren(title);
    for (const text of details) {
      const line = document.createElement("p");
      line.className = "error-detail";
      line.textContent = text;
      errorBox.append(line);
    }
    errorBox.hidden = false;
  }

  function retryHint(response) {
    const seconds = Number.parseInt(response.headers.get("Retry-After") || "", 10);
    return Number.isFinite(seconds) && seconds > 0
      ? `Try again in ${seconds} second${seconds === 1 ? "" : "s"}.`
      : "Try again in a few seconds.";
  }

  // One sentence per stable error code of the API; the service's own message goes below it.
  function explain(response, error) {
    const code = error ? error.code : null;
    switch (code) {
      case "payload_too_large":
        return "That file is too big to send. Choose a smaller image: a few hundred kilobytes is plenty for a digit.";
      case "image_too_large":
        return "That image has too many pixels. Shrink it (a digit needs only a few hundred pixels a side) and try again.";
      case "invalid_image":
        return "That file is not an image the service can read. It may be another kind of file, or a damaged image.";
      case "unsupported_format":
        return "That kind of image is not accepted. Use a PNG, JPEG, WebP, BMP, GIF, HEIC or AVIF file.";
      case "no_digit":
        return "I don't see a digit here. Draw or photograph one digit, 0 to 9, large and dark on a plain background.";
      case "validation_error":
        if (error.field === "number") return "Pick a number from 0 to 9.";
        if (error.field === "image") return "Draw a digit or choose an image first.";
        return "The service did not understand the request.";
      case "image_too_small":
        return "That image is too small to hold a digit. Send one at least 8 pixels on each side.";
      case "overloaded":
        return `The service is busy right now. ${retryHint(response)}`;
      case "not_ready":
        return `The service is still starting up. ${retryHint(response)}`;
      case "draining":
        return `The service is restarting. ${retryHint(response)}`;
      case "inference_timeout":
        return `The model took too long to answer. ${retryHint(response)}`;
      case "request_timeout":
        return "The upload was too slow and the service stopped waiting. Try again.";
      case "internal_error":
        return "Something went wrong inside the service. It is not your image's fault.";
      default:
        if (response.status === 413) return "That file is too big to send. Choose a smaller image.";
        if (response.status >= 500) return `The service failed (HTTP ${response.status}). Try again later.`;
        return `The service refused the request (HTTP ${response.status}).`;
    }
  }

  function errorDetails(error) {
    const details = [];
    if (!error) return details;
    if (error.message && error.code !== "internal_error") details.push(`The service said: ${error.message}`);
    if (error.request_id) details.push(`Reference: ${error.request_id}`);
    return details;
  }

  // ---- the answer -------------------------------------------------------------------

  const percent = new Intl.NumberFormat("en", { style: "percent", maximumFractionDigits: 2 });

  function base64ToBlob(text, type) {
    const bytes = Uint8Array.from(atob(text), (character) => character.charCodeAt(0));
    return new Blob([bytes], { type });
  }

  // Draw the 28x28 input on a canvas (CSS scales it up, pixelated). A canvas rather than an <img>
  // with a data: URL, so that a CSP of img-src 'self' does not hide it.
  // What the model saw, inside the error box (a no_digit answer carries it with include_input).
  async function showSeenInError(inputPng) {
    if (typeof inputPng !== "string" || inputPng === "") return;
    try {
      const bitmap = await createImageBitmap(base64ToBlob(inputPng, "image/png"));
      const figure = document.createElement("figure");
      figure.className = "seen error-seen";
      const canvas = document.createElement("canvas");
      canvas.width = bitmap.width;
      canvas.height = bitmap.height;
      canvas.setAttribute("role", "img");
      canvas.setAttribute("aria-label", "the 28 by 28 image the model saw");
      canvas.getContext("2d").drawImage(bitmap, 0, 0);
      bitmap.close();
      const caption = document.createElement("figcaption");
      caption.textContent = "What the model saw";
      figure.append(canvas, caption);
      errorBox.append(figure);
    } catch {
      // nothing to show: the headline says enough
    }
  }

  async function showSeen(inputPng) {
    const figure = seen.closest("figure");
    const context = seen.getContext("2d");
    context.clearRect(0, 0, seen.width, seen.height);
    if (typeof inputPng !== "string" || inputPng === "") {
      figure.hidden = true;
      return;
    }
    try {
      const bitmap = await createImageBitmap(base64ToBlob(inputPng, "image/png"));
      seen.width = bitmap.width;
      seen.height = bitmap.height;
      context.drawImage(bitmap, 0, 0);
      bitmap.close();
      figure.hidden = false;
    } catch {
      figure.hidden = true;
    }
  }

  function setMeter(meterId, textId, value) {
    $(meterId).value = value;
    $(textId).textContent = percent.format(value);
  }

  async function showResult(answer) {
    $("res-digit").textContent = String(answer.digit);
    $("res-number").textContent = String(answer.number);
    $("res-sum").textContent = String(answer.sum);
    setMeter("digit-meter", "digit-conf", answer.digit_confidence);
    setMeter("sum-meter", "sum-conf", answer.sum_confidence);
    const expected = answer.digit + answer.number;
    const consistency = $("consistency");
    consistency.classList.toggle("agrees", answer.consistent);
    consistency.classList.toggle("disagrees", !answer.consistent);
    consistency.textContent = answer.consistent
      ? `✓ The sum agrees with the digit read: ${answer.digit} + ${answer.number} = ${expected}.`
      : `✗ The two answers disagree: the digit read plus your number is ` +
        `${answer.digit} + ${answer.number} = ${expected}, but the predicted sum is ${answer.sum}.`;
    $("res-version").textContent = String(answer.model_version);
    await showSeen(answer.input_png);
    $("announce").textContent =
      `The model reads ${answer.digit}. Predicted sum with ${answer.number}: ${answer.sum}` +
      (answer.consistent ? ", which agrees." : ", which disagrees with the digit read.");
    hideError();
    placeholder.hidden = true;
    result.hidden = false;
  }

  // ---- sending ----------------------------------------------------------------------

  function selectedNumber() {
    const checked = form.querySelector('input[name="number"]:checked');
    return checked ? checked.value : null;
  }

  function padBlob() {
    return new Promise((resolve, reject) => {
      pad.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("canvas is empty"))), "image/png");
    });
  }

  function setBusy(value) {
    busy = value;
    form.setAttribute("aria-busy", String(value));
    submitButton.textContent = value ? "Asking…" : "Ask the model";
  }

  async function ask(event) {
    event.preventDefault();
    if (busy) return;
    hideError();
    const number = selectedNumber();
    if (number === null) {
      showError("Pick a number from 0 to 9.");
      return;
    }
    if (chosenFile === null && !hasInk) {
      showError("Draw a digit on the pad first, or choose an image.");
      return;
    }
    setBusy(true);
    try {
      const image = chosenFile !== null ? chosenFile : await padBlob();
      const body = new FormData();
      body.append("image", image, chosenFile !== null ? chosenFile.name : "drawing.png");
      body.append("number", number);
      let response;
      try {
        response = await fetch(PREDICT_URL, {
          method: "POST",
          body,
          headers: { Accept: "application/json" },
        });
      } catch {
        showError(
          image.size > LARGE_UPLOAD_BYTES
            ? `The upload was cut off. The file (${formatBytes(image.size)}) may be too big for the service; try a smaller image.`
            : "Could not reach the service. Check that it is running, then try again.",
        );
        return;
      }
      let payload = null;
      try {
        payload = await response.json();
      } catch {
        payload = null;
      }
      if (!response.ok) {
        const error = payload && payload.error ? payload.error : null;
        showError(explain(response, error), errorDetails(error));
        if (error && error.code === "no_digit") await showSeenInError(error.input_png);
        return;
      }
      if (payload === null || typeof payload.digit !== "number") {
        showError("The service sent an answer this page cannot read.");
        return;
      }
      await showResult(payload);
    } finally {
      setBusy(false);
    }
  }

  form.addEventListener("submit", (event) => void ask(event));
  resetPad();
})();
