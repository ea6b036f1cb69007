// The page's live stream (omnichannel.live): one EventSource per page. Each notice becomes a DOM
// event on <body> that htmx elements listen to (hx-trigger="live-message from:body"):
//   live-<kind>                      message, conversation, offer, agent, queue
//   live-conversation-<id>           any notice about conversation <id>
//   live-reset                       the page missed too much (or reconnected): refresh everything
// The browser reconnects by itself and sends the last ID it received: the server replays from there.
(function () {
  "use strict";
  const body = document.body;
  const base = body.dataset.liveUrl;
  if (!base || !window.EventSource) return;
  const status = document.getElementById("live-status");
  const url = base + (base.includes("?") && !base.endsWith("?") ? "&" : "") + "since=" + encodeURIComponent(body.dataset.liveCursor || "");
  const source = new EventSource(url, { withCredentials: true });
  let lost = false;

  function fire(name, detail) {
    body.dispatchEvent(new CustomEvent(name, { detail: detail, bubbles: true }));
  }

  ["message", "conversation", "offer", "agent", "queue"].forEach(function (kind) {
    source.addEventListener(kind, function (event) {
      let detail = {};
      try { detail = JSON.parse(event.data); } catch (e) { /* keep {} */ }
      fire("live-" + kind, detail);
      if (detail.conversation) fire("live-conversation-" + detail.conversation, detail);
    });
  });
  source.addEventListener("reset", function () { fire("live-reset", {}); });
  source.addEventListener("ready", function () {
    if (lost) { lost = false; fire("live-reset", {}); }
    if (status) status.hidden = true;
    body.dataset.liveReady = "1";
  });
  source.addEventListener("error", function () {
    lost = true;
    body.dataset.liveReady = "";
    if (status) status.hidden = false;
  });
  window.omnichannelLive = source;
})();
