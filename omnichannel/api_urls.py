"""Every REST endpoint under /api/v1/, gathered from the apps' routers."""

from rest_framework.routers import DefaultRouter

router = DefaultRouter()

urlpatterns = router.urls
