"""Every REST endpoint under /api/v1/, gathered from the apps' routers."""

from rest_framework.routers import DefaultRouter

from channels_line.api import MessagingAccountViewSet

from .api import ConversationMessageViewSet, ConversationViewSet

router = DefaultRouter()
router.register("messaging-accounts", MessagingAccountViewSet, basename="messaging-account")
router.register("conversations", ConversationViewSet, basename="conversation")
router.register(
    r"conversations/(?P<conversation_pk>[0-9]+)/messages",
    ConversationMessageViewSet,
    basename="conversation-message",
)

urlpatterns = router.urls
