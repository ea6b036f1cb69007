"""The embedded broker publishes atomically: a consumer never takes a message that is not complete."""

from queue import Empty

import pytest
from kombu import Connection

from omnichannel.broker import Transport


@pytest.fixture
def channel(tmp_path):
    options = {"data_folder_in": str(tmp_path), "data_folder_out": str(tmp_path), "store_processed": False}
    with Connection("filesystem://", transport_options=options) as connection:
        yield connection.default_channel


def test_filesystem_urls_use_the_atomic_transport(channel):
    assert isinstance(channel.connection, Transport)


def test_a_message_is_read_back_whole(channel):
    channel._put("inbound", {"body": "x" * 10_000})
    assert channel._get("inbound") == {"body": "x" * 10_000}
    with pytest.raises(Empty):
        channel._get("inbound")


def test_a_message_still_being_written_is_not_taken(channel, tmp_path):
    # What kombu's own transport leaves visible while writing: an empty file under the queue's name.
    # Ours writes under a name like this one, which the consumer does not take.
    (tmp_path / ".partial-0f1e").write_bytes(b"")
    with pytest.raises(Empty):
        channel._get("inbound")
    channel._put("inbound", {"n": 1})
    assert channel._get("inbound") == {"n": 1}
    assert [p.name for p in tmp_path.iterdir()] == [".partial-0f1e"]
