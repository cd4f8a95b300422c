"""MiniWoB++'s text as Chromium draws it where Arial is Liberation Sans (Arial 10 px labels and
paragraphs, 13.33 px buttons, underlined links, bold headings): the drawings of a template grounding
trained for this suite (``GroundingConfig.styles``; they matched targets on unseen pages,
docs/research). A checkpoint carries them in its config; this is where a recipe takes them from."""

TEMPLATE_STYLES = [["LiberationSans-Regular.ttf", 10, False], ["LiberationSans-Regular.ttf", 11, False],
                   ["LiberationSans-Regular.ttf", 13.333, False], ["LiberationSans-Regular.ttf", 10, True],
                   ["LiberationSans-Regular.ttf", 11, True], ["LiberationSans-Bold.ttf", 10, False],
                   ["LiberationSans-Bold.ttf", 12, False]]
