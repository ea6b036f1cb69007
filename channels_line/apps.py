from django.apps import AppConfig


class ChannelsLineConfig(AppConfig):
    name = "channels_line"
    verbose_name = "LINE"
