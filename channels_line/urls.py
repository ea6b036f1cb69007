from django.urls import path

from . import views

urlpatterns = [
    path("<str:account_id>/", views.line_webhook, name="line-webhook"),
]
