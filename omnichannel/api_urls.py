"""Every REST endpoint under /api/v1/, gathered from the apps' routers."""

from rest_framework.routers import DefaultRouter

from agents.api import AgentViewSet, OfferViewSet
from channels_line.api import MessagingAccountViewSet
from routing.api import (
    ChannelInstanceViewSet,
    ClassificationRuleSetViewSet,
    QueueViewSet,
    RouteToQueueRuleViewSet,
    WorkstreamViewSet,
)

from .api import ConversationMessageViewSet, ConversationViewSet

router = DefaultRouter()
router.register("messaging-accounts", MessagingAccountViewSet, basename="messaging-account")
router.register("conversations", ConversationViewSet, basename="conversation")
router.register(
    r"conversations/(?P<conversation_pk>[0-9]+)/messages",
    ConversationMessageViewSet,
    basename="conversation-message",
)
router.register("queues", QueueViewSet, basename="queue")
router.register("workstreams", WorkstreamViewSet, basename="workstream")
router.register(
    r"workstreams/(?P<workstream_pk>[0-9]+)/route-to-queue-rules",
    RouteToQueueRuleViewSet,
    basename="route-to-queue-rule",
)
router.register(
    r"workstreams/(?P<workstream_pk>[0-9]+)/classification-rulesets",
    ClassificationRuleSetViewSet,
    basename="classification-ruleset",
)
router.register("channel-instances", ChannelInstanceViewSet, basename="channel-instance")
router.register("agents", AgentViewSet, basename="agent")
router.register("offers", OfferViewSet, basename="offer")

urlpatterns = router.urls
