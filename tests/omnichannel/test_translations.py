"""The Japanese catalogue of the agent pages: every entry translated (not fuzzy, placeholders kept),
the compiled .mo saying what the .po says, every translatable string of the templates and of the
product's Python code in the catalogue, and the pages in Japanese for an agent who chose it (or whose
browser asks for it). No gettext tools are needed: the .po is read here, the .mo by Python's gettext,
and the templates' strings are extracted the way makemessages does (Django's templatize)."""

from __future__ import annotations

import ast
import datetime
import gettext
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.loader import render_to_string
from django.urls import reverse
from django.utils import timezone, translation
from django.utils.translation.template import templatize

from agents.models import AgentProfile, Presence
from agents.roles import ROLE_PERMISSIONS
from omnichannel import lifecycle, live
from omnichannel.models import ConversationState, DeliveryState
from routing import distribution
from routing.distribution import PICK_LOST
from routing.models import DistributionMode, Offer, OfferState
from routing.services import conversation_route
from tests.factories import AgentFactory, ConversationFactory, SupervisorFactory, UserFactory
from tests.routing.conftest import queue_make, workstream_make
from tests.routing.test_distribution import agent_make, item_make

BASE_DIR = Path(settings.BASE_DIR)
CATALOGUE = BASE_DIR / "locale" / "ja" / "LC_MESSAGES"
TEMPLATES = BASE_DIR / "templates"
# The product's Python code, as makemessages reads it (tests, bench, var and .venv are left out).
PYTHON_PACKAGES = ("agents", "omnichannel", "routing", "channels_line")
# Placeholders that must survive translation: Python's %(name)s (with any conversion flags) and %%,
# and the quick replies' {CustomerName} style.
PLACEHOLDER = re.compile(r"%\([A-Za-z_]\w*\)[-#0 +]*\d*(?:\.\d+)?[sdifr]|%%|\{[A-Za-z_]\w*\}")
GETTEXT_FUNCTIONS = {
    # name: (index of the context argument or None, index of the msgid, index of the plural or None)
    "_": (None, 0, None),
    "gettext": (None, 0, None),
    "gettext_lazy": (None, 0, None),
    "gettext_noop": (None, 0, None),
    "ngettext": (None, 0, 1),
    "ngettext_lazy": (None, 0, 1),
    "pgettext": (0, 1, None),
    "pgettext_lazy": (0, 1, None),
    "npgettext": (0, 1, 2),
    "npgettext_lazy": (0, 1, 2),
}

Key = tuple[str | None, str]


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    msgid_plural: str | None = None
    msgstr: dict[int, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)
    references: list[str] = field(default_factory=list)

    @property
    def key(self) -> Key:
        return (self.msgctxt, self.msgid)


def po_unquote(text: str) -> str:
    """A PO string literal's content (C escapes: \\n, \\t, \\", \\\\)."""
    return ast.literal_eval(text)


def po_read(path: Path) -> tuple[dict[str, str], list[Entry]]:
    """The header's fields and the live entries of a .po file (obsolete #~ entries are left out)."""
    entries: list[Entry] = []
    entry = Entry()
    target: tuple[str, int | None] | None = None

    def finish() -> None:
        nonlocal entry, target
        if target is not None:
            entries.append(entry)
        entry, target = Entry(), None

    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line:
            finish()
        elif line.startswith("#~"):
            continue
        elif line.startswith("#,"):
            if target is not None:
                finish()
            entry.flags |= {flag.strip() for flag in line[2:].split(",")}
        elif line.startswith("#:"):
            if target is not None:
                finish()
            entry.references += line[2:].split()
        elif line.startswith("#"):
            if target is not None:
                finish()
        elif line.startswith('"'):
            assert target is not None, f"a continuation line with nothing to continue: {raw!r}"
            name, index = target
            if name == "msgstr":
                entry.msgstr[index or 0] += po_unquote(line)
            else:
                setattr(entry, name, (getattr(entry, name) or "") + po_unquote(line))
        else:
            keyword, _, value = line.partition(" ")
            if keyword == "msgctxt" and target is not None:
                finish()
            plural = re.fullmatch(r"msgstr\[(\d+)\]", keyword)
            if plural:
                target = ("msgstr", int(plural.group(1)))
                entry.msgstr[int(plural.group(1))] = po_unquote(value)
            elif keyword == "msgstr":
                target = ("msgstr", 0)
                entry.msgstr[0] = po_unquote(value)
            elif keyword in ("msgctxt", "msgid", "msgid_plural"):
                target = (keyword, None)
                setattr(entry, keyword, po_unquote(value))
            else:
                raise AssertionError(f"unexpected line in {path.name}: {raw!r}")
    finish()
    header_entries = [item for item in entries if item.msgid == "" and item.msgctxt is None]
    assert len(header_entries) == 1, "the catalogue has one header"
    header = dict(line.split(": ", 1) for line in header_entries[0].msgstr[0].splitlines() if ": " in line)
    if "fuzzy" in header_entries[0].flags:
        header["fuzzy"] = "yes"
    return header, [item for item in entries if item is not header_entries[0]]


@pytest.fixture(scope="module")
def catalogue() -> tuple[dict[str, str], list[Entry]]:
    return po_read(CATALOGUE / "django.po")


@pytest.fixture(scope="module")
def entries(catalogue) -> list[Entry]:
    return catalogue[1]


@pytest.fixture(scope="module")
def catalogue_keys(entries) -> set[Key]:
    return {entry.key for entry in entries}


def placeholders(text: str) -> list[str]:
    return sorted(PLACEHOLDER.findall(text))


def where(entry: Entry) -> str:
    return f"{entry.msgid!r} ({', '.join(entry.references[:2])})"


class TestTheJapaneseCatalogue:
    def test_says_it_is_japanese_utf8_with_the_one_plural_form_japanese_has(self, catalogue):
        header, _ = catalogue
        assert header["Language"] == "ja"
        assert header["Content-Type"] == "text/plain; charset=UTF-8"
        assert header["Plural-Forms"] == "nplurals=1; plural=0;"
        assert "fuzzy" not in header, "a fuzzy header is left out of the compiled catalogue"

    def test_has_the_strings_of_the_inbox_pages(self, entries):
        assert len(entries) > 200
        assert any(ref.startswith("templates/inbox/") for entry in entries for ref in entry.references)

    def test_translates_every_entry_and_none_is_fuzzy(self, entries):
        fuzzy = [where(entry) for entry in entries if "fuzzy" in entry.flags]
        untranslated = [where(entry) for entry in entries if not all(entry.msgstr.values())]
        assert fuzzy == []
        assert untranslated == []

    def test_gives_plural_entries_exactly_one_form(self, entries):
        plurals = [entry for entry in entries if entry.msgid_plural is not None]
        assert plurals, "the pages have counted strings"
        assert [where(entry) for entry in plurals if sorted(entry.msgstr) != [0]] == []

    def test_keeps_every_placeholder_of_the_english(self, entries):
        """Japanese has one form for every count: it reads the plural English's placeholders."""
        wrong = []
        for entry in entries:
            source = entry.msgid_plural if entry.msgid_plural is not None else entry.msgid
            for text in entry.msgstr.values():
                if placeholders(text) != placeholders(source):
                    wrong.append(f"{where(entry)}: {text!r}")
        assert wrong == []

    def test_is_written_in_japanese(self, entries):
        """Every translation that has words to translate has Japanese in it (not English copied over)."""
        japanese = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff\uff01-\uff5e]")
        words = re.compile(r"[A-Za-z]{3,}")
        english = [
            where(entry)
            for entry in entries
            for text in entry.msgstr.values()
            if words.search(PLACEHOLDER.sub("", entry.msgid)) and not japanese.search(text)
        ]
        assert english == []

    def test_is_written_one_line_per_string_as_makemessages_no_wrap_writes_it(self):
        """Wrapped, a long translation reads `msgstr ""` and goes on below: a diff of a makemessages run
        without --no-wrap shows dozens of translations seemingly emptied (locale/README.md)."""
        lines = (CATALOGUE / "django.po").read_text(encoding="utf-8").splitlines()
        header_end = lines.index("")
        wrapped = [
            f"line {number}: {line}"
            for number, line in enumerate(lines, start=1)
            if number > header_end and line.startswith('"')
        ]
        assert wrapped == [], "run makemessages with --no-wrap (locale/README.md)"


@pytest.fixture(scope="module")
def compiled() -> gettext.GNUTranslations:
    with (CATALOGUE / "django.mo").open("rb") as mo:
        return gettext.GNUTranslations(mo)


class TestTheCompiledCatalogue:
    def test_is_kept_beside_the_po_file(self):
        """A user's machine may not have gettext: the .mo is in the repository, not built at install."""
        assert (CATALOGUE / "django.mo").stat().st_size > 0

    def test_says_what_the_po_file_says(self, compiled, entries):
        differ = []
        for entry in entries:
            if entry.msgid_plural is None:
                got = [
                    compiled.pgettext(entry.msgctxt, entry.msgid)
                    if entry.msgctxt is not None
                    else compiled.gettext(entry.msgid)
                ]
            else:
                got = [
                    compiled.npgettext(entry.msgctxt, entry.msgid, entry.msgid_plural, count)
                    if entry.msgctxt is not None
                    else compiled.ngettext(entry.msgid, entry.msgid_plural, count)
                    for count in (1, 2, 5)
                ]
            if set(got) != {entry.msgstr[0]}:
                differ.append(f"{where(entry)}: .po {entry.msgstr[0]!r}, .mo {got!r}")
        assert differ == [], "the .mo is stale: run manage.py compilemessages -l ja"

    def test_uses_the_japanese_plural_rule(self, compiled):
        assert compiled.info()["plural-forms"] == "nplurals=1; plural=0;"


def template_strings(path: Path) -> set[Key]:
    """The (context, msgid) pairs makemessages finds in a template: Django's templatize turns its
    translate tags into gettext calls of Python literals, read back here with ast."""
    source = path.read_text(encoding="utf-8")
    code = templatize(source, origin=str(path))
    found: set[Key] = set()
    literal = r"u?(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")"
    for match in re.finditer(
        rf"\b(npgettext|pgettext|ngettext|gettext|_)\(((?:{literal}\s*,\s*)*{literal})", code
    ):
        arguments = [ast.literal_eval(text.lstrip("u")) for text in re.findall(literal, match.group(2))]
        context_at, msgid_at, _ = GETTEXT_FUNCTIONS[match.group(1)]
        found.add((arguments[context_at] if context_at is not None else None, arguments[msgid_at]))
    return found


def python_strings(path: Path) -> set[Key]:
    """The (context, msgid) pairs of gettext calls with literal strings in a Python module."""
    found: set[Key] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if not isinstance(node, ast.Call):
            continue
        name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
        if name not in GETTEXT_FUNCTIONS:
            continue
        context_at, msgid_at, _ = GETTEXT_FUNCTIONS[name]
        arguments = [
            argument.value if isinstance(argument, ast.Constant) and isinstance(argument.value, str) else None
            for argument in node.args
        ]
        if len(arguments) <= msgid_at or arguments[msgid_at] is None:
            continue
        found.add((arguments[context_at] if context_at is not None else None, arguments[msgid_at]))
    return found


def not_in_catalogue(found: dict, catalogue_keys) -> list[str]:
    """The marked strings `found` (key: the file it is in) that the catalogue lacks, named with their file."""
    return sorted(
        f"{key} ({path.relative_to(BASE_DIR)})" for key, path in found.items() if key not in catalogue_keys
    )


class TestEveryStringOfThePages:
    def test_every_translatable_string_of_the_inbox_templates_is_in_the_catalogue(self, catalogue_keys):
        inbox = sorted((TEMPLATES / "inbox").rglob("*.html"))
        assert len(inbox) > 20
        found = {key: path for path in inbox for key in template_strings(path)}
        assert len(found) > 150
        missing = not_in_catalogue(found, catalogue_keys)
        assert missing == [], "run manage.py makemessages -l ja and translate (locale/README.md)"

    def test_every_translatable_string_of_the_other_templates_is_in_the_catalogue(self, catalogue_keys):
        """The sign-in page and the site's base template among them."""
        others = [path for path in TEMPLATES.rglob("*.html") if not path.is_relative_to(TEMPLATES / "inbox")]
        found = {key: path for path in others for key in template_strings(path)}
        assert (None, "Sign in") in found
        missing = not_in_catalogue(found, catalogue_keys)
        assert missing == []

    def test_every_translatable_string_of_the_python_code_is_in_the_catalogue(self, catalogue_keys):
        modules = [
            path
            for package in PYTHON_PACKAGES
            for path in (BASE_DIR / package).rglob("*.py")
            if "__pycache__" not in path.parts
        ]
        found = {key: path for path in modules for key in python_strings(path)}
        assert (None, "Only the agent of this conversation can end it.") in found
        missing = not_in_catalogue(found, catalogue_keys)
        assert missing == []

    def test_the_model_labels_the_pages_translate_when_shown_are_in_the_catalogue(self, catalogue_keys):
        """Presences and conversation states reach some pages as the models' (English) choice labels,
        passed through gettext there: the catalogue has them from the pages' own lists."""
        labels = [label for choices in (Presence, ConversationState) for label in choices.labels]
        assert [label for label in labels if (None, label) not in catalogue_keys] == []

    def test_the_extraction_here_finds_what_a_template_marks(self, tmp_path):
        """The check above would pass vacuously if the extraction found nothing: it finds each form."""
        template = tmp_path / "sample.html"
        template.write_text(
            '{% load i18n %}{% translate "Plain" %}{% translate "Shown" context "menu" %}'
            "{% blocktranslate with name=x %}Hello {{ name }}{% endblocktranslate %}"
            "{% blocktranslate count counter=n %}{{ counter }} item{% plural %}{{ counter }} items"
            '{% endblocktranslate %}{{ value|default:_("Fallback") }}'
        )
        assert template_strings(template) == {
            (None, "Plain"),
            ("menu", "Shown"),
            (None, "Hello %(name)s"),
            (None, "%(counter)s item"),
            (None, "Fallback"),
        }


@pytest.fixture(autouse=True)
def _english_again_after_each_test():
    """A request in Japanese leaves Japanese active in this thread: later tests expect English."""
    yield
    translation.deactivate()


@pytest.fixture
def no_live_hub(monkeypatch):
    """Pages ask the live hub for their cursor, which would start its reading thread: not here."""
    monkeypatch.setattr(live.hub, "cursor", lambda: 0)


def agent_with_language(language: str):
    agent = AgentFactory(username="sato")
    AgentProfile.objects.update_or_create(user=agent, defaults={"language": language})
    return agent


@pytest.mark.django_db
@pytest.mark.usefixtures("no_live_hub")
class TestThePagesInTheAgentsLanguage:
    def test_the_inbox_home_is_in_japanese_for_an_agent_who_chose_japanese(self, client):
        client.force_login(agent_with_language("ja"))
        html = client.get("/inbox/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
        assert '<html lang="ja">' in html
        for japanese in ("受信トレイ", "ログアウト", "担当中の会話", "自分のステータス", "対応可能"):
            assert japanese in html
        assert "My conversations" not in html
        assert "Log out" not in html

    def test_the_browsers_language_picks_japanese_when_the_agent_has_not_chosen(self, client):
        client.force_login(agent_with_language(""))
        japanese = client.get("/inbox/", HTTP_ACCEPT_LANGUAGE="ja,en;q=0.5").content.decode()
        english = client.get("/inbox/", HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9").content.decode()
        assert '<html lang="ja">' in japanese and "担当中の会話" in japanese
        assert '<html lang="en">' in english and "My conversations" in english

    def test_the_agents_choice_wins_over_the_browsers_language(self, client):
        client.force_login(agent_with_language("en"))
        html = client.get("/inbox/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
        assert "My conversations" in html
        assert "担当中の会話" not in html

    def test_the_fragments_and_the_conversation_page_are_in_japanese_too(self, client):
        agent = agent_with_language("ja")
        conversation = ConversationFactory(assigned_agent=agent, state="active", capacity_held=1)
        client.force_login(agent)
        mine = client.get(reverse("inbox:home-mine"), HTTP_HX_REQUEST="true")
        page = client.get(reverse("inbox:conversation", args=[conversation.pk]))
        assert mine.status_code == 200 and "担当中の会話" in mine.content.decode()
        assert page.status_code == 200
        html = page.content.decode()
        assert "送信" in html and "メッセージ" in html
        assert ">Send<" not in html

    def test_the_dashboard_is_in_japanese_for_a_supervisor_who_chose_japanese(self, client):
        supervisor = SupervisorFactory()
        AgentProfile.objects.update_or_create(user=supervisor, defaults={"language": "ja"})
        client.force_login(supervisor)
        page = client.get(reverse("inbox:dashboard")).content.decode()
        queues = client.get(reverse("inbox:dashboard-queues"), HTTP_HX_REQUEST="true").content.decode()
        assert "ダッシュボード" in page and "Dashboard<" not in page
        assert "キュー" in queues and "Queues" not in queues

    def test_the_sign_in_page_follows_the_browsers_language(self, client):
        japanese = client.get("/accounts/login/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
        english = client.get("/accounts/login/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
        assert "ログイン" in japanese and "パスワード" in japanese
        assert "Sign in" in english and "Password" in english


class TestTheModelsChoiceLabels:
    def test_follow_the_language_active_when_they_are_shown(self):
        with translation.override("ja"):
            japanese = [
                str(label)
                for label in (ConversationState.WAITING.label, Presence.AWAY.label, OfferState.EXPIRED.label)
            ]
        assert japanese == ["保留中", "退席中", "時間切れ"]
        assert str(ConversationState.WAITING.label) == "Waiting"

    def test_a_word_of_two_lists_is_translated_as_each_list_means_it(self):
        """ "Pending" is a message not sent yet, or an offer not answered yet."""
        with translation.override("ja"):
            assert (str(DeliveryState.PENDING.label), str(OfferState.PENDING.label)) == (
                "送信待ち",
                "応答待ち",
            )


@pytest.fixture
def support():
    queue = queue_make("Support")
    return queue, workstream_make("Support ws", fallback=queue, offer_timeout_seconds=90)


def japanese_agent_of(queue):
    agent = agent_make(queue, capacity=4)
    AgentProfile.objects.filter(user=agent).update(language="ja")
    return agent


@pytest.mark.django_db
@pytest.mark.usefixtures("no_live_hub")
class TestTheServicesRefusalsInTheAgentsLanguage:
    """The lifecycle and the services say why they refuse when the refusal happens: in the language of
    the request that met it."""

    def test_ending_a_waiting_conversation_is_refused_in_japanese_on_the_conversation_page(
        self, client, support
    ):
        queue, workstream = support
        agent = japanese_agent_of(queue)
        conversation = item_make(queue, workstream)
        lifecycle.conversation_transition(conversation=conversation, action=lifecycle.ASSIGN, agent=agent)
        lifecycle.conversation_transition(conversation=conversation, action=lifecycle.WAIT, actor=agent)
        client.force_login(agent)

        refused = client.post(
            reverse("inbox:conversation-end", args=[conversation.pk]), {"notes": "x"}, HTTP_HX_REQUEST="true"
        )

        assert refused.status_code == 409
        html = refused.content.decode()
        assert "状態が「保留中」の会話は応対終了できません。" in html
        assert "cannot be ended" not in html

    def test_accepting_an_expired_offer_is_refused_in_each_agents_language_on_the_inbox(
        self, client, support
    ):
        queue, workstream = support
        japanese, english = japanese_agent_of(queue), agent_make(queue)
        refusals = []
        for agent in (japanese, english):
            offer = lifecycle.offer_make(
                conversation=item_make(queue, workstream), agent=agent, queue=queue, timeout_seconds=90
            )
            Offer.objects.filter(pk=offer.pk).update(
                expires_at=timezone.now() - datetime.timedelta(seconds=1)
            )
            client.force_login(agent)
            response = client.post(reverse("inbox:offer-accept", args=[offer.pk]), HTTP_HX_REQUEST="true")
            assert response.status_code == 409
            refusals.append(response.content.decode())

        assert (
            "この着信は時間切れになりました。" in refusals[0] and "This offer has expired." not in refusals[0]
        )
        assert "This offer has expired." in refusals[1]

    def test_an_unknown_language_on_the_preferences_page_is_refused_in_japanese(self, client, support):
        client.force_login(japanese_agent_of(support[0]))

        response = client.post(reverse("inbox:preferences"), {"language": "xx", "time_zone": "Mars/Olympus"})

        assert response.status_code == 400
        html = response.content.decode()
        assert "不明な言語です" in html and "&#x27;xx&#x27;" in html and "不明なタイムゾーンです" in html
        assert "Unknown language" not in html


@pytest.mark.django_db
class TestTheOtherPagesInJapanese:
    def test_the_welcome_page_of_a_user_without_a_role(self, client):
        client.force_login(UserFactory(first_name="Aiko", last_name=""))

        html = client.get("/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()

        assert "ようこそ、Aiko さん" in html
        assert "まだありません。管理者に役割を付与してもらってください。" in html
        assert "Welcome" not in html

    @pytest.mark.parametrize(
        ("language", "minutes", "expected"),
        [
            ("ja", 15, "15 分間は、正しいパスワードでもログインできません。"),
            ("en", 15, "Signing in is locked for 15 minutes, even with the right password."),
            ("en", 1, "Signing in is locked for 1 minute, even with the right password."),
        ],
    )
    def test_the_sign_in_lockout_page_says_how_long_in_the_browsers_language(
        self, language, minutes, expected
    ):
        context = {
            "username": "sato",
            "failure_limit": 5,
            "cooloff_timedelta": datetime.timedelta(minutes=minutes),
        }
        with translation.override(language):
            html = " ".join(render_to_string("registration/locked_out.html", context).split())
        assert expected in html
        if language == "ja":
            assert "このアドレスから <strong>sato</strong> へのログインに続けて失敗しました" in html
            assert "5 回連続" in html


@pytest.fixture
def pick_support():
    queue = queue_make("Walk-in")
    return queue, workstream_make("Walk-in ws", fallback=queue, distribution_mode=DistributionMode.PICK)


@pytest.mark.django_db
@pytest.mark.usefixtures("no_live_hub")
class TestThePickTransferAndComposerRefusalsInTheAgentsLanguage:
    def test_the_loser_of_a_pick_race_is_told_in_japanese_on_the_inbox(self, client, pick_support):
        queue, workstream = pick_support
        winner, loser = agent_make(queue), japanese_agent_of(queue)
        item = item_make(queue, workstream)
        distribution.conversation_pick(conversation=item, agent=winner)
        client.force_login(loser)

        fragment = client.post(reverse("inbox:pick", args=[item.pk]), HTTP_HX_REQUEST="true")
        plain = client.post(reverse("inbox:pick", args=[item.pk]))

        assert fragment.status_code == 409 and plain.status_code == 409
        assert "この会話は、ほかのエージェントが先に受付しました。" in fragment.content.decode()
        with translation.override("en"):
            assert str(PICK_LOST) not in fragment.content.decode()
        assert plain.content.decode() == "この会話は、ほかのエージェントが先に受付しました。"

    def test_a_transfer_the_agent_has_no_room_for_says_why_in_japanese(self, support):
        queue, workstream = support
        conversation = item_make(queue, workstream)
        full = agent_make(queue, capacity=1, used=1)

        with translation.override("ja"), pytest.raises(lifecycle.CapacityExhausted) as refused:
            distribution.conversation_transfer(conversation=conversation, actor=None, agent=full)

        assert refused.value.message.startswith("転送できませんでした: ")
        assert "余裕がありません" in refused.value.message

    def test_a_file_of_a_type_agents_may_not_send_is_refused_in_japanese_under_the_composer(self, client):
        agent = agent_with_language("ja")
        conversation = ConversationFactory(assigned_agent=agent, state="active", capacity_held=1)
        client.force_login(agent)

        refused = client.post(
            reverse("inbox:conversation-send", args=[conversation.pk]),
            {"file": SimpleUploadedFile("map.gif", b"GIF89a", "image/gif")},
            HTTP_X_INBOX_FRAGMENT="1",
        )

        assert refused.status_code == 400
        text = refused.content.decode()
        assert text.startswith("ドキュメントのファイルは次のいずれかの形式にしてください: .csv, ")
        assert "must be one of these types" not in text

    def test_a_customer_who_blocked_the_account_is_said_in_japanese_under_the_composer(self, client):
        agent = agent_with_language("ja")
        conversation = ConversationFactory(
            assigned_agent=agent, state="active", capacity_held=1, social_profile__is_reachable=False
        )
        client.force_login(agent)

        refused = client.post(
            reverse("inbox:conversation-send", args=[conversation.pk]),
            {"text": "こんにちは"},
            HTTP_X_INBOX_FRAGMENT="1",
        )

        assert refused.status_code == 400
        assert refused.content.decode() == "顧客がアカウントをブロックしています。メッセージは届きません。"


@pytest.mark.django_db
class TestTheSitePagesInTheReadersLanguage:
    def test_the_site_pages_say_the_language_they_are_in(self, client):
        client.force_login(UserFactory())

        japanese = client.get("/", HTTP_ACCEPT_LANGUAGE="ja").content.decode()
        english = client.get("/", HTTP_ACCEPT_LANGUAGE="en").content.decode()

        assert '<html lang="ja">' in japanese
        assert '<html lang="en">' in english

    def test_the_welcome_page_names_the_roles_in_japanese_and_other_groups_as_they_are(self, rf):
        request = rf.get("/")
        request.user = UserFactory(first_name="Aiko", last_name="")
        roles = [*sorted(ROLE_PERMISSIONS), "Night shift"]

        with translation.override("ja"):
            html = render_to_string("home.html", {"roles": roles}, request=request)

        shown = re.findall(r'<strong class="role">([^<]*)</strong>', html)
        assert shown == ["管理者", "エージェント", "スーパーバイザー", "Night shift"]


@pytest.mark.django_db
class TestWhatRoutingStores:
    def test_a_conversation_not_routed_records_its_state_value_whatever_language_is_active(self):
        conversation = ConversationFactory(state=ConversationState.ACTIVE, routing_due_at=timezone.now())

        with translation.override("ja"):
            assert conversation_route(conversation_id=conversation.pk) is None

        conversation.refresh_from_db()
        assert conversation.routing["reason"] == "Its state was 'active' before routing."
        assert conversation.routing_due_at is None
