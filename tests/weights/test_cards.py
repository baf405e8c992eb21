"""The model cards shipped in weights/: complete, consistent, readable without downloads."""

from __future__ import annotations

from support.hub import (
    DEFAULT_REPO,
)

from deeplabcli.weights.cards import cards_dir, get_card, list_cards


# ---------------------------------------------------------------------------- shipped cards
def test_shipped_cards_are_complete_and_consistent(monkeypatch) -> None:
    monkeypatch.delenv("DEEPLAB_CARDS_DIR", raising=False)
    shipped = list_cards()
    names = {c.name for c in shipped}
    assert {"deeplabv3-mobilenetv2-voc", "deeplabv3-resnet50-voc", "deeplabv3-resnet101-voc",
            "resnet50-imagenet", "resnet101-imagenet"} <= names  # fmt: skip
    assert [c.name for c in shipped if c.default] == ["deeplabv3-mobilenetv2-voc-8bit"]
    assert [c.name for c in shipped if c.embedded] == ["deeplabv3-mobilenetv2-voc-8bit"]
    assert cards_dir().is_dir()
    assert get_card("deeplabv3-mobilenetv2-voc").repo == DEFAULT_REPO
    for card in shipped:
        assert card.license, card.name
        # Google publishes no number for the embedded file; its card says what we measured
        assert (card.metric and card.metric.source) or "Measured with `deeplab eval`" in card.notes
        if card.url:  # torchvision URLs carry their sha256 prefix
            assert card.url.startswith("https://download.pytorch.org/models/"), card.name
            assert len(card.url.rsplit("-", 1)[1].split(".")[0]) == 8, card.name
    assert get_card("deeplabv3-resnet50-voc").metric.value == 66.4
    assert get_card("deeplabv3-resnet101-voc").metric.value == 67.4
