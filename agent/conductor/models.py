"""Model conductors: a local vision-language model (through ``hf-vlm``) and any OpenAI-compatible
chat endpoint (vLLM, ollama, llama.cpp's server, a hosted API), and :func:`make_conductor`.

Both ask the same question (:data:`~agent.conductor.base.SYSTEM_PROMPT` and
:func:`~agent.conductor.base.user_prompt`, with the latest frame as an image) and read the same
one-line answer (:func:`~agent.conductor.base.parse_reply`). Both are ``threaded``: the loop runs
their calls off its own thread, so capture and the safety controls never wait for them.
"""

from __future__ import annotations

import base64
import io
import os
import re
import time
from collections.abc import Sequence

import numpy as np

from agent.conductor.base import (
    SYSTEM_PROMPT,
    ConductorError,
    Decision,
    Goal,
    StepRecord,
    WorkflowConductor,
    parse_reply,
    user_prompt,
)
from agent.errors import UserError
from capture import Frame

IMAGE_MAX_SIDE = 1280
KEY_VARS = ("DW_CONDUCTOR_API_KEY", "OPENAI_API_KEY")
_URL_MODEL = re.compile(r"^(https?://[^/\s:]+(?::\d+)?(?:/[^\s:]*)?):(\S+)$")


def _png(frame: Frame, max_side: int = IMAGE_MAX_SIDE) -> bytes:
    from PIL import Image

    rgb = np.ascontiguousarray(frame.pixels[:, :, 2::-1])
    img = Image.fromarray(rgb)
    if max(img.size) > max_side:
        k = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False, compress_level=1)
    return buf.getvalue()


class OpenAIConductor:
    """Any OpenAI-compatible ``/chat/completions`` endpoint through the ``openai`` SDK.

    The key comes from ``$DW_CONDUCTOR_API_KEY`` or ``$OPENAI_API_KEY`` (local servers take any:
    ``"none"`` is sent when neither is set). ``image=False`` sends text only (for text models).
    """

    threaded = True

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, image: bool = True,
                 timeout: float = 60.0, max_tokens: int = 64):
        try:
            import openai
        except ImportError:
            raise UserError("--conductor openai:... needs the openai package: pip install 'digital-worker[openai]'"
                            ) from None
        key = api_key or next((os.environ[v] for v in KEY_VARS if os.environ.get(v)), "none")
        self.client = openai.OpenAI(base_url=base_url, api_key=key, timeout=timeout, max_retries=1)
        self._errors = (openai.OpenAIError,)
        self.base_url, self.model, self.image, self.max_tokens = base_url, model, image, max_tokens
        self.name = f"openai:{model}"
        self.last_reply = ""
        self.last_latency_s = 0.0

    def messages(self, goal: Goal, frames: Sequence[Frame], history: Sequence[StepRecord]) -> list[dict]:
        text = user_prompt(goal, history)
        if self.image and frames:
            url = "data:image/png;base64," + base64.b64encode(_png(frames[-1])).decode("ascii")
            content: list[dict] | str = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
        else:
            content = text.replace("The current screen is attached. ", "")
        return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]

    def next_step(self, goal: Goal, frames: Sequence[Frame], history: Sequence[StepRecord]) -> Decision:
        t0 = time.perf_counter()
        try:
            resp = self.client.chat.completions.create(model=self.model, messages=self.messages(goal, frames, history),
                                                       max_tokens=self.max_tokens, temperature=0.0)
        except self._errors as e:
            raise ConductorError(f"{self.base_url}: {type(e).__name__}: {e}"[:300]) from None
        finally:
            self.last_latency_s = time.perf_counter() - t0
        try:
            reply = resp.choices[0].message.content or ""
        except (AttributeError, IndexError, TypeError):
            raise ConductorError(f"{self.base_url}: a reply without choices[0].message.content") from None
        self.last_reply = reply
        return parse_reply(reply, goal)


class VLMConductor:
    """A local vision-language model, loaded by the ``hf-vlm`` adapter (:mod:`policies.hf_vlm`:
    a local Qwen2-VL / Qwen2.5-VL / UI-TARS folder, or a random-weights shape for plumbing tests),
    asked the conductor's question instead of the policy's."""

    threaded = True

    def __init__(self, spec: str, device: str = "cpu", max_new_tokens: int = 32):
        from policies.base import PolicyError
        from policies.hf_vlm import load_hf_vlm_policy

        try:
            # its replies are read by parse_reply, not as UI-TARS actions: no need for the ui-tars package
            self.vlm = load_hf_vlm_policy(spec if spec.startswith("hf-vlm:") else f"hf-vlm:{spec}", device=device,
                                          actions=False)
        except PolicyError as e:
            raise UserError(str(e)) from None
        self.name = f"vlm:{self.vlm.name.removeprefix('hf-vlm:')}"
        self.max_new_tokens = max_new_tokens
        self.last_reply = ""
        self.last_latency_s = 0.0

    def prompt(self, goal: Goal, history: Sequence[StepRecord]) -> str:
        return ("<|im_start|>system\n" + SYSTEM_PROMPT + "<|im_end|>\n<|im_start|>user\n"
                + user_prompt(goal, history) + "<|vision_start|><|image_pad|><|vision_end|><|im_end|>\n"
                "<|im_start|>assistant\n")

    def next_step(self, goal: Goal, frames: Sequence[Frame], history: Sequence[StepRecord]) -> Decision:
        import torch
        from PIL import Image

        if not frames:
            raise ConductorError("the VLM conductor needs a frame")
        t0 = time.perf_counter()
        vlm = self.vlm
        img = Image.fromarray(np.ascontiguousarray(frames[-1].pixels[:, :, 2::-1]))
        kw = {"images_kwargs": {"max_pixels": vlm.max_pixels}} if vlm.max_pixels else {}
        text = [self.prompt(goal, history)]
        try:
            enc = vlm.processor(text=text, images=[img], return_tensors="pt", **kw)
        except TypeError:
            enc = vlm.processor(text=text, images=[img], return_tensors="pt")
        enc = enc.to(vlm.device)
        tok = vlm.processor.tokenizer
        with torch.inference_mode():
            out = vlm.model.generate(**enc, max_new_tokens=self.max_new_tokens, do_sample=False,
                                     pad_token_id=tok.pad_token_id)
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        reply = tok.decode([i for i in new if i < len(tok)], skip_special_tokens=True)
        self.last_reply = reply
        self.last_latency_s = time.perf_counter() - t0
        return parse_reply(reply, goal)


def parse_openai_spec(spec: str) -> tuple[str, str]:
    """``openai:URL:MODEL`` -> (URL, MODEL); the model may hold colons (``llava:13b``)."""
    rest = spec.removeprefix("openai:")
    m = _URL_MODEL.match(rest)
    if not m:
        raise UserError(f"--conductor {spec!r}: expected openai:URL:MODEL, e.g. "
                        "openai:http://127.0.0.1:8000/v1:Qwen/Qwen2.5-VL-7B-Instruct")
    return m.group(1), m.group(2)


def make_conductor(spec: str | None, device: str = "cpu"):
    """``workflow`` (default), ``vlm:<folder or shape>`` / ``hf-vlm:...``, or ``openai:URL:MODEL``
    (append ``#text`` to send no image)."""
    spec = (spec or "workflow").strip()
    if spec in ("workflow", "scripted"):
        return WorkflowConductor()
    if spec.startswith(("vlm:", "hf-vlm:")):
        return VLMConductor(spec.split(":", 1)[1], device=device)
    if spec.startswith("openai:"):
        body, _, opt = spec.partition("#")
        url, model = parse_openai_spec(body)
        return OpenAIConductor(url, model, image=opt != "text")
    raise UserError(f"--conductor {spec!r}: expected workflow, vlm:<folder or shape>, or openai:URL:MODEL")


__all__ = ["OpenAIConductor", "VLMConductor", "make_conductor", "parse_openai_spec"]
