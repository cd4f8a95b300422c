"""Configuration of the pixel-transformer policy family (a transformers ``PretrainedConfig``)."""

from __future__ import annotations

from transformers import PretrainedConfig

ACTION_TYPES = ("move", "click", "mouse_down", "mouse_up", "drag", "scroll", "key", "type", "wait", "done")
BUTTONS = ("left", "right", "middle")
KEYS = (
    "enter", "tab", "escape", "backspace", "delete", "space", "up", "down", "left", "right",
    "home", "end", "pageup", "pagedown", "shift+tab", "ctrl+a", "ctrl+c", "ctrl+v", "ctrl+x",
    "ctrl+z", "ctrl+s", "ctrl+w", "alt+f4", "alt+tab", "f1", "f2", "f5", "ctrl+enter",
)
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


class PixelConfig(PretrainedConfig):
    """Sizes of the model and of its visual input.

    The visual input is defined in *logical points* (physical pixels / screen scale), so one
    checkpoint serves 640x480 at scale 1 and 5120x2880 at scale 2 alike:

    - a global view: the whole screen area-averaged to ``global_w`` x ``global_h`` pixels, cut
      into ``patch`` x ``patch`` patches (one token each);
    - up to ``max_glimpses`` glimpses: the screen is tiled into ``tile_pt`` x ``tile_pt`` point
      tiles; the tiles with the most visual content (edges) are cropped from the full-resolution
      frame and resampled to ``glimpse_px`` pixels each side (``glimpse_px / tile_pt`` pixels per
      point), one token each, with their box as position. Labels stay legible on every screen.

    Reading models (``match``): a frozen reader (a ``match_stem`` stem ``match_channels`` wide, a
    ``match_head``-wide head) reads every glimpse and its copies shifted by ``match_phases`` tiles; each pointer adds
    how well a glimpse's read matches an instruction word, spread over the glimpses up to
    ``match_reach`` tiles around it by a state-chosen mix of ``match_kernels`` learned kernels.
    ``match_per_phase``: each glimpse token also learns which of its copies matched (the tile
    itself, or the copy shifted down, ...), so it can tell where inside the tile the word is;
    otherwise it gets the best match over the copies.

    ``match_window`` ``[w, h]`` (points; ``match_window_px`` ``[w, h]`` pixels): the reader reads
    windows instead of tiles. Four per glimpse, one centred on each quarter of its tile, and each
    names the word centred in it (:func:`policies.pixel.preprocess.window_origins`). A word up
    to ``w - tile_pt / 2`` points wide is then whole in one window, wherever the tile grid falls;
    tile-sized reads hold a word only if it is shorter than a tile.

    ``match_where``: each pointer's offset head also learns how well each of a glimpse's reads
    (its four windows, or the tile and its copies) matched the word that pointer looks for: where
    inside the tile the word is, so a click lands on the right one of two rows a tile holds.
    ``match_where_near`` (with ``match_where`` and ``match_reach``): each glimpse's offset head also
    learns a correction per read window, and the window where the word was read, in the glimpse or
    around it (averaged with the reach kernel's positive weights), chooses among them: a field's
    row is its label's, which another tile read (a field is wider than a tile, its label left of
    it), so of two fields in a tile the head can pick one rather than land between them.

    ``match_order``: the step also compares the numbers it reads with the instruction's numbers
    (:meth:`policies.pixel.model.PixelModel.order_of`): how likely the screen's number is below,
    equal to or above the one asked for. Equality alone (the match) cannot tell which way to move
    a slider or a spin box.

    ``match_drawn`` (with ``match_window``): no reader. Each instruction word is drawn in each of
    these ``[font, pixel size, underlined]`` ways and matched against each read window, centred in
    its middle cell (:mod:`policies.pixel.drawn`); the step takes those scores as its ``match``.
    ``match_at`` (with ``match_drawn``): each pointer's offset head also learns where in each
    window its word's drawing matched (``match_pos``, to the pixel): a glimpse holding several
    rows of options can then be clicked on the right one.
    ``match_snap`` (with ``match_drawn``): each pointer may move its offset in a glimpse to where
    its word's drawing matched there (the window chosen by score and by where on the screen that
    lies, both learned), by a learned amount per axis and a learned shift: a row's click lands on
    that row, a link's on that word, rather than between the rows a tile holds.
    ``cell_offsets`` (``patch`` stem): each pointer also chooses one cell of each glimpse's
    middle feature map (6x6 cells of a 48-pixel glimpse, a sixth of a tile each, seen through the
    stem's map and a small encoder of its own) and a point in it. Where that choice is sure, the
    offset head's point lies outside the cell, no word placed the point (``match_snap``), and a
    learned trust says the cell's point is the better one, the point moves there, per axis: a
    target named by its kind (a radio button, a checkbox), not by a word, lands on one of several
    rows a tile holds rather than between them.
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
        stem: str = "patch",
        match: bool = False,
        match_phases: tuple | list = ((0.5, 0.0),),
        match_slots: int = 4,
        match_channels: int = 32,
        match_head: int = 512,
        match_stem: str = "reader",
        match_reach: int = 0,
        match_kernels: int = 4,
        match_per_phase: bool = False,
        match_where: bool = False,
        match_where_near: bool = False,
        match_window: list | tuple | None = None,
        match_window_px: list | tuple | None = None,
        match_order: bool = False,
        match_drawn: list | tuple | None = None,
        match_at: bool = False,
        match_snap: bool = False,
        cell_offsets: bool = False,
        content_threshold: int = 10,
        max_text: int = 96,
        history: int = 4,
        action_types: tuple | list = ACTION_TYPES,
        buttons: tuple | list = BUTTONS,
        keys: tuple | list = KEYS,
        scroll_max: int = SCROLL_MAX,
        wait_bins: tuple | list = WAIT_BINS,
        size_name: str = "",
        **kwargs,
    ):
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
        self.stem = stem
        self.match = bool(match)
        self.match_phases = [list(map(float, p)) for p in match_phases]
        self.match_slots = match_slots
        self.match_channels = match_channels
        self.match_head = match_head
        self.match_stem = match_stem
        self.match_reach = match_reach
        self.match_kernels = match_kernels
        self.match_per_phase = bool(match_per_phase)
        self.match_window = [int(v) for v in match_window] if match_window else None
        self.match_window_px = [int(v) for v in (match_window_px or match_window)] if match_window else None
        if self.match_window and self.match_per_phase:
            raise ValueError("match_per_phase applies to tile reads, not match_window reads")
        self.match_where = bool(match_where)
        if self.match_where and not self.match:
            raise ValueError("match_where places what a reader reads: it needs match")
        self.match_where_near = bool(match_where_near)
        if self.match_where_near and not (self.match_where and self.match_reach):
            raise ValueError("match_where_near spreads match_where over the reach: it needs both")
        self.match_order = bool(match_order)
        if self.match_order and not self.match:
            raise ValueError("match_order compares what a reader reads: it needs match")
        self.match_drawn = [[str(f), float(px), bool(u)] for f, px, u in match_drawn] if match_drawn else None
        if self.match_drawn and not (self.match and self.match_window):
            raise ValueError("match_drawn matches drawn words against read windows: it needs match and match_window")
        self.match_at = bool(match_at)
        if self.match_at and not self.match_drawn:
            raise ValueError("match_at places what drawn matches found: it needs match_drawn")
        self.match_snap = bool(match_snap)
        if self.match_snap and not self.match_drawn:
            raise ValueError("match_snap moves offsets to what drawn matches found: it needs match_drawn")
        self.cell_offsets = bool(cell_offsets)
        if self.cell_offsets and (stem != "patch" or glimpse_px % 8):
            raise ValueError("cell_offsets chooses among the patch stem's middle cells: it needs stem 'patch' "
                             "and glimpses a multiple of 8 pixels")
        if self.match_drawn and self.match_order:
            raise ValueError("match_order compares what a reader reads: a match_drawn model has no reader")
        self.content_threshold = content_threshold
        self.max_text = max_text
        self.history = history
        self.action_types = list(action_types)
        self.buttons = list(buttons)
        self.keys = list(keys)
        self.scroll_max = scroll_max
        self.wait_bins = list(wait_bins)
        self.size_name = size_name
        super().__init__(**kwargs)

    @property
    def num_global(self) -> int:
        return (self.global_w // self.patch) * (self.global_h // self.patch)

    @property
    def match_placed(self) -> bool:
        """Whether the step takes ``match_pos``, where each drawing matched (``match_at``, ``match_snap``)."""
        return self.match_at or self.match_snap

    @property
    def reads_per_glimpse(self) -> int:
        """How many reads a reading model makes per glimpse: four windows, or the tile and its copies."""
        return 4 if self.match_window else len(self.match_phases) + 1

    @property
    def read_px(self) -> tuple[int, int]:
        """(height, width) in pixels of what the reader reads."""
        if self.match_window:
            return self.match_window_px[1], self.match_window_px[0]
        return self.glimpse_px, self.glimpse_px

    @classmethod
    def for_size(cls, name: str, **overrides) -> PixelConfig:
        if name not in SIZES:
            raise ValueError(f"unknown model size {name!r}; choose one of {', '.join(SIZES)}")
        return cls(**{**SIZES[name], "size_name": name, **overrides})
