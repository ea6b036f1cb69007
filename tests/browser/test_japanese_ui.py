"""The agent pages in Japanese, in a real browser: an agent whose language is Japanese (time zone
Tokyo) opens the inbox, with an offer waiting, and then a conversation; every part of the pages,
the fragments htmx loads after the page included, is in Japanese, and times are Tokyo's."""

from __future__ import annotations

import datetime
import re

import pytest
from django.conf import settings
from playwright.sync_api import expect

from agents.models import AgentProfile, Presence
from omnichannel import lifecycle
from omnichannel.models import ConversationState, MessageKind
from tests.factories import ContactFactory, ConversationFactory, MessageFactory, SupervisorFactory
from tests.omnichannel.test_translations import po_read
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# 01:05 UTC is 10:05 in Tokyo; Japanese dates read year/month/day.
SENT_AT = datetime.datetime(2026, 3, 2, 1, 5, tzinfo=datetime.UTC)
SENT_AT_IN_TOKYO = "2026/03/02 10:05"


@pytest.fixture(scope="module")
def english_of_the_pages() -> list[str]:
    """The catalogue's English sentences and phrases (two words or more, placeholders cut out): none
    of them may be read on a Japanese page."""
    _, entries = po_read(settings.BASE_DIR / "locale" / "ja" / "LC_MESSAGES" / "django.po")
    phrases = set()
    for entry in entries:
        for source in (entry.msgid, entry.msgid_plural or ""):
            for part in re.split(r"%\(\w+\)\w|\{\w+\}|%%", source):
                part = part.strip(" .:…—()?")
                if len(part.split()) >= 2:
                    phrases.add(part)
    return sorted(phrases)


def english_left(page, phrases: list[str]) -> list[str]:
    text = page.locator("body").inner_text()
    return [phrase for phrase in phrases if phrase in text]


@pytest.fixture
def japanese_agent():
    """佐藤 芽衣, in Japanese and Tokyo time, with a conversation of her own and an offer waiting."""
    queue = queue_make("サポート")
    workstream = workstream_make("サポート窓口", fallback=queue)
    agent = agent_make(queue, presence=Presence.AVAILABLE, capacity=4)
    agent.first_name, agent.last_name = "芽衣", "佐藤"
    agent.save(update_fields=["first_name", "last_name"])
    AgentProfile.objects.filter(user=agent).update(language="ja", time_zone="Asia/Tokyo")

    conversation = ConversationFactory(
        assigned_agent=agent,
        state=ConversationState.ACTIVE,
        capacity_held=1,
        queue=queue,
        workstream=workstream,
        social_profile__display_name="田中 愛子",
        social_profile__language="ja",
        social_profile__contact=ContactFactory(name="田中 愛子 会員番号1042"),
        last_message_at=SENT_AT,
    )
    MessageFactory(conversation=conversation, text="注文した荷物がまだ届きません。", sent_at=SENT_AT)
    MessageFactory(
        conversation=conversation,
        kind=MessageKind.STICKER,
        text="",
        payload={"package_id": "446", "sticker_id": "1988"},
        sent_at=SENT_AT + datetime.timedelta(minutes=1),
    )
    MessageFactory(
        conversation=conversation,
        failed=True,
        author=agent,
        text="確認いたしますので、少々お待ちください。",
        sent_at=SENT_AT + datetime.timedelta(minutes=2),
    )

    waiting = item_make(queue, workstream)
    waiting.social_profile.display_name = "鈴木 一郎"
    waiting.social_profile.save(update_fields=["display_name"])
    MessageFactory(conversation=waiting, text="返品の方法を教えてください。")
    offer = lifecycle.offer_make(conversation=waiting, agent=agent, queue=queue, timeout_seconds=120)
    colleague = agent_make(queue, presence=Presence.BUSY, capacity=3)
    colleague.first_name, colleague.last_name = "花子", "鈴木"
    colleague.save(update_fields=["first_name", "last_name"])
    return agent, conversation, offer


def test_an_agent_who_chose_japanese_works_in_japanese_pages(
    page, login_as, screenshot, japanese_agent, english_of_the_pages
):
    agent, conversation, offer = japanese_agent
    login_as(agent)

    page.goto("/inbox/")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("body[data-live-ready='1']")).to_have_count(1)
    expect(page.get_by_role("link", name="受信トレイ", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="ログアウト")).to_be_visible()
    expect(page.get_by_role("button", name="対応可能")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#home-mine")).to_contain_text("担当中の会話")
    expect(page.locator(f"#home-mine [data-conversation='{conversation.pk}']")).to_contain_text("田中 愛子")
    card = page.locator(f"#offers .offer-card[data-offer='{offer.pk}']")
    expect(card).to_be_visible()
    expect(card).to_contain_text("新しい会話")
    expect(card.get_by_role("button", name="応答")).to_be_visible()
    expect(card.get_by_role("button", name="拒否")).to_be_visible()
    expect(card.locator("dl")).to_contain_text("キュー")
    assert english_left(page, english_of_the_pages) == []
    screenshot(page, "inbox-ja-home")

    page.goto(f"/inbox/c/{conversation.pk}/")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.locator("#timeline .msg")).to_have_count(3)
    expect(page.locator(".conversation-head .state")).to_have_text("対応中")
    expect(page.locator("#timeline")).to_contain_text("スタンプ")
    expect(page.locator("#timeline").get_by_role("button", name="再送信")).to_be_visible()
    expect(page.locator("#timeline time").first).to_have_text(SENT_AT_IN_TOKYO)
    expect(page.get_by_role("button", name="送信", exact=True)).to_be_visible()
    expect(page.locator("#composer-text")).to_have_attribute("placeholder", re.compile("Enter で送信"))
    expect(page.locator("#conversation-actions")).to_contain_text("応対終了")
    expect(page.locator("#conversation-actions")).to_contain_text("転送")
    pane = page.locator("#customer-pane")
    expect(pane).to_contain_text("顧客")
    expect(pane).to_contain_text("田中 愛子 会員番号1042")
    expect(pane).to_contain_text("リンクを解除")
    assert english_left(page, english_of_the_pages) == []
    screenshot(page, "inbox-ja-conversation")

    page.locator("[data-action='end'] summary").click()
    expect(page.get_by_label("後処理メモ")).to_be_visible()
    screenshot(page, "inbox-ja-conversation-end")
    page.locator("[data-action='end'] summary").click()

    # The transfer panel lists the colleagues with their presence, in Japanese too.
    page.locator("[data-action='transfer'] summary").click()
    colleague = page.get_by_label("エージェント", exact=True).locator("option", has_text="花子")
    expect(colleague).to_have_count(1)
    expect(colleague).to_contain_text("取り込み中")
    expect(page.get_by_role("button", name="転送", exact=True)).to_be_visible()
    assert english_left(page, english_of_the_pages) == []
    screenshot(page, "inbox-ja-conversation-transfer")


def test_a_supervisor_who_chose_japanese_reads_the_dashboard_in_japanese(
    page, login_as, screenshot, japanese_agent, english_of_the_pages
):
    supervisor = SupervisorFactory(first_name="部長", last_name="山本")
    AgentProfile.objects.update_or_create(
        user=supervisor, defaults={"language": "ja", "time_zone": "Asia/Tokyo"}
    )
    login_as(supervisor)
    page.goto("/inbox/dashboard/")
    expect(page.locator("html")).to_have_attribute("lang", "ja")
    expect(page.get_by_role("link", name="ダッシュボード")).to_be_visible()
    expect(page.locator("#dash-queues")).to_contain_text("サポート")
    expect(page.locator("#dash-agents")).to_contain_text("対応可能")
    expect(page.locator("#dash-conversations")).to_contain_text("田中 愛子")
    expect(page.locator("#dash-conversations")).to_contain_text("対応中")
    assert english_left(page, english_of_the_pages) == []
    screenshot(page, "inbox-ja-dashboard")


def test_the_sign_in_page_is_in_japanese_for_a_japanese_browser(browser, live_server, screenshot):
    context = browser.new_context(base_url=live_server.url, locale="ja-JP")
    try:
        page = context.new_page()
        page.goto("/accounts/login/")
        expect(page.get_by_role("heading", name="ログイン")).to_be_visible()
        expect(page.get_by_label("ユーザー名")).to_be_visible()
        expect(page.get_by_label("パスワード")).to_be_visible()
        page.get_by_label("ユーザー名").fill("nobody")
        page.get_by_label("パスワード").fill("wrong password")
        page.get_by_role("button", name="ログイン").click()
        expect(page.get_by_role("alert")).to_have_text(
            "ユーザー名またはパスワードが正しくありません。もう一度お試しください。"
        )
        screenshot(page, "inbox-ja-login")
    finally:
        context.close()
