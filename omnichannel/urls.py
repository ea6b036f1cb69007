from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from . import views

admin.site.site_header = "Omnichannel back office"
admin.site.site_title = "Omnichannel admin"
admin.site.index_title = "Set-up"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    # Early in the list: LINE's webhook calls are the busiest path.
    path("webhooks/line/", include("channels_line.urls")),
    path("files/<str:token>/", views.attachment_download, name="attachment-download"),
    path("attachments/<int:pk>/", views.attachment_open, name="attachment-open"),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("inbox/", include("agents.urls")),
    path("admin/", admin.site.urls),
    # For signed-in users only (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"], README "REST API"); a
    # browser that is not signed in is sent to the sign-in page rather than shown a 403.
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="api-schema")), name="api-docs"),
    path("api/v1/", include("omnichannel.api_urls")),
]
