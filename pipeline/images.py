"""The plain image task: augmented images and their labels, for supervised training (the upper
bound of the comparison) and for the frozen-feature linear evaluation."""

from __future__ import annotations

from dataclasses import dataclass

from .ops import to_chw


@dataclass(frozen=True)
class ImageParams:
    # ImageNet mean/std normalisation would hide nothing the trunk cannot learn; [-1, 1] keeps one
    # input convention across every task so a trunk transfers between them unchanged.
    pass


def generate(images, cfg) -> dict:
    return {"image": to_chw(images, cfg)}
