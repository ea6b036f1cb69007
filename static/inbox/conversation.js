// The conversation page (agents/views/conversation.py): the timeline kept up to date from the live
// stream, "Load earlier", the composer (Enter sends, Shift+Enter new line, "/" quick replies, the
// typing indicator), Retry, and images enlarged in place. Every timeline item has a stable element ID
// and a sort key (data-key): an item fetched twice replaces itself, a new one goes where it belongs.
(function () {
  "use strict";
  const root = document.getElementById("conversation");
  const timeline = document.getElementById("timeline");
  if (!root || !timeline) return;
  const conversationId = root.dataset.conversation;
  const timelineUrl = root.dataset.timelineUrl;
  const TYPING_EVERY_MS = 10000;
  let csrfToken = "";
  try { csrfToken = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; } catch (e) { /* none */ }

  function headers() { return { "X-CSRFToken": csrfToken, "X-Inbox-Fragment": "1" }; }

  // What a refusal says: the server's reason (plain text), else the page's own words and the status.
  function reason(response, body) {
    const type = response.headers.get("Content-Type") || "";
    if (type.indexOf("text/plain") === 0 && body) return body;
    return (root.dataset.failed || "Failed") + " (" + response.status + ")";
  }

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html;
    return template.content;
  }

  function highest(attribute) {
    let most = 0;
    timeline.querySelectorAll("[" + attribute + "]").forEach(function (element) {
      most = Math.max(most, parseInt(element.getAttribute(attribute), 10) || 0);
    });
    return most;
  }

  function nearBottom() { return timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 120; }
  function toBottom() { timeline.scrollTop = timeline.scrollHeight; }

  // Put each item of `content` in the timeline: in place of the element with its ID, or by its key.
  function merge(content, forceBottom) {
    const stick = forceBottom || nearBottom();
    Array.from(content.children).forEach(function (item) {
      if (!item.id || !item.dataset.key) return;
      const existing = document.getElementById(item.id);
      if (existing) {
        existing.replaceWith(item);
      } else {
        const keyed = timeline.querySelectorAll("[data-key]");
        let after = null;
        for (let i = keyed.length - 1; i >= 0; i--) {
          if (keyed[i].dataset.key <= item.dataset.key) { after = keyed[i]; break; }
        }
        if (after) after.after(item);
        else if (keyed.length) keyed[0].before(item);
        else timeline.append(item);
      }
      if (window.htmx) window.htmx.process(item);
    });
    if (stick) toBottom();
  }

  // --- Live: fetch what is new (and the messages that changed) when the stream says so ----------
  let changed = new Set();
  let busy = false;
  let again = false;
  let everything = false;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    const params = new URLSearchParams({ after: highest("data-message"), after_activity: highest("data-activity") });
    if (everything) {
      // After a reset: every shown message again (delivery states, edits), the latest first.
      Array.from(timeline.querySelectorAll("[data-message]")).slice(-200).forEach(function (element) {
        changed.add(element.dataset.message);
      });
      everything = false;
    }
    if (changed.size) params.set("changed", Array.from(changed).join(","));
    changed = new Set();
    fetch(timelineUrl + "?" + params.toString(), { headers: headers(), credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : ""; })
      .then(function (html) { if (html) merge(fragment(html)); })
      .catch(function () { /* the next notice or reset tries again */ })
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  document.body.addEventListener("live-conversation-" + conversationId, function (event) {
    const detail = event.detail || {};
    if (detail.message) changed.add(String(detail.message));
    refresh();
  });
  document.body.addEventListener("live-reset", function () { everything = true; refresh(); });

  // --- Load earlier ----------------------------------------------------------------------------
  timeline.addEventListener("click", function (event) {
    const button = event.target.closest(".load-earlier");
    if (!button) return;
    button.disabled = true;
    const before = timeline.scrollHeight - timeline.scrollTop;
    fetch(timelineUrl + "?before=" + encodeURIComponent(button.dataset.before), { headers: headers(), credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : Promise.reject(response); })
      .then(function (html) {
        const content = fragment(html);
        // Items the page has already (a live update came first) are not shown twice.
        Array.from(content.children).forEach(function (item) {
          if (item.id && document.getElementById(item.id)) item.remove();
        });
        const added = Array.from(content.children);
        button.replaceWith(content);
        added.forEach(function (item) { if (window.htmx) window.htmx.process(item); });
        timeline.scrollTop = timeline.scrollHeight - before;
      })
      .catch(function () { button.disabled = false; });
  });

  // --- Images: enlarge in place; links in messages open in a new tab ----------------------------
  const lightbox = document.getElementById("lightbox");
  timeline.addEventListener("click", function (event) {
    const enlarge = event.target.closest("a[data-enlarge]");
    if (enlarge && lightbox && lightbox.showModal) {
      event.preventDefault();
      lightbox.querySelector("img").src = enlarge.dataset.enlarge;
      lightbox.showModal();
      return;
    }
    const link = event.target.closest(".msg-text a");
    if (link) { link.target = "_blank"; link.rel = "noopener noreferrer nofollow"; }
  });
  if (lightbox) lightbox.addEventListener("click", function (event) { if (event.target === lightbox) lightbox.close(); });

  // --- Retry (and any form of the timeline that answers with items) -----------------------------
  timeline.addEventListener("submit", function (event) {
    const form = event.target.closest("form[data-fragment-form]");
    if (!form) return;
    event.preventDefault();
    const button = form.querySelector("button");
    if (button) button.disabled = true;
    fetch(form.action, { method: "POST", body: new FormData(form), headers: headers(), credentials: "same-origin" })
      .then(function (response) {
        return response.text().then(function (text) {
          if (response.ok) { merge(fragment(text)); return; }
          if (button) button.disabled = false;
          window.alert(reason(response, text));
        });
      })
      .catch(function () { if (button) button.disabled = false; });
  });

  toBottom();

  // --- The composer -------------------------------------------------------------------------------
  const composer = document.getElementById("composer");
  if (!composer) return;
  const text = document.getElementById("composer-text");
  const send = document.getElementById("composer-send");
  const error = document.getElementById("composer-error");
  const fileInput = document.getElementById("composer-file");
  const fileName = document.getElementById("composer-file-name");
  const list = document.getElementById("quick-replies");
  let sending = false;
  let lastTyping = 0;

  if (fileInput && fileName) {
    fileInput.addEventListener("change", function () {
      fileName.textContent = fileInput.files.length ? fileInput.files[0].name : "";
    });
  }

  function submit() {
    if (sending) return;
    if (!text.value.trim() && !(fileInput && fileInput.files.length)) return;
    sending = true;
    send.disabled = true;
    error.textContent = "";
    fetch(composer.action, { method: "POST", body: new FormData(composer), headers: headers(), credentials: "same-origin" })
      .then(function (response) {
        return response.text().then(function (body) {
          if (!response.ok) { error.textContent = reason(response, body); return; }
          text.value = "";
          if (fileInput) fileInput.value = "";
          if (fileName) fileName.textContent = "";
          merge(fragment(body), true);
        });
      })
      .catch(function () { error.textContent = composer.dataset.offline; })
      .finally(function () { sending = false; send.disabled = false; text.focus(); });
  }

  composer.addEventListener("submit", function (event) { event.preventDefault(); submit(); });

  // Typing: LINE's loading animation, at most every TYPING_EVERY_MS (the server refuses more anyway).
  function typing() {
    const now = Date.now();
    if (now - lastTyping < TYPING_EVERY_MS) return;
    lastTyping = now;
    fetch(composer.dataset.typingUrl, { method: "POST", headers: headers(), credentials: "same-origin" }).catch(function () {});
  }

  // Quick replies: "/" at the start of a word opens the list; the words after it search titles and tags.
  let token = null;
  let active = -1;
  let searchTimer = null;
  let searchSerial = 0;

  function slashToken() {
    const before = text.value.slice(0, text.selectionStart);
    const match = /(^|\s)\/([^\n/]*)$/.exec(before);
    return match ? { query: match[2], start: before.length - match[2].length - 1 } : null;
  }

  function options() { return Array.from(list.querySelectorAll(".quick-reply")); }

  function highlight(index) {
    const all = options();
    active = all.length ? (index + all.length) % all.length : -1;
    all.forEach(function (option, i) { option.setAttribute("aria-selected", i === active ? "true" : "false"); });
    if (active >= 0) all[active].scrollIntoView({ block: "nearest" });
  }

  function close() { list.hidden = true; list.innerHTML = ""; token = null; active = -1; }

  function search() {
    token = slashToken();
    if (!token) { close(); return; }
    const serial = ++searchSerial;
    clearTimeout(searchTimer);
    searchTimer = setTimeout(function () {
      fetch(composer.dataset.quickRepliesUrl + "?q=" + encodeURIComponent(token ? token.query : ""), { headers: headers(), credentials: "same-origin" })
        .then(function (response) { return response.ok ? response.text() : ""; })
        .then(function (html) {
          if (serial !== searchSerial || !token) return;
          list.innerHTML = html;
          list.hidden = false;
          highlight(0);
        })
        .catch(function () {});
    }, 120);
  }

  function choose(option) {
    const current = slashToken();
    if (!option || !current) { close(); return; }
    const caret = text.selectionStart;
    const inserted = option.dataset.text;
    text.value = text.value.slice(0, current.start) + inserted + text.value.slice(caret);
    const at = current.start + inserted.length;
    text.setSelectionRange(at, at);
    close();
    text.focus();
  }

  list.addEventListener("mousedown", function (event) {
    const option = event.target.closest(".quick-reply");
    if (!option) return;
    event.preventDefault();  // keep the textarea's caret
    choose(option);
  });

  text.addEventListener("input", function () {
    if (text.value.trim()) typing();
    search();
  });

  text.addEventListener("keydown", function (event) {
    if (event.isComposing || event.keyCode === 229) return;  // an input method (Japanese) is composing
    if (!list.hidden && options().length) {
      if (event.key === "ArrowDown") { event.preventDefault(); highlight(active + 1); return; }
      if (event.key === "ArrowUp") { event.preventDefault(); highlight(active - 1); return; }
      if (event.key === "Enter" || event.key === "Tab") { event.preventDefault(); choose(options()[active]); return; }
    }
    if (event.key === "Escape" && !list.hidden) { event.preventDefault(); close(); return; }
    if (event.key === "Enter" && !event.shiftKey) {
      event.preventDefault();
      close();
      submit();
    }
  });
  text.addEventListener("blur", function () { setTimeout(close, 150); });
})();
