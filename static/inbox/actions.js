// The conversation actions toolbar (templates/inbox/conversation/actions.html).
// htmx does not show 4xx answers by default: the actions answer a refusal (400, 403, 409) with the
// reason to show in the toolbar, so let those swap. When the toolbar cannot be fetched again because
// the viewer lost sight of the conversation (404: a consult ended, transferred away), say so.
(function () {
  "use strict";
  if (window.omnichannelActions) return;
  window.omnichannelActions = true;

  function inToolbar(element) {
    return element && element.closest && element.closest("#conversation-actions, .actions-page");
  }

  document.addEventListener("htmx:beforeSwap", function (event) {
    const status = event.detail.xhr.status;
    if ((status === 400 || status === 403 || status === 409) && inToolbar(event.detail.elt)) {
      event.detail.shouldSwap = true;
      event.detail.isError = false;
    }
  });

  function closeMenus(except) {
    document.querySelectorAll("#conversation-actions details.action-menu[open]").forEach(function (menu) {
      if (menu !== except) menu.open = false;
    });
  }

  // One menu open at a time; Escape closes it; a refusal closes it so that its reason shows.
  document.addEventListener("toggle", function (event) {
    const menu = event.target;
    if (menu.matches && menu.matches("#conversation-actions details.action-menu") && menu.open) closeMenus(menu);
  }, true);
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") closeMenus(null);
  });
  document.addEventListener("htmx:afterSwap", function (event) {
    if (event.detail.target && event.detail.target.id === "conversation-actions-message") closeMenus(null);
  });

  document.addEventListener("htmx:responseError", function (event) {
    const toolbar = event.detail.elt;
    if (event.detail.xhr.status !== 404 || !toolbar || toolbar.id !== "conversation-actions") return;
    const message = document.getElementById("conversation-actions-message");
    if (!message) return;
    const gone = document.createElement("p");
    gone.className = "actions-gone";
    gone.setAttribute("role", "alert");
    gone.textContent = (toolbar.dataset.goneText || "This conversation is no longer available to you.") + " ";
    const back = document.createElement("a");
    back.href = toolbar.dataset.inboxUrl || "/inbox/";
    back.textContent = toolbar.dataset.inboxText || "Back to the inbox";
    gone.appendChild(back);
    toolbar.querySelectorAll(".actions-bar, .actions-consults").forEach(function (stale) { stale.remove(); });
    message.replaceChildren(gone);
  });
})();
