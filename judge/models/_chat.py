"""One prompt layout for every back end, and its translation into each back end's format.

A Yes/No query is one user turn with parts [instructions][image][question]; with no image
there is no image part at all, so the prompt has no image tokens. Each back end renders the
turns with the model's own chat template (vLLM on its side, transformers through the
processor), so all three see the same token sequence.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

from PIL import Image

from judge.models.base import Chat, Message, YesNoQuery


def yes_no_chat(query: YesNoQuery) -> list[Message]:
    """The chat that asks `query`: one user turn [instructions][image][question]."""
    if query.image is None:
        return [Message.user(query.instructions, query.question)]
    return [Message.user(query.instructions, query.image, query.question)]


def rgb(image: Image.Image) -> Image.Image:
    """The image as RGB, transparency composited on white, so every back end sees the
    same pixels (servers would otherwise each drop alpha their own way)."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return image.convert("RGB")


def png_data_url(image: Image.Image) -> str:
    """A lossless `data:image/png;base64,...` URL of the image (as RGB)."""
    buffer = io.BytesIO()
    rgb(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_images(chat: Chat) -> list[Image.Image]:
    """The images of a chat, in order."""
    return [p for m in chat for p in m.parts if isinstance(p, Image.Image)]


def to_openai(chat: Chat, urls: dict[int, str]) -> list[dict[str, Any]]:
    """OpenAI chat messages; `urls` maps `id(image)` to its data URL."""
    messages: list[dict[str, Any]] = []
    for message in chat:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, Image.Image):
                content.append({"type": "image_url", "image_url": {"url": urls[id(part)]}})
            else:
                content.append({"type": "text", "text": part})
        messages.append({"role": message.role, "content": content})
    return messages


def to_vllm(chat: Chat) -> list[dict[str, Any]]:
    """Messages for `vllm.LLM.chat`, with images passed as PIL objects."""
    messages: list[dict[str, Any]] = []
    for message in chat:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, Image.Image):
                content.append({"type": "image_pil", "image_pil": rgb(part)})
            else:
                content.append({"type": "text", "text": part})
        messages.append({"role": message.role, "content": content})
    return messages


def to_hf(chat: Chat) -> tuple[list[dict[str, Any]], list[Image.Image]]:
    """Messages for a transformers processor's chat template, and the images in order."""
    messages: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    for message in chat:
        content: list[dict[str, Any]] = []
        for part in message.parts:
            if isinstance(part, Image.Image):
                content.append({"type": "image"})
                images.append(rgb(part))
            else:
                content.append({"type": "text", "text": part})
        messages.append({"role": message.role, "content": content})
    return messages, images


def unique_images(chats: Sequence[Chat]) -> list[Image.Image]:
    """Each distinct image object of `chats` once (many queries share one image)."""
    seen: dict[int, Image.Image] = {}
    for chat in chats:
        for image in chat_images(chat):
            seen.setdefault(id(image), image)
    return list(seen.values())
