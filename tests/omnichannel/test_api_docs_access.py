"""Who may read the API's schema and its docs page: signed-in users (session or token), like the API."""

from __future__ import annotations

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from tests.factories import AgentFactory

pytestmark = pytest.mark.django_db


def test_the_schema_refuses_a_caller_who_is_not_signed_in():
    response = APIClient().get("/api/schema/")
    assert response.status_code == 401
    assert "/api/v1/conversations/" not in response.content.decode()


def test_the_schema_is_served_to_a_token_holder_with_every_endpoint():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=AgentFactory()).key}")

    response = client.get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")

    assert response.status_code == 200
    schema = response.json()
    assert schema["info"]["title"] == "Omnichannel back office API"
    assert "/api/v1/conversations/" in schema["paths"]
    assert "/api/v1/messaging-accounts/" in schema["paths"]  # the whole API, whatever the caller's role


def test_the_schema_is_served_to_a_signed_in_session():
    client = Client()
    client.force_login(AgentFactory())
    assert client.get("/api/schema/").status_code == 200


def test_the_docs_page_sends_a_visitor_who_is_not_signed_in_to_the_sign_in_page():
    response = Client().get("/api/docs/")
    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/api/docs/"


def test_the_docs_page_loads_swagger_ui_from_this_server_not_a_cdn():
    client = Client()
    client.force_login(AgentFactory())

    page = client.get("/api/docs/").content.decode()

    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in page
    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui.css" in page
    assert "cdn.jsdelivr.net" not in page
    assert "https://" not in page
