"""The conversation page's actions (agents/views/actions.py, its toolbar
templates/inbox/conversation/actions.html): end with wrap-up notes, close, move to waiting, resume,
transfer to a queue or an agent with a note, and consults. Access as the REST API: a conversation the
viewer may not see is 404, an action that is not theirs 403 with the reason, a refusal of the
lifecycle 409 with its message shown in the page; every action is a CSRF-protected POST."""

from __future__ import annotations

import re

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from agents.models import AgentProfile
from omnichannel import consults, lifecycle, live, selectors
from omnichannel.models import ConversationActivity, ConversationConsult, ConversationState
from routing.models import DistributionMode, Offer, OfferState
from tests.factories import AgentFactory, ConversationFactory, SupervisorFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
ACTIONS = ("end", "close", "wait", "resume", "transfer", "consult")


@pytest.fixture(autouse=True)
def _no_live_hub(monkeypatch):
    """Pages take the live cursor from the process's hub; these tests do not listen (omnichannel.live
    has its own tests), so no hub thread starts and reads the database behind the test's back."""
    monkeypatch.setattr(live.hub, "cursor", lambda: 0)


def client_for(user, **kwargs) -> Client:
    client = Client(**kwargs)
    client.force_login(user)
    return client


def url(name: str, conversation, *args) -> str:
    return reverse(f"inbox:conversation-{name}", args=[conversation.pk, *args])


def post(client: Client, name: str, conversation, data: dict | None = None, htmx: bool = True):
    return client.post(url(name, conversation), data or {}, **(HTMX if htmx else {}))


def select(page: str, name: str) -> str:
    """The options of the <select name=...> of a form."""
    return re.search(rf'<select[^>]*name="{name}".*?</select>', page, re.S).group(0)


def state_of(conversation) -> str:
    conversation.refresh_from_db()
    return conversation.state


@pytest.fixture
def support():
    queue = queue_make("Support")
    return queue, workstream_make("Support ws", fallback=queue, distribution_mode=DistributionMode.PICK)


@pytest.fixture
def worked(support):
    """An Active conversation worked by `agent` (capacity 4, the conversation holds 1)."""
    queue, workstream = support
    agent = agent_make(queue, capacity=4)
    conversation = item_make(queue, workstream)
    lifecycle.conversation_transition(
        conversation=conversation, action=lifecycle.ASSIGN, actor=agent, agent=agent
    )
    return agent, conversation


# --- Each action, by the conversation's agent ------------------------------------------------------------


def test_the_agent_ends_a_conversation_with_wrap_up_notes_and_the_page_refreshes(worked):
    agent, conversation = worked

    response = post(client_for(agent), "end", conversation, {"notes": "Refund promised by Friday."})

    assert response.status_code == 204
    assert response["HX-Refresh"] == "true"
    conversation.refresh_from_db()
    assert conversation.state == ConversationState.WRAP_UP
    assert conversation.wrap_up_notes == "Refund promised by Friday."
    assert AgentProfile.objects.get(user=agent).capacity_used == 0


def test_without_javascript_an_action_redirects_back_to_the_conversation(worked):
    agent, conversation = worked

    response = post(client_for(agent), "wait", conversation, htmx=False)

    assert response.status_code == 303
    assert response["Location"] == reverse("inbox:conversation", args=[conversation.pk])
    assert state_of(conversation) == ConversationState.WAITING


def test_the_agent_moves_a_conversation_to_waiting_and_resumes_it(worked):
    agent, conversation = worked
    client = client_for(agent)

    assert post(client, "wait", conversation).status_code == 204
    assert state_of(conversation) == ConversationState.WAITING
    assert AgentProfile.objects.get(user=agent).capacity_used == 0

    assert post(client, "resume", conversation).status_code == 204
    assert state_of(conversation) == ConversationState.ACTIVE
    assert AgentProfile.objects.get(user=agent).capacity_used == 1


def test_the_agent_closes_a_conversation_and_its_consults_end(worked):
    agent, conversation = worked
    colleague = AgentFactory()
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)

    response = post(client_for(agent), "close", conversation)

    assert response.status_code == 204 and response["HX-Refresh"] == "true"
    assert state_of(conversation) == ConversationState.CLOSED
    assert not ConversationConsult.objects.filter(ended_at__isnull=True).exists()


def test_an_action_the_state_does_not_allow_is_409_with_the_reason_in_the_toolbar(worked):
    agent, conversation = worked
    client = client_for(agent)
    post(client, "wait", conversation)

    refused = post(client, "end", conversation, {"notes": "x"})
    plain = post(client, "wait", conversation, htmx=False)

    assert refused.status_code == 409
    assert 'class="actions-error"' in refused.content.decode()
    assert "A conversation that is Waiting cannot be ended." in refused.content.decode()
    assert plain.status_code == 409
    assert "A conversation that is Waiting cannot be moved to waiting." in plain.content.decode()
    assert "<html" in plain.content.decode()  # a page of its own, with the way back
    assert reverse("inbox:conversation", args=[conversation.pk]) in plain.content.decode()
    assert state_of(conversation) == ConversationState.WAITING


# --- Transfer ----------------------------------------------------------------------------------------------


def test_the_agent_transfers_to_a_queue_with_a_note_and_goes_back_to_the_inbox(worked):
    agent, conversation = worked
    billing = queue_make("Billing")

    response = post(
        client_for(agent), "transfer", conversation, {"queue": billing.pk, "note": "Invoice question"}
    )

    assert response.status_code == 204
    assert response["HX-Redirect"] == reverse("inbox:home")  # it is not theirs to see any more
    conversation.refresh_from_db()
    assert conversation.state == ConversationState.OPEN and conversation.queue == billing
    assert conversation.assigned_agent is None
    transfer = ConversationActivity.objects.get(conversation=conversation, kind="transferred")
    assert transfer.note == "Invoice question" and transfer.actor == agent


def test_a_transfer_to_an_agent_offers_them_the_conversation(worked, support):
    agent, conversation = worked
    colleague = agent_make(support[0])

    response = post(
        client_for(agent), "transfer", conversation, {"agent": colleague.pk, "note": "VIP"}, htmx=False
    )

    # Open again in their pick queue: they still see it, so back to it.
    assert response.status_code == 303
    assert response["Location"] == reverse("inbox:conversation", args=[conversation.pk])
    offer = Offer.objects.get(conversation=conversation, state=OfferState.PENDING)
    assert offer.agent == colleague


def test_a_transfer_needs_a_queue_or_an_agent(worked):
    agent, conversation = worked
    client = client_for(agent)

    empty = post(client, "transfer", conversation, {"note": "?"})
    to_a_supervisor = post(client, "transfer", conversation, {"agent": SupervisorFactory().pk})

    assert empty.status_code == 400
    assert "Choose the queue or the agent to transfer to (or both)." in empty.content.decode()
    assert to_a_supervisor.status_code == 400
    assert state_of(conversation) == ConversationState.ACTIVE


def test_the_transfer_form_lists_the_queues_and_the_other_agents_in_a_fixed_number_of_queries(
    worked, support, django_assert_num_queries
):
    agent, conversation = worked
    colleagues = [agent_make(support[0]) for _ in range(3)]
    for index in range(3):
        queue_make(f"Queue {index}")
    client = client_for(agent)
    client.get(url("transfer-targets", conversation), **HTMX)  # the session, warmed

    with django_assert_num_queries(8):
        # session, user, their language and time zone, their own and their groups' permissions, the
        # conversation, the agents with their profiles, the queues
        response = client.get(url("transfer-targets", conversation), **HTMX)

    page = response.content.decode()
    assert response.status_code == 200
    agents = set(map(int, re.findall(r'<option value="(\d+)"', select(page, "agent"))))
    queues = re.findall(r'<option value="\d+">([^<]+)</option>', select(page, "queue"))
    assert agents == {c.pk for c in colleagues}  # not to themselves
    assert queues == ["Queue 0", "Queue 1", "Queue 2", "Support (current)"]
    assert 'name="note"' in page and 'name="csrfmiddlewaretoken"' in page


# --- Who may do what ------------------------------------------------------------------------------------


def test_another_agent_s_conversation_is_404_for_every_action_and_fragment(worked):
    _agent, conversation = worked
    stranger = client_for(AgentFactory())

    for name in ACTIONS:
        assert post(stranger, name, conversation).status_code == 404, name
    for name in ("actions", "transfer-targets", "consult-targets"):
        assert stranger.get(url(name, conversation), **HTMX).status_code == 404, name
    assert state_of(conversation) == ConversationState.ACTIVE


def test_an_agent_who_sees_a_conversation_they_do_not_work_gets_403_with_the_reason(support):
    queue, workstream = support
    member = agent_make(queue)
    open_item = item_make(queue, workstream)  # Open in their pick queue: they see it, nobody works it
    client = client_for(member)

    for name in ACTIONS:
        response = post(client, name, open_item, {"queue": queue.pk, "consultant": AgentFactory().pk})
        assert response.status_code == 403, name
        assert "Only the agent of this conversation" in response.content.decode(), name
    assert client.get(url("transfer-targets", open_item), **HTMX).status_code == 403
    assert state_of(open_item) == ConversationState.OPEN


def test_a_supervisor_transfers_or_closes_any_conversation_but_does_not_work_it(worked):
    agent, conversation = worked
    supervisor = client_for(SupervisorFactory())
    escalations = queue_make("Escalations")

    for name in ("end", "wait", "resume", "consult"):
        response = post(supervisor, name, conversation)
        assert response.status_code == 403, name
    moved = post(supervisor, "transfer", conversation, {"queue": escalations.pk, "note": "VIP"})
    assert moved.status_code == 204 and moved["HX-Refresh"] == "true"  # supervisors still see it
    conversation.refresh_from_db()
    assert conversation.state == ConversationState.OPEN and conversation.queue == escalations

    closed = post(supervisor, "close", conversation)
    assert closed.status_code == 204
    assert state_of(conversation) == ConversationState.CLOSED
    assert AgentProfile.objects.get(user=agent).capacity_used == 0


def test_a_post_without_the_csrf_token_is_refused(worked):
    agent, conversation = worked
    client = client_for(agent, enforce_csrf_checks=True)

    for name in ACTIONS:
        assert post(client, name, conversation).status_code == 403, name
    assert state_of(conversation) == ConversationState.ACTIVE

    page = client.get(url("actions", conversation))  # a page with the token
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.content.decode()).group(1)
    done = client.post(url("wait", conversation), {"csrfmiddlewaretoken": token})
    assert done.status_code == 303
    assert state_of(conversation) == ConversationState.WAITING


def test_the_actions_take_only_posts(worked):
    agent, conversation = worked
    client = client_for(agent)

    for name in ACTIONS:
        assert client.get(url(name, conversation)).status_code == 405, name


# --- Consults --------------------------------------------------------------------------------------------


def test_a_consulted_agent_sees_the_conversation_read_only_until_the_consult_ends(worked):
    agent, conversation = worked
    colleague = AgentFactory()
    requester, consultant = client_for(agent), client_for(colleague)

    form = requester.get(url("consult-targets", conversation), **HTMX)
    assert f'<option value="{colleague.pk}">' in form.content.decode()
    started = post(requester, "consult", conversation, {"consultant": colleague.pk, "note": "Refund?"})
    assert started.status_code == 204 and started["HX-Refresh"] == "true"
    consult = ConversationConsult.objects.get(conversation=conversation, ended_at__isnull=True)

    toolbar = consultant.get(url("actions", conversation), **HTMX).content.decode()
    assert "you see it read-only" in toolbar and "Refund?" in toolbar
    assert set(re.findall(r'data-action="([\w-]+)"', toolbar)) == {"consult-end"}
    for name in ("end", "close", "wait", "transfer"):
        assert post(consultant, name, conversation, {"queue": 1}).status_code == 403, name
    assert "Consulting" in requester.get(url("actions", conversation), **HTMX).content.decode()

    ended = consultant.post(url("consult-end", conversation, consult.pk), **HTMX)

    assert ended.status_code == 204
    assert ended["HX-Redirect"] == reverse("inbox:home")  # the consultant lost sight of it
    assert consultant.get(url("actions", conversation), **HTMX).status_code == 404
    assert selectors.conversation_get(viewer=colleague, id=conversation.pk) is None


def test_the_requester_ends_the_consult_and_a_second_end_is_409(worked):
    agent, conversation = worked
    colleague = AgentFactory()
    consult = consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    client = client_for(agent)

    first = client.post(url("consult-end", conversation, consult.pk), **HTMX)
    second = client.post(url("consult-end", conversation, consult.pk), **HTMX)

    assert first.status_code == 204 and first["HX-Refresh"] == "true"
    assert second.status_code == 409 and "This consult has ended already." in second.content.decode()
    assert selectors.conversation_get(viewer=colleague, id=conversation.pk) is None


def test_a_consult_can_be_ended_only_by_those_concerned(worked, support):
    agent, conversation = worked
    consult = consults.consult_start(conversation=conversation, consultant=AgentFactory(), requested_by=agent)
    member = agent_make(support[0])
    open_item = item_make(support[0], support[1])  # the member sees this one, not the consult's

    assert client_for(member).post(url("consult-end", conversation, consult.pk), **HTMX).status_code == 404
    assert client_for(member).post(url("consult-end", open_item, consult.pk), **HTMX).status_code == 404
    second = AgentFactory()
    consults.consult_start(conversation=conversation, consultant=second, requested_by=agent)
    refused = client_for(second).post(url("consult-end", conversation, consult.pk), **HTMX)
    assert refused.status_code == 403
    assert (
        client_for(SupervisorFactory()).post(url("consult-end", conversation, consult.pk), **HTMX).status_code
        == 204
    )


def test_a_consult_refused_by_the_service_shows_why(worked):
    agent, conversation = worked
    colleague = AgentFactory()
    client = client_for(agent)
    post(client, "consult", conversation, {"consultant": colleague.pk})

    again = post(client, "consult", conversation, {"consultant": colleague.pk})
    nobody = post(client, "consult", conversation, {})

    assert again.status_code == 409 and "is consulted on this conversation already" in again.content.decode()
    assert nobody.status_code == 400


def test_a_transfer_ends_the_consults(worked):
    agent, conversation = worked
    colleague = AgentFactory()
    consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)

    post(client_for(agent), "transfer", conversation, {"queue": queue_make("Billing").pk})

    assert selectors.conversation_get(viewer=colleague, id=conversation.pk) is None
    assert not ConversationConsult.objects.filter(ended_at__isnull=True).exists()


# --- The toolbar ------------------------------------------------------------------------------------------


def expected_actions(state: str, *, works_it: bool, supervisor: bool) -> set[str]:
    """What lifecycle.TRANSITIONS (and the consult rule) allow, for the conversation's agent or a
    supervisor (who may transfer and close any)."""
    allowed = set()
    for action in ("end", "wait", "resume", "transfer", "close"):
        by_role = works_it or (supervisor and action in ("transfer", "close"))
        if by_role and state in lifecycle.TRANSITIONS[action].sources:
            allowed.add(action)
    if works_it and state in consults.CONSULT_STATES:
        allowed.add("consult")
    return allowed


@pytest.mark.parametrize("state", [s.value for s in ConversationState])
def test_the_toolbar_offers_what_the_lifecycle_allows_in_each_state(state):
    agent = AgentFactory()
    conversation = ConversationFactory(
        state=state,
        assigned_agent=None if state == ConversationState.OPEN else agent,
        closed_at=timezone.now() if state == ConversationState.CLOSED else None,
    )
    supervisor = SupervisorFactory()

    for user, works_it, is_supervisor in ((agent, True, False), (supervisor, False, True)):
        if state == ConversationState.OPEN and user == agent:
            continue  # nobody works an Open conversation: the agent does not even see it
        response = client_for(user).get(url("actions", conversation), **HTMX)
        assert response.status_code == 200
        shown = set(re.findall(r'data-action="([\w-]+)"', response.content.decode()))
        assert shown == expected_actions(state, works_it=works_it, supervisor=is_supervisor), (state, user)


def test_the_toolbar_listens_to_its_conversation_and_its_forms_carry_the_csrf_token(worked):
    agent, conversation = worked

    page = client_for(agent).get(url("actions", conversation), **HTMX).content.decode()

    assert f"live-conversation[detail.conversation=={conversation.pk}] from:body" in page
    assert "load," not in page  # fetched already: it does not load itself again
    assert page.count('name="csrfmiddlewaretoken"') == 3  # wait, end, close (transfer, consult: lazily)
    assert f'hx-post="{url("end", conversation)}"' in page
    assert f'action="{url("end", conversation)}"' in page  # and without JavaScript


def test_the_toolbar_is_a_fixed_number_of_queries_whatever_the_consults(worked, django_assert_num_queries):
    agent, conversation = worked
    for _ in range(3):
        consults.consult_start(conversation=conversation, consultant=AgentFactory(), requested_by=agent)
    client = client_for(agent)
    client.get(url("actions", conversation), **HTMX)

    with django_assert_num_queries(7):
        # session, user, their language and time zone, their own and their groups' permissions, the
        # conversation, the consults with both agents
        response = client.get(url("actions", conversation), **HTMX)

    assert response.content.decode().count('data-action="consult-end"') == 3


def test_included_without_its_context_the_toolbar_loads_itself(worked, rf):
    from django.template.loader import render_to_string

    agent, conversation = worked
    request = rf.get("/")
    request.user = agent

    html = render_to_string(
        "inbox/conversation/actions.html",
        {"conversation": conversation, "can_act": True, "is_supervisor": False},
        request=request,
    )

    assert f'hx-get="{url("actions", conversation)}"' in html
    assert 'hx-trigger="load, live-conversation' in html
    assert "inbox/actions.js" in html and "inbox/actions.css" in html
    assert "data-action=" not in html


def test_without_javascript_the_actions_and_the_transfer_form_are_pages_of_their_own(worked):
    agent, conversation = worked
    client = client_for(agent)

    actions = client.get(url("actions", conversation)).content.decode()
    targets = client.get(url("transfer-targets", conversation)).content.decode()

    assert "<html" in actions and 'data-action="end"' in actions
    assert f'href="{url("transfer-targets", conversation)}"' in actions  # the way to the form
    assert "<html" in targets and f'action="{url("transfer", conversation)}"' in targets
    assert 'id="conversation-actions-message"' in targets
