"""Tool config secrets: sealed on save, masked when shown, kept when sent back masked."""

from __future__ import annotations

import pytest

from infra.secrets import decrypt
from infra.tools.sealing import SECRET_MASK, NoSecretToKeep, masked_config, seal_config

KEY = "test-secret-key-for-sealing-0123456789"
MASKED = {"value": SECRET_MASK, "secret": True}


def test_secret_values_are_encrypted_and_plain_ones_kept() -> None:
    stored = seal_config(
        {
            "url": "http://x",
            "headers": {
                "Authorization": {"value": "Bearer t", "secret": True},
                "X-Plain": {"value": "shown", "secret": False},
                "X-Bare": "also shown",
            },
        },
        None,
        KEY,
    )
    auth = stored["headers"]["Authorization"]
    assert auth["secret"] is True and decrypt(auth["value"], KEY) == "Bearer t"
    assert stored["headers"]["X-Plain"] == "shown" and stored["headers"]["X-Bare"] == "also shown"
    assert masked_config(stored)["headers"] == {
        "Authorization": MASKED,
        "X-Plain": "shown",
        "X-Bare": "also shown",
    }
    assert stored["url"] == "http://x"


def test_env_values_are_always_secret() -> None:
    stored = seal_config({"env": {"TOKEN": "abc"}}, None, KEY)
    assert decrypt(stored["env"]["TOKEN"]["value"], KEY) == "abc"
    assert masked_config(stored)["env"] == {"TOKEN": MASKED}


def test_the_mask_sent_back_keeps_the_stored_value() -> None:
    stored = seal_config({"headers": {"A": {"value": "one", "secret": True}}}, None, KEY)
    for sent in (SECRET_MASK, MASKED):
        again = seal_config({"headers": {"A": sent}}, stored, KEY)
        assert again["headers"]["A"] == stored["headers"]["A"]
    with pytest.raises(NoSecretToKeep) as refused:
        seal_config({"headers": {"B": SECRET_MASK}}, stored, KEY)
    assert (refused.value.field, refused.value.key) == ("headers", "B")
