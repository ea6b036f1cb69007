// The offer notification (templates/inbox/offers.html, inside <aside id="offers"> of every inbox page):
// a countdown on each offer from the server's expires_at, an optional short tone (Web Audio API; on/off
// kept in localStorage) and a browser notification (Notification API, asked only on a button click)
// when an offer the page has not announced yet appears. Loaded by the fragment itself (and by the home
// page), so it guards against running twice. Also lets htmx swap the 409/400 answers of the forms
// marked data-swap-errors: they carry the message to show ("Another agent picked this conversation
// first.").
(function () {
  "use strict";
  if (window.omnichannelOffers) return;

  const SOUND_KEY = "omnichannel.offers.sound";
  const ALERTED_KEY = "omnichannel.offers.alerted";
  const script = document.currentScript;
  const css = script && script.dataset.css;
  if (css && !document.querySelector('link[href="' + css + '"]')) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = css;
    document.head.appendChild(link);
  }

  // --- 409 and 400 answers carry the fragment to show --------------------------------------------
  document.body.addEventListener("htmx:beforeSwap", function (event) {
    const status = event.detail.xhr.status;
    const element = event.detail.requestConfig && event.detail.requestConfig.elt;
    if ((status === 409 || status === 400) && element && element.closest("[data-swap-errors]")) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  // --- Customer pictures that do not load (LINE's links expire) show the initial instead --------------
  function pictureMissing(image) {
    const initial = document.createElement("span");
    initial.className = "avatar avatar-initial";
    initial.setAttribute("aria-hidden", "true");
    initial.textContent = image.dataset.initial || "?";
    image.replaceWith(initial);
  }
  document.addEventListener("error", function (event) {
    if (event.target.matches && event.target.matches("img.avatar")) pictureMissing(event.target);
  }, true);
  function picturesCheck() {
    document.querySelectorAll("img.avatar").forEach(function (image) {
      if (image.complete && image.naturalWidth === 0) pictureMissing(image);
    });
  }
  document.body.addEventListener("htmx:afterSettle", picturesCheck);

  // --- Sound ---------------------------------------------------------------------------------------
  let audio = null;
  function soundOn() {
    try { return localStorage.getItem(SOUND_KEY) === "on"; } catch (e) { return false; }
  }
  function audioContext() {
    const Context = window.AudioContext || window.webkitAudioContext;
    if (!Context) return null;
    if (!audio) audio = new Context();
    if (audio.state === "suspended") audio.resume();
    return audio;
  }
  function tone() {
    const context = audioContext();
    if (!context) return;
    // Two short notes, quiet: heard, not startling.
    [[880, 0], [1175, 0.18]].forEach(function (note) {
      const oscillator = context.createOscillator();
      const gain = context.createGain();
      const start = context.currentTime + note[1];
      oscillator.type = "sine";
      oscillator.frequency.value = note[0];
      gain.gain.setValueAtTime(0.0001, start);
      gain.gain.exponentialRampToValueAtTime(0.15, start + 0.02);
      gain.gain.exponentialRampToValueAtTime(0.0001, start + 0.16);
      oscillator.connect(gain).connect(context.destination);
      oscillator.start(start);
      oscillator.stop(start + 0.18);
    });
  }
  function soundButtonsShow() {
    document.querySelectorAll("[data-offer-sound]").forEach(function (button) {
      button.setAttribute("aria-pressed", soundOn() ? "true" : "false");
    });
  }
  document.addEventListener("click", function (event) {
    const button = event.target.closest("[data-offer-sound]");
    if (button) {
      const on = !soundOn();
      try { localStorage.setItem(SOUND_KEY, on ? "on" : "off"); } catch (e) { /* private mode */ }
      soundButtonsShow();
      if (on) tone(); // the click is the gesture that lets the page play sound
      return;
    }
    // Browsers start audio only after a gesture: any click readies it for the next offer.
    if (soundOn()) audioContext();
  });

  // --- Browser notifications -----------------------------------------------------------------------
  function notificationsShow() {
    const supported = "Notification" in window;
    document.querySelectorAll("[data-offer-notifications]").forEach(function (button) {
      button.hidden = !supported || Notification.permission !== "default";
    });
    document.querySelectorAll("[data-offer-notifications-state]").forEach(function (line) {
      line.textContent = !supported ? line.dataset.unsupported || ""
        : Notification.permission === "granted" ? line.dataset.granted || ""
        : Notification.permission === "denied" ? line.dataset.denied || "" : "";
    });
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest("[data-offer-notifications]") || !("Notification" in window)) return;
    Notification.requestPermission().then(notificationsShow);
  });

  // --- New offers: announced once per browser tab -------------------------------------------------
  function alerted() {
    try { return JSON.parse(sessionStorage.getItem(ALERTED_KEY) || "[]"); } catch (e) { return []; }
  }
  function announce(card) {
    const seen = alerted();
    const id = card.dataset.offer;
    if (seen.indexOf(id) !== -1) return;
    seen.push(id);
    try { sessionStorage.setItem(ALERTED_KEY, JSON.stringify(seen.slice(-50))); } catch (e) { /* full */ }
    if (soundOn()) tone();
    if ("Notification" in window && Notification.permission === "granted") {
      const notification = new Notification(card.dataset.labelTitle || "", {
        body: card.dataset.customer + (card.dataset.firstMessage ? ": " + card.dataset.firstMessage : ""),
        tag: "offer-" + id,
        icon: (card.querySelector("img.avatar") || {}).src,
      });
      notification.onclick = function () { window.focus(); notification.close(); };
    }
  }

  // --- Countdown -----------------------------------------------------------------------------------
  function countdown(card) {
    if (!card.dataset.skew) {
      // The server's clock decides: the card says when it was rendered by the server.
      card.dataset.skew = String(Date.parse(card.dataset.serverNow) - Date.now());
    }
    const left = Math.max(0, Math.round((Date.parse(card.dataset.expiresAt) - (Date.now() + Number(card.dataset.skew))) / 1000));
    const shown = card.querySelector("[data-countdown]");
    if (!shown) return;
    if (left <= 0) {
      shown.textContent = card.dataset.labelExpired || "0:00";
      card.classList.add("expired");
      card.querySelectorAll("button").forEach(function (button) { button.disabled = true; });
      return;
    }
    shown.textContent = Math.floor(left / 60) + ":" + String(left % 60).padStart(2, "0");
    card.classList.toggle("urgent", left <= 15);
  }

  function cards() {
    return document.querySelectorAll("#offers .offer-card");
  }
  function refresh() {
    cards().forEach(function (card) { countdown(card); announce(card); });
    soundButtonsShow();
  }
  document.body.addEventListener("htmx:afterSettle", function (event) {
    if (event.target && event.target.id === "offers") refresh();
  });
  setInterval(function () { cards().forEach(countdown); }, 1000);

  soundButtonsShow();
  notificationsShow();
  picturesCheck();
  refresh();
  window.omnichannelOffers = { tone: tone, refresh: refresh };
})();
