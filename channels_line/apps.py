from django.apps import AppConfig


class ChannelsLineConfig(AppConfig):
    name = "channels_line"
    verbose_name = "LINE"

    def ready(self) -> None:
        from omnichannel.channels import channel_register
        from omnichannel.models import ChannelType

        from .adapter import LineChannel

        channel_register(ChannelType.LINE, LineChannel())
