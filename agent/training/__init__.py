"""Learning from sessions: sessions as cached sample arrays (:mod:`agent.training.dataset`) and
training recipes (:mod:`agent.training.recipes`), for the generic trainer in
:mod:`policies.pixel.training`."""
