"""Tokenizers: a built-in byte tokenizer and Hugging Face `tokenizer.json` files.

Both implement the `Tokenizer` protocol: `vocab_size`, `pad_id`, `bos_id`,
`eos_id`, `stop_ids`, `encode`, `decode`, `apply_chat_template` and `save`.

This module is jax-free (the checker may import it). The `tokenizers` library
is imported only when an HF tokenizer is loaded or a tokenizer is saved, and
`jinja2` only when a chat template is rendered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

Message = Mapping[str, Any]  # {"role": "user", "content": "..."} as in HF chat templates


class TokenizerError(ValueError):
    """A tokenizer directory or call that cannot be used; the message says how to fix it."""


@runtime_checkable
class Tokenizer(Protocol):
    vocab_size: int
    pad_id: int
    bos_id: int | None  # None: the model family has no BOS token (e.g. Qwen)
    eos_id: int
    stop_ids: tuple[int, ...]  # every id that ends a generation (eos_id first)

    def encode(self, text: str, add_bos: bool = False) -> list[int]: ...
    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str: ...
    def apply_chat_template(
        self, messages: Sequence[Message], add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str: ...
    def save(self, directory: str | Path) -> None: ...


# GPT-2's reversible byte -> printable-unicode map, which the HF ByteLevel
# pre-tokenizer uses; needed to write the byte tokenizer as a tokenizer.json.
def _bytes_to_unicode() -> dict[int, str]:
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


class ByteTokenizer:
    """UTF-8 bytes as tokens: ids 0..255 are bytes, then pad 256, bos 257, eos 258.

    Needs no files. Text that looks like a special token (e.g. "<|eos|>") is
    encoded as its bytes: only ids 256..258 are special.
    """

    PAD, BOS, EOS = "<|pad|>", "<|bos|>", "<|eos|>"
    BOS_ID = 257

    def __init__(self) -> None:
        self.pad_id = 256
        self.bos_id: int | None = 257
        self.eos_id = 258
        self.stop_ids: tuple[int, ...] = (258,)
        self.vocab_size = 259

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        ids = list(text.encode("utf-8"))
        return [257, *ids] if add_bos else ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        names = {256: self.PAD, 257: self.BOS, 258: self.EOS}
        out: list[str] = []
        pending = bytearray()
        for i in ids:
            i = int(i)
            if 0 <= i < 256:
                pending.append(i)
                continue
            if i not in names:
                raise TokenizerError(
                    f"token id {i} is outside the byte tokenizer's vocabulary (0..258); "
                    "was this sequence produced by a model with a different tokenizer?"
                )
            out.append(pending.decode("utf-8", errors="replace"))
            pending.clear()
            if not skip_special:
                out.append(names[i])
        out.append(pending.decode("utf-8", errors="replace"))
        return "".join(out)

    def apply_chat_template(
        self, messages: Sequence[Message], add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """A plain built-in template: one "role: content" line per message.

        With `add_generation_prompt`, ends with "assistant: " so the model
        continues as the assistant. Like the many HF templates without a tool
        section, it does not list `tools` (a model learns the calls from its SFT
        transcripts: `tool_format = "hermes"`).
        """
        lines = []
        for n, message in enumerate(messages):
            if "role" not in message or "content" not in message:
                raise TokenizerError(
                    f"chat message {n} needs 'role' and 'content' keys, got {sorted(message)}"
                )
            lines.append(f"{message['role']}: {message['content']}\n")
        if add_generation_prompt:
            lines.append("assistant: ")
        return "".join(lines)

    def save(self, directory: str | Path) -> None:
        """Write an equivalent HF tokenizer (byte-level BPE without merges).

        `HFTokenizer.from_dir` and transformers' `AutoTokenizer` load the result
        and give the same ids as this tokenizer for ordinary text.
        """
        from tokenizers import AddedToken, decoders, models, pre_tokenizers
        from tokenizers import Tokenizer as HFCore

        byte_chars = _bytes_to_unicode()
        core = HFCore(models.BPE(vocab={byte_chars[b]: b for b in range(256)}, merges=[]))
        core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        core.decoder = decoders.ByteLevel()
        core.add_special_tokens(
            [AddedToken(t, special=True) for t in (self.PAD, self.BOS, self.EOS)]
        )
        _prepend_bos(core, self.BOS, self.BOS_ID)
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.BOS,
            "eos_token": self.EOS,
            "pad_token": self.PAD,
            # Training puts bos first (runtime/data.py): transformers must too, or a plain
            # `tok(prompt)` + `generate` sees a sequence the model never saw. The
            # post-processor adds it; the flag says so to code that reads it.
            "add_bos_token": True,
            "clean_up_tokenization_spaces": False,
            "chat_template": _BYTE_CHAT_TEMPLATE,
        }
        _write_tokenizer_dir(Path(directory), core, config)


# The ByteTokenizer's built-in template in jinja form, written on save so the
# exported tokenizer renders chats exactly as `ByteTokenizer.apply_chat_template`.
_BYTE_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


def _prepend_bos(core: Any, bos_token: str, bos_id: int) -> None:
    """Make `core.encode(text)` (special tokens on, as transformers calls it) start with bos.

    tnx trains every sequence as bos + text (runtime/data.py); an exported tokenizer whose
    post-processor does not add that bos makes transformers' `tok(prompt)` + `generate`
    diverge from what tnx generates. A post-processor that already adds it is kept.
    """
    from tokenizers import processors

    probe = core.encode("a", add_special_tokens=True).ids
    if probe and probe[0] == bos_id:
        return
    core.post_processor = processors.TemplateProcessing(
        single=f"{bos_token} $A", pair=f"{bos_token} $A $B:1",
        special_tokens=[(bos_token, bos_id)])


def _write_tokenizer_dir(directory: Path, core: Any, config: Mapping[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    core.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps(dict(config), indent=2) + "\n")


def _token_content(value: Any) -> str | None:
    """tokenizer_config.json spells a special token as a string or {"content": ...}."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def _read_json(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise TokenizerError(f"{path}: not valid JSON ({err}); fix or remove the file") from err


def _ids_from(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, list) else [int(value)]


class HFTokenizer:
    """A Hugging Face fast tokenizer directory: tokenizer.json (+ tokenizer_config.json).

    Special ids come from tokenizer_config.json's `bos_token`/`eos_token`/
    `pad_token`, falling back to config.json / generation_config.json ids.
    Without a pad token, `pad_id` is `eos_id` (padding is always masked, so
    the id only needs to be a valid one).
    """

    def __init__(
        self,
        core: Any,
        config: Mapping[str, Any],
        model_config: Mapping[str, Any] | None = None,
        generation_config: Mapping[str, Any] | None = None,
        source: str = "<memory>",
    ) -> None:
        self._core = core
        self._config = dict(config)
        self.source = source
        model_config = model_config or {}
        generation_config = generation_config or {}
        self.vocab_size = int(core.get_vocab_size(with_added_tokens=True))

        def special(name: str) -> int | None:
            content = _token_content(self._config.get(f"{name}_token"))
            if content is not None:
                token_id = core.token_to_id(content)
                if token_id is None:
                    raise TokenizerError(
                        f"{source}: tokenizer_config.json names {name}_token {content!r}, "
                        "which tokenizer.json does not contain; fix the token or remove the entry"
                    )
                return int(token_id)
            for fallback in (generation_config, model_config):
                ids = _ids_from(fallback.get(f"{name}_token_id"))
                if ids:
                    return ids[0]
            return None

        self.bos_id = special("bos")
        eos_id = special("eos")
        if eos_id is None:
            raise TokenizerError(
                f"{source}: no eos token found; set 'eos_token' in tokenizer_config.json "
                "or 'eos_token_id' in config.json"
            )
        self.eos_id = eos_id
        pad_id = special("pad")
        self.pad_id = eos_id if pad_id is None else pad_id
        # Instruct models often stop on several ids (Llama 3: <|eot_id|> and <|end_of_text|>).
        stops = [eos_id]
        for extra in (generation_config, model_config):
            stops += [i for i in _ids_from(extra.get("eos_token_id")) if i not in stops]
        self.stop_ids = tuple(stops)
        self._special_ids = {
            int(i) for i in (self.bos_id, self.eos_id, self.pad_id) if i is not None
        }

    @classmethod
    def from_dir(cls, directory: str | Path) -> HFTokenizer:
        directory = Path(directory)
        tokenizer_file = directory / "tokenizer.json"
        if not tokenizer_file.exists():
            raise TokenizerError(
                f"{directory}: no tokenizer.json; only fast (tokenizers-library) tokenizers "
                "are supported. Convert a slow tokenizer with transformers: "
                "AutoTokenizer.from_pretrained(dir).save_pretrained(dir)"
            )
        from tokenizers import Tokenizer as HFCore

        try:
            core = HFCore.from_file(str(tokenizer_file))
        except Exception as err:  # the Rust side raises plain Exception subclasses
            raise TokenizerError(
                f"{tokenizer_file}: cannot be read by `tokenizers` ({err})"
            ) from err
        return cls(
            core,
            _read_json(directory / "tokenizer_config.json"),
            _read_json(directory / "config.json"),
            _read_json(directory / "generation_config.json"),
            source=str(directory),
        )

    @property
    def chat_template(self) -> str | None:
        template = self._config.get("chat_template")
        if isinstance(template, list):  # [{"name": "default", "template": ...}, ...]
            named = {t.get("name"): t.get("template") for t in template}
            template = named.get("default")
        return template

    def encode(self, text: str, add_bos: bool = False) -> list[int]:
        """Token ids of `text`; no special tokens except a BOS when asked and the model has one.

        The tokenizer.json post-processor (which may add BOS on its own) is not
        applied, so the result is the same whatever that file says.
        """
        ids = list(self._core.encode(text, add_special_tokens=False).ids)
        if add_bos and self.bos_id is not None:
            ids.insert(0, self.bos_id)
        return ids

    def decode(self, ids: Sequence[int], skip_special: bool = True) -> str:
        ids = [int(i) for i in ids]
        if skip_special:  # also drop pad/eos ids that are not marked special in tokenizer.json
            ids = [i for i in ids if i not in self._special_ids]
        return self._core.decode(ids, skip_special_tokens=skip_special)

    def apply_chat_template(
        self, messages: Sequence[Message], add_generation_prompt: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
    ) -> str:
        """Render tokenizer_config.json's jinja `chat_template` the way transformers does;
        `tools` (JSON schemas, `{"type": "function", "function": {...}}`) is the template's
        `tools` variable, which tool-aware templates list for the model (None: no tools)."""
        template = self.chat_template
        if template is None:
            raise TokenizerError(
                f"{self.source}: tokenizer_config.json has no 'chat_template'; "
                "use a chat model's tokenizer or format prompts yourself"
            )
        try:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as err:
            raise TokenizerError("chat templates need jinja2: pip install jinja2") from err

        def raise_exception(message: str) -> None:
            raise TokenizerError(f"{self.source}: chat template refused the messages: {message}")

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"]
        )
        env.filters["tojson"] = lambda x, indent=None: json.dumps(
            x, ensure_ascii=False, indent=indent
        )
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        specials = {
            key: _token_content(value)
            for key, value in self._config.items()
            if key.endswith("_token") and _token_content(value) is not None
        }
        try:
            return env.from_string(template).render(
                messages=list(messages), add_generation_prompt=add_generation_prompt,
                tools=None if tools is None else list(tools), **specials
            )
        except jinja2.TemplateError as err:
            raise TokenizerError(f"{self.source}: chat template failed: {err}") from err

    def save(self, directory: str | Path) -> None:
        """Write tokenizer.json and tokenizer_config.json to `directory`.

        The config is written as loaded, with special tokens as plain strings
        (transformers 5 rejects some older dict spellings) and the bos/eos
        tokens added when they came from config.json ids.
        """
        config = dict(self._config)
        config.setdefault("tokenizer_class", "PreTrainedTokenizerFast")
        for key, value in self._config.items():
            if key.endswith("_token") and isinstance(value, dict):
                config[key] = _token_content(value)
        for name, token_id in (("bos", self.bos_id), ("eos", self.eos_id)):
            if token_id is not None and _token_content(config.get(f"{name}_token")) is None:
                config[f"{name}_token"] = self._core.id_to_token(token_id)
        core = self._core
        if self.bos_id is not None:  # tnx trained with bos first: transformers must add it too
            from tokenizers import Tokenizer as HFCore

            core = HFCore.from_str(self._core.to_str())  # a copy: `self` keeps its own file
            _prepend_bos(core, self._core.id_to_token(self.bos_id), self.bos_id)
            config["add_bos_token"] = True
        _write_tokenizer_dir(Path(directory), core, config)


def load_tokenizer(spec: str | Path) -> Tokenizer:
    """The built-in byte tokenizer for "bytes", otherwise an HF tokenizer directory."""
    if str(spec) == "bytes":
        return ByteTokenizer()
    return HFTokenizer.from_dir(spec)
