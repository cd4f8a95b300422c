"""Looks of the virtual desktop: colour themes, font faces and body sizes.

A :class:`Look` is what one episode is drawn in: a :class:`Theme` (colours and the widget style:
rounded or square, flat or bevelled like Tk/Motif), a :class:`Face` (a TrueType family from the
Debian font packages, or Pillow's bundled face) and a body size in points. The ``classic`` theme
with the ``default`` face at 13 pt is the desktop's original look: the bundled checkpoints were
trained and measured on it, and with no theme and no font given the desktop draws exactly it.

``resolve_look(theme, font, task, seed)`` turns names into a look; ``"mixed"`` for either picks
one per episode from the task and seed (the same episode always gets the same look). Unknown
names raise :class:`~agent.errors.UserError` (one line). A face whose font file is missing falls
back to Pillow's bundled face with one warning naming the Debian package to install.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

from agent.errors import UserError

log = logging.getLogger(__name__)

Color = tuple[int, int, int]
MIXED = "mixed"
DEFAULT_THEME = "classic"
DEFAULT_FONT = "default"
BODY_PT = 13.0  # the size every widget is laid out for; a look's size scales text around it
SIZES = (12.0, 13.0, 14.0, 15.0)  # body sizes "mixed" draws from


@dataclass(frozen=True)
class Theme:
    """Colours (RGB) and style of one look. Widgets name colours by field (``"taskbar"``)."""

    name: str
    description: str
    dark: bool = False
    # style
    radius: float = 1.0  # multiplies every corner radius (0: square corners)
    bevel: bool = False  # 3-D edges: raised buttons, sunken fields (Tk / Motif)
    title_align: str = "l"  # "l": title at the left of the title bar; "m": centred
    title_bold: bool = False
    shadow: Color | None = (40, 44, 52)
    # text
    text: Color = (28, 28, 30)
    text_dim: Color = (96, 98, 104)
    muted: Color = (90, 90, 96)
    placeholder: Color = (150, 150, 156)
    # windows
    window: Color = (246, 246, 248)
    titlebar: Color = (226, 228, 234)
    titlebar_inactive: Color = (236, 236, 238)
    title_text: Color = (28, 28, 30)
    title_text_inactive: Color = (96, 98, 104)
    border: Color = (150, 154, 162)
    control_border: Color = (150, 154, 162)
    # controls
    button: Color = (236, 237, 240)
    button_hover: Color = (222, 232, 248)
    button_pressed: Color = (188, 206, 236)
    button_text: Color = (28, 28, 30)
    accent: Color = (38, 110, 220)
    accent_hover: Color = (56, 128, 236)
    accent_pressed: Color = (24, 84, 180)
    accent_light: Color = (205, 224, 252)
    on_accent: Color = (255, 255, 255)
    focus: Color = (64, 140, 255)
    danger: Color = (214, 64, 56)
    danger_pressed: Color = (180, 40, 36)
    field: Color = (255, 255, 255)
    thumb: Color = (255, 255, 255)
    track: Color = (200, 202, 208)
    selection: Color = (38, 110, 220)
    selection_text: Color = (255, 255, 255)
    # menus and content areas
    menubar: Color = (238, 239, 242)
    popup: Color = (250, 250, 252)
    popup_border: Color = (160, 164, 172)
    menu_hover: Color = (38, 110, 220)
    menu_hover_text: Color = (255, 255, 255)
    content: Color = (255, 255, 255)
    content_border: Color = (210, 212, 218)
    # the desktop
    taskbar: Color = (32, 36, 46)
    taskbar_button: Color = (70, 130, 220)
    taskbar_text: Color = (236, 238, 244)
    icon_selected: Color = (70, 110, 170)
    icon_selected_border: Color = (150, 190, 240)
    icon_hover: Color = (90, 120, 160)
    caption: Color = (24, 28, 36)
    caption_text: Color = (255, 255, 255)
    wallpapers: tuple[tuple[Color, Color], ...] = (
        ((38, 84, 124), (92, 148, 178)),
        ((58, 64, 110), (134, 120, 170)),
        ((36, 96, 84), (120, 170, 140)),
        ((88, 66, 60), (176, 140, 112)),
    )
    # bevel edges
    light: Color = (255, 255, 255)
    dark_edge: Color = (120, 120, 120)

    def color(self, c: Color | str | None) -> Color | None:
        """A colour given directly or by the name of one of this theme's fields."""
        return getattr(self, c) if isinstance(c, str) else c

    def r(self, radius: float) -> float:
        return radius * self.radius


THEMES: dict[str, Theme] = {}


def _add(t: Theme) -> None:
    THEMES[t.name] = t


_add(Theme("classic", "the original look: light, flat, rounded, blue accent"))
_add(Theme(
    "adwaita", "close to GTK's Adwaita: light, flat, rounded, centred bold titles",
    radius=1.2, title_align="m", title_bold=True, shadow=(150, 150, 150),
    text=(46, 52, 54), text_dim=(120, 124, 126), muted=(110, 114, 116), placeholder=(146, 149, 149),
    window=(246, 245, 244), titlebar=(235, 235, 235), titlebar_inactive=(250, 250, 250),
    title_text=(46, 52, 54), title_text_inactive=(146, 149, 149), border=(205, 199, 194), control_border=(205, 199, 194),
    button=(246, 245, 244), button_hover=(250, 250, 249), button_pressed=(214, 209, 205),
    button_text=(46, 52, 54), accent=(53, 132, 228), accent_hover=(74, 144, 230),
    accent_pressed=(28, 113, 216), accent_light=(152, 193, 241), focus=(53, 132, 228),
    danger=(224, 27, 36), danger_pressed=(192, 28, 40), track=(205, 199, 194),
    selection=(53, 132, 228), menubar=(235, 235, 235), popup=(255, 255, 255),
    popup_border=(205, 199, 194), menu_hover=(232, 232, 231), menu_hover_text=(46, 52, 54),
    content=(255, 255, 255), content_border=(215, 211, 207), taskbar=(0, 0, 0),
    taskbar_button=(53, 132, 228), icon_selected=(53, 132, 228), icon_selected_border=(152, 193, 241),
    icon_hover=(90, 110, 140), caption=(0, 0, 0),
    wallpapers=(((53, 132, 228), (26, 95, 180)), ((73, 84, 106), (36, 42, 56)), ((98, 160, 234), (192, 97, 203)),
                ((46, 194, 126), (38, 162, 105))),
))
_add(Theme(
    "adwaita-dark", "close to GTK's Adwaita dark: dark, flat, rounded, centred bold titles",
    dark=True, radius=1.2, title_align="m", title_bold=True, shadow=(10, 10, 10),
    text=(255, 255, 255), text_dim=(170, 170, 170), muted=(190, 190, 190), placeholder=(140, 140, 140),
    window=(53, 53, 53), titlebar=(48, 48, 48), titlebar_inactive=(40, 40, 40),
    title_text=(255, 255, 255), title_text_inactive=(150, 150, 150), border=(27, 27, 27), control_border=(27, 27, 27),
    button=(70, 70, 70), button_hover=(82, 82, 82), button_pressed=(40, 40, 40),
    button_text=(255, 255, 255), accent=(53, 132, 228), accent_hover=(74, 144, 230),
    accent_pressed=(28, 113, 216), accent_light=(32, 74, 126), focus=(120, 174, 237),
    danger=(192, 28, 40), danger_pressed=(150, 20, 30), field=(45, 45, 45), thumb=(230, 230, 230), track=(30, 30, 30),
    selection=(21, 83, 158), menubar=(48, 48, 48), popup=(56, 56, 56), popup_border=(20, 20, 20),
    menu_hover=(78, 78, 78), menu_hover_text=(255, 255, 255), content=(36, 36, 36),
    content_border=(27, 27, 27), taskbar=(0, 0, 0), taskbar_button=(53, 132, 228),
    icon_selected=(21, 83, 158), icon_selected_border=(120, 174, 237), icon_hover=(60, 70, 90),
    caption=(0, 0, 0), light=(90, 90, 90), dark_edge=(20, 20, 20),
    wallpapers=(((36, 31, 49), (61, 56, 70)), ((26, 95, 180), (28, 40, 72)), ((40, 40, 40), (80, 80, 80)),
                ((38, 162, 105), (20, 60, 50))),
))
_add(Theme(
    "windows", "close to Windows 10: light, flat, square, white title bars, blue accent",
    radius=0.0, shadow=(170, 170, 170),
    text=(0, 0, 0), text_dim=(109, 109, 109), muted=(80, 80, 80), placeholder=(120, 120, 120),
    window=(240, 240, 240), titlebar=(255, 255, 255), titlebar_inactive=(255, 255, 255),
    title_text=(0, 0, 0), title_text_inactive=(153, 153, 153), border=(0, 120, 215), control_border=(173, 173, 173),
    button=(225, 225, 225), button_hover=(229, 241, 251), button_pressed=(204, 228, 247),
    button_text=(0, 0, 0), accent=(0, 120, 215), accent_hover=(16, 137, 232), accent_pressed=(0, 84, 153),
    accent_light=(204, 228, 247), focus=(0, 0, 0), danger=(232, 17, 35), danger_pressed=(241, 112, 122),
    track=(204, 204, 204), selection=(0, 120, 215), menubar=(255, 255, 255), popup=(242, 242, 242),
    popup_border=(204, 204, 204), menu_hover=(145, 201, 247), menu_hover_text=(0, 0, 0),
    content=(255, 255, 255), content_border=(130, 135, 144), taskbar=(16, 16, 16),
    taskbar_button=(0, 120, 215), icon_selected=(0, 84, 153), icon_selected_border=(102, 178, 255),
    icon_hover=(50, 100, 150), caption=(16, 16, 16),
    wallpapers=(((0, 90, 158), (0, 58, 110)), ((16, 110, 190), (84, 170, 230)), ((30, 30, 60), (70, 90, 140)),
                ((0, 120, 110), (0, 60, 70))),
))
_add(Theme(
    "motif", "close to Motif/CDE: blue-grey, bevelled, square",
    radius=0.0, bevel=True, shadow=None,
    text=(0, 0, 0), text_dim=(70, 74, 90), muted=(40, 44, 60), placeholder=(100, 104, 120),
    window=(174, 178, 195), titlebar=(112, 128, 165), titlebar_inactive=(150, 154, 172),
    title_text=(255, 255, 255), title_text_inactive=(210, 212, 222), border=(60, 64, 80),
    button=(174, 178, 195), button_hover=(188, 192, 208), button_pressed=(150, 154, 172),
    button_text=(0, 0, 0), accent=(112, 128, 165), accent_hover=(126, 142, 178),
    accent_pressed=(90, 104, 140), accent_light=(220, 224, 236), on_accent=(255, 255, 255),
    focus=(0, 0, 0), danger=(180, 50, 50), danger_pressed=(140, 30, 30), field=(198, 202, 216),
    thumb=(174, 178, 195), track=(150, 154, 172), selection=(112, 128, 165), menubar=(174, 178, 195), popup=(174, 178, 195),
    popup_border=(60, 64, 80), menu_hover=(188, 192, 208), menu_hover_text=(0, 0, 0),
    content=(198, 202, 216), content_border=(100, 104, 120), taskbar=(120, 126, 150),
    taskbar_button=(174, 178, 195), taskbar_text=(0, 0, 0), icon_selected=(112, 128, 165),
    icon_selected_border=(230, 232, 240), icon_hover=(100, 110, 140), caption=(40, 44, 60),
    light=(230, 232, 240), dark_edge=(84, 88, 104),
    wallpapers=(((92, 104, 140), (92, 104, 140)), ((99, 127, 163), (60, 80, 110)), ((130, 110, 90), (90, 70, 60)),
                ((80, 120, 120), (50, 80, 80))),
))
_add(Theme(
    "tk", "close to Tk's default look on X11: grey, bevelled, square, black focus ring",
    radius=0.0, bevel=True, shadow=None,
    text=(0, 0, 0), text_dim=(90, 90, 90), muted=(60, 60, 60), placeholder=(128, 128, 128),
    window=(217, 217, 217), titlebar=(80, 96, 128), titlebar_inactive=(170, 170, 170),
    title_text=(255, 255, 255), title_text_inactive=(60, 60, 60), border=(40, 40, 40),
    button=(217, 217, 217), button_hover=(236, 236, 236), button_pressed=(195, 195, 195),
    button_text=(0, 0, 0), accent=(176, 48, 96), accent_hover=(196, 68, 116), accent_pressed=(140, 30, 70),
    accent_light=(236, 236, 236), on_accent=(255, 255, 255), focus=(0, 0, 0), danger=(176, 48, 96),
    danger_pressed=(140, 30, 70), field=(255, 255, 255), thumb=(217, 217, 217), track=(195, 195, 195), selection=(195, 195, 195),
    selection_text=(0, 0, 0), menubar=(217, 217, 217), popup=(217, 217, 217), popup_border=(40, 40, 40),
    menu_hover=(236, 236, 236), menu_hover_text=(0, 0, 0), content=(255, 255, 255),
    content_border=(150, 150, 150), taskbar=(60, 60, 60), taskbar_button=(217, 217, 217),
    icon_selected=(80, 96, 128), icon_selected_border=(255, 255, 255), icon_hover=(100, 100, 110),
    caption=(30, 30, 30), light=(255, 255, 255), dark_edge=(130, 130, 130),
    wallpapers=(((110, 120, 130), (70, 80, 90)), ((47, 79, 79), (47, 79, 79)), ((90, 100, 140), (50, 60, 90)),
                ((120, 100, 80), (70, 60, 50))),
))


@dataclass(frozen=True)
class Face:
    """A font family: its regular and bold files (absolute paths), or Pillow's bundled face."""

    name: str
    description: str
    regular: str | None = None
    bold: str | None = None
    package: str | None = None  # the Debian package that ships the files

    def available(self) -> bool:
        return self.regular is None or Path(self.regular).is_file()


_DEJAVU = "/usr/share/fonts/truetype/dejavu/"
_LIB = "/usr/share/fonts/truetype/liberation/"
FACES: dict[str, Face] = {f.name: f for f in (
    Face("default", "Pillow's bundled face (no files needed)"),
    Face("dejavu-sans", "DejaVu Sans", _DEJAVU + "DejaVuSans.ttf", _DEJAVU + "DejaVuSans-Bold.ttf", "fonts-dejavu-core"),
    Face("dejavu-serif", "DejaVu Serif", _DEJAVU + "DejaVuSerif.ttf", _DEJAVU + "DejaVuSerif-Bold.ttf",
         "fonts-dejavu-core"),
    Face("dejavu-mono", "DejaVu Sans Mono", _DEJAVU + "DejaVuSansMono.ttf", _DEJAVU + "DejaVuSansMono-Bold.ttf",
         "fonts-dejavu-core"),
    Face("liberation-sans", "Liberation Sans (metric-compatible with Arial)", _LIB + "LiberationSans-Regular.ttf",
         _LIB + "LiberationSans-Bold.ttf", "fonts-liberation"),
    Face("liberation-serif", "Liberation Serif (metric-compatible with Times New Roman)",
         _LIB + "LiberationSerif-Regular.ttf", _LIB + "LiberationSerif-Bold.ttf", "fonts-liberation"),
    Face("liberation-mono", "Liberation Mono (metric-compatible with Courier New)", _LIB + "LiberationMono-Regular.ttf",
         _LIB + "LiberationMono-Bold.ttf", "fonts-liberation"),
)}
MIXED_FACES = ("default", "dejavu-sans", "dejavu-serif", "liberation-sans", "liberation-serif")

_warned: set[str] = set()


@lru_cache(maxsize=256)
def load_font(face: str, px: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """The face ``face`` at ``px`` physical pixels (bold where the face has a bold file)."""
    f = FACES[face]
    path = (f.bold if bold and f.bold else f.regular)
    if path is not None:
        try:
            return ImageFont.truetype(path, max(6, px))
        except OSError:
            if face not in _warned:
                _warned.add(face)
                log.warning("font %s (%s) not found; drawing with Pillow's bundled face instead "
                            "(install the Debian package %s)", face, path, f.package)
    return ImageFont.load_default(size=max(6, px))


@dataclass(frozen=True)
class Look:
    """One episode's look: theme, face and body size (points)."""

    theme: Theme = THEMES[DEFAULT_THEME]
    face: str = DEFAULT_FONT
    size: float = BODY_PT

    @property
    def k(self) -> float:
        """How much larger than the layout's 13 pt this look's text is."""
        return self.size / BODY_PT

    def font(self, px: int, bold: bool = False):
        return load_font(self.face, px, bold)

    def text_width(self, s: str, size: float = BODY_PT, bold: bool = False) -> float:
        """Width of ``s`` in logical points at ``size`` layout points (measured at 4x for precision)."""
        return self.font(round(size * self.k * 4), bold).getlength(s) / 4

    def info(self) -> dict:
        return {"theme": self.theme.name, "font": self.face, "font_size": self.size}


CLASSIC = Look()


def theme_names() -> list[str]:
    return list(THEMES)


def font_names() -> list[str]:
    return list(FACES)


def parse_font(spec: str | None) -> tuple[str | None, float | None]:
    """``NAME`` or ``NAME:SIZE`` (points) -> (name, size); ``None`` -> (None, None)."""
    if spec is None or spec == "":
        return None, None
    name, _, size = str(spec).partition(":")
    if size:
        try:
            pt = float(size)
        except ValueError:
            raise UserError(f"bad font size {size!r} in {spec!r}; expected NAME or NAME:POINTS, e.g. "
                            "dejavu-sans:14") from None
        if not 8.0 <= pt <= 24.0:
            raise UserError(f"font size must be between 8 and 24 points, got {size}")
        return name, pt
    return name, None


def check_theme(name: str | None) -> None:
    if name is not None and name != MIXED and name not in THEMES:
        raise UserError(f"unknown theme {name!r}; choose from {', '.join(THEMES)} or '{MIXED}'")


def check_font(spec: str | None) -> None:
    name, _ = parse_font(spec)
    if name is not None and name != MIXED and name not in FACES:
        raise UserError(f"unknown font {name!r}; choose from {', '.join(FACES)} or '{MIXED}' "
                        "(optionally NAME:POINTS, e.g. dejavu-sans:14)")


def resolve_look(theme: str | None, font: str | None, task: str, seed: int,
                 font_size: float | None = None) -> Look:
    """The look for one episode. ``None``: the classic theme / the default face at 13 pt;
    ``"mixed"``: drawn from ``task`` and ``seed``; a name: that one. ``font`` may carry a size
    (``NAME:POINTS``); ``font_size`` overrides it."""
    check_theme(theme)
    check_font(font)
    face, pt = parse_font(font)
    if font_size is not None:
        pt = float(font_size)
    rng = random.Random(f"look/{task}/{seed}")
    t_pick, f_pick, s_pick = rng.choice(list(THEMES)), rng.choice(MIXED_FACES), rng.choice(SIZES)
    tname = DEFAULT_THEME if theme is None else (t_pick if theme == MIXED else theme)
    if face is None:
        fname, size = DEFAULT_FONT, pt if pt is not None else BODY_PT
    elif face == MIXED:
        fname, size = f_pick, pt if pt is not None else s_pick
    else:
        fname, size = face, pt if pt is not None else BODY_PT
    if not FACES[fname].available() and fname not in _warned:
        _warned.add(fname)
        f = FACES[fname]
        log.warning("font %s is not installed (%s); drawing with Pillow's bundled face instead "
                    "(install the Debian package %s)", fname, f.regular, f.package)
    return Look(THEMES[tname], fname, float(size))


__all__ = ["CLASSIC", "FACES", "MIXED", "THEMES", "Face", "Look", "Theme", "font_names", "load_font",
           "parse_font", "resolve_look", "theme_names"]
