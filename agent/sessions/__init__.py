"""Sessions: the on-disk format with its recorder and reader (:mod:`agent.sessions.format`), human
demonstrations (:mod:`~agent.sessions.humanrec`), scripted-expert and DAgger demos
(:mod:`~agent.sessions.demos`, :mod:`~agent.sessions.dagger`) and open-loop replay
(:mod:`~agent.sessions.replay`).
"""
