"""kombu's filesystem transport (the embedded broker) with atomic publishing.

kombu creates a message file and then writes into it; a worker polling the folder can take the file
in between, read nothing, and its consumer dies on the empty message (JSONDecodeError) - the worker
then stops consuming. Here a message is written under a name no consumer matches and renamed into
the queue when complete (a rename within a folder is atomic). Registered under the `filesystem`
alias, so `CELERY_BROKER_URL=filesystem://` uses it; see omnichannel/celery.py."""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        # The same name as kombu's, so that kombu's consumer finds and orders it as usual.
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        # A leading dot: kombu's consumer only takes names of the form "<stamp>.<queue>.msg".
        partial = os.path.join(self.data_folder_out, f".partial-{uuid.uuid4()}")
        try:
            with open(partial, "wb") as file:
                file.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):
    Channel = Channel
