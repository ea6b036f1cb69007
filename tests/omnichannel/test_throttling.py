"""Sign-in lockout (django-axes) on both sign-in pages, the API's throttles, and a webhook that LINE can
never be refused on for volume."""

from __future__ import annotations

from datetime import timedelta

import pytest
from axes.models import AccessAttempt, AccessLog
from django.conf import settings
from django.core.cache import cache
from django.test import Client
from django.urls import include, path, reverse
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.permissions import AllowAny
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.test import APIClient
from rest_framework.throttling import SimpleRateThrottle
from rest_framework.views import APIView

from tests.channels_line.payloads import body_bytes, load_payload, sign
from tests.factories import TEST_PASSWORD, AdministratorFactory, AgentFactory, LineMessagingAccountFactory

# Requests outside any test transaction: each sign-in attempt and each webhook commits, as in production.
pytestmark = pytest.mark.django_db(transaction=True)

SIGN_IN_PAGES = {"agent sign-in": "login", "admin sign-in": "admin:login"}


@pytest.fixture(autouse=True)
def _no_throttle_history():
    """The throttles count in the cache, a folder under VAR_DIR that outlives a test: start from none."""
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def rates(monkeypatch):
    """Set the API's throttle rates for this test. DRF copies DEFAULT_THROTTLE_RATES onto its throttle
    class when it is imported, so a settings override would not reach it: the class attribute is set
    instead (the settings' own values, from API_THROTTLE_ANON/USER, are checked in test_settings.py)."""

    def set_rates(*, anon: str, user: str) -> None:
        monkeypatch.setattr(SimpleRateThrottle, "THROTTLE_RATES", {"anon": anon, "user": user})

    return set_rates


def sign_in(client: Client, page: str, username: str, password: str):
    return client.post(reverse(page), {"username": username, "password": password, "next": "/"})


def signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


# --- Sign-in lockout ------------------------------------------------------------------------------


@pytest.mark.parametrize("page", SIGN_IN_PAGES.values(), ids=SIGN_IN_PAGES.keys())
def test_a_username_is_locked_out_after_the_failure_limit_even_with_the_right_password(page):
    user = AdministratorFactory()  # staff, so that the admin's sign-in would let them in
    client = Client()
    limit = settings.AXES_FAILURE_LIMIT
    assert limit == 5  # the default (LOGIN_FAILURE_LIMIT)

    for _ in range(limit - 1):
        response = sign_in(client, page, user.username, "wrong password")
        assert response.status_code == 200  # the form again, with its error
    locked = sign_in(client, page, user.username, "wrong password")

    assert locked.status_code == 429
    assert "Sign-in locked" in locked.text
    text = " ".join(locked.text.split())
    assert f"Too many failed sign-ins for <strong>{user.username}</strong> from your address" in text
    assert "Signing in is locked for 15 minutes, even with the right password." in text

    right = sign_in(client, page, user.username, TEST_PASSWORD)
    assert right.status_code == 429
    assert not signed_in(client)


@pytest.mark.parametrize("page", SIGN_IN_PAGES.values(), ids=SIGN_IN_PAGES.keys())
def test_the_right_password_is_accepted_again_after_the_cool_off(page):
    user = AdministratorFactory()
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, page, user.username, "wrong password")
    assert sign_in(client, page, user.username, TEST_PASSWORD).status_code == 429

    # The cool-off passes: the recorded failures are moved back in time rather than waited for.
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )

    response = sign_in(client, page, user.username, TEST_PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)


def test_a_lockout_holds_for_the_username_on_the_other_sign_in_page_too():
    user = AdministratorFactory()
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "login", user.username, "wrong password")

    assert sign_in(client, "admin:login", user.username, TEST_PASSWORD).status_code == 429
    assert not signed_in(client)


def test_failures_of_one_username_do_not_lock_out_another():
    locked, other = AgentFactory(), AgentFactory()
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT):
        sign_in(client, "login", locked.username, "wrong password")

    response = sign_in(client, "login", other.username, TEST_PASSWORD)
    assert response.status_code == 302
    assert signed_in(client)


def test_a_successful_sign_in_clears_the_failures_before_it():
    user = AgentFactory()
    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        sign_in(client, "login", user.username, "wrong password")
    assert sign_in(client, "login", user.username, TEST_PASSWORD).status_code == 302

    client = Client()
    for _ in range(settings.AXES_FAILURE_LIMIT - 1):
        assert sign_in(client, "login", user.username, "wrong password").status_code == 200
    assert sign_in(client, "login", user.username, TEST_PASSWORD).status_code == 302


# --- API throttles --------------------------------------------------------------------------------


class OpenToAnyone(APIView):
    """Every endpoint of the API asks for a signed-in user today (DRF checks permissions before
    throttles, so an anonymous caller gets 401 without being counted); the anonymous rate is for any
    view that lets anonymous callers in, such as the schema if SERVE_PERMISSIONS opened it. This one
    stands for such a view, with the project's defaults: no throttle of its own."""

    permission_classes = [AllowAny]

    def get(self, request: Request) -> Response:
        return Response({"ok": True})


urlpatterns = [path("open/", OpenToAnyone.as_view()), path("", include("omnichannel.urls"))]


@pytest.mark.urls(__name__)
def test_anonymous_api_callers_are_throttled_with_429_and_retry_after(rates):
    rates(anon="3/minute", user="1000/minute")
    client = APIClient()
    answers = [client.get("/open/").status_code for _ in range(3)]
    assert answers == [200, 200, 200]

    throttled = client.get("/open/")

    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    # A signed-in caller from the same address is not counted as anonymous.
    user_client = APIClient()
    user_client.force_authenticate(AgentFactory())
    assert user_client.get("/open/").status_code == 200


def test_signed_in_api_users_are_throttled_each_on_their_own_count(rates):
    rates(anon="1000/minute", user="3/minute")
    busy, other = AdministratorFactory(), AdministratorFactory()
    client, other_client = APIClient(), APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=busy).key}")
    other_client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=other).key}")
    url = reverse("conversation-list")
    assert [client.get(url).status_code for _ in range(3)] == [200, 200, 200]

    throttled = client.get(url)

    assert throttled.status_code == 429
    assert 0 < int(throttled["Retry-After"]) <= 60
    # Same address, another user: counted apart.
    assert other_client.get(url).status_code == 200


# --- The LINE webhook -----------------------------------------------------------------------------


@pytest.mark.urls(__name__)
def test_the_line_webhook_is_never_throttled_nor_watched_by_the_sign_in_lockout(rates, monkeypatch):
    from channels_line.services import intake

    # No worker runs here and what the intake queues is not this test's subject: count, do not send.
    queued: list[list[int]] = []
    monkeypatch.setattr(intake, "processing_enqueue", lambda pks: queued.append(list(pks)) or True)
    rates(anon="1/minute", user="1/minute")
    account = LineMessagingAccountFactory()
    client = Client()  # LINE's calls: anonymous, all from one address
    # The throttles are on: this address is already over the anonymous API rate.
    APIClient().get("/open/")
    assert APIClient().get("/open/").status_code == 429

    answers = []
    for _ in range(40):
        body = body_bytes(load_payload("message_text__user", fresh=True))
        response = client.post(
            reverse("line-webhook", args=[account.pk]),
            data=body,
            content_type="application/json; charset=utf-8",
            HTTP_X_LINE_SIGNATURE=sign(body, account.line.channel_secret),
        )
        answers.append(response.status_code)

    assert answers == [200] * 40
    assert len(queued) == 40
    assert AccessAttempt.objects.count() == 0
    assert AccessLog.objects.count() == 0
