"""Configuration of the pixel-transformer policy family (a transformers ``PretrainedConfig``): a
core of sizes and visual input, and two optional, nested parts: ``grounding`` (how the
instruction's words are found on the screen) and ``refiners`` (how a chosen glimpse becomes a
point)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

from transformers import PretrainedConfig

CONFIG_VERSION = 2  # 2: grounding and refiners nested (1: flat match_* fields; policies.pixel.convert)

ACTION_TYPES = ("move", "click", "mouse_down", "mouse_up", "drag", "scroll", "key", "type", "wait", "done")
BUTTONS = ("left", "right", "middle")
KEYS = (
    "enter", "tab", "escape", "backspace", "delete", "space", "up", "down", "left", "right",
    "home", "end", "pageup", "pagedown", "shift+tab", "ctrl+a", "ctrl+c", "ctrl+v", "ctrl+x",
    "ctrl+z", "ctrl+s", "ctrl+w", "alt+f4", "alt+tab", "f1", "f2", "f5", "ctrl+enter",
)
MAX_RECENT = 4  # recent video: past views a step may see
SCROLL_MAX = 5  # scroll notches are classified in [-SCROLL_MAX, SCROLL_MAX]
WAIT_BINS = (0.0, 0.05, 0.1, 0.2, 0.5, 1.0)

# name -> (hidden size, layers, heads, glimpses). Parameter counts: ~1M, ~5M, ~20M, ~80M.
# pixel-tiny trades glimpses, a layer and stem width for its 5 ms step budget on 2 CPU cores;
# pixel-small takes 48 glimpses so a window's small targets are nearly always among them.
SIZES: dict[str, dict] = {
    "pixel-tiny": {"hidden_size": 128, "num_layers": 3, "num_heads": 4, "max_glimpses": 24, "stem_channels": 16},
    "pixel-small": {"hidden_size": 256, "num_layers": 6, "num_heads": 8, "max_glimpses": 48, "stem_channels": 32},
    "pixel-base": {"hidden_size": 448, "num_layers": 8, "num_heads": 8, "max_glimpses": 40, "stem_channels": 48},
    "pixel-large": {"hidden_size": 768, "num_layers": 11, "num_heads": 12, "max_glimpses": 48, "stem_channels": 64},
}
TARGET_PARAMS = {"pixel-tiny": 1e6, "pixel-small": 5e6, "pixel-base": 20e6, "pixel-large": 80e6}


def _strict(cls, d: dict, what: str):
    """``cls(**d)``, naming any unknown key."""
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - names)
    if unknown:
        raise ValueError(f"{what}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}")
    return cls(**d)


@dataclass
class ActionVocab:
    """What the heads choose among: action types, buttons, key combos, scroll notches, wait bins."""

    types: list = field(default_factory=lambda: list(ACTION_TYPES))
    buttons: list = field(default_factory=lambda: list(BUTTONS))
    keys: list = field(default_factory=lambda: list(KEYS))
    scroll_max: int = SCROLL_MAX
    wait_bins: list = field(default_factory=lambda: list(WAIT_BINS))


@dataclass
class ReaderSpec:
    """The frozen reader of a ``reader`` grounding: its stem (``reader`` or ``reader-relu``: a slot
    reader; ``reader-ctc``: one that spells, :class:`policies.pixel.vision.CtcReader`), width and
    head width (as pretrained by ``dw reader``)."""

    stem: str = "reader"
    channels: int = 32
    head: int = 512


@dataclass
class GroundingConfig:
    """How instruction words are found on the screen (:mod:`policies.pixel.grounding`).

    - ``kind``: ``reader`` (a pretrained reader names the word centred in each read window) or
      ``template`` (each instruction word is drawn in each of ``styles`` and matched by normalised
      cross-correlation: :mod:`policies.pixel.templates`).
    - ``window`` ``[w, h]`` points, read at ``window_px`` ``[w, h]`` pixels: four read windows per
      glimpse, one centred on each quarter of its tile.
    - ``slots``: word summaries each glimpse token learns its matches through.
    - ``reach``: a word's match spreads this many tiles around it (a label names the field beside
      it), by a state-chosen mix of ``kernels`` learned kernels; 0: no spread.
    - ``reader`` (kind ``reader``): the reader's shape; ``order``: the step also learns whether the
      number on screen is below, equal to or above the instruction's (a slider, a spin box).
    - ``styles`` (kind ``template``): ``[font file, pixel size, underlined]`` per drawing: data of the
      suite the model was trained for, saved with the checkpoint.
    """

    kind: str = "reader"
    window: list = field(default_factory=lambda: [128, 64])
    window_px: list | None = None
    slots: int = 4
    reach: int = 0
    kernels: int = 4
    reader: ReaderSpec | None = None
    order: bool = False
    styles: list | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("reader", "template"):
            raise ValueError(f"grounding kind {self.kind!r}: choose reader or template")
        self.window = [int(v) for v in self.window]
        self.window_px = [int(v) for v in (self.window_px or self.window)]
        if len(self.window) != 2 or len(self.window_px) != 2 or min(self.window + self.window_px) < 1:
            raise ValueError("grounding window and window_px are [width, height], positive")
        if self.kind == "reader":
            r = self.reader or {}
            self.reader = r if isinstance(r, ReaderSpec) else _strict(ReaderSpec, r, "grounding.reader")
            if self.styles:
                raise ValueError("grounding styles are drawings of a template grounding, not a reader's")
        else:
            if self.reader is not None or self.order:
                raise ValueError("a template grounding has no reader (nor its number order)")
            if not self.styles:
                raise ValueError("a template grounding needs styles: [[font file, pixel size, underlined], ...]")
            self.styles = [[str(f), float(px), bool(u)] for f, px, u in self.styles]


REFINERS = ("where", "snap", "cells")


@dataclass
class RefinerConfig:
    """One point refiner (:mod:`policies.pixel.refiners`), applied in the listed order:

    - ``where``: each pointer's offset head also learns which of a glimpse's read windows held its
      word; ``near``: and an offset per window, chosen where it or its neighbours (the reach)
      read the word (needs a grounding, and ``near`` its ``reach``);
    - ``snap``: the offset may move to where the word's drawing matched (a template grounding);
    - ``cells``: the pointer chooses one of a glimpse's 6x6 middle cells and a point in it, where
      that beats the offset head's point (a radio button named by its kind, not a word).
    """

    kind: str
    near: bool = False

    def __post_init__(self) -> None:
        if self.kind not in REFINERS:
            raise ValueError(f"unknown refiner {self.kind!r}; choose among {', '.join(REFINERS)}")
        if self.near and self.kind != "where":
            raise ValueError("near is an option of the where refiner")


class PixelConfig(PretrainedConfig):
    """Sizes of the model and of its visual input, and its optional grounding and refiners.

    The visual input is defined in *logical points* (physical pixels / screen scale), so one
    checkpoint serves 640x480 at scale 1 and 5120x2880 at scale 2 alike:

    - a global view: the whole screen area-averaged to ``global_w`` x ``global_h`` pixels, cut
      into ``patch`` x ``patch`` patches (one token each);
    - up to ``max_glimpses`` glimpses: the screen is tiled into ``tile_pt`` x ``tile_pt`` point
      tiles (on a grid of ``cell_pt``-point cells); the tiles with the most visual content (edges:
      neighbouring cells more than ``content_threshold`` grey levels apart, low enough for a dark
      look's fields, 8 levels off the window) are cropped from the full-resolution frame and
      resampled to ``glimpse_px`` pixels each side, one token each, encoded by a patch stem
      ``stem_channels`` wide, with their box as position. Labels stay legible on every screen.

    ``recent``: recent video. For each entry, L seconds, the step also sees the global view of the
    newest frame it saw at least L seconds before this one (the episode's first frame while the
    episode is younger), as its change from the current view: whether a click had an effect, a
    pop-up that just appeared, a spinner still turning. Empty: one frame (every checkpoint before
    2026-12-07).

    ``actions``: the heads' vocabulary (:class:`ActionVocab`); ``grounding``
    (:class:`GroundingConfig`) and ``refiners`` (:class:`RefinerConfig` each): optional parts,
    stored as plain dicts in ``config.json``.
    """

    model_type = "dw-pixel"

    def __init__(
        self,
        hidden_size: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        global_w: int = 64,
        global_h: int = 40,
        patch: int = 8,
        cell_pt: int = 8,
        tile_pt: int = 64,
        glimpse_px: int = 48,
        max_glimpses: int = 24,
        stem_channels: int = 24,
        content_threshold: int = 5,  # 10 until 2026-12-06: a dark look's fields fell below it
        max_text: int = 96,
        history: int = 4,
        recent: list | None = None,
        actions: dict | None = None,
        grounding: dict | None = None,
        refiners: list | None = None,
        size_name: str = "",
        config_version: int = CONFIG_VERSION,
        **kwargs,
    ):
        legacy = sorted(k for k in kwargs if k.startswith("match") or k in LEGACY_KEYS)
        if legacy or config_version != CONFIG_VERSION:
            raise ValueError(f"a config of version {config_version if not legacy else 1} (fields "
                             f"{', '.join(legacy[:4]) or 'config_version'} ...): convert the checkpoint with "
                             "`python scripts/convert_checkpoint.py OLD NEW`")
        if tile_pt < cell_pt or tile_pt % cell_pt:
            raise ValueError(f"tile_pt {tile_pt} must be a positive multiple of the {cell_pt}-point cell (cell_pt)")
        if max_glimpses < 1:
            raise ValueError(f"max_glimpses must be at least 1, not {max_glimpses}")
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.mlp_ratio = mlp_ratio
        self.dropout = dropout
        self.global_w = global_w
        self.global_h = global_h
        self.patch = patch
        self.cell_pt = cell_pt
        self.tile_pt = tile_pt
        self.glimpse_px = glimpse_px
        self.max_glimpses = max_glimpses
        self.stem_channels = stem_channels
        self.content_threshold = content_threshold
        self.max_text = max_text
        self.history = history
        recent = [float(v) for v in recent or ()]
        if len(recent) > MAX_RECENT or any(not 0 < v <= 60 for v in recent) or recent != sorted(set(recent)):
            raise ValueError(f"recent: at most {MAX_RECENT} increasing lags in seconds, each in (0, 60], not {recent}")
        self.recent = recent
        vocab = actions if isinstance(actions, ActionVocab) else _strict(ActionVocab, actions or {}, "actions")
        self.actions = asdict(vocab)
        g = grounding
        if g is not None and not isinstance(g, GroundingConfig):
            g = _strict(GroundingConfig, dict(g), "grounding")
        self.grounding = asdict(g) if g is not None else None
        rs = [r if isinstance(r, RefinerConfig) else _strict(RefinerConfig, dict(r), "refiners") for r in refiners or ()]
        kinds = [r.kind for r in rs]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"a refiner is listed twice: {kinds}")
        if ("where" in kinds or "snap" in kinds) and g is None:
            raise ValueError("the where and snap refiners place what a grounding found: give a grounding")
        if "snap" in kinds and g.kind != "template":
            raise ValueError("the snap refiner moves to where a word's drawing matched: it needs a template grounding")
        if any(r.near for r in rs) and not g.reach:
            raise ValueError("the where refiner's near option spreads over the grounding's reach: give a reach")
        if "cells" in kinds and glimpse_px % 8:
            raise ValueError("the cells refiner chooses among the stem's middle cells: glimpses a multiple of 8 pixels")
        self.refiners = [asdict(r) for r in rs]
        self.size_name = size_name
        self.config_version = config_version
        super().__init__(**kwargs)

    # -- the nested parts, parsed ---------------------------------------------------------------
    @property
    def vocab(self) -> ActionVocab:
        return ActionVocab(**self.actions)

    @property
    def action_types(self) -> list[str]:
        return self.actions["types"]

    @property
    def buttons(self) -> list[str]:
        return self.actions["buttons"]

    @property
    def keys(self) -> list[str]:
        return self.actions["keys"]

    @property
    def scroll_max(self) -> int:
        return self.actions["scroll_max"]

    @property
    def wait_bins(self) -> list[float]:
        return self.actions["wait_bins"]

    @property
    def grounding_config(self) -> GroundingConfig | None:
        return GroundingConfig(**self.grounding) if self.grounding else None

    @property
    def refiner_configs(self) -> list[RefinerConfig]:
        return [RefinerConfig(**r) for r in self.refiners]

    @property
    def num_global(self) -> int:
        return (self.global_w // self.patch) * (self.global_h // self.patch)

    @property
    def read_window(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """((w, h) points, (w, h) pixels) of the read windows a grounding takes, or None."""
        g = self.grounding
        return (tuple(g["window"]), tuple(g["window_px"])) if g else None

    @property
    def read_px(self) -> tuple[int, int]:
        """(height, width) in pixels of a read window."""
        w, h = self.grounding["window_px"]
        return h, w

    @classmethod
    def for_size(cls, name: str, **overrides) -> PixelConfig:
        if name not in SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(SIZES)}")
        return cls(**{**SIZES[name], "size_name": name, **overrides})


# fields of a version-1 config (besides match*), moved or gone in version 2
LEGACY_KEYS = ("cell_offsets", "stem", "action_types", "buttons", "keys", "scroll_max", "wait_bins")
