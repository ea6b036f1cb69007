"""The agent and supervisor pages (server-rendered; htmx fragments; live through omnichannel.live).

One module per page family; each has its own `urlpatterns`, gathered by agents/urls.py under the
"inbox" namespace. Views stay thin: reads come from selectors, changes from services."""
