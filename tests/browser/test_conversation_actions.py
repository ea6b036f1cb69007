"""The conversation page's actions in a real browser: end with notes, close, a refusal shown in the
toolbar, transfer, consult (the consultant's read-only view), a supervisor's view, and the same
without JavaScript."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

from omnichannel import lifecycle
from omnichannel.models import ConversationState
from routing.models import DistributionMode
from tests.factories import SupervisorFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def worked(queue, workstream, agent):
    conversation = item_make(queue, workstream)
    conversation.social_profile.display_name = "Aiko Tanaka"
    conversation.social_profile.save()
    lifecycle.conversation_transition(
        conversation=conversation, action=lifecycle.ASSIGN, actor=agent, agent=agent
    )
    return conversation


def test_end_with_notes_then_close(page, login_as, live_server, screenshot):
    queue = queue_make("Support")
    workstream = workstream_make("Support ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    agent = agent_make(queue)
    agent.first_name, agent.last_name = "Mei", "Sato"
    agent.save()
    agent_make(queue)  # a colleague to consult
    conversation = worked(queue, workstream, agent)
    login_as(agent)

    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator('[data-action="end"]')).to_be_visible()
    screenshot(page, "h1b-toolbar-active")
    page.locator('[data-action="transfer"] summary').click()
    expect(page.locator('select[name="queue"]')).to_be_visible()
    screenshot(page, "h1b-transfer-open")
    page.locator('[data-action="transfer"] summary').click()
    page.locator('[data-action="consult"] summary').click()
    expect(page.locator('select[name="consultant"]')).to_be_visible()
    screenshot(page, "h1b-consult-open")
    page.fill('textarea[name="note"] >> visible=true', "Is this a refund case?")
    page.get_by_role("button", name="Ask for a consult").click()
    expect(page.locator(".actions-consults")).to_contain_text("Consulting")
    screenshot(page, "h1b-consulting")

    page.locator('[data-action="end"] summary').click()
    page.fill('textarea[name="notes"]', "Refund promised by Friday.")
    screenshot(page, "h1b-end-open")
    page.get_by_role("button", name="End conversation").click()
    expect(page.locator('[data-action="close"]')).to_be_visible()
    expect(page.locator('[data-action="end"]')).to_have_count(0)
    screenshot(page, "h1b-wrap-up")
    conversation.refresh_from_db()
    assert conversation.state == ConversationState.WRAP_UP
    assert conversation.wrap_up_notes == "Refund promised by Friday."

    page.locator('[data-action="close"] summary').click()
    screenshot(page, "h1b-close-open")
    page.get_by_role("button", name="Close conversation").click()
    expect(page.locator(".state")).to_contain_text("Closed")
    expect(page.locator("#conversation-actions [data-action]")).to_have_count(0)
    screenshot(page, "h1b-closed")
    conversation.refresh_from_db()
    assert conversation.state == ConversationState.CLOSED


def test_refusal_message_and_transfer(page, login_as, screenshot):
    queue = queue_make("Support")
    workstream = workstream_make("Support ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    billing = queue_make("Billing")
    agent = agent_make(queue)
    conversation = worked(queue, workstream, agent)
    login_as(agent)
    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator('[data-action="end"]')).to_be_visible()
    # Waiting elsewhere, without a live refresh yet: an End answers 409 with the reason.
    page.evaluate("window.omnichannelLive && window.omnichannelLive.close()")
    lifecycle.conversation_transition(conversation=conversation, action=lifecycle.WAIT, actor=agent)
    page.locator('[data-action="end"] summary').click()
    page.get_by_role("button", name="End conversation").click()
    expect(page.locator(".actions-error")).to_contain_text("A conversation that is Waiting cannot be ended.")
    screenshot(page, "h1b-refused")

    page.reload()
    expect(page.locator('[data-action="resume"]')).to_be_visible()
    page.locator('[data-action="transfer"] summary').click()
    page.select_option('select[name="queue"]', str(billing.pk))
    page.fill('textarea[name="note"]', "Invoice question")
    page.get_by_role("button", name="Transfer").click()
    page.wait_for_url("**/inbox/")
    screenshot(page, "h1b-after-transfer")


def test_supervisor_and_consultant_views(page, login_as, screenshot, context):
    from omnichannel import consults

    queue = queue_make("Support")
    workstream = workstream_make("Support ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    agent = agent_make(queue)
    colleague = agent_make()
    conversation = worked(queue, workstream, agent)
    consults.consult_start(
        conversation=conversation, consultant=colleague, requested_by=agent, note="Refund?"
    )
    login_as(colleague)
    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator(".actions-consults")).to_contain_text("read-only")
    screenshot(page, "h1b-consultant")
    page.get_by_role("button", name="End consult").click()
    page.wait_for_url("**/inbox/")

    context.clear_cookies()
    login_as(SupervisorFactory())
    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator('[data-action="close"]')).to_be_visible()
    screenshot(page, "h1b-supervisor")


def test_no_javascript_transfer(browser, live_server, screenshot):
    from django.conf import settings as s
    from django.test import Client

    queue = queue_make("Support")
    workstream = workstream_make("Support ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    billing = queue_make("Billing")
    agent = agent_make()
    conversation = worked(queue, workstream, agent)
    ctx = browser.new_context(
        base_url=live_server.url, java_script_enabled=False, viewport={"width": 1280, "height": 800}
    )
    client = Client()
    client.force_login(agent)
    cookie = client.cookies[s.SESSION_COOKIE_NAME]
    ctx.add_cookies([{"name": cookie.key, "value": cookie.value, "url": live_server.url}])
    page = ctx.new_page()
    page.goto(f"/inbox/c/{conversation.pk}/")
    screenshot(page, "h1b-nojs-page")
    page.get_by_role("link", name="Actions").click()
    screenshot(page, "h1b-nojs-actions")
    page.locator('[data-action="transfer"] summary').click()
    page.get_by_role("link", name="Choose an agent or a queue").click()
    page.select_option('select[name="queue"]', str(billing.pk))
    screenshot(page, "h1b-nojs-targets")
    page.get_by_role("button", name="Transfer").click()
    page.wait_for_url("**/inbox/")
    conversation.refresh_from_db()
    assert conversation.queue_id == billing.pk
    ctx.close()


def test_consultant_page_when_requester_ends(page, login_as, screenshot):
    from omnichannel import consults

    queue = queue_make("Support")
    workstream = workstream_make("Support ws", fallback=queue, distribution_mode=DistributionMode.PICK)
    agent = agent_make(queue)
    colleague = agent_make()
    conversation = worked(queue, workstream, agent)
    consult = consults.consult_start(conversation=conversation, consultant=colleague, requested_by=agent)
    login_as(colleague)
    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator(".actions-consults")).to_be_visible()
    page.wait_for_function("document.body.dataset.liveReady === '1'")
    consults.consult_end(consult=consult, actor=agent)
    expect(page.locator(".actions-gone")).to_be_visible(timeout=8000)
    screenshot(page, "h1b-consultant-gone")
